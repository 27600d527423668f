"""What "How does <name> work?" answers open with: for papers of the index whose title starts with a name ("DR-Tune:
…"), asks "How does DR-Tune work?" (evidence-only backend) and prints whether the named paper is cited first and the
opening, to be read by hand: does it say how the method works, or quote a result, an evaluation or a code link?

    .venv/bin/python bench/how_questions.py [--index index] [--seed 0] [--n 30]

The README's figures (16 of 30 openings quoted a result, an evaluation or a code link before fact answers weighed
sentence roles, 7 after; "Sentence roles") are this script's seed 0 over the bundled corpus, read by hand.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMED_TITLE = re.compile(r"^[A-Z][\w-]*[A-Z][\w-]*:")  # "DR-Tune: …", "MotionClone: …"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", default="index")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    from rag.assistant import Assistant
    from rag.settings import Settings

    assistant = Assistant(Settings(index_dir=Path(args.index), llm_backend="none"))
    named = [p for p in assistant.searcher.papers.values() if NAMED_TITLE.match(p.title)]
    first = 0
    for paper in random.Random(args.seed).sample(named, min(args.n, len(named))):
        answer = assistant.ask(f"How does {paper.title.split(':')[0]} work?")
        cited_first = bool(answer.citations) and answer.citations[0].title == paper.title
        first += cited_first
        print(f"{'OK' if cited_first else '--'} {answer.question} | {answer.opening or answer.text.splitlines()[0]}")
    print(f"the named paper cited first: {first} of {min(args.n, len(named))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
