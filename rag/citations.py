"""Verification of generated text: a sentence survives only if the evidence it cites states it.

Checked per sentence, so answers can stream. A sentence is kept when one cited evidence sentence (with its paper's
title, for names) states it:
- numbers are compared as values with their units (8% is not 88%, 7B is not 70B, "1" is not found in "v1.5");
- names (methods, models, datasets, acronyms, words with digits) must occur in the evidence or its title;
- negation and polarity agree (not/no/without; improves/degrades, outperforms/underperforms, ...);
- at most a small budget of content words the evidence does not hold, and none borrowed from another evidence
  sentence (that is a splice of two sources into a new claim); a splice is kept only when it cites both sources and
  each of its clauses is supported by one of them;
- it says something beyond the question and the titles (else it is vacuous) and is not prompt scaffolding.
A sentence citing the wrong source is re-cited to the evidence that states it; an uncited one gets that citation.
Citation markers the evidence does not have are removed; odd markers ([1-2-3], [0], [], [99]) never raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.evidence import Evidence, content_terms, content_words, stems
from rag.sentences import split_sentences

# [1]  [1, 2]  [1-3]  [1–3]  [1; 2]  [1 and 2]   (adjacent groups like [1][3] are matched one by one)
MARKER = re.compile(r"\[\s*(\d+(?:\s*(?:[-–,;]|and)\s*\d+)*)\s*\]")
EMPTY_MARKER = re.compile(r"\[\s*(?:n|N|\d*\s*(?:[-–,;]\s*)*)\]")

# Prompt and template text a small model echoes instead of answering.
SCAFFOLD = re.compile(
    r"^\W*(question|context|evidence|earlier question|sources?|references?|instructions?|closest papers)\s*:"
    r"|\b(context number|numbered context|the context (says|states|provided|given)|like \[1\]|\[n\]|"
    r"could not find this in the indexed papers|answer in one sentence|as an ai)\b",
    re.I,
)
LEAD_IN = re.compile(
    r"^\W*(answer\s*:|(based on|according to|from) (the )?(provided |given )?(context|evidence|abstracts?|"
    r"papers?|sources?)( provided| given| above)?\s*,?)\s*",
    re.I,
)

NEGATION = re.compile(r"\b(not|no|never|without|none|neither|nor|cannot|unable|fails?|failed|lacks?|\w+n't)\b", re.I)
# Pairs of opposite findings (stems): a sentence saying one where its evidence says only the other is flipped.
OPPOSITES = [
    ({"improv", "enhanc", "boost"}, {"degrad", "hurt", "harm", "wors", "impair"}),
    ({"outperform", "surpass", "beat", "exceed"}, {"underperform", "trail", "lag"}),
    ({"increas", "rais", "grow"}, {"decreas", "reduc", "lower", "drop", "shrink"}),
    ({"higher", "larger", "bigger", "greater"}, {"lower", "smaller", "fewer"}),
    ({"better", "superior", "stronger"}, {"wors", "inferior", "weaker"}),
    ({"faster", "quicker"}, {"slower"}),
    ({"more"}, {"less", "fewer"}),
    ({"success", "succeed", "effect"}, {"fail", "failur", "ineffect"}),
    ({"help", "benefit"}, {"hurt", "harm"}),
    ({"consist"}, {"inconsist"}),
    ({"robust"}, {"brittl", "fragil"}),
]
# Words a paraphrase may add without stating anything new.
FREE = set(
    stems(
        "paper papers authors author work study studies find finds found show shows showed shown demonstrate "
        "demonstrates demonstrated report reports reported present presents presented propose proposes proposed "
        "introduce introduces introduced describe describes described article abstract researchers research "
        "specifically overall addition additionally namely called named thus therefore moreover furthermore "
        "able achieve achieves achieved result results according".split()
    )
)
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "hundred": "100", "thousand": "1000"}
NUMBER = re.compile(
    r"(?<![\w.\-–/])(\d+(?:,\d{3})*(?:\.\d+)?)(?:\s*(%|percent\b|×|x\b|times\b|[kKmMbBtT]\b))?(?![\w.\-–/]*\w)"
    r"|(?<![\w\-])(" + "|".join(NUMBER_WORDS) + r")(?![\w\-])",
    re.I,
)
# Identifiers: words with a digit or an inner capital or all capitals (GPT-4, Llama2-70B, SnapFusion, LoRA, BERT).
# The look-ahead sees at most 60 characters (an identifier's digit or capitals come sooner): unbounded, it rescanned
# the rest of "a.a.a.a..." from every letter (quadratic).
NAME = re.compile(
    r"(?<![\w\-])(?=[A-Za-z0-9])(?=[\w\-.]{0,60}?(?:\d|[a-z][A-Z]|[A-Z]{2}))[A-Za-z0-9][\w\-.]*[\w]|(?<=\s)[A-Z][a-z]+"
)
QUOTES = "\"'“”"
UNIT_ALIASES = {"percent": "%", "×": "x", "times": "x"}
# Clause boundaries with a subject of their own after them (", which ..." refers back, so it does not split).
# No leading \s* (the clauses are stripped instead): tried at every space of a long run, it made a split quadratic.
CLAUSE = re.compile(r"(?:;|,\s*(?:and|but|while|whereas|although)\b|\b(?:but|whereas|while)\b)\s*", re.I)

MIN_TERMS = 3  # fewer content words than this is filler ("The answer is:"), not a claim
NEW_WORDS = 1  # content words the evidence does not hold that a sentence may add, plus one per 8 words
TITLE_SHARE = 0.34  # most of a claim must come from the abstract, not from its title


def parse_markers(text: str) -> list[int]:
    """Every number cited in text, in order, ranges expanded: "[1-3] and [5, 2]" -> [1, 2, 3, 5, 2]."""
    out = []
    for m in MARKER.finditer(text):
        for part in re.split(r"\s*(?:[,;]|and)\s*", m.group(1)):
            numbers = [int(x) for x in re.findall(r"\d+", part)]
            if len(numbers) == 2 and 0 < numbers[1] - numbers[0] < 50:
                out += list(range(numbers[0], numbers[1] + 1))
            else:
                out += numbers
    return out


def strip_markers(text: str) -> str:
    text = EMPTY_MARKER.sub("", MARKER.sub("", text))
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(text.split())).strip()


def terms_of(text: str) -> set[str]:
    """Content terms with number words as digits ("eight steps" and "8 steps" say the same)."""
    return content_terms(
        re.sub(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", lambda m: NUMBER_WORDS[m.group(1)], text.lower())
    )


def numbers(text: str) -> set[tuple[str, str]]:
    """(value, unit) pairs stated in text: "88%" -> ("88", "%"), "70B" -> ("70", "b"), "ten" -> ("10", "")."""
    out = set()
    for m in NUMBER.finditer(text.replace("\\%", "%")):  # abstracts often keep LaTeX's "20\%"
        if m.group(3):
            out.add((NUMBER_WORDS[m.group(3).lower()], ""))
            continue
        value = m.group(1).replace(",", "")
        value = value.rstrip("0").rstrip(".") if "." in value else value
        unit = (m.group(2) or "").lower()
        out.add((value, UNIT_ALIASES.get(unit, unit)))
    return out


def counted(text: str) -> set[tuple[str, str]]:
    """(value, the stemmed word after it): what each number counts ("8 denoising steps" -> ("8", "denois"))."""
    out = set()
    text = text.replace("\\%", "%")
    for m in NUMBER.finditer(text):
        value = (m.group(1) or NUMBER_WORDS.get((m.group(3) or "").lower(), "")).replace(",", "")
        after = content_words(text[m.end() : m.end() + 40])
        if value and after and not m.group(2):
            out.add((value, stems(after[:1])[0]))
    return out


def numbers_stated(sentence: str, source: str) -> bool:
    """Every number of the sentence is in the source with the same unit (a bare number matches any unit), and
    counts the same thing: "50 denoising steps" is not stated by "8 denoising steps ... 50 steps"."""
    have = numbers(source)
    values = {v for v, _ in have}
    if not all((v, u) in have if u else v in values for v, u in numbers(sentence)):
        return False
    source_counts = counted(source)
    counted_words = {w for _, w in source_counts}
    return all(pair in source_counts for pair in counted(sentence) if pair[1] in counted_words)


def core_and_end(claim: str) -> tuple[str, str]:
    """The claim without the quotes and spaces around it and its final punctuation, and its end mark: "!" or "?" if
    it ends with one, else ".". (A loop: the regex for this, a lazy core before two optional runs, backtracked
    cubically on a long run of dots.)"""
    start, stop, mark = 0, len(claim), ""
    while start < stop and (claim[start].isspace() or claim[start] in QUOTES):
        start += 1
    while stop > start:
        ch = claim[stop - 1]
        if not (ch.isspace() or ch in QUOTES or ch == "." or (ch in "!?" and not mark)):
            break
        mark = mark or (ch if ch in "!?" else "")
        stop -= 1
    return claim[start:stop], mark or "."


def names(text: str) -> set[str]:
    """Identifiers and capitalised words after the first word, lower-cased."""
    return {m.group(0).lower().rstrip(".") for m in NAME.finditer(text)}


def names_stated(sentence: str, source: str) -> bool:
    low = source.lower()
    words = set(re.findall(r"[\w\-.]+", low))
    return all(n in words or n in low for n in names(sentence))


def negations(text: str) -> int:
    return len(NEGATION.findall(text))


def clauses(text: str) -> list[str]:
    return [c for c in map(str.strip, CLAUSE.split(text)) if c and len(content_terms(c)) >= 2]


def polarity_agrees(sentence: str, source: str) -> bool:
    """No finding flipped: negation matches clause by clause, and no opposite word replaces the source's."""
    s_terms, e_terms = content_terms(sentence), content_terms(source)
    raw_s, raw_e = set(stems(re.findall(r"\w+", sentence.lower()))), set(stems(re.findall(r"\w+", source.lower())))
    for a, b in OPPOSITES:
        if (raw_s & a and not raw_e & a and raw_e & b) or (raw_s & b and not raw_e & b and raw_e & a):
            return False
    if negations(sentence) == negations(source):
        return True
    # the counts differ: compare each clause of the sentence with the clause of the source it comes from
    source_clauses = clauses(source) or [source]
    for part in clauses(sentence) or [sentence]:
        terms = content_terms(part)
        best = max(source_clauses, key=lambda c: len(terms & content_terms(c)))
        if terms & content_terms(best) and negations(part) != negations(best):
            return False
    return bool(s_terms & e_terms)


