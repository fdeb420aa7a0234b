"""Text data with a pretrained model's tokenizer, offline: few-shot prompts (data=icl_text) tokenized jointly with
their answers and BOS per the tokenizer's own convention, evenly cycled queries, users' word lists (data.task_file)
checked line by line before any weights load; and language modelling on plain text (data=lm_text): windows,
next-token targets, the loss by hand, and a real pretrained model's perplexity on the shipped stories."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import save_model, save_tokenizer  # noqa: E402

from lottery.config import LMTextDataConfig, TextDataConfig  # noqa: E402
from lottery.data import load  # noqa: E402
from lottery.data.lm_task import NextToken  # noqa: E402
from lottery.data.lm_text import SAMPLE, read_documents  # noqa: E402
from lottery.data.tasks import IGNORE  # noqa: E402
from lottery.data.text_icl import check_text_settings, load_tokenizer, read_pairs  # noqa: E402
from lottery.data.text_task import ExactMatch  # noqa: E402
from lottery.data.text_tokens import TextTaskError, bos_ids, joint_ids  # noqa: E402

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K-hf"  # ../shared from the repo
needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason=f"the pretrained stories260K-hf is not at {STORIES}")

# A task of 57 pairs: round(0.3 * 57) = 17 test pairs, so 40 test prompts ask each 2 or 3 times
PAIRS = [(f"x{i}", f"y{i}") for i in range(57)]


def write_pairs(path: Path, pairs: list[tuple[str, str]], header: str = "# made up for a test\n") -> Path:
    path.write_text(header + "".join(f"{x}\t{y}\n" for x, y in pairs), encoding="utf-8")
    return path


def sentencepiece_like(folder: Path, words: list[str], adds_bos: bool) -> Path:
    """A word-level tokenizer with sentencepiece's conventions: a Prepend normalizer puts `▁` before the text and
    spaces become `▁`, so ` y` alone is [`▁`, `▁y`] while after `x ->` it is [`▁y`]. Its BOS token `<s>` is added by
    a post-processor (Llama) or defined and never added (GPT-2)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    names = ["<pad>", "<unk>", "<s>", "▁", "\n", *words, *(f"▁{w}" for w in words)]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(names))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.Split("▁", behavior="merged_with_next")]
    )
    if adds_bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>")
    tokenizer.save_pretrained(folder)
    return folder


def words_of(pairs: list[tuple[str, str]]) -> list[str]:
    return ["->", *(w for pair in pairs for side in pair for w in side.split())]


def text_settings(tokenizer: Path, **kwargs) -> TextDataConfig:
    return TextDataConfig(tokenizer=str(tokenizer), **{"num_train": 60, "num_test": 40, **kwargs})


def rows_of(splits) -> list[tuple[list[int], list[int]]]:
    """(full ids: the inputs' tokens up to the answer's last, answer ids) per test prompt."""
    out = []
    for x, y in zip(splits.x_test, splits.y_test[:, :-1], strict=True):
        at = (y != IGNORE).nonzero().flatten()
        answer = y[at].tolist()
        out.append((x[: int(at[-1]) + 1].tolist() + answer[-1:], answer))
    return out


# ---- data=icl_text: BOS and joint tokenization
@pytest.mark.parametrize("adds_bos", [True, False], ids=["adds-bos", "defines-bos-adds-none"])
def test_prompts_start_with_bos_exactly_when_the_tokenizer_adds_one(tmp_path, adds_bos):
    pairs = PAIRS[:20]
    folder = sentencepiece_like(tmp_path / "tok", words_of(pairs), adds_bos)
    tok = load_tokenizer(str(folder))
    assert tok.bos_token_id is not None  # defined either way: the rule reads what the tokenizer does with it
    assert bos_ids(tok) == ([tok.bos_token_id] if adds_bos else [])
    settings = text_settings(folder, task_file=str(write_pairs(tmp_path / "t.tsv", pairs)), shots=[0, 2])
    splits = load("icl_text", settings=settings)
    for x in (splits.x_train, splits.x_test):
        first = x[:, 0] == tok.bos_token_id
        assert bool(first.all()) if adds_bos else not bool(first.any())
        assert not bool((x[:, 1:] == tok.bos_token_id).any())  # and nowhere else


