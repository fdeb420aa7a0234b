"""General English text for the transfer study (structured.transfer=[lm:<file>]): the King James Bible, public domain,
from Debian's package bible-kjv (never downloaded at run time), written as one document per chapter (1,189 documents,
about 820k words) separated by blank lines, as data=lm_text reads it. Verse numbers are left out.

    apt-get install -y bible-kjv      # Debian's package registry; as root (or with sudo)
    python experiments/kjv_text.py --out ~/.cache/lottery/texts/kjv.txt

The text is real English that nobody on this team wrote; it is old English, and a web-trained model has likely seen
it, so its perplexity is low: what the transfer study reads is the rise of that perplexity as units go, against
random removal of as many units.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")  # "Ge1:1 In the beginning ..." -> book, chapter, verse


def chapters(lines: list[str]) -> list[str]:
    """One document per chapter: its verses joined by spaces, in order."""
    docs: dict[tuple[str, str], list[str]] = {}
    for line in lines:
        m = VERSE.match(line.strip())
        if m:
            docs.setdefault((m.group(1), m.group(2)), []).append(m.group(4).strip())
    return [" ".join(verses) for verses in docs.values()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the text file to write")
    args = parser.parse_args()
    if shutil.which("bible") is None:
        raise SystemExit("the program `bible` is missing: install Debian's package with `apt-get install -y bible-kjv`")
    printed = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    docs = chapters(printed.splitlines())
    if len(docs) != 1189:
        raise SystemExit(f"`bible` printed {len(docs)} chapters, expected the 1,189 of the King James Bible")
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"{out}: {len(docs)} chapters, {sum(len(d.split()) for d in docs):,} words")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