@dataclass
class Checked:
    text: str  # the sentence with its citations normalised, or "" when dropped
    cited: list[int]
    dropped: str = ""  # the original sentence, when it was dropped
    reason: str = ""  # why it was dropped, or "recited" when its citation was moved
    supporting: list[Evidence] = field(default_factory=list)  # the evidence sentences that state it


class Verifier:
    """Checks sentences against one answer's evidence; `question` lets it tell a restated question (vacuous)."""

    def __init__(self, evidence: list[Evidence], question: str = ""):
        self.evidence = evidence
        self.by_n: dict[int, list[Evidence]] = {}
        for ev in evidence:
            self.by_n.setdefault(ev.n, []).append(ev)
        self.question_terms = content_terms(question)
        self.title_terms = set().union(*(content_terms(ev.title) for ev in evidence)) if evidence else set()
        self._terms = {id(ev): (terms_of(ev.quote), terms_of(ev.title)) for ev in evidence}

    def why_not(self, claim: str, ev: Evidence) -> str:
        """'' when ev (one evidence sentence, with its title) states the claim, else the first reason it does not."""
        quote_terms, title_terms = self._terms[id(ev)]
        source = f"{ev.quote} ({ev.title})"
        if not numbers_stated(claim, source):
            return "number"
        if not names_stated(claim, source):
            return "name"
        terms = terms_of(claim) - FREE
        if not terms:
            return "vacuous"
        new = terms - quote_terms - title_terms
        if len(new) > NEW_WORDS + len(terms) // 8:
            return "unsupported"
        others = (self._terms[id(o)][0] for o in self.evidence if o.quote != ev.quote)
        if new and any(new & other for other in others):
            return "splice"
        if len((terms & title_terms) - quote_terms) > TITLE_SHARE * len(terms):
            return "title"
        if not polarity_agrees(claim, ev.quote):
            return "polarity"
        return ""

    def vacuous(self, claim: str, supporting: list[Evidence]) -> bool:
        """Nothing beyond the question and the titles: no number, fewer than two words the evidence adds."""
        terms = content_terms(claim) - FREE
        informative = terms - self.question_terms - self.title_terms
        quoted = set().union(*(self._terms[id(ev)][0] for ev in supporting))
        stated = set().union(*(numbers(ev.quote) for ev in supporting))
        return len(informative & quoted) < 2 and not numbers(claim) & stated

    def supporting(self, claim: str, candidates: list[Evidence]) -> tuple[list[Evidence], str]:
        """The candidates that state the claim, or ([], the reason the closest one does not)."""
        reasons = [(ev, self.why_not(claim, ev)) for ev in candidates]
        good = [ev for ev, r in reasons if not r]
        if good:
            return good, ""
        terms = terms_of(claim)
        closest = max(reasons, key=lambda er: len(terms & self._terms[id(er[0])][0]), default=(None, "no evidence"))
        return [], closest[1]

    def spliced(self, claim: str, cited: list[int]) -> list[Evidence]:
        """A claim joining two cited sources: kept when every clause is stated by one of them."""
        parts = clauses(claim)
        if len(parts) < 2 or len(cited) < 2:
            return []
        pool = [ev for n in cited for ev in self.by_n[n]]
        used = []
        for part in parts:
            good, _ = self.supporting(part, pool)
            if not good:
                return []
            used.append(good[0])
        return used if len({ev.n for ev in used}) >= 2 else []

    def check(self, sentence: str) -> Checked:
        bare = strip_markers(sentence)
        if not bare:
            return Checked("", [])
        if SCAFFOLD.search(bare):
            return Checked("", [], dropped=sentence, reason="scaffold")
        claim, end = core_and_end(LEAD_IN.sub("", bare))
        if len(content_terms(claim)) < MIN_TERMS:
            return Checked("", [], dropped=sentence, reason="vacuous")
        cited = [n for n in dict.fromkeys(parse_markers(sentence)) if n in self.by_n]
        supporting, reason = self.supporting(claim, [ev for n in cited for ev in self.by_n[n]])
        recited = False
        if not supporting:
            supporting = self.spliced(claim, cited)
        if not supporting:
            others = [ev for ev in self.evidence if ev.n not in cited]
            supporting, other_reason = self.supporting(claim, others)
            recited = bool(supporting and cited)
            reason = reason if cited else other_reason
        if not supporting:
            return Checked("", [], dropped=sentence, reason=reason)
        if self.vacuous(claim, supporting):
            return Checked("", [], dropped=sentence, reason="vacuous")
        numbers_used = list(dict.fromkeys(ev.n for ev in supporting))
        if len(numbers_used) > 1 and cited:
            numbers_used = [n for n in numbers_used if n in cited] or numbers_used[:1]
        elif len(numbers_used) > 1:
            numbers_used = numbers_used[:1]
        marks = "".join(f"[{n}]" for n in numbers_used)
        return Checked(
            f"{claim[0].upper()}{claim[1:]} {marks}{end}",
            numbers_used,
            reason="recited" if recited else "",
            supporting=[ev for ev in supporting if ev.n in numbers_used],
        )


