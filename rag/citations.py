"""Verification of generated text: keep only [n] that exist, attribute uncited sentences to the evidence that
supports them, and drop sentences that nothing supports. Works sentence by sentence, so answers can stream."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.evidence import Evidence, content_terms
from rag.sentences import split_sentences

# [1]  [1, 2]  [1-3]  [1–3]  [1; 2]   (adjacent groups like [1][3] are matched one by one)
MARKER = re.compile(r"\[\s*(\d+(?:\s*(?:[-–,;]|and)\s*\d+)*)\s*\]")
NUMBER_TOKEN = re.compile(r"\d+(?:[.,]\d+)*")
MIN_SUPPORT = 0.5  # share of a sentence's content words that one evidence sentence (with its title) must hold
MIN_TERMS = 3  # fewer content words than this is filler ("The answer is:"), not a claim


def parse_markers(text: str) -> list[int]:
    """Every number cited in text, in order, ranges expanded: "[1-3] and [5, 2]" -> [1, 2, 3, 5, 2]."""
    out = []
    for m in MARKER.finditer(text):
        for part in re.split(r"\s*(?:[,;]|and)\s*", m.group(1)):
            if re.search(r"[-–]", part):
                lo, hi = (int(x) for x in re.split(r"\s*[-–]\s*", part))
                out += list(range(lo, hi + 1)) if 0 < hi - lo < 50 else [lo, hi]
            elif part.strip():
                out.append(int(part))
    return out


def strip_markers(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", MARKER.sub("", text)).strip()


def support(sentence: str, ev: Evidence) -> float:
    """How much of the sentence the evidence holds: share of content words, 0 if a number is not in it."""
    terms = content_terms(sentence)
    if not terms:
        return 0.0
    source = ev.quote + " " + ev.title
    for number in NUMBER_TOKEN.findall(sentence):
        if number not in source:
            return 0.0
    return len(terms & content_terms(source)) / len(terms)


@dataclass
class Checked:
    text: str  # the sentence with its citations normalised, or "" when dropped
    cited: list[int]
    dropped: str = ""  # the original sentence, when nothing supports it


def check_sentence(sentence: str, evidence: list[Evidence]) -> Checked:
    """Keep a sentence with valid citations that support it, or attach the best supporting evidence, or drop it."""
    by_n = {ev.n: ev for ev in evidence}
    bare = strip_markers(sentence)
    if len(content_terms(bare)) < MIN_TERMS:
        return Checked("", [], dropped=sentence) if bare else Checked("", [])
    cited = [n for n in dict.fromkeys(parse_markers(sentence)) if n in by_n]
    supported = [n for n in cited if support(bare, by_n[n]) >= MIN_SUPPORT]
    if not supported:
        best = max(evidence, key=lambda ev: support(bare, ev), default=None)
        if best is None or support(bare, best) < MIN_SUPPORT:
            return Checked("", [], dropped=sentence)
        supported = [best.n]
    end = bare[-1] if bare[-1] in ".!?" else ""
    body = bare[:-1] if end else bare
    marks = "".join(f"[{n}]" for n in supported)
    return Checked(f"{body} {marks}{end or '.'}", supported)


class StreamVerifier:
    """Feed LLM text deltas; get back verified sentences as soon as each one is complete.

    The raw text is re-split on every delta (answers are a few hundred tokens) and a sentence counts as complete
    once another one has started after it, unless what follows is a half-written [n] marker that still belongs to it.
    """

    def __init__(self, evidence: list[Evidence]):
        self.evidence = evidence
        self.raw = ""
        self.done = 0  # units of self.raw already checked
        self.kept: list[Checked] = []
        self.dropped: list[str] = []

    def _check(self, sentence: str) -> str:
        result = check_sentence(sentence, self.evidence)
        if result.text and any(k.text == result.text for k in self.kept):
            return ""  # a small model repeating itself
        if result.text:
            self.kept.append(result)
        elif result.dropped:
            self.dropped.append(result.dropped.strip())
        return result.text

    def _take(self, units: list[str]) -> list[str]:
        fresh, self.done = units[self.done :], max(self.done, len(units))
        return [t for t in map(self._check, fresh) if t]

    def feed(self, delta: str) -> list[str]:
        self.raw += delta
        units = text_units(self.raw)
        complete = units
        if not self.raw.endswith("\n"):
            complete = units[:-1]
            if complete and re.fullmatch(r"\[[^\]]*\]?", units[-1]):
                complete = complete[:-1]  # "... gap. [1" : the marker may still belong to the sentence before it
        return self._take(complete)

    def finish(self) -> list[str]:
        return self._take(text_units(self.raw))


def text_units(text: str) -> list[str]:
    """Sentences of generated text: lines (list bullets stripped) split into sentences, citation markers kept with
    the sentence they follow ("... gap.[1] Next" -> "... gap [1]." + "Next")."""
    text = re.sub(r"([.!?])\s*((?:\[[^\]]{1,20}\])+)", r" \2\1", text)
    return [s for line in text.split("\n") for s in split_sentences(line.strip(" -*•\t")) if s.strip()]