def test_a_tokenizer_without_a_bos_token_gets_none(tmp_path):
    save_tokenizer(tmp_path, words_of(PAIRS))  # word-level, no BOS token at all (tests/hf_models.py)
    assert bos_ids(load_tokenizer(str(tmp_path))) == []


def test_answers_are_the_tokens_of_prompt_and_answer_tokenized_together(tmp_path):
    folder = sentencepiece_like(tmp_path / "tok", words_of(PAIRS), adds_bos=True)
    tok = load_tokenizer(str(folder))
    settings = text_settings(folder, task_file=str(write_pairs(tmp_path / "t.tsv", PAIRS)), shots=[0])
    splits = load("icl_text", settings=settings)
    pairs = dict(PAIRS)
    for full, answer in rows_of(splits):
        query = tok.convert_ids_to_tokens(full[1])[1:]  # 0 shots: BOS, `▁x`, `▁->`, answer
        joint = tok(f"{query} -> {pairs[query]}", add_special_tokens=False)["input_ids"]
        assert full == [tok.bos_token_id, *joint]
        assert answer == joint[2:] == tok.convert_tokens_to_ids([f"▁{pairs[query]}"])
        assert answer != tok(f" {pairs[query]}", add_special_tokens=False)["input_ids"]  # [`▁`, `▁y`] apart


@needs_stories
def test_stories260k_answers_are_the_joint_tokens_and_differ_from_the_answer_alone():
    tok = load_tokenizer(str(STORIES))
    assert bos_ids(tok) == [tok.bos_token_id] == [1]  # a Llama tokenizer: add_bos_token, a BOS-first template
    splits = load("icl_text", settings=text_settings(STORIES, task="antonyms", shots=[0]))
    pairs, differ = dict(read_pairs("antonyms")), 0
    for full, answer in rows_of(splits):
        query = tok.decode(full[1:]).split(" -> ")[0]  # decoding drops sentencepiece's prepended space again
        target = pairs[query]
        joint = tok(f"{query} -> {target}", add_special_tokens=True)["input_ids"]
        assert full == joint  # BOS and the whole prompt-and-answer string tokenized at once
        apart = tok(f" {target}", add_special_tokens=False)["input_ids"]
        differ += answer != apart
    assert differ > 0  # sentencepiece's prepended `▁` makes ` y` alone tokenize differently


def test_a_token_across_the_prompt_answer_boundary_is_refused(tmp_path):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hot ": 1, "-> c": 2, "old": 3, "-> ": 4}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"-> c|-> |hot |old"), behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    with pytest.raises(TextTaskError, match=r"merges .*'-> c'.*\('hot', 'cold'\)"):
        joint_ids(tok, "hot ->", " cold")


def test_an_answer_beyond_the_vocabulary_is_refused_naming_the_word(tmp_path):
    pairs = PAIRS[:20]
    save_tokenizer(tmp_path, [w for w in words_of(pairs) if w != "y7"])  # y7 maps to [UNK]
    settings = text_settings(tmp_path, task_file=str(write_pairs(tmp_path / "t.tsv", pairs)))
    with pytest.raises(TextTaskError, match=r"answer 'y7' \(query 'x7'\) holds the tokenizer's unknown token"):
        load("icl_text", settings=settings)


# ---- data=icl_text: even queries, users' word lists
def test_queries_cycle_evenly_through_the_held_out_pairs(tmp_path):
    save_tokenizer(tmp_path, words_of(PAIRS))
    settings = text_settings(tmp_path, task_file=str(write_pairs(tmp_path / "t.tsv", PAIRS)), num_train=100)
    splits = load("icl_text", settings=settings)
    tok = load_tokenizer(str(tmp_path))

    def queries(x: torch.Tensor) -> Counter:
        return Counter(tok.decode([int(t) for t in row if t != tok.pad_token_id]).split()[-2] for row in x)

    test, train = queries(splits.x_test), queries(splits.x_train)
    assert len(test) == splits.task.distinct_queries == 17 and set(test.values()) == {2, 3}  # 40 over 17
    # each test prompt names its held-out query, which the intervals resample (lottery/core/intervals.py)
    asked = [tok.decode([int(t) for t in row if t != tok.pad_token_id]).split()[-2] for row in splits.x_test]
    index = splits.task.test_queries
    assert len(index) == 40 and len(set(index)) == 17
    assert all((index[i] == index[j]) == (asked[i] == asked[j]) for i in range(40) for j in range(40))
    assert len(train) == 40 and set(train.values()) == {2, 3} and not set(train) & set(test)  # 100 over 40
    assert splits.task.name == "t" and not ExactMatch.token_accuracy


