"""Verification of generated text: a sentence survives only if the evidence it cites states it.

Checked per sentence, in order, so answers can stream. A sentence is kept when one cited paper (its quoted
sentences together, with its title) states it; what it means is compared, not only its words:
- numbers are compared as values with their units (8% is not 88%, 7B is not 70B, "1" is not found in "v1.5"), a bare
  number must count what the quote's counts ("ten robustness checks" is not "ten quality dimensions"), a hedge the
  quote puts on a number stays ("up to 0.59", "approximately 20%"; a range end is no average), "absolute" is not
  "relative", and "A and B by 8.4% and 9.7%, respectively" stays paired;
- names (methods, models, datasets, acronyms, words with digits) must occur in the evidence or its title;
- negation is compared by what it governs (not/no/without/absence ...), and no opposite word replaces the quote's;
- scope words (all/every/each, only, first, completely, exactly, significantly, consistently), a cause ("because",
  "due to") or a comparison ("outperforms", "than") only when the quote has one of the same kind;
- at most a small budget of content words the evidence does not hold, a word counting as held when a quote word is
  a paraphrase of it (word vectors of the bundled embedding model), and none borrowed from another paper's quote
  (a splice); a sentence citing two papers is kept when each clause is stated by one of them ("Both papers ..."
  needs each to state it);
- a quoted title names a paper; the title's words are the paper's own claim when the sentence is about that paper;
  a bare title, the question restated or prompt scaffolding is dropped;
- "It/This method ..." is about the paper the previous sentence cited: cited to another paper, it is re-cited or
  dropped.
A sentence citing the wrong source is re-cited to the evidence that states it; an uncited one gets that citation.
Citation markers the evidence does not have are removed; odd markers ([1-2-3], [0], [], [99]) never raise.
Optionally (`judge`, RAG_VERIFY_WITH_LLM) the answering model is asked about each sentence the rules keep.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

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

NEGATION = re.compile(
    r"(?<![\w\-])(not(?! only)|no|never|without|absence|absent|none|neither|nor|cannot|unable|fails?|failed|"
    r"lacks?|\w+n't)(?![\w\-])",
    re.I,
)
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
# Smaller joins, tried for a sentence citing two papers when clauses alone do not separate them (no leading \s*:
# the parts are stripped instead; tried at every space of a long run, it made a split quadratic).
PHRASE = re.compile(r"(?:,|;|\band\b|\bwhile\b|\bwhereas\b|\bbut\b)\s*", re.I)
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


def number_text(text: str) -> str:
    """Text with numbers as they are meant: LaTeX left in abstracts ("20\\%" is 20%, "\\sim0.01%" or "sim0.01%" once
    the backslash is lost is ~0.01%), and "one" as a pronoun ("one paper", "one of") is no number."""
    text = re.sub(r"\b([Oo])ne (?=(?:of|paper|study|work|approach|method|line|another|such|way)\b)", r"\1 ", text)
    return re.sub(r"\\?\b(?:sim|approx)\s*(?=\d)", "~", text.replace("\\%", "%"))


def numbers(text: str) -> set[tuple[str, str]]:
    """(value, unit) pairs stated in text: "88%" -> ("88", "%"), "70B" -> ("70", "b"), "ten" -> ("10", "")."""
    out = set()
    for m in NUMBER.finditer(number_text(text)):  # abstracts often keep LaTeX's "20\%" and "\sim 0.01%"
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
    text = number_text(text)
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
    if negation_flipped(sentence, source):
        return False
    return bool(s_terms & e_terms)


# --- meaning: what a paraphrase may not change ----------------------------------------------------------------------
# Each rule below is a kind of error the labelled capable-model sentences make (tests/data/claims-synthesis-dev.jsonl,
# read while writing them); each is written for the kind, never for one sentence.

# Words that widen a claim's scope: a sentence may use one only when its source has a word of the same group.
SCOPE = [
    ("universal", re.compile(r"\b(all|every|each|always|any|entire(ly)?|whole|universal(ly)?)\b", re.I)),
    ("only", re.compile(r"\b(only|solely|just|alone|exclusively|nothing (more|else) than)\b", re.I)),
    ("first", re.compile(r"\b(first|pioneer\w*|never before)\b", re.I)),
    (
        "complete",
        re.compile(r"\b(complete(ly)?|entire(ly)?|full(y)?|total(ly)?|eliminat\w+|at all|perfect(ly)?)\b", re.I),
    ),
    ("exact", re.compile(r"\b(exact(ly)?|precise(ly)?)\b", re.I)),
    (
        "strength",
        re.compile(
            r"\b(significant(ly)?|substantial(ly)?|great(ly)?|dramatic(ally)?|considerabl[ey]|"
            r"marked(ly)?|remarkabl[ey]|large(ly)?|huge|strong(ly)?|much|far|notabl[ey]|vast(ly)?)\b",
            re.I,
        ),
    ),
    ("consistent", re.compile(r"\b(consistent(ly)?|always|reliabl[ey]|invariabl[ey])\b", re.I)),
]
# A cause or a comparison the sentence asserts needs a source that asserts one.
CAUSE = re.compile(
    r"\b(because|due to|thanks to|as a result|results? in|leads? to|led to|since|so that|therefore|"
    r"hence|consequently|comes? from|owing to|caus(e|es|ed)|explains?)\b|,\s*so\b",
    re.I,
)
SOURCE_CAUSE = re.compile(  # a source states a cause with any of the sentence's markers, or these
    CAUSE.pattern + r"|\b(due|thanks|result\w*|lead\w*|so|thus|caus\w+|owing|thereby|through|via|enabl\w+|"
    r"allow\w*|by \w+ing|attribut\w+|explain\w*|driv\w+|stem\w*)\b",
    re.I,
)
COMPARE = re.compile(
    r"\b(outperform\w*|surpass\w*|beat\w*|exceed\w*|better|worse|superior|inferior|than|"
    r"underperform\w*|over (?:the |a )?(?:baseline|zero|few|standard|full|existing|prior|previous)"
    r"|compared (?:to|with)|relative to|versus|vs\.?|match(es|ed)?|rival\w*|on par)\b",
    re.I,
)
SOURCE_COMPARE = re.compile(
    r"\b(outperform\w*|surpass\w*|beat\w*|exceed\w*|better|worse|superior|inferior|than|"
    r"underperform\w*|over|compar\w+|relative|versus|vs\.?|match\w*|rival\w*|par|improv\w*|"
    r"gain\w*|defeat\w*|win\w*|advantage|state[- ]of[- ]the[- ]art|sota|exceed\w*)\b",
    re.I,
)
# Hedges a source attaches to a number: a sentence using the number must keep one of the same direction.
HEDGES = {
    "at most": r"up to|as (?:little|few|much|many) as|at most|within|less than|fewer than|under|below|no more than|<|≤",
    "at least": r"over|more than|at least|above|exceeding|beyond|upwards of|\+|>|≥",
    "about": r"approximately|approx\.?|about|around|nearly|almost|roughly|close to|some|~|sim|\\sim|≈",
}
HEDGE_BEFORE = {k: re.compile(r"(?:" + v + r")\s*(?:the |a |an )?$", re.I) for k, v in HEDGES.items()}
WORD_HEDGE = re.compile(r"\b(almost|nearly|partially|partly|largely|mostly|somewhat|often|may|might|could)\b", re.I)
BASIS = re.compile(r"\b(absolute|relative)\b", re.I)


def hedge_before(text: str, start: int) -> str:
    """The hedge group ("at most", "at least", "about") right before position start, or ''."""
    before = text[max(0, start - 25) : start]
    return next((k for k, rx in HEDGE_BEFORE.items() if rx.search(before)), "")


def number_spans(text: str) -> list[tuple[str, int, int]]:
    """(value, start, end) of each number, values normalised as in `numbers`."""
    out = []
    for m in NUMBER.finditer(text):  # text already number_text: positions are the caller's
        if m.group(3):
            out.append((NUMBER_WORDS[m.group(3).lower()], m.start(), m.end()))
        else:
            v = m.group(1).replace(",", "")
            out.append((v.rstrip("0").rstrip(".") if "." in v else v, m.start(), m.end()))
    return out


def scope_added(claim: str, source: str) -> str:
    """A scope word (all, only, first, completely, exactly, significantly, consistently) the source has no word of
    the same group for: the sentence claims more than the source."""
    for group, rx in SCOPE:
        if rx.search(claim) and not rx.search(source):
            # "each of the two" style counting words are not scope when the source gives that count
            return group
    return ""


def hedge_dropped(claim: str, source: str) -> bool:
    """The source hedges a number ("up to 0.59", "approximately 20%", "as little as 3 hours") and the sentence uses
    the number with no hedge of that direction; or the sentence bounds a number ("over 30%") its source states
    exactly."""
    src = [(v, hedge_before(source, a)) for v, a, _ in number_spans(source)]
    for low, high in range_ends(source):  # "by 2.1% to 7.4%": up to 7.4%, at least 2.1%
        src += [(high, "at most"), (low, "at least")]
    for v, a, _ in number_spans(claim):
        hedges = {h for sv, h in src if sv == v}
        if not hedges:
            continue
        mine = hedge_before(claim, a)
        if "" in hedges:
            if mine in ("at most", "at least") and not hedges & {mine}:
                return True
            continue
        if mine not in hedges and not (mine == "about" and hedges):
            return True
    # "almost as well as" -> "as well as": a hedge word of the source before words the sentence repeats unhedged
    for m in WORD_HEDGE.finditer(source):
        nxt = content_words(source[m.end() : m.end() + 30])[:1]
        if nxt and re.search(r"\b" + re.escape(nxt[0]) + r"\b", claim, re.I) and not WORD_HEDGE.search(claim):
            if m.group(1).lower() in ("almost", "nearly", "partially", "partly"):
                return True
    return False


def basis_changed(claim: str, source: str) -> bool:
    """ "6% relative" where the source says "6% absolute" (or the reverse)."""
    a, b = {m.lower() for m in BASIS.findall(claim)}, {m.lower() for m in BASIS.findall(source)}
    return bool(a and b and not a & b)


def range_ends(source: str) -> list[tuple[str, str]]:
    """(low, high) of each range the source gives: "2.28% to 6.48%", "from 17.7% to 78.9%", "3-5"."""
    found = re.finditer(r"(\d[\d.,]*)\s*(?:%|\\%)?\s*(?:to|-|–)\s*(\d[\d.,]*)", source)
    return [(m.group(1).rstrip(".,"), m.group(2).rstrip(".,")) for m in found]


def range_misread(claim: str, source: str) -> bool:
    """A number that is one end of a range ("by 2.28% to 6.48%", "from 17.7% to 78.9%") used alone, unhedged, as if
    it were the whole result."""
    ends = {v for pair in range_ends(source) for v in pair}
    if not ends:
        return False
    spans = number_spans(claim)
    used = [v for v, _, _ in spans]
    for v, a, _ in spans:
        if v in ends and not (ends - {v}) & set(used) and not hedge_before(claim, a):
            if not re.search(r"\b(from|between|range)\b", claim[max(0, a - 40) : a], re.I):
                return True
    return False


def counts_differ(claim: str, source: str) -> bool:
    """A number counting something else in the source ("ten robustness checks" read as "ten quality dimensions"):
    the words after the sentence's number share nothing with the words around that number in the source."""
    src = number_spans(source)
    for v, _, b in number_spans(claim):
        if not re.fullmatch(r"\d+", claim[_:b].strip().replace(",", "")) and not claim[_:b].isalpha():
            continue  # a unit (%, x, B) already says what the number measures; counts are bare
        after = set(stems(content_words(claim[b : b + 40])[:3]))
        if not after:
            continue
        places = [(a2, b2) for sv, a2, b2 in src if sv == v]
        if not places:
            continue
        around = set()
        for a2, b2 in places:  # what a number counts follows it; only a number ending its clause looks back
            following = re.split(r"[,;:()]", source[b2 : b2 + 50])[0]
            around |= set(stems(content_words(following)[:3])) or set(
                stems(content_words(source[max(0, a2 - 40) : a2])[-3:])
            )
        if not after & around:
            return True
    return False


