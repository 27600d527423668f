"""Evidence: the sentences of the top papers that best answer the question, scored, and the refusal decision.

A sentence's score mixes five signals (weights and thresholds calibrated on the dev set, see README "Calibration"):
- meaning: cosine between question and sentence (the embedding model);
- words: the share of the question's content words (stemmed) found in the sentence or its paper's title;
- answer kind: a bonus when the sentence holds what the question asks for (a quantity for "how many/much", a
  definition for "what is", a mechanism for "how does", a result for "how well"), so that answering sentences win
  over sentences that only repeat the question's words;
- rank: a small prior for papers the search ranked higher.
Evidence is then kept only from papers that bear on the question: a paper whose best sentence scores far below the
best sentence overall is left out (a floor relative to the best).
The question is refused when no sentence reaches the threshold, or when it asks for a kind of fact that abstracts
rarely state (authors, year, venue, licence, hardware, money) and no evidence holds that kind of fact.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from rag.corpus import Paper
from rag.roles import LIMITATION_QUESTION, sentence_roles, wanted_roles
from rag.sentences import split_sentences

W_MEANING, W_WORDS, W_KIND, W_RANK = 0.5, 0.4, 0.1, 0.1
STRONG_MATCH = 0.6  # evidence this close answers the question even if some of its words are new to the corpus

STOPWORDS = set(
    """
