"""Perturbations of supported sentences, for testing the verifier's hard cases.

Each function turns a sentence an evidence sentence states into one it does not (a changed number, a swapped name,
an inserted negation, a flipped finding, a splice of two sources) or into one it still states (a paraphrase). They
drive the scripted "capable model" fake (tests/fakes.py) and generate the labelled file
tests/data/claims-adversarial.jsonl:

    .venv/bin/python -m tests.adversarial > tests/data/claims-adversarial.jsonl

The file is generated once and committed. Each label follows from the perturbation applied; about half the lines
(every kind) were read by a person to check that the labels hold.
"""

from __future__ import annotations

import json
import random
import re
import sys

NUMBER = re.compile(r"(?<![\w.\-])(\d+(?:\.\d+)?)(%| ?times|x\b|[BM]\b)?")
POLARITY = [
    ("outperforms", "underperforms"),
    ("outperform", "underperform"),
    ("improves", "degrades"),
    ("improve", "degrade"),
    ("improving", "degrading"),
    ("increases", "decreases"),
    ("reduces", "increases"),
    ("better", "worse"),
    ("higher", "lower"),
    ("faster", "slower"),
    ("superior", "inferior"),
    ("more", "less"),
]
AUXILIARIES = re.compile(r"\b(is|are|can|does|do|was|were|will|has|have)\b")
VERB_3RD = re.compile(r"\b(we|it|this|that|which)\s+(\w+s)\b", re.I)
PARAPHRASE = [
    (r"^(However|Notably|Moreover|Furthermore|Specifically|In addition|Additionally|To this end), ", ""),
    (r"^In this (paper|work), we ", "The authors "),
    (r"^We (propose|introduce|present) ", r"The paper \1s "),
    (r"^We show that ", "The authors show that "),
    (r"^We find that ", "The study finds that "),
    (r"\b[Oo]ur (method|approach|model|framework)\b", r"the proposed \1"),
    (r"\bwe\b", "the authors"),
    (r"\bachieves\b", "attains"),
    (r"\butilizes?\b", "uses"),
    (r"\bdemonstrate\b", "show"),
    (r"\bnovel\b", "new"),
    (r"\bsignificantly\b", "substantially"),
]


def change_number(sentence: str, rng: random.Random) -> str | None:
    """One number changed (8 -> 80, 88% -> 8%, 70B -> 7B), or None when the sentence states none."""
    found = list(NUMBER.finditer(sentence))
    if not found:
        return None
    m = rng.choice(found)
    value = m.group(1)
    if len(value) > 1 and "." not in value:
        new = value[:-1]  # 88 -> 8, 70 -> 7
    elif "." in value:
        new = value.replace(".", "")  # 3.5 -> 35
    else:
        new = value + "0"  # 8 -> 80
    return sentence[: m.start(1)] + new + sentence[m.end(1) :]


def negate(sentence: str) -> str | None:
    """'X is Y' -> 'X is not Y' (or 'we show' -> 'we do not show'), or None when no verb is found."""
    m = AUXILIARIES.search(sentence)
    if m:
        return sentence[: m.end()] + " not" + sentence[m.end() :]
    m = VERB_3RD.search(sentence)
    if m:
        base = m.group(2)[:-1]
        return sentence[: m.start(2)] + f"does not {base}" + sentence[m.end(2) :]
    return None


def flip_polarity(sentence: str) -> str | None:
    """outperforms -> underperforms, improves -> degrades, ...; None when no such word is there."""
    for a, b in POLARITY:
        pattern = re.compile(rf"\b{a}\b")
        if pattern.search(sentence):
            return pattern.sub(b, sentence, count=1)
    return None


def swap_name(sentence: str, other_names: list[str], rng: random.Random) -> str | None:
    """The first identifier (SnapFusion, GPT-4, LoRA) replaced by a name from another paper."""
    m = re.search(r"\b(?=[\w\-]*(?:\d|[a-z][A-Z]|[A-Z]{2}))[A-Za-z][\w\-]*\w", sentence)
    if not m:
        return None
    choices = [n for n in other_names if n.lower() != m.group(0).lower() and n.lower() not in sentence.lower()]
    return sentence[: m.start()] + rng.choice(choices) + sentence[m.end() :] if choices else None


def splice(first: str, second: str) -> str:
    """The first half of one sentence joined to the second half of another, as one claim."""
    a, b = first.rstrip(".").split(" "), second.rstrip(".").split(" ")
    return " ".join(a[: max(4, len(a) // 2)]) + ", which " + " ".join(b[len(b) // 2 :]) + "."


def paraphrase(sentence: str) -> str:
    """A rewording that states the same thing (discourse words only)."""
    for pattern, repl in PARAPHRASE:
        sentence = re.sub(pattern, repl, sentence)
    return sentence[0].upper() + sentence[1:]


# --- the labelled file ----------------------------------------------------------------------------------------------


def cases(papers: list[dict], rng: random.Random, per_kind: int = 12) -> list[dict]:
    """Labelled sentences with their evidence: each source sentence, a paraphrase, and its perturbations."""
    from rag.sentences import split_sentences

    pool = []
    for p in papers:
        for s in split_sentences(p["abstract"]):
            if 12 <= len(s.split()) <= 40:
                pool.append((p, s))
    rng.shuffle(pool)
    names = sorted({m for _, s in pool for m in re.findall(r"\b[A-Z][a-z]+[A-Z]\w+\b", s)})
    out, counts = [], {}

    def add(kind, label, sentence, evidence, cite, note):
        if counts.get(kind, 0) >= per_kind or not sentence:
            return
        counts[kind] = counts.get(kind, 0) + 1
        out.append(
            {
                "id": f"adv-{kind}-{counts[kind]:02d}",
                "question": "",
                "evidence": [{"n": i + 1, "title": p["title"], "quote": s} for i, (p, s) in enumerate(evidence)],
                "sentence": f"{sentence.rstrip('.')} {cite}.",
                "label": label,
                "expected": "keep" if label == "SUPPORTED" else "drop",
                "note": note,
            }
        )

    for i in range(0, len(pool) - 2, 3):
        (p1, s1), (p2, s2), (p3, s3) = pool[i : i + 3]
        if p1["title"] == p2["title"] or p2["title"] == p3["title"] or p1["title"] == p3["title"]:
            continue
        evidence = [(p1, s1), (p2, s2), (p3, s3)]
        add("verbatim", "SUPPORTED", s1, evidence, "[1]", "verbatim copy of [1]")
        add("paraphrase", "SUPPORTED", paraphrase(s2), evidence, "[2]", "reworded [2], same claim")
        add("number", "UNSUPPORTED", change_number(s1, rng), evidence, "[1]", "one number of [1] changed")
        add("negation", "UNSUPPORTED", negate(s2), evidence, "[2]", "negation inserted into [2]")
        add("polarity", "UNSUPPORTED", flip_polarity(s3), evidence, "[3]", "finding of [3] flipped")
        add("name", "UNSUPPORTED", swap_name(s1, names, rng), evidence, "[1]", "a name of [1] swapped for another")
        add("splice", "UNSUPPORTED", splice(s1, s2), evidence, "[1]", "half of [1] joined to half of [2]")
        add("miscited", "MISCITED", s3, evidence, "[1]", "states [3], cites [1]")
        add("title", "VACUOUS", p2["title"], evidence, "[2]", "the bare title of [2]")
    return out


def main() -> int:
    from rag.index import BUNDLED_SOURCE, load_papers

    merged, *_ = load_papers([BUNDLED_SOURCE], skip_bad=False)
    rows = cases([p.to_dict() for p in merged], random.Random(8))
    for row in rows:
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