def respectively_swapped(claim: str, source: str) -> bool:
    """ "outperforms A and B by 8.4% and 9.7%, respectively": the sentence pairs a number with the other item."""
    part = r"(?:[^.;]|\.(?=\d))"  # a sentence's text; "3.1" does not end it
    for m in re.finditer(rf"({part}*?)\bby ({part}*?)\brespectively", source):
        values = [v for v, _, _ in number_spans(m.group(2))]
        items = re.split(r"\s+and\s+|,\s*", m.group(1))
        items = [re.split(r"\b(?:outperform\w*|than|over|beat\w*|surpass\w*|versus|vs\.?)\b", it)[-1] for it in items]
        items = items[-len(values) :] if len(values) >= 2 and len(items) >= len(values) else []
        for i, v in enumerate(values if items else []):
            if v not in {x for x, _, _ in number_spans(claim)}:
                continue
            own = names(items[i])
            others = set().union(*(names(it) for j, it in enumerate(items) if j != i)) - own
            if any(n in claim.lower() for n in others) and not any(n in claim.lower() for n in own):
                return True
    return False


def negation_scopes(text: str, reach: int) -> tuple[list[set[str]], set[str]]:
    """The stemmed content words each negation governs (up to `reach` of them, within its clause), and the words
    stated without one."""
    scopes, plain = [], set()
    text = re.sub(r"\bnot only\b", "only", text, flags=re.I)  # "not only A but also B" states both
    for part in re.split(r"[,;:()]|[.!?]\s|\b(?:but|while|whereas|although)\b", text):
        left = 0
        for w in re.findall(r"[\w\-']+", part):
            if NEGATION.fullmatch(w):
                scopes.append(set())
                left = reach
                continue
            c = stems(content_words(w))
            if c and left:
                scopes[-1].update(c)
                left -= 1
            elif c:
                plain.update(c)
    return scopes, plain