a about above after again against all also am an and any are aren as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our ours
out over own same she should so some such than that the their theirs them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your yours
much many
paper papers work works study studies approach approaches method methods propose proposed proposes use used using
show shows based new way ways one two kind any anything something here corpus say says tell find
""".split()
)


def later(first: str, then: str) -> str:
    """`first .* then` (words, as regex source) in linear time: the text in between may not hold another `first`
    (unless that one is right before `then`).

    `.*` between two words backtracks over the rest of the text from every place the first word occurs: quadratic
    (a 1 MB question without "?" held the GIL, and every other request, for 69 s). A match from an earlier `first`
    implies one from the last `first` before `then`, so the answer is the same; each span between two `first`s is
    scanned once."""
    return rf"{first} (?:(?!\b{first} (?!{then}\b)).)* {then}"


NUMBER = re.compile(r"\d")
# A sentence that says what its paper contributes: "We propose X, ...", "This paper presents X", "... called X".
INTRODUCES = re.compile(
    r"\b(we|this (paper|work|study)) (propose|introduce|present|develop|design|call|name)s?\b"
    r"|\b(called|named|dubbed|termed)\b",
    re.I,
)
QUANTITY_QUESTION = re.compile(
    r"\b(how (many|much|large|big|fast|long|often)|what (percentage|fraction|number|"
    r"size|accuracy|score)|by how|which (size|number)|(number|amount|fraction|percentage|share) of|"
    r"(model|dataset|data) size|(average )?margin|win[- ]rate)\b",
    re.I,
)
# "How many <things> ...": the things counted are the last word before the verb ("how many real manipulation tasks
# was it tested on" counts tasks); a sentence that answers puts a number before them ("62 diverse multimodal tasks").
COUNTED = re.compile(
    r"\bhow many ((?:[\w-]+\s+){0,3}?)([a-z][\w-]*?)s?\s+(?:do|does|did|is|are|was|were|can|could|has|have|had|"
    r"will|would|in|on|of|for|to|at|per|with|were)\b",
    re.I,
)
NUMBER_WORDS = r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozens?|hundreds?|thousands?|millions?"


def counted(question: str) -> re.Pattern | None:
    """For "how many <things>" questions: what a sentence stating that count holds (a number, then within three words
    the things), else None."""
    m = COUNTED.search(question)
    if not m:
        return None
    return re.compile(rf"(\d[\d,.]*\+?|\b(?:{NUMBER_WORDS}))\s+(?:[\w-]+\s+){{0,3}}?{re.escape(m.group(2))}", re.I)


# What is wrong with X (rag/roles.py LIMITATION_QUESTION) is answered by a sentence that says what fails, costs or is
# missing: a word for it ("however", "while" or "despite" is none: "... while being substantially simpler").
LIMITATION = re.compile(
    r"\b(fail\w*|unstable|instabilit\w*|costly|expensive|prohibitive|"
    r"limit\w*|suffer\w*|struggl\w*|difficult\w*|challeng\w*|bias\w*|vulnerab\w*|brittle|hack\w*|lack\w*|"
    r"insufficient|poor\w*|degrad\w*)\b",
    re.I,
)
# How something is done: the means, or the parts it is made of ("a dynamic feature reuse strategy that preserves ...").
MEANS = re.compile(
    r"\b(by|via|through|using|uses|leverag\w*|relies on|consists? of|contributions? include|"
    r"(strateg(y|ies)|mechanisms?|modules?|schemes?|components?) (that|which))\b",
    re.I,
)
# What a question asks for, and what a sentence that answers it holds.
ANSWER_KINDS = [
    (QUANTITY_QUESTION, NUMBER),
    (
        re.compile(
            rf"\b(how (well|good)|how much better|{later('does', '(outperform|beat|improve)')}|"
            r"what (gain|improvement))\b",
            re.I,
        ),
        re.compile(r"\b(outperform\w*|improv\w*|achiev\w*|surpass\w*|state-of-the-art|better|gains?)\b|\d", re.I),
    ),
    (LIMITATION_QUESTION, LIMITATION),
    (re.compile(r"\bhow (does|do|did|can|is|are)\b|\bin what way\b|\bby what\b", re.I), MEANS),
    (
        re.compile(r"^\s*(what (is|are)|define|what does .* mean)\b", re.I),
        re.compile(r"\b(is an?|are|refers? to|we (propose|introduce|present)|called|named)\b", re.I),
    ),
]

# Kinds of fact that abstracts rarely state: (what the question asks, what evidence must show to answer it).
FACT_KINDS = {
    "authors": (
        # "written by NLP practitioners" is about the data, not the paper's authors
        re.compile(
            r"\b(who (wrote|authored|are the authors|is the author)|authors? of|(paper|it) (was )?written by)\b", re.I
        ),
        re.compile(r"\bauthors?:|\bet al\b", re.I),
    ),
    "year": (
        re.compile(
            rf"\b((what|which) year|{later('when was', '(published|released)')}|publication (date|year))\b", re.I
        ),
        re.compile(r"\b(19|20)\d\d\b"),
    ),
    "venue": (
        re.compile(r"\b(which|what) (venue|conference|journal)\b|\bpublished (at|in) which\b", re.I),
        re.compile(
            r"\b(NeurIPS|ICML|ICLR|ACL|EMNLP|NAACL|CVPR|ICCV|ECCV|AAAI|IJCAI|KDD|SIGIR|conference|"
            r"journal|workshop|proceedings)\b",
            re.I,
        ),
    ),
    "licence": (re.compile(r"\blicen[cs]e[ds]?\b", re.I), re.compile(r"\b(licen[cs]e|MIT|Apache|GPL|CC[- ]BY)\b")),
    "hardware": (
        re.compile(r"\b(what|which) (gpus?|tpus?|hardware|accelerators?)\b|\bhardware\b", re.I),
        re.compile(r"\b(GPUs?|TPUs?|A100|H100|V100|A6000|RTX|hardware)\b"),
    ),
    "money": (
        re.compile(
            rf"\bhow much money\b|\bcost to train\b|\b{later('what did', 'cost')}\b|\bprice\b|\bin dollars\b", re.I
        ),
        re.compile(r"\$\s?\d|\b(USD|dollars?)\b", re.I),
    ),
}


@dataclass
class Evidence:
    n: int
    paper_id: str
    title: str
    url: str
    quote: str
    score: float
    rank: int  # the paper's rank in the search
    part_scores: list[float] = field(default_factory=list, repr=False)  # per part of a question that asks several
    role: str = ""  # background, objective, method, result or other (rag/roles.py), "" when unknown

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("part_scores")
        return out


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


WORD = re.compile(r"[^\W\d_]+|\d+(?:[.,]\d+)*")  # letters of any script ("Schrödinger", "Éire"), or a number


def content_words(text: str) -> list[str]:
    """Lower-cased words and numbers of a text, stop words left out (hyphenated words split)."""
    return [w for w in WORD.findall(text.lower()) if w not in STOPWORDS]


def stems(words: list[str]) -> list[str]:
    return _stemmer().stemWords(words)


def content_terms(text: str) -> set[str]:
    """Stemmed content words and numbers of a text."""
    return set(stems(content_words(text)))


def asked_kind(question: str) -> str | None:
    for kind, (asks, _) in FACT_KINDS.items():
        if asks.search(question):
            return kind
    return None


def paper_sentences(paper: Paper) -> list[str]:
    """The abstract's sentences, plus metadata lines where the corpus gave authors or a year."""
    out = split_sentences(paper.abstract)
    if paper.authors:
        out.append(f"Authors: {paper.authors}.")
    if paper.year:
        out.append(f"Year: {paper.year}.")
    return out