def check_sentence(sentence: str, evidence: list[Evidence], question: str = "") -> Checked:
    """Keep a sentence the evidence it cites states (re-cited when another evidence states it), else drop it."""
    return Verifier(evidence, question).check(sentence)


class StreamVerifier:
    """Feed LLM text deltas; get back verified sentences as soon as each one is complete.

    A sentence counts as complete once another one has started after it, unless what follows is a half-written [n]
    marker that still belongs to it. `skip(sentence)` (optional) drops kept sentences that repeat what the answer
    already says (the opening).
    """

    def __init__(self, evidence: list[Evidence], question: str = "", skip=None):
        self.verifier = Verifier(evidence, question)
        self.skip = skip
        self.raw = ""
        self.done = 0  # units of self.raw already checked
        self.kept: list[Checked] = []
        self.dropped: list[Checked] = []
        self.repeated = 0

    def _check(self, sentence: str) -> str:
        result = self.verifier.check(sentence)
        if not result.text:
            if result.dropped:
                self.dropped.append(result)
            return ""
        if any(k.text == result.text for k in self.kept) or (self.skip and self.skip(result)):
            self.repeated += 1
            return ""
        self.kept.append(result)
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
    text = re.sub(r"([.!?])\s*((?:\[[^\]]{0,20}\])+)", r" \2\1", text)
    return [s for line in text.split("\n") for s in split_sentences(line.strip(" -*•\t")) if s.strip()]