def negation_flipped(claim: str, source: str) -> bool:
    """A negation's scope (the next content words in its clause) is compared: the sentence negates what the source
    states and never negates ("LoRA does not reduce ..."), or states what the source only ever negates ("minimal
    human intervention" stays; "no human intervention" is added). A sentence's negation is matched to the source's
    by a shared word, so "without auxiliary data" paraphrases "without the need for auxiliary data"."""
    claim_scopes, claim_plain = negation_scopes(claim, 3)
    source_scopes, source_plain = negation_scopes(source, 6)
    source_negated = set().union(*source_scopes) if source_scopes else set()
    for scope in claim_scopes:
        if scope and not scope & source_negated and scope & source_plain:
            return True
    claim_negated = set().union(*negation_scopes(claim, 6)[0]) if claim_scopes else set()
    for scope in negation_scopes(source, 3)[0]:
        only_negated = scope - source_plain
        if only_negated & claim_plain and not scope & claim_negated:
            return True
    return False


def meaning_conflict(claim: str, source: str) -> str:
    """'' when nothing the sentence asserts beyond its words changes the source's meaning, else the kind of change."""
    claim, source = number_text(claim), number_text(source)
    if basis_changed(claim, source) or range_misread(claim, source) or respectively_swapped(claim, source):
        return "statistic"
    if counts_differ(claim, source):
        return "count"
    if hedge_dropped(claim, source):
        return "hedge"
    group = scope_added(claim, source)
    if group:
        return f"scope:{group}"
    if CAUSE.search(claim) and not SOURCE_CAUSE.search(source):
        return "cause"
    if COMPARE.search(claim) and not SOURCE_COMPARE.search(source):
        return "comparison"
    return ""