# Where a question asks a second thing: ", and on how many ...", "? What ...", "Flipped Learning: size, tasks, and
# margin?" (a list after a colon).
PART_BOUNDARY = re.compile(  # (?<!\s): a run of spaces is tried from its first one only (else quadratic)
    r",?(?<!\s)\s+and\s+(?=(?:on |in |for |with |by |to |at )?"
    r"(?:how|what|which|who|where|when|why|whether|is|are|does|do|did)\b)"
    r"|\?\s+(?=\S)",
    re.I,
)


def question_parts(question: str) -> list[str]:
    """The separate asks of a question (one part for most questions)."""
    parts = [p.strip(" ?,") for p in PART_BOUNDARY.split(question) if p and len(content_terms(p)) >= 2]
    if len(parts) == 1 and ":" in question:
        head, tail = question.split(":", 1)
        items = [i for i in re.split(r",\s*(?:and\s+)?|\s+and\s+", tail.strip(" ?")) if content_terms(i)]
        if len(items) >= 2:
            parts = [f"{head}: {i}" for i in items]
    return parts if len(parts) > 1 else [question]


# Sentences that never answer a question about the research: links, code release notes.
BOILERPLATE = re.compile(
    r"https?://|\b(code|data|models?|datasets?)( and (code|data|models?|datasets?|weights|checkpoints|adapters))? "
    r"(is|are|will be) (publicly |freely )?"
    r"(available|released)|\bwe (will )?(publicly )?release (our|the) code\b",
    re.I,
)


def answer_cue(question: str) -> re.Pattern | None:
    """What a sentence that answers `question` holds: for "how many <things>", a number before the things
    (`counted`); else the cue of the first ANSWER_KINDS entry that matches; None when none does."""
    return counted(question) or next((holds for kind, holds in ANSWER_KINDS if kind.search(question)), None)


def sentence_score(meaning: float, q_terms: set[str], cue, terms: set[str], sentence: str, rank: int) -> float:
    words = len(q_terms & terms) / max(1, len(q_terms))
    kind = 1.0 if cue and cue.search(sentence) else 0.0
    score = W_MEANING * meaning + W_WORDS * words + W_KIND * kind + W_RANK / rank
    return score / 2 if BOILERPLATE.search(sentence) else score


def asked_parts(question: str) -> list[str]:
    """What a question's evidence is scored against: the question, then its parts when it asks several things."""
    parts = question_parts(question)
    return [question] + (parts if len(parts) > 1 else [])


BACKGROUND_WEIGHT = 0.8  # a background sentence's score, when the question does not ask for background (calibrated)
# For a fact question: a sentence of a role the question does not want (a result for "how does X work?"). On 30
# "How does <name> work?" questions over the bundled corpus the opening quoted a result, an evaluation or a
# code link for 16 with no weight, 9 with 0.85, and 7 once REPORTS_RESULT corrects the role model (read by hand,
# bench/how_questions.py);
# 0.75 reads better still but loses two dev openings (d017, d058).
OFF_ROLE_WEIGHT = 0.85


