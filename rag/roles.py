"""Sentence roles: what each sentence of an abstract does (background, objective, method, result, other), and which
roles a question wants its evidence to have.

The role model reads only what indexing already stores: each abstract sentence's vector (the bundled
all-MiniLM-L6-v2, int8) and its position in the abstract. It is two small logistic regressions, run with numpy:
1. each sentence alone: its vector plus three position features (relative position, first, last);
2. each sentence in context: its own role probabilities from step 1, those of the two sentences before and after
   it, and the position features. Abstracts run background -> objective -> method -> result, so a neighbour's role
   says more than its vector does: on CSAbstruct dev, adding the neighbours' raw vectors to step 1 lowered accuracy
   (0.651 -> 0.644 at best, macro-F1 0.589 -> 0.561..0.573, logistic regression and a small MLP alike), while
   their step-1 role probabilities raised it (see README "Sentence roles" for the figures).
Trained on CSAbstruct (human-labelled CS abstracts) by `bench/train_roles.py`, which writes `rag/data/roles.npz`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

ROLES = ("background", "objective", "method", "result", "other")
WEIGHTS = Path(__file__).parent / "data" / "roles.npz"
# Sentences either side whose step-1 role probabilities step 2 reads. ±1 and ±2 tied on dev (accuracy / macro-F1
# 0.662 / 0.595 and 0.664 / 0.594, best C of each); ±2 also sees past a neighbour of the same role.
CONTEXT = 2


@lru_cache(maxsize=1)
def role_model() -> dict[str, np.ndarray]:
    """The shipped weights (`rag/data/roles.npz`), loaded once per process."""
    with np.load(WEIGHTS, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def model_embedder() -> str:
    """The embedding model whose vectors the role model was trained on (an index's manifest label)."""
    return str(role_model()["embedder"])


def position_features(n: int) -> np.ndarray:
    """(n, 3): relative position in the abstract (0 first, 1 last), is first, is last."""
    i = np.arange(n)
    relative = i / max(1, n - 1)
    return np.stack([relative, i == 0, i == n - 1], axis=1).astype(np.float32)


def sentence_features(vectors: np.ndarray) -> np.ndarray:
    """Step-1 features of one abstract's sentences: (n, dim + 3)."""
    return np.hstack([vectors, position_features(len(vectors))])


def shifted(rows: np.ndarray, by: int) -> np.ndarray:
    """rows moved down by `by` (up if negative), zeros where no sentence is: row i holds row i - by."""
    out = np.zeros_like(rows)
    n = len(rows)
    if abs(by) < n:
        if by > 0:
            out[by:] = rows[: n - by]
        elif by < 0:
            out[: n + by] = rows[-by:]
        else:
            out[:] = rows
    return out


def context_features(probabilities: np.ndarray) -> np.ndarray:
    """Step-2 features of one abstract from its step-1 probabilities (n, 5): own probabilities and their logs, the
    neighbours' probabilities (zeros past either end), position: (n, 5 * (2 + 2 * CONTEXT) + 3)."""
    columns = [probabilities, np.log(probabilities + 1e-6)]
    for k in range(1, CONTEXT + 1):
        columns += [shifted(probabilities, k), shifted(probabilities, -k)]
    columns.append(position_features(len(probabilities)))
    return np.hstack(columns)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def role_probabilities(vectors: list[list[float]] | np.ndarray) -> np.ndarray:
    """(n, 5) probabilities over ROLES for the sentences of ONE abstract, given in order."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.size == 0:
        return np.zeros((0, len(ROLES)), dtype=np.float32)
    model = role_model()
    if x.ndim != 2 or x.shape[1] != model["sentence_w"].shape[0] - 3:
        raise ValueError(
            f"role model expects one {model['sentence_w'].shape[0] - 3}-d vector per sentence "
            f"({model_embedder()}), got shape {x.shape}"
        )
    alone = softmax(sentence_features(x) @ model["sentence_w"] + model["sentence_b"])
    return softmax(context_features(alone) @ model["context_w"] + model["context_b"])


def sentence_roles(vectors: list[list[float]] | np.ndarray) -> list[str]:
    """One role of ROLES per sentence of ONE abstract, from its sentences' vectors in order."""
    return [ROLES[i] for i in role_probabilities(vectors).argmax(axis=1)]


# --- what a question wants ----------------------------------------------------------------------------------------

# What is wrong with X: its limitations (rag/evidence.py LIMITATION: the sentence that states one).
LIMITATION_QUESTION = re.compile(
    r"\b(limitations?|shortcomings?|drawbacks?|weakness(es)?|pitfalls?|failure modes?|(problems?|issues?) with)\b", re.I
)

# "Does instruction tuning improve zero-shot performance?", "Can LLMs learn from synthetic data?": a yes/no question
# over the literature, answered by what papers found. Not "is there a method that ...?" (a look-up), nor a question
# about one named method ("Does SnapFusion use distillation?": a word with two capitals, unless a plural like "LLMs").
YES_NO_QUESTION = re.compile(
    r"^\W*(does|do|did|can|could|is|are|was|were|has|have|will|would)\s+(?!there\b)"
    r"(?!(?-i:(?=[\w-]*(?:[a-z][A-Z]|[A-Z]{2}))[A-Za-z][\w-]*)(?<![A-Z]s)\b)",
    re.I,
)

# Every rule that matches adds its roles (a question may ask two things): an explicit ask for background first, then
# the rule whose cue comes first in the question ("How does LoRA reduce the number of parameters?" is a mechanism
# question); on a tie, list order.
WANTED_RULES: list[tuple[str, re.Pattern, tuple[str, ...]]] = [
    (
        # why the work exists: the only rule that asks for background
        "motivation",
        re.compile(
            r"\b(why|motivat\w*|background|what (problem|issue|gap|challenge)s?|challenges?)\b",
            re.I,
        ),
        ("background", "objective"),
    ),
    (
        # what is wrong with X: stated as the problem a paper sets out to fix (background) or as a finding
        "limitations",
        LIMITATION_QUESTION,
        ("background", "result"),
    ),
    (
        # how well: comparisons and gains are stated as results
        "quality",
        re.compile(
            r"\b(how (well|good|accurate|effective)|by how much|how much better|what (accuracy|score|gain|"
            r"improvement|speed-?up)|does .* (outperform|beat|improve)|how (does|do|did) .* (perform|compare|fare)|"
            r"outperform\w*|beat|improve\w*|results?|performance|accuracy|win[- ]rate)\b",
            re.I,
        ),
        ("result",),
    ),
    (
        # evidence asked for: "what evidence is there that ...", "is there evidence for ...", "what do studies show
        # ...": findings are stated as results. Not a question about evidence ("what is evidence retrieval?").
        "evidence",
        re.compile(
            r"\bwhat ([\w-]+ ){0,2}evidence (is there|exists?|do|does|did|supports?|shows?|suggests?)\b|"
            r"\bis there (any |some )?([\w-]+ )?evidence\b|"
            r"\bwhat is the ([\w-]+ ){0,3}evidence(?=\s*[?.,;]|\s+(for|that|on)\b)|"
            r"\bwhat (do|did|does) (the )?(studies|papers|experiments|works|results|data) (show|find|say|suggest)\b",
            re.I,
        ),
        ("result", "objective"),
    ),
    ("yes/no", YES_NO_QUESTION, ("result", "objective")),
    (
        # how much / how many: a count is as often the set-up (data, steps, tasks) as the outcome: of the 26
        # sentences answering the dev fact questions, 13 are predicted method and 10 result.
        "quantity",
        re.compile(
            r"\b(how (many|much|large|big|fast|long|often)|what (percentage|fraction|number|size|proportion)|"
            r"(number|amount|fraction|percentage|proportion|share) of|(model|dataset|data) size)\b",
            re.I,
        ),
        ("result", "method"),
    ),
    (
        # mechanism: how something is done
        "mechanism",
        re.compile(
            r"\bhow (does|do|did|can|is|are|was|were)\b|\bin what way\b|\bby what\b|\bwhat (mechanism|technique|"
            r"architecture|strategy|procedure|objective|loss)\b|\bwhat does .* use\b",
            re.I,
        ),
        ("method", "objective"),
    ),
    (
        # which papers / what is studied / open questions: what the work sets out to do, and how
        "which work",
        re.compile(
            r"\b(which|what) (papers?|works?|studies|methods?|approaches|models?|systems?|frameworks?|techniques?)\b|"
            r"\bopen (question|problem)s?\b|\b(papers?|works?|studies) (that|which|on|about)\b|"
            r"^\s*(what (is|are)|define)\b",
            re.I,
        ),
        ("objective", "method"),
    ),
]
DEFAULT_WANTED = ("objective", "method", "result", "other")  # no cue: anything but background


def wanted_roles(question: str) -> tuple[str, ...]:
    """The roles of the sentences that answer `question`, the most wanted first.

    Mechanism ("how does X work") -> method; how well -> result; evidence for / what studies show -> result,
    objective; how much / how many -> result, method (a count is
    as often the set-up as the outcome); which papers / what is X / open question -> objective, method; why /
    motivation / limitations of prior work -> background, objective. When several rules match, their roles are
    joined: background first when asked for, then the rule whose cue comes first in the question. Background is
    never wanted unless asked for, so callers demote a sentence predicted background whenever "background" is not in
    the answer; a question with no cue wants every other role (DEFAULT_WANTED). Rule-based and uncalibrated: how
    much evidence scoring weighs these roles is to be calibrated on the dev set.
    """
    found = []
    for order, (_, asks, roles) in enumerate(WANTED_RULES):
        cue = asks.search(question)
        if cue:
            found.append((roles[0] != "background", cue.start(), order, roles))
    wanted: list[str] = []
    for *_, roles in sorted(found):
        wanted += [r for r in roles if r not in wanted]
    return tuple(wanted) or DEFAULT_WANTED