@dataclass
class Checked:
    text: str  # the sentence with its citations normalised, or "" when dropped
    cited: list[int]
    dropped: str = ""  # the original sentence, when it was dropped
    reason: str = ""  # why it was dropped, or "recited" when its citation was moved
    supporting: list[Evidence] = field(default_factory=list)  # the evidence sentences that state it


# "It ...", "Its ...", "This method ...": the paper the previous sentence cited, not a new subject.
ANAPHOR = re.compile(r"^\W*(it|its|they|their|this|these|that|such)\b", re.I)
# "Both papers ...", "Each of these works ...": the whole claim is made of every cited paper.
EVERY_PAPER = re.compile(
    r"\b(both|all|each)\b(?:\s+of)?(?:\s+(?:the|these|those|two|three))?\s+(papers|works|studies|methods|approaches)\b",
    re.I,
)
QUOTED = re.compile(r"['‘\"“]([^'’\"”]{12,}?)['’\"”]")
ALIGN = 0.62  # cosine of two words' vectors above which one is a paraphrase of the other (tuned, see README)


@lru_cache(maxsize=1)
def _embedder():
    try:
        from rag.models import load_embedder

        return load_embedder("bundled")
    except Exception:  # no bundled model: word alignment is off, the rules still hold
        return None


_VECTORS: dict[str, object] = {}