@pytest.mark.parametrize(
    "line, problem",
    [
        ("x9 y9", r"exactly one tab"),
        ("x9\ty9\tz9", r"exactly one tab"),
        ("x9\t ", r"the y side is empty"),
        ("\ty9", r"the x side is empty"),
        ("x1\ty9", r"x='x1' was already given on line 4"),
    ],
    ids=["no-tab", "two-tabs", "empty-y", "empty-x", "duplicate-x"],
)
def test_a_malformed_task_file_is_refused_naming_file_and_line(tmp_path, line, problem):
    path = tmp_path / "mine.tsv"
    path.write_text("# a comment\n\n" + "".join(f"{x}\t{y}\n" for x, y in PAIRS[:30]) + line + "\n")
    with pytest.raises(TextTaskError, match=rf"mine\.tsv, line 33 .*{problem}"):
        check_text_settings(text_settings(tmp_path, task_file=str(path)))


def test_a_missing_or_too_short_task_file_is_refused(tmp_path):
    with pytest.raises(TextTaskError, match=r"data.task_file='.*nowhere.tsv' is not a file"):
        check_text_settings(text_settings(tmp_path, task_file=str(tmp_path / "nowhere.tsv")))
    few = str(write_pairs(tmp_path / "few.tsv", PAIRS[:6]))
    # shots up to 4 need 5 training pairs; with test_fraction 0.3, 7 pairs (2 held out for test queries) at least
    with pytest.raises(TextTaskError, match=r"has 6 pairs; .* needs at least 7 \(5 training pairs.* and 2 held out"):
        check_text_settings(text_settings(tmp_path, task_file=few))
    check_text_settings(text_settings(tmp_path, task_file=few, shots=[0, 1, 2]))  # 4 training pairs suffice


def test_a_task_file_overrides_the_task_and_is_hashed(tmp_path):
    from lottery.core.hashing import hash_inputs

    path = str(write_pairs(tmp_path / "colours.tsv", PAIRS))
    save_tokenizer(tmp_path, words_of(PAIRS))
    splits = load("icl_text", settings=text_settings(tmp_path, task="capitals", task_file=path))
    assert splits.task.name == "colours"
    assert hash_inputs(text_settings(tmp_path, task_file=path))["task_file"] == path
    assert "task_file" not in hash_inputs(text_settings(tmp_path))  # default: old hashes stay


def test_a_malformed_task_file_is_refused_before_any_weights_load(run_tiny, tmp_path, monkeypatch):
    import transformers

    from lottery.config import ConfigError

    folder = save_model(tmp_path / "gpt2", "gpt2")
    save_tokenizer(folder, words_of(PAIRS))

    def never(*args, **kwargs):
        raise AssertionError("weights were loaded before the word list was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    bad = tmp_path / "bad.tsv"
    bad.write_text("x1\ty1\nx2 y2\n")
    hf = ["model=hf", f"model.path={folder}", "data=icl_text", "data.val_size=10", "pruning.strategy=structured"]
    with pytest.raises(ConfigError, match=r"bad\.tsv, line 2 .*exactly one tab"):
        run_tiny(*hf, f"data.task_file={bad}")
    with pytest.raises(ConfigError, match=r"data.path='' is not a file.*set data.path=<file>"):
        run_tiny(*hf[:2], "data=lm_text", "pruning.strategy=structured")


# ---- data=lm_text
def lm_settings(tokenizer: Path, path: Path = SAMPLE, **kwargs) -> LMTextDataConfig:
    return LMTextDataConfig(tokenizer=str(tokenizer), path=str(path), **kwargs)


def test_lm_windows_hold_next_token_targets_and_ignore_pads(tmp_path):
    docs = ["big cold hot small " * 3, "hot big", "small", "cold cold hot big small hot"]
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(docs) + "\n\n\n")
    save_tokenizer(tmp_path, ["big", "cold", "hot", "small"])
    tok = load_tokenizer(str(tmp_path))
    splits = load("lm_text", settings=lm_settings(tmp_path, path, context=5, test_fraction=0.5))
    assert read_documents(str(path)) == [d.strip() for d in docs]
    x, y = torch.cat([splits.x_train, splits.x_test]), torch.cat([splits.y_train, splits.y_test])
    assert x.shape == y.shape == (len(x), 5) and splits.task.split(y)[1] is None
    length = (x != tok.pad_token_id).sum(1)
    for row, ys, n in zip(x, y, length.tolist(), strict=True):
        assert torch.equal(ys[: n - 1], row[1:n]) and bool((ys[n - 1 :] == IGNORE).all())  # last and pads ignored
    # windows overlap by one token, so each document's tokens after its first are targets exactly once; "small" is
    # one token and gives no window; no BOS for a tokenizer without one
    targets = sum(len(tok(d.strip(), add_special_tokens=False)["input_ids"]) - 1 for d in docs)
    assert int((y != IGNORE).sum()) == targets == 11 + 1 + 5
    assert bos_ids(tok) == []