def score_sentences(
    asks: list[str],
    ask_vectors: list,
    hits: list,
    papers,
    embed,
    stored: dict | None = None,
    roles: bool = False,
    off_role: float = 1.0,
) -> list[Evidence]:
    """Every sentence of the hit papers, scored against the question, best first (n is not yet assigned). When the
    question asks several things, each sentence is also scored against each part (`Evidence.part_scores`).

    `asks` is `asked_parts(question)` and `ask_vectors` their normalized vectors. `embed(texts) -> list[vector]`
    embeds the sentences that `stored` (paper id -> one vector per abstract sentence, from index time) does not
    hold: the metadata lines, or every sentence of an index built without sentence vectors.
    With `roles` (the stored vectors are the role model's: rag/roles.py), each abstract sentence gets its role, and
    a background sentence counts BACKGROUND_WEIGHT of its score unless the question (part) asks for background;
    a sentence of another role the question does not want counts `off_role` of it (OFF_ROLE_WEIGHT for fact
    questions; overview answers choose among a paper's sentences by role instead: rag/overview.py), and so does, for
    "how does X work?", a sentence that introduces X without saying by what means ("we present X, a framework
    designed to ...": what X is, not how it works).
    """
    import numpy as np

    stored = stored or {}
    rows, vectors, todo = [], [], []  # (hit, paper, sentence); its vector or None; the sentences to embed now
    kinds: list[str] = []  # each row's role
    for hit in hits:
        paper = papers[hit.paper_id]
        sentences = paper_sentences(paper)
        known = stored.get(hit.paper_id)
        if known is None or len(known) != len(split_sentences(paper.abstract)):
            known = []  # indexed before sentence vectors were stored, or split differently: embed them now
        found = sentence_roles(known) if roles and len(known) else []
        kinds += [found[i] if i < len(found) else "" for i in range(len(sentences))]
        for i, sentence in enumerate(sentences):
            rows.append((hit, paper, sentence))
            vectors.append(known[i] if i < len(known) else None)
            if i >= len(known):
                todo.append(len(rows) - 1)
    if not rows:
        return []
    for i, vector in zip(todo, embed([rows[i][2] for i in todo]) if todo else []):
        vectors[i] = vector
    meaning = np.asarray(vectors, dtype=np.float32) @ np.asarray(ask_vectors, dtype=np.float32).T
    ask_terms = [content_terms(a) for a in asks]
    cues = [answer_cue(a) for a in asks]
    counts = [counted(a) for a in asks]  # a sentence stating the asked count keeps its score whatever its role
    title_terms = {hit.paper_id: content_terms(papers[hit.paper_id].title) for hit in hits}
    wanted = [wanted_roles(a) for a in asks]
    out = []
    for (hit, paper, sentence), cosines, role in zip(rows, meaning.tolist(), kinds):
        role = role_of(role, sentence) if roles else ""
        terms = content_terms(sentence) | title_terms[hit.paper_id]
        names_only = bool(INTRODUCES.search(sentence)) and not MEANS.search(sentence)  # what X is, not how it works
        scores = [
            sentence_score(cosines[i], ask_terms[i], cues[i], terms, sentence, hit.rank)
            * (1.0 if counts[i] and counts[i].search(sentence) else role_weight(role, wanted[i], off_role))
            * (off_role if cues[i] is MEANS and names_only else 1.0)
            for i in range(len(asks))
        ]
        ev = Evidence(0, hit.paper_id, paper.title, paper.url, sentence, round(scores[0], 4), hit.rank, role=role)
        ev.part_scores = [round(x, 4) for x in scores[1:]]
        out.append(ev)
    out.sort(key=lambda e: -e.score)
    return out


