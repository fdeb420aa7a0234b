"""The (x, y) pairs of a few-shot text task (data=icl_text): a word list shipped in lottery/data/word_lists/
(data.task) or a user's own file (data.task_file), both `x<TAB>y` lines with blank lines and `#` comments skipped,
both checked line by line, so a malformed line is refused with its file and line number before any model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lottery.data.text_tokens import TextTaskError

WORD_LISTS = Path(__file__).resolve().parent / "word_lists"
TASKS = tuple(sorted(p.stem for p in WORD_LISTS.glob("*.tsv")))


def parse_pairs(text: str, source: str) -> list[tuple[str, str]]:
    """The pairs of a word list's text; `source` names it in errors (a file path)."""
    pairs: list[tuple[str, str]] = []
    first_seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source}, line {number} ({line!r})"
        parts = line.split("\t")
        if len(parts) != 2:
            raise TextTaskError(
                f"{where}: a pair is `x<TAB>y` with exactly one tab between the two sides, not {len(parts) - 1}"
            )
        x, y = parts[0].strip(), parts[1].strip()
        if not x or not y:
            raise TextTaskError(f"{where}: the {'x' if not x else 'y'} side is empty; give both sides of the pair")
        if x in first_seen:
            raise TextTaskError(
                f"{where}: x={x!r} was already given on line {first_seen[x]}; a query must have one answer, so keep "
                "one of the lines"
            )
        first_seen[x] = number
        pairs.append((x, y))
    return pairs


def read_pairs(task: str) -> list[tuple[str, str]]:
    """The pairs of a shipped word list (data.task)."""
    if task not in TASKS:
        raise TextTaskError(
            f"data.task={task!r} is not one of the shipped word lists {list(TASKS)}; give your own list with "
            "data.task_file=<path of x<TAB>y lines>"
        )
    path = WORD_LISTS / f"{task}.tsv"
    return parse_pairs(path.read_text(encoding="utf-8"), str(path))


def read_task_file(path: str) -> list[tuple[str, str]]:
    """The pairs of a user's word list (data.task_file)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise TextTaskError(
            f"data.task_file={path!r} is not a file (looked for {file.resolve()}); give the path of a file of "
            "`x<TAB>y` lines, or drop data.task_file to use a shipped list (data.task)"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TextTaskError(f"data.task_file={path!r} is not UTF-8 text ({err}); save it as UTF-8") from None
    return parse_pairs(text, path)


def task_pairs(settings: Any) -> list[tuple[str, str]]:
    """data.task_file when set (it overrides data.task), else the shipped list data.task."""
    task_file = getattr(settings, "task_file", None)
    return read_task_file(task_file) if task_file else read_pairs(settings.task)


def task_name(settings: Any) -> str:
    """The task's name in reports: the task file's stem when one is given, else data.task."""
    task_file = getattr(settings, "task_file", None)
    return Path(task_file).stem if task_file else settings.task


def split_sizes(n_pairs: int, test_fraction: float) -> tuple[int, int]:
    """(test pairs, training pairs): the test prompts' queries and the rest (training queries, all demonstrations)."""
    n_test = max(1, round(test_fraction * n_pairs))
    return n_test, n_pairs - n_test


def check_pair_count(pairs: list[tuple[str, str]], settings: Any) -> None:
    """Enough pairs for the shots and the test split: a training prompt of k shots shows k training pairs besides its
    own query, so the training pairs must number max(shots) + 1 or more."""
    shots, fraction = list(settings.shots), settings.test_fraction
    need_train = max(shots) + 1
    if split_sizes(len(pairs), fraction)[1] >= need_train:
        return
    need = need_train + 1
    while split_sizes(need, fraction)[1] < need_train:
        need += 1
    source = f"data.task_file={settings.task_file!r}" if getattr(settings, "task_file", None) else settings.task
    raise TextTaskError(
        f"{source} has {len(pairs)} pairs; data.shots={shots} with data.test_fraction={fraction} needs at least "
        f"{need} ({need_train} training pairs, as a {max(shots)}-shot prompt shows {max(shots)} pairs besides its "
        f"query, and {split_sizes(need, fraction)[0]} held out for test queries); add pairs, or lower data.shots or "
        "data.test_fraction"
    )
