"""Sentence splitting for abstracts: used for chunk boundaries and for evidence sentences, so both agree."""

from __future__ import annotations

import re

# A sentence ends at . ! or ? followed by space and a capital, digit or opening bracket, unless the word before the
# full stop is a common abbreviation. Abstracts rarely need more; NLTK's punkt (llama-index's default) agrees on the
# bundled corpus for all but a handful of "et al."-style cases and costs 1.6 s of import on every cold index.
ABBREVIATIONS = {"et al", *"e.g i.e etc vs cf fig figs eq eqs sec no approx resp al dr mr ms st ca viz incl".split()}
BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=\S)")


def split_sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in BOUNDARY.finditer(text):
        following = text[m.end()]
        if not (following.isupper() or following.isdigit() or following in "([\"'"):  # a capital of any script
            continue
        piece = text[start : m.start()].rstrip()
        # the last 20 characters hold any abbreviation; the whole piece made this search quadratic ("a.a.a...")
        last_word = re.search(r"([^\W\d_.][\w.]*)\.$", piece[-20:])
        if last_word and last_word.group(1).lower().rstrip(".") in ABBREVIATIONS:
            continue
        if len(piece) < 2:
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out