@needs_stories
def test_lm_documents_split_into_train_and_test_with_bos_first(tmp_path):
    tok = load_tokenizer(str(STORIES))
    splits = load("lm_text", settings=lm_settings(STORIES))
    docs = read_documents(str(SAMPLE))
    assert len(docs) == 76 and splits.x_train.shape[1] == 128 and splits.task.name == "stories"
    starts = {s: int((getattr(splits, s)[:, 0] == tok.bos_token_id).sum()) for s in ("x_train", "x_test")}
    assert starts == {"x_train": 61, "x_test": 15}  # round(0.2 * 76) = 15 test documents, each window 0 with BOS
    # the README's command runs on the defaults: train.batch_size=100 windows fit beside the validation carve
    assert len(splits.x_train) - LMTextDataConfig().val_size >= 100

    def text(x: torch.Tensor) -> str:
        return tok.decode([int(t) for t in x.flatten()], skip_special_tokens=True)

    test_docs = [d for d in docs if d[:40] in text(splits.x_test)]
    assert len(test_docs) == 15 and not any(d[:40] in text(splits.x_train) for d in test_docs)
    capped = load("lm_text", settings=lm_settings(STORIES, num_test=3))
    assert torch.equal(capped.x_test, splits.x_test[:3]) and torch.equal(capped.x_train, splits.x_train)
    other = load("lm_text", settings=lm_settings(STORIES, data_seed=7))
    assert not torch.equal(other.x_test[:3], splits.x_test[:3])


def test_lm_loss_and_accuracy_are_next_token_cross_entropy_over_scored_tokens():
    task = NextToken(vocab=4)
    logits = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0]]])
    y = torch.tensor([[0, 1, IGNORE]])
    nll = [-math.log(math.exp(2) / (math.exp(2) + 3)), -math.log(math.exp(1) / (1 + math.e + math.exp(3) + 1))]
    acc, loss = task.metrics(logits, y)
    assert acc == 0.5 and loss == pytest.approx(sum(nll) / 2)  # position 1 predicts 2, not 1
    assert float(task.per_example_loss(logits, y)[0]) == pytest.approx(sum(nll) / 2)
    assert task.chance(y) == 0.25 and NextToken.token_accuracy
    by = task.by_context(logits, y)
    assert by["examples"] == [1, 2] and by["count"] == [1, 1] and by["acc"] == [1.0, 0.0]
    assert by["loss"] == pytest.approx(nll)


@needs_stories
def test_stories260k_perplexity_on_the_shipped_stories_is_far_below_its_vocabulary():
    from transformers import AutoModelForCausalLM

    splits = load("lm_text", settings=lm_settings(STORIES))
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    with torch.no_grad():
        logits = model(splits.x_test).logits
    acc, loss = splits.task.metrics(logits, splits.y_test)
    assert math.exp(loss) < 10 < 512 and acc > 0.4  # README: 0.1-1.9 nats on such text; ln 512 = 6.2 at random