# A sentence that reports an evaluation or a finding is a result, whatever the role model says: it takes "We
# empirically evaluate FasterCache on recent video diffusion models" and "MetaICL outperforms a range of baselines"
# for method sentences (its test F1 for result is 0.74).
REPORTS_RESULT = re.compile(
    r"\b(outperform\w*|surpass\w*|we (empirically |extensively )?(evaluate|validate|benchmark)|"
    r"(experiments?|evaluations?|results|analys[ie]s|studies) (\w+ ){0,3}?(show|shows|demonstrate|demonstrates|"
    r"indicate|indicates|reveal|reveals|confirm|confirms|suggest|suggests)|we (demonstrate|show|find|observe) that|"
    r"(demonstrat|confirm|validat|verif)\w* the (effectiveness|efficacy|superiority))\b",
    re.I,
)


# The paper's own finding: "We show that instruction tuning ... substantially improves zero-shot performance on unseen
# tasks" (the role model calls that one background), "Our experiments reveal that ...", "We perform an extensive
# analysis ..., and show that: (i) fine-tuning rarely alters ...".
FINDING = re.compile(
    r"\b(we|our (\w+ )?(results|experiments|analys[ie]s|findings|studies)|, and) (\w+ )?(?P<verb>show|find|"
    r"demonstrate|observe|reveal|discover|confirm|establish)s? that\b",
    re.I,
)


# What is wrong with earlier work, which a paper states before its own: "However, these approaches often result in
# suboptimal motion generation ..." (the role model takes it for a method sentence).
PRIOR_WORK = re.compile(
    r"^\W*(however|but|yet|unfortunately|nevertheless|nonetheless),?\s+(these|those|such|existing|previous|prior|"
    r"current|conventional|traditional|most|many)\b",
    re.I,
)


def role_of(role: str, sentence: str) -> str:
    """The role evidence scoring uses: the role model's, but "result" for a sentence that reports one (a method or
    other sentence that reports an evaluation or a finding; any sentence stating the paper's own finding), and
    "background" for one that says what is wrong with earlier work (PRIOR_WORK)."""
    if PRIOR_WORK.search(sentence):
        return "background"
    if role in ("method", "other") and REPORTS_RESULT.search(sentence) or FINDING.search(sentence):
        return "result"
    return role


def role_weight(role: str, wanted: tuple[str, ...], off_role: float) -> float:
    """How much of its score a sentence of `role` keeps for a question (part) wanting `wanted` roles: background
    BACKGROUND_WEIGHT unless asked for, another role the question does not want `off_role`, else all of it."""
    if not role or role in wanted:
        return 1.0
    return BACKGROUND_WEIGHT if role == "background" else off_role


def select(scored: list[Evidence], per_paper: int, limit: int, threshold: float, floor: float = 0.0) -> list[Evidence]:
    """The best sentences above the threshold and above `floor` x the best score, at most per_paper from one
    paper, best first; n numbers papers (1 = the paper of the best sentence), so one paper's sentences share it."""
    chosen, count = [], {}
    best = scored[0].score if scored else 0.0
    for ev in scored:
        if ev.score < max(threshold, floor * best):
            break
        if count.get(ev.paper_id, 0) >= per_paper:
            continue
        count[ev.paper_id] = count.get(ev.paper_id, 0) + 1
        chosen.append(ev)
        if len(chosen) == limit:
            break
    papers = {ev.paper_id for ev in chosen}
    for part in range(len(scored[0].part_scores) if chosen else 0):  # the best answer to each part of the question
        best_for_part = max((ev for ev in scored if ev.paper_id in papers), key=lambda ev: ev.part_scores[part])
        if best_for_part not in chosen and best_for_part.score >= threshold:
            chosen.append(best_for_part)
    numbers: dict[str, int] = {}
    for ev in chosen:
        ev.n = numbers.setdefault(ev.paper_id, len(numbers) + 1)
    return chosen


TWO_LETTER_ACRONYM = re.compile(r"\b[A-Z]{2}\b")
# A name: a word with two capitals, an acronym or a method's name ("DPO", "KV", "LoRA", "GPT-4", "LLMs").
NAMED = re.compile(r"(?<![\w-])(?=[\w-]*(?:[a-z][A-Z]|[A-Z]{2}))[A-Za-z][\w-]*")


def named_terms(question: str) -> list[str]:
    """The names in `question`, as written ("What are the limitations of DPO?" -> ["DPO"])."""
    return list(dict.fromkeys(NAMED.findall(question)))


