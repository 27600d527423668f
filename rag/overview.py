"""Overview answers: for open literature questions ("what are the approaches to X?") and "which papers" questions,
the relevant papers of the index, grouped by approach, each with the sentence that says what it does, quoted.

1. **Kind.** `question_kind` tells a fact or look-up question (one paper answers it: the usual answer) from a
   "which papers" question and an open question (approaches, evidence for, limitations, differences, a yes/no
   question such as "does X improve Y?"): rules on the question's wording, checked on the dev sets (README
   "Overview answers").
2. **Candidates.** The top `OVERVIEW_CANDIDATES` papers of the search; every sentence of each is scored against the
   question (rag/evidence.py) and the paper's key sentence is its best one.
3. **Relevance, per paper.** A paper is kept when a logistic model over six signals says it bears on the question:
   its key sentence's score, its search score and rank, the cosine of its abstract (the mean of its sentence
   vectors) to the question and to the abstracts of the top three papers, and the share of the question's words in
   its title and abstract. Fitted on the overview and "which papers" dev questions (bench/overview.py prints the
   leave-one-question-out figures); off-topic papers stay out at the price of some relevant ones.
4. **Groups.** The kept papers' key sentences are clustered greedily by cosine (a paper joins the closest group
   whose centroid is at least `GROUP_COSINE` away, else starts one); a group is named from the words its papers'
   sentences and titles share that the question does not say; papers alone in their group go last, together.
5. **Lines.** One per paper: a short name (the method's name from the title, e.g. "FreeNoise"), its [n], and its
   key sentence quoted. The opening says what the indexed papers cover: "7 papers address this, in 3 groups: ...".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from rag.evidence import FINDING, INTRODUCES, LIMITATION, STOPWORDS, Evidence, content_terms, named_terms, stems
from rag.roles import LIMITATION_QUESTION, YES_NO_QUESTION, wanted_roles

OVERVIEW_CANDIDATES = 25  # papers considered; hybrid search holds 73% of the relevant ones in its top 20 (dev)
MAX_PAPERS = 10  # lines in one overview
NAME_LETTERS = 8  # a one-word group name is this long at least ("distillation"; "image" and "window" said nothing)
GROUP_COSINE = 0.6  # a paper joins a group whose key sentences' centroid is this close
# Relevance: logistic weights over (key sentence score, search score, 1/rank, cosine to the question, cosine to
# the top three papers, question words in the paper), fitted by bench/overview.py on the dev overview and "which
# papers" questions; a paper is kept at probability >= RELEVANCE.
WEIGHTS = (1.53, 3.85, 1.68, 1.6, 2.09, -0.16)
BIAS = -6.07
RELEVANCE = 0.2
STANDALONE_SHARE = (
    0.8  # a key sentence must score this share of its paper's best: one that stands alone, of a wanted role
)
# A key sentence of a role the question wants may score this share of the paper's best (a standing one of another role
# needs STANDALONE_SHARE). 0.7 against 0.8 changed 13 lines of the dev overview and "which papers" answers; read by
# hand, 8 say better what the paper does ("… we propose "Adaptive Guidance" (AG), an efficient variant of CFG, that
# adaptively omits network evaluations …" for "Our findings suggest that the denoising steps proposed by CFG become
# increasingly aligned …"), 3 worse, 2 the same; key points (keywords) 36.6% -> 36.2%.
ROLE_SHARE = 0.7
CONNECTIVE = re.compile(
    r"^\W*(this|these|that|those|such|it|its|they|their|here|moreover|furthermore|however|additionally|in addition|"
    r"building on|to (this|that) end|thus|therefore|hence|finally|also|besides|as a result|in contrast|instead|"
    r"specifically|consequently|then|to (tackle|address|solve|overcome|mitigate|fill) (this|these|that|those|such|"
    r"the above))\b",
    re.I,
)
# "To accelerate such tedious process, ...", "Despite these advances, ...": refers back to a sentence not shown.
REFERS_BACK = re.compile(
    r"^\W*(?:[\w-]+[\s,]+){0,4}?(such(?! as\b)|these|those|the above|the aforementioned|"
    r"this(?! (paper|work|study|article|survey|letter|report|thesis)\b))\b",
    re.I,
)
# "... the effectiveness of the above strategies", "... guide video diffusion models with these layouts": wherever
# it stands, the sentence leans on sentences not shown.
REFERS_ANYWHERE = re.compile(
    r"\b(the above|the aforementioned|above-mentioned|these|this (approach|method|technique|strategy|idea|problem|"
    r"issue|challenge|limitation|gap|ability|feature|phenomenon|observation|insight|finding))\b",
    re.I,
)
SELF_REFERENCE = re.compile(r"^\W*(this|the present) (paper|work|study|article|letter|survey|report)\b", re.I)
# "... designed to address these limitations by ...": a purpose, not the content; the sentence still stands.
ADDRESSES_THESE = re.compile(r"\b(address|overcome|tackle|mitigate|solve|alleviate|remedy)(es|s|ing)? these \w+", re.I)
LIST_ITEM = re.compile(
    r"^\W*\(?(i{1,3}|iv|vi{0,3}|[a-e])\)|^[\W\d]*[a-z]"
)  # "(iii). generalized, ...": cut from a list

WHICH_PAPERS = re.compile(
    r"\b(which|what)\s+(\w+\s+){0,2}(papers|works|studies|methods|approaches|frameworks|models)\b"
    r"(?!\s+(best|better|well|most)\b)"
    r"|\b(papers|works|studies) (on|about|that|which)\b|\bpapers\??\s*$|\bthe literature\b",
    re.I,
)
OPEN_QUESTION = re.compile(
    r"\bwhat (are|were) (the )?(main |different |key |common |existing |known )?(ways|approaches|methods|strategies|"
    r"techniques|options|ideas|trade-?offs|limitations|findings|lines of work|problems|issues|risks|alternatives)\b"
    r"|\bwhat (\w+ )?alternatives\b"
    r"|\bwhat (work|research|is known|has been|have been|obstacles|problems|challenges|evidence|approaches|methods|"
    r"strategies|techniques|options)\b|\bwhat is the (\w+ ){0,3}evidence\b"
    r"|\b(approaches|strategies|techniques|methods|ways) (exist|have been|are there)\b"
    r"|\b(have|has) been (proposed|reported|explored|studied|tried|used|developed)\b"
    r"|\bhow (are|is|have|has) (\S+ ){1,5}(being|been)\b"
    r"|\bhow (do|did|are|have|can) (they|these|people|researchers|authors|papers|works|existing|different|methods|"
    r"approaches|you|one|llms|models)\b"
    r"|\b(compare|comparison of|differences? between|trade-?offs? between)\b|\bwhat do we know\b"
    r"|\b(overview|survey) of\b|\bwhat\s+[\w-]+\s+(ways|approaches|methods|strategies|techniques)\b",
    re.I,
)


# A question about one paper ("In the paper on X, how do they ...", "Which paper models ...") is a look-up.
ONE_PAPER = re.compile(
    r"\b((the|this|that) (paper|study)|(which|what) (paper|study|method))\b(?!')"
    r"|\b(does|did)\s+(?-i:(?=[\w-]*(?:[a-z][A-Z]|[A-Z]{2}))[A-Za-z][\w-]*)",  # "does SnapFusion use": one method
    re.I,
)


def question_kind(question: str) -> str:
    """ "papers" (which papers study X), "overview" (an open question over the literature) or "fact"."""
    if ONE_PAPER.search(question):
        return "fact"
    if WHICH_PAPERS.search(question):
        return "papers"
    if OPEN_QUESTION.search(question) or YES_NO_QUESTION.match(question):  # "does X improve Y?": what papers found
        return "overview"
    return "fact"


@dataclass
class Section:
    """A group of an overview: its name and the [n] of its papers, in order."""

    name: str
    papers: list[int]

    def to_dict(self) -> dict:
        return {"name": self.name, "papers": self.papers}


def relevance(features: list[float]) -> float:
    z = BIAS + sum(w * f for w, f in zip(WEIGHTS, features))
    return 1 / (1 + math.exp(-z))


def paper_features(question: str, hits: list, key: dict[str, Evidence], vectors: dict, ask_vector, papers) -> dict:
    """paper id -> the six relevance signals (see the module docstring) for each hit with a key sentence."""
    means = {}
    for pid, rows in vectors.items():
        mean = np.asarray(rows, dtype=np.float32).mean(0)
        means[pid] = mean / max(float(np.linalg.norm(mean)), 1e-9)
    seeds = [means[h.paper_id] for h in hits[:3] if h.paper_id in means]
    centroid = np.mean(seeds, 0) if seeds else None
    if centroid is not None:
        centroid /= max(float(np.linalg.norm(centroid)), 1e-9)
    q = np.asarray(ask_vector, dtype=np.float32)
    asked = content_terms(question)
    out = {}
    for h in hits:
        if h.paper_id not in key or h.paper_id not in means:
            continue
        paper = papers[h.paper_id]
        said = content_terms(f"{paper.title} {paper.abstract}")
        m = means[h.paper_id]
        out[h.paper_id] = [
            key[h.paper_id].score,
            h.score,
            1 / h.rank,
            float(m @ q),
            float(m @ centroid) if centroid is not None else 0.0,
            len(asked & said) / max(1, len(asked)),
        ]
    return out


def key_sentences(
    scored: list[Evidence], wanted: tuple[str, ...] = (), question: str = "", names: list[re.Pattern] = ()
) -> dict[str, Evidence]:
    """paper id -> its key sentence: the best-scoring one that stands on its own (no connective that refers to a
    sentence not shown, no list item cut from its list) and, among those scoring nearly as well: one that says a
    name the question asks about (`names`: `name_patterns`), when one does; of a role the question wants first
    (rag/roles.py: "what approaches ..." wants the objective or the method; "does X improve Y?" the finding), or
    stating the paper's own finding ("We find that model merging leads to ...", whatever the question); for
    "the limitations of X", one that says what fails or costs ("RLHF is complex and often unstable"), not the
    premise ("RLHF has emerged as the main paradigm ...")."""
    by_paper: dict[str, list[Evidence]] = {}
    for ev in scored:  # best first
        if not ev.quote.startswith(("Authors: ", "Year: ")):
            by_paper.setdefault(ev.paper_id, []).append(ev)
    key = {}
    for pid, sentences in by_paper.items():
        best = sentences[0]
        alone = [ev for ev in sentences if standalone(ev.quote)]
        standing = [ev for ev in alone if ev.score >= STANDALONE_SHARE * best.score]
        preferred = [  # of a wanted role, or the paper's own finding ("We find that model merging leads to ...")
            ev
            for ev in alone
            if (ev.role and ev.role in wanted[:2] or FINDING.search(ev.quote)) and ev.score >= ROLE_SHARE * best.score
        ]
        if names:  # "the limitations of DPO": a sentence about DPO
            about = [ev for ev in alone if any(p.search(ev.quote) for p in names)]
            preferred = [ev for ev in preferred or standing if ev in about] or preferred
            standing = [ev for ev in standing if ev in about] or standing
        if {"objective", "method"} & set(wanted[:2]):  # what a paper does: the sentence that says what it proposes
            preferred = [ev for ev in preferred or standing if INTRODUCES.search(ev.quote)] or preferred
        if wanted[:1] == ("result",):  # what was found: the sentence stating the paper's finding ("we show that ...")
            preferred = [ev for ev in preferred or standing if FINDING.search(ev.quote)] or preferred
        if LIMITATION_QUESTION.search(question):  # a sentence that states one, whatever role the model gave it
            stating = sorted((ev for ev in preferred + standing if LIMITATION.search(ev.quote)), key=lambda e: -e.score)
            preferred = stating or preferred
        key[pid] = (preferred or standing or alone or [best])[0]
    return key


LEAD_IN = re.compile(r",\s+(?=\S)")  # the end of a lead-in: "Utilizing this feature, " before what the sentence says
LEAD_IN_CHARS = 120  # a lead-in ends within this many characters
# What follows the lead-in opens a clause of its own ("we propose ...", "SUN reduces ..."), not the rest of a list
# ("This creates large, yet noisy, pairs" cut to "yet noisy, pairs").
CLAUSE_START = re.compile(r"(we|our|the|a|an)\b|(?-i:[A-Z])", re.I)


def standalone(quote: str) -> str:
    """The sentence as an overview line shows it: whole when it stands on its own; without a lead-in clause that
    refers to a sentence not shown ("Utilizing this feature, we propose EREN ..." -> "… we propose EREN ..."); ""
    when it cannot stand alone ("This method ...", a list item cut from its list, "the above strategies"). A finding
    stated after such words stands from its verb ("We perform an extensive analysis of the effects of fine-tuning in
    these settings, and show that: (i) fine-tuning rarely alters ..." -> "… show that: (i) fine-tuning rarely ...")."""
    if LIST_ITEM.match(quote):
        return ""
    opens_alone = SELF_REFERENCE.match(quote) or not (CONNECTIVE.match(quote) or REFERS_BACK.match(quote))
    shown = quote if opens_alone else without_lead_in(quote)
    if not refers_back(shown):
        return shown
    finding = FINDING.search(quote)
    shown = f"… {quote[finding.start('verb') :]}" if finding else ""
    return shown if len(shown.split()) > 6 and not refers_back(shown) else ""


REFERS_WORDS = 20  # "these" further on in a long sentence refers to what the sentence said ("... reusing these ...")


def refers_back(shown: str) -> bool:
    """Whether the sentence's opening words lean on a sentence not shown ("... the effectiveness of the above
    strategies", "... with these layouts")."""
    return bool(REFERS_ANYWHERE.search(ADDRESSES_THESE.sub("", " ".join(shown.split()[:REFERS_WORDS]))))


def without_lead_in(quote: str) -> str:
    """ "… " and the quote after its lead-in clause, where a clause of its own starts ("Then, by leveraging X, we
    propose ..." -> "… we propose ..."); "" when there is none."""
    for lead in LEAD_IN.finditer(quote[:LEAD_IN_CHARS]):
        rest = quote[lead.end() :]
        if len(rest.split()) < 6:
            return ""
        if CLAUSE_START.match(rest) and not (CONNECTIVE.match(rest) or REFERS_BACK.match(rest)):
            word = rest.split(" ", 1)[0]
            return f"… {word.lower() if word in ('We', 'Our', 'The', 'A', 'An') else word}{rest[len(word) :]}"
    return ""


# A question that gives examples (a comma, parentheses, "such as", "e.g.") names them as examples, not as what every
# paper must be about: "better ODE solvers, searched step schedules, or distillation".
EXAMPLES = re.compile(r"[,(—]|\be\.g\.|\bi\.e\.|\bsuch as\b", re.I)


def asked_names(question: str) -> list[str]:
    """The names a paper must mention to be about the question ("What are the limitations of DPO?" -> ["DPO"]): not
    a plural ("VLMs": a kind of model), nor the name of a field ("LLM", "LLM-based": GENERIC), nor examples."""
    if EXAMPLES.search(question):
        return []
    return [
        name
        for name in named_terms(question)
        if not re.search(r"[A-Z]s$", name)
        and any(stems([w.lower()])[0] not in GENERIC for w in re.findall(r"[A-Za-z]+", name) if w != w.lower())
    ]


def expansions(name: str, texts) -> set[str]:
    """What `name` stands for where a text defines it: "Direct Preference Optimization (DPO)" -> "direct preference
    optimization" (the initials of the words before the parenthesis spell its capitals, with or without "of" and
    the like: "Mixture-of-Experts (MoE)", "in-context learning (ICL)")."""
    letters = [c.lower() for c in name if c.isupper()]
    out = set()
    for text in texts:
        for m in re.finditer(rf"((?:[\w'-]+\s+){{1,8}})\(\s*{re.escape(name)}s?\s*\)", text):
            words = m.group(1).split()
            for k in range(1, len(words) + 1):
                parts = [p.lower() for w in words[-k:] for p in w.split("-") if p]
                spelled = ([p[0] for p in parts], [p[0] for p in parts if p not in LINKING])  # "in-context", "of"
                if letters in spelled:
                    out.add(" ".join(words[-k:]).lower())
                    break
    return out


def name_patterns(question: str, texts) -> list[re.Pattern]:
    """What finds a name the question asks about (`asked_names`) in a text: the name, or what it stands for where
    one of `texts` defines it."""
    names = asked_names(question)
    long = {e for n in names for e in expansions(n, texts)}
    return [re.compile(rf"(?<![\w-]){re.escape(n)}s?(?!\w)") for n in names] + [
        re.compile(r"\s+".join(map(re.escape, e.split())), re.I) for e in long
    ]


def select_papers(question: str, hits: list, scored: list[Evidence], vectors: dict, ask_vector, papers):
    """The relevant papers' key sentences, most relevant first (at most MAX_PAPERS); n is not yet assigned. A paper
    that never mentions a name the question asks about ("DPO"), nor what it stands for, is not about it; for "the
    limitations of X", a paper whose line states none does not answer (no paper's does: [], and the question is
    refused)."""
    texts = {h.paper_id: f"{papers[h.paper_id].title}. {papers[h.paper_id].abstract}" for h in hits}
    names = name_patterns(question, texts.values())
    about = {pid for pid, text in texts.items() if any(p.search(text) for p in names)}
    key = key_sentences(scored, wanted_roles(question), question, names)
    features = paper_features(question, hits, key, vectors, ask_vector, papers)
    # no hit mentions the name: it decides nothing
    probability = {pid: relevance(f) for pid, f in features.items() if pid in about or not about}
    if LIMITATION_QUESTION.search(question):
        probability = {pid: p for pid, p in probability.items() if LIMITATION.search(key[pid].quote)}
    kept = sorted((pid for pid, p in probability.items() if p >= RELEVANCE), key=lambda pid: -probability[pid])
    if not kept and probability:  # the best paper still answers, as any answer would
        kept = [max(probability, key=probability.get)]
    return [key[pid] for pid in kept[:MAX_PAPERS]]


def group_by_approach(
    chosen: list[Evidence], vector_of: dict[str, np.ndarray], question: str
) -> list[tuple[str, list[Evidence]]]:
    """(name, key sentences) of each group, the largest first; papers alone in a group, or in a group that no
    distinctive word names, go last, as one group ("" when it is the only one)."""
    groups: list[list[Evidence]] = []
    centroids: list[np.ndarray] = []
    for ev in chosen:
        v = vector_of[ev.paper_id]
        sims = [float(c @ v) / max(float(np.linalg.norm(c)), 1e-9) for c in centroids]
        best = int(np.argmax(sims)) if sims else -1
        if best >= 0 and sims[best] >= GROUP_COSINE:
            groups[best].append(ev)
            centroids[best] = centroids[best] + v
        else:
            groups.append([ev])
            centroids.append(v.copy())
    several = sorted((g for g in groups if len(g) > 1), key=len, reverse=True)
    named = [(name, g) for g in several if (name := group_name(g, chosen, question))]
    grouped = {id(ev) for _, g in named for ev in g}
    alone = [ev for ev in chosen if id(ev) not in grouped]  # in alone groups, or in a group no word names
    if alone:
        named.append(("Other papers" if named else "", alone))
    if len(named) == 1:  # one group holding every paper groups nothing
        return [("", chosen)]
    return named


TERM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*")


def terms_as_written(text: str) -> dict[str, str]:
    """stem (of the last part of a hyphenated word) -> the word as written, for the words that can name a group: not
    an adverb ("well", "-ly") or a verb's "-ing" form ("comparing"; "tuning-free" is kept)."""
    words = [w for w in TERM.findall(text) if len(w) > 2 and not re.search(r"(?<!-)\b\w+(ly|ing)$|^well$", w, re.I)]
    keys = stems([w.lower().rsplit("-", 1)[-1] if "-" not in w else w.lower() for w in words])
    return {k: w.lower() if not w.isupper() else w for k, w in zip(keys, words) if k not in GENERIC}


def group_name(members: list[Evidence], chosen: list[Evidence], question: str) -> str:
    """The words most of the group's titles share (else its titles and key sentences, a word of one title at least:
    "Surpasses gpt-3" and "Challenge" named groups from their sentences alone) and the overview's other papers do
    not use, the question's own words left out: the two most distinctive, in the order the first title has them; ""
    when no word qualifies."""
    asked = content_terms(question) | set(stems(acronyms(question)))
    others = [ev for ev in chosen if ev not in members]
    need = max(2, math.ceil(len(members) / 2))
    titled = {t for ev in members for t in terms_as_written(ev.title)}  # a name is a word of a title at least
    for text_of in (lambda ev: ev.title, lambda ev: f"{ev.title} {ev.quote}"):
        spelled: dict[str, str] = {}
        inside: Counter = Counter()
        for ev in members:
            terms = terms_as_written(text_of(ev))
            spelled.update(terms)
            # the question's words, hyphenated or not ("fine-tuning"), name nothing the question did not say
            inside.update(t for t, w in terms.items() if t in titled and not content_terms(w) <= asked)
        outside: Counter = Counter()
        for ev in others:
            outside.update(set(terms_as_written(text_of(ev))))
        ranked = sorted(
            (t for t, c in inside.items() if c >= need),
            key=lambda t: (-(inside[t] / len(members) - outside[t] / max(1, len(others))), -inside[t], t),
        )
        if ranked:
            first = text_of(members[0]).lower()
            words = sorted((spelled[t] for t in ranked[:2]), key=lambda w: (first.find(w.lower()) % 10_000, w))
            if len(words) > 1 or "-" in words[0] or len(words[0]) >= NAME_LETTERS:
                return " ".join(words).capitalize()
    return ""


LINKING = {"from", "of", "for", "with", "and", "to", "in", "on", "the", "a", "an"}


def acronyms(text: str) -> list[str]:
    """The acronyms a phrase of `text` spells ("reinforcement learning from human feedback" -> "rlhf", "rlh", "lhf",
    ...): a group is not named for what the question asked in other letters ("Reward rlhf")."""
    words = [w for w in re.findall(r"[A-Za-z][\w-]*", text.lower()) if w not in LINKING]
    return [
        "".join(w[0] for w in words[i:j]) for i in range(len(words)) for j in range(i + 2, min(len(words), i + 6) + 1)
    ]


# Words that name no approach: they are in every abstract.
GENERIC = (
    set(
        stems(
            "model models method methods approach approaches propose proposed framework results show paper task tasks "
            "performance existing novel new based using use data training learning large language work demonstrate "
            "achieve achieves experiments extensive state art significantly improve improves improved improvement "
            "effective efficient introduce present study various different however while also such more than which "
            "this these that their our can both utilizing utilize leveraging leverage via towards toward aiming "
            "addressing enhancing improving without need further well even much many often across within llm llms "
            "lm lms mllm mllms vlm vlms generate generates generated".split()
        )
    )
    | STOPWORDS
)


GENERIC_NAMES = {"LLM", "MLLM", "LM", "VLM", "NLP", "AI", "ML", "RL", "GPT", "CNN", "GNN", "GAN", "RAG", "QA", "ICL"}
NAME_TOKEN = re.compile(r"\b(?=[\w\-+]*(?:[a-z][A-Z]|[A-Z]{2}|\d))[A-Za-z][\w\-+]*[\w+]")


# The name a sentence gives what it introduces: "we propose Synchronized Coupled Sampling (SynCoS)", "dubbed CoNo",
# "This paper presents SNOOPI, ...".
INTRODUCED_NAME = [
    re.compile(r"\b(?:propose|introduce|present)s?\b[^.;()]{0,80}\(((?-i:[A-Z][\w\-+]*[A-Z][\w\-+]*))\)", re.I),
    re.compile(r"\b(?:called|named|dubbed|termed)\s+((?-i:[A-Z][\w\-+]*[A-Z0-9][\w\-+]*))", re.I),
    re.compile(
        r"\b(?:propose|introduce|present)s?\s+((?-i:(?=[\w\-+]*(?:[a-z][A-Z]|[A-Z]{2}))[A-Z][\w\-+]*[\w+]))", re.I
    ),
    # "we propose a training-free method FocusICL"
    re.compile(
        r"\b(?:propose|introduce|present)s?\s+(?:an?\s+|the\s+)?(?:[\w-]+\s+){0,4}?(?:method|framework|approach|model|"
        r"technique|algorithm|strategy|system|pipeline|benchmark|dataset|module|architecture),?\s+"
        r"((?-i:(?=[\w\-+]*(?:[a-z][A-Z]|[A-Z]{2}))[A-Z][\w\-+]*[\w+]))",
        re.I,
    ),
]


def short_name(title: str, sentence: str = "") -> str:
    """What a reader calls the paper: the part before a colon when it is a name ("FreeNoise: Tuning-Free ..." ->
    "FreeNoise"), else the name its quoted `sentence` introduces ("... we propose ... (SynCoS)"), else the part
    before a colon of up to six words ("LoRA vs Full Fine-tuning"), else a name-like first word of the title
    (CamelCase, acronym), else its first words. A name-like word further into the title is not taken: "Scaling Laws
    for LoRA Adapters" is not LoRA."""
    head, colon, _ = title.partition(":")
    if colon and len(head.split()) <= 3:
        return head.strip()
    for pattern in INTRODUCED_NAME:
        found = pattern.search(sentence)
        if found and found[1].rstrip("s") not in GENERIC_NAMES:
            return found[1]
    if colon and len(head.split()) <= 6:  # "No Training, No Problem: Rethinking ..." -> "No Training, No Problem"
        return head.strip()  # "LoRA vs Full Fine-tuning: ..." is not "LoRA"
    first = NAME_TOKEN.match(title)
    if first and first[0].rstrip("s") not in GENERIC_NAMES:
        return first[0]
    words = title.split()
    return " ".join(words[:6]) + (" …" if len(words) > 6 else "")


def opening(papers: int, sections: list[tuple[str, list]]) -> str:
    named = [f"{name.lower()} ({len(members)})" for name, members in sections if name]
    if papers == 1:
        return "1 indexed paper addresses this:"
    if len(named) <= 1:
        return f"{papers} indexed papers address this:"
    listed = ", ".join(named[:-1]) + " and " + named[-1]
    return f"{papers} indexed papers address this, grouped: {listed}."