def word_vectors(words: list[str]) -> dict:
    """Unit vectors of words from the bundled embedding model (cached); {} when the model is not there."""
    missing = [w for w in dict.fromkeys(words) if w not in _VECTORS]
    if missing:
        model = _embedder()
        if model is None:
            return {}
        import numpy as np

        vectors = np.asarray(model.encode(missing), dtype="float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
        _VECTORS.update(zip(missing, vectors))
    return {w: _VECTORS[w] for w in words if w in _VECTORS}


def unaligned(new: dict[str, str], source_words: set[str], threshold: float) -> set[str]:
    """The new words (stem -> word) no source word is a paraphrase of (cosine >= threshold)."""
    if not new or not source_words or threshold >= 1:
        return set(new)
    vectors = word_vectors([*new.values(), *source_words])
    if not vectors:
        return set(new)
    import numpy as np

    pool = [vectors[w] for w in source_words if w in vectors]
    if not pool:
        return set(new)
    matrix = np.stack(pool)
    return {s for s, w in new.items() if w not in vectors or float((matrix @ vectors[w]).max()) < threshold}


@dataclass
class Paper:
    n: int
    evidence: list[Evidence]
    quote: str  # the paper's quoted sentences joined: two quotes of one paper may be combined
    title: str
    quote_terms: set[str]
    title_terms: set[str]
    words: set[str]  # content words (not stemmed) of the quotes and title, for alignment


class Verifier:
    """Checks sentences against one answer's evidence; `question` lets it tell a restated question (vacuous).

    Sentences are checked in order: "It ..."/"This method ..." is about the paper the previous sentence cited.
    `align` is the word-vector cosine above which a sentence's word counts as a paraphrase of a source word (1 turns
    the alignment off)."""

    def __init__(self, evidence: list[Evidence], question: str = "", align: float = ALIGN):
        self.evidence = evidence
        self.align = align
        self.by_n: dict[int, list[Evidence]] = {}
        for ev in evidence:
            self.by_n.setdefault(ev.n, []).append(ev)
        self.papers = {}
        for n, evs in self.by_n.items():
            quote = " ".join(dict.fromkeys(ev.quote for ev in evs))
            title = evs[0].title
            self.papers[n] = Paper(
                n, evs, quote, title, terms_of(quote), terms_of(title), set(content_words(f"{quote} {title}"))
            )
        self.question_terms = terms_of(question)
        self.question_names = names(question)
        self.title_terms = set().union(*(p.title_terms for p in self.papers.values())) if evidence else set()
        self.previous: list[int] = []  # the papers the previous sentence cited

    def why_not(self, claim: str, n: int) -> str:
        """'' when paper n's quotes (with its title) state the claim, else the first reason they do not."""
        paper = self.papers[n]
        source = f"{paper.quote} ({paper.title})"
        if not numbers_stated(claim, source):
            return "number"
        if not names_stated(claim, source):
            return "name"
        words = {stems([w])[0]: w for w in content_words(claim)}
        terms = terms_of(claim) - FREE
        if not terms:
            return "vacuous"
        new = terms - paper.quote_terms - paper.title_terms
        new = unaligned({t: words.get(t, t) for t in new}, paper.words, self.align)
        if len(new) > NEW_WORDS + len(terms) // 8:
            return "unsupported"
        others = (p.quote_terms for m, p in self.papers.items() if m != n)
        if new and any(new & other for other in others):
            return "splice"
        borrowed = (terms & paper.title_terms) - paper.quote_terms
        if len(borrowed) > TITLE_SHARE * len(terms) and not self.about(claim, paper):
            return "title"  # the title's words said of something else ("The CFG strategy is a <title>")
        if not polarity_agrees(claim, f"{paper.quote} {paper.title}"):
            return "polarity"
        return meaning_conflict(claim, paper.quote)

    def vacuous(self, claim: str, supporting: list[int]) -> bool:
        """Nothing beyond the question and the titles: no number its evidence states, and either every word is the
        question's or a title's (a bare title, the question restated), or fewer than two words its papers add to
        the question. A title is the paper's own claim: "Auto-ICL performs in-context learning without human
        supervision" says what the paper does (measured: capable models name papers this way; the old rule, which
        discounted title words, dropped 6 such faithful sentences of claims-synthesis-dev.jsonl)."""
        terms = terms_of(claim) - FREE
        papers = [self.papers[n] for n in supporting]
        stated = set().union(*(numbers(p.quote) for p in papers))
        if numbers(claim) & stated:
            return False
        beyond_question = terms - self.question_terms
        if not beyond_question - self.title_terms:
            return True
        own = set().union(*(p.quote_terms | p.title_terms for p in papers))
        return len(beyond_question & own) < 2

    def supporting(self, claim: str, candidates: list[int]) -> tuple[list[int], str]:
        """The candidate papers that state the claim, or ([], the reason the closest one does not)."""
        reasons = [(n, self.why_not(claim, n)) for n in candidates]
        good = [n for n, r in reasons if not r]
        if good:
            return good, ""
        terms = terms_of(claim)
        closest = max(reasons, key=lambda nr: len(terms & self.papers[nr[0]].quote_terms), default=(0, "no evidence"))
        return [], closest[1]

    def spliced(self, claim: str, cited: list[int]) -> list[int]:
        """A claim joining cited papers: "both papers ..." needs every one to state it; otherwise it is kept when
        each clause is stated by one of them and at least two of them are used."""
        if len(cited) < 2:
            return []
        if EVERY_PAPER.search(claim):
            core = EVERY_PAPER.sub("", claim)
            return cited if all(not self.why_not(core, n) for n in cited) else []
        for splitter in (CLAUSE, PHRASE):
            parts = [c for c in map(str.strip, splitter.split(claim)) if c and len(content_terms(c)) >= 2]
            if len(parts) < 2:
                continue
            used = []
            for part in parts:
                good, _ = self.supporting(part, cited)
                if not good:
                    break
                used.append(good[0])
            else:
                if len(set(used)) >= 2:
                    return list(dict.fromkeys(used))
        return []

    def check(self, sentence: str) -> Checked:
        bare = strip_markers(sentence)
        previous, cited_all = self.previous, [n for n in dict.fromkeys(parse_markers(sentence)) if n in self.by_n]
        self.previous = cited_all or previous
        if not bare:
            return Checked("", [])
        if SCAFFOLD.search(bare):
            return Checked("", [], dropped=sentence, reason="scaffold")
        claim = LEAD_IN.sub("", bare)
        opened = re.match(r"\s*([\"'“‘])", claim)
        claim, end = core_and_end(claim)
        if opened and re.search(r"[\"'”’](?=[\s,:;])", claim):  # "'A Title' shows ...": keep the title's opening mark
            claim = opened.group(1) + claim
        if len(content_terms(claim)) < MIN_TERMS:
            return Checked("", [], dropped=sentence, reason="vacuous")
        plain = self.untitled(LEAD_IN.sub("", bare)).strip(" .")  # a quoted title names a paper; it claims nothing
        cited = cited_all
        subject = previous[0] if ANAPHOR.match(claim) and len(previous) == 1 else None
        if subject is not None and len(cited) == 1 and cited != [subject]:
            # "It ..." after a sentence about paper p, cited to q: a finding cited to the wrong paper
            supporting, reason = self.supporting(plain, [subject])
            if not supporting:
                return Checked("", [], dropped=sentence, reason=f"coreference:{reason}")
            return self.kept(claim, end, supporting, recited=True)
        supporting, reason = self.supporting(plain, cited)
        recited = False
        if not supporting:
            supporting = self.spliced(plain, cited)
        if not supporting and subject is None:
            others = [n for n in self.by_n if n not in cited]
            supporting, other_reason = self.supporting(plain, others)
            recited = bool(supporting and cited)
            reason = reason if cited else other_reason
        if not supporting:
            return Checked("", [], dropped=sentence, reason=reason)
        if self.vacuous(plain, supporting):
            return Checked("", [], dropped=sentence, reason="vacuous")
        return self.kept(claim, end, supporting, recited)

    def kept(self, claim: str, end: str, supporting: list[int], recited: bool) -> Checked:
        used = supporting[:1] if len(supporting) > 1 and not self.previous_multi(supporting) else supporting
        self.previous = used if recited else self.previous
        marks = "".join(f"[{n}]" for n in used)
        return Checked(
            f"{claim[0].upper()}{claim[1:]} {marks}{end}",
            used,
            reason="recited" if recited else "",
            supporting=[ev for n in used for ev in self.by_n[n]],
        )

    def previous_multi(self, supporting: list[int]) -> bool:
        """A sentence stated by several papers keeps the several it cited."""
        return len(set(supporting) & set(self.previous)) > 1

    def about(self, claim: str, paper: Paper) -> bool:
        """The claim's subject is the paper: its opening words name it (a name of its title, the title's part before
        ":") or say "the paper", "the authors", "it"."""
        opening = " ".join(claim.lower().split()[:6])
        short = paper.title.split(":")[0].lower().strip() if ":" in paper.title else ""
        own = names(paper.title) | ({short} if short else set())
        return any(n in opening for n in own) or bool(
            re.search(r"\b(paper|work|study|authors|article|it|this|they)\b", opening)
        )

    def untitled(self, claim: str) -> str:
        """The claim with quoted paper titles ('Revisiting Few-sample BERT Fine-tuning' shows ...) made "the paper"."""

        def swap(m):
            quoted = content_terms(m.group(1))
            for p in self.papers.values():
                if quoted and len(quoted & p.title_terms) >= 0.6 * len(quoted):
                    return "the paper"
            return m.group(0)

        return QUOTED.sub(swap, claim)


def check_sentence(sentence: str, evidence: list[Evidence], question: str = "") -> Checked:
    """Keep a sentence the evidence it cites states (re-cited when another evidence states it), else drop it."""
    return Verifier(evidence, question).check(sentence)


class StreamVerifier:
    """Feed LLM text deltas; get back verified sentences as soon as each one is complete.

    A sentence counts as complete once another one has started after it, unless what follows is a half-written [n]
    marker that still belongs to it. `judge(checked) -> bool | None` (optional) is asked about each sentence the rules
    keep; False drops it, None (no verdict) keeps the rules' verdict. `skip(sentence)` (optional) drops kept
    sentences that repeat what the answer already says (the opening).
    """

    def __init__(self, evidence: list[Evidence], question: str = "", skip=None, judge=None):
        self.verifier = Verifier(evidence, question)
        self.skip = skip
        self.judge = judge  # optional judge(Checked) -> bool | None, asked only for sentences the rules keep
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
        if self.judge is not None and self.judge(result) is False:
            self.dropped.append(Checked("", [], dropped=sentence, reason="judge"))
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


# --- optional judge pass: the answering model asked whether the quotes state a sentence the rules kept ----------------

JUDGE_PROMPT = """You check one sentence of an answer against the quoted sources it cites. Judge only by the quotes.

Quotes:
{quotes}

Sentence: {sentence}

Do the quotes state everything the sentence says: its numbers and what they count, its conditions and hedges ("up \
to", "in low-budget settings"), its comparisons and causes, and which paper or method did what? A sentence that \
claims more than the quotes (all, every, first, significantly), or joins two findings the quotes keep apart, is not \
stated.
Reply with exactly one line:
YES: "<the exact words of the quote it relies on>"
or
NO: <what the quotes do not state>"""

VERDICT = re.compile(r"^\W*(yes|no)\b\W*(.*)$", re.I | re.S)


def judge_prompt(sentence: str, quotes: list[Evidence]) -> str:
    lines = [f'[{ev.n}] "{ev.quote}" ({ev.title})' for ev in quotes]
    return JUDGE_PROMPT.format(quotes="\n".join(lines), sentence=strip_markers(sentence))


def parse_verdict(reply: str, quotes: list[Evidence]) -> bool | None:
    """True for YES with words that are in a quote, False for NO, None for anything else (no verdict: a YES relying
    on words the quotes do not hold is a model that did not read them, as small models do)."""
    m = VERDICT.match(reply or "")
    if not m:
        return None
    if m.group(1).lower() == "no":
        return False
    relied = re.sub(r"\W+", " ", m.group(2).split("\n")[0]).strip().lower()
    sources = re.sub(r"\W+", " ", " ".join(ev.quote for ev in quotes)).lower()
    words = relied.split()
    if len(words) < 3:
        return None
    return True if " ".join(words[: min(len(words), 8)]) in sources else None


def judge(
    sentence: str, quotes: list[Evidence], ask: Callable[[str], str], deadline: float | None = None
) -> bool | None:
    """Ask the answering model whether `quotes` (the evidence the rules found to state the sentence, e.g.
    Checked.supporting) state `sentence`: True (keep), False (drop), None (no verdict: past `deadline`, a
    time.monotonic() value, the model failing or replying out of format; keep the rules' verdict).

    `ask(prompt) -> reply` is one completion of the answer's own model; it runs in a daemon thread so a slow model
    costs at most the time left before the deadline."""
    prompt = judge_prompt(sentence, quotes)
    timeout = None if deadline is None else deadline - time.monotonic()
    if timeout is not None and timeout <= 0:
        return None
    box: list = []

    def run():
        try:
            box.append(ask(prompt))
        except Exception as e:  # a failing model means no verdict, never a lost answer
            box.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if not box or isinstance(box[0], BaseException) or not isinstance(box[0], str):
        return None
    return parse_verdict(box[0], quotes)


# Two controls with known answers: a model that gets either wrong is too small to judge; the rules stand alone.
_CONTROL = [Evidence(1, "control", "Control paper", "", "Our method needs only 8 denoising steps.", 1.0, 1)]
CONTROLS = [("The method needs only 8 denoising steps [1].", True), ("The method needs 80 denoising steps [1].", False)]


def judge_reliable(ask: Callable[[str], str], deadline: float | None = None) -> bool:
    """Whether the model answers both control questions right (call once per model; False: use the rules alone)."""
    return all(judge(s, _CONTROL, ask, deadline) is expected for s, expected in CONTROLS)