def topic_words(question: str, vocabulary) -> tuple[list[str], list[str]]:
    """(the question's words of 3+ characters with a letter, and its two-letter acronyms ("KV", "RL"); those that
    occur nowhere in the corpus), compared stemmed and split like the BM25 tokenizer splits ("Llama2-70B" ->
    "llama2", "70b")."""
    tokens = re.findall(r"[^\W_]{3,}", question.lower()) + [a.lower() for a in TWO_LETTER_ACRONYM.findall(question)]
    words = list(dict.fromkeys(w for w in tokens if w not in STOPWORDS and not w[0].isdigit()))
    return words, [w for w, s in zip(words, stems(words)) if s not in vocabulary]


def unknown_name(name: str, vocabulary) -> bool:
    """Whether the corpus never uses a word of `name` ("KV" of "KV-cache"), nor its singular ("GPUs": "GPU"); split
    as the BM25 tokenizer splits ("SVCT2", "T6SS" stay whole), numbers and stopwords ("NO") told nothing."""
    for word in re.findall(r"[^\W_]+", name):
        if word.isdigit() or word.lower() in STOPWORDS:
            continue
        forms = [word.lower()] + ([word[:-1].lower()] if re.search(r"[A-Z]s$", word) else [])
        if not any(s in vocabulary for s in stems(forms)):
            return True
    return False


def refusal_reason(
    question: str,
    evidence: list[Evidence],
    vocabulary,
    refuse_below: float,
    unknown_share: float,
    open_question: bool = False,
    best: float | None = None,
) -> str | None:
    """Why the evidence cannot answer the question, or None when it can. `best`: the best score of a sentence for
    this question when it is one part of a longer one (else the first sentence's).

    Three checks: the best sentence must score at least `refuse_below`; the question's own topic words must occur
    in the corpus (a question about "homomorphic encryption" in a corpus that never says "homomorphic" is about
    something absent, however close the nearest sentence looks); and a question asking for a kind of fact abstracts
    rarely state needs evidence that states one. An open question over the literature (`open_question`) asks for
    no such fact, and its many words may include some the corpus never uses: twice the share is allowed. A name
    the corpus never uses ("KV" in "What techniques reduce the memory of the KV cache?") is what the question is
    about, whatever the share.
    """
    best = best if best is not None else evidence[0].score if evidence else 0.0
    if not evidence or best < refuse_below:
        return "no passage of the indexed abstracts is close enough to the question"
    words, unknown = topic_words(question, vocabulary)
    allowed = 2 * unknown_share if open_question else unknown_share
    absent = [t for t in named_terms(question) if unknown_name(t, vocabulary)]
    if (absent or words and len(unknown) / len(words) >= allowed) and best < STRONG_MATCH:
        return f"the indexed papers never mention {', '.join(repr(w) for w in (absent or unknown)[:3])}"
    kind = None if open_question else asked_kind(question)
    if kind and not any(FACT_KINDS[kind][1].search(ev.quote) for ev in evidence):
        return f"the question asks for {kind}, which the indexed abstracts do not state"
    return None


def unanswered_parts(parts: list[str], evidence: list[Evidence], vocabulary, refuse_below: float) -> dict[int, str]:
    """For a question that asks several things (`parts`, from `question_parts`): part index -> why the evidence
    answers none of it ("..., and which GPUs was it trained on?": abstracts do not state hardware), for each part
    it cannot answer. One part: {} (the question's own refusal decides). A part is short: one word the corpus never
    uses is a third of "how fast does it run on a phone", so a part is said missing for unknown words only when
    the corpus knows none of them (d024 lost its phone speed to that)."""
    if len(parts) < 2 or not evidence:
        return {}
    out = {}
    for i, part in enumerate(parts):
        best = max(ev.part_scores[i] for ev in evidence)  # two parts or more: every sentence is scored per part
        reason = refusal_reason(part, evidence, vocabulary, refuse_below, 1.0, best=best)
        if reason:
            out[i] = reason
    return out
