"""Would other signals or per-aspect search lift overview relevance (rag/overview.py)? Measures, changes nothing.

    .venv/bin/python bench/overview_signals.py [--index index]

1. Candidates: the share of the relevant papers among the top OVERVIEW_CANDIDATES of one search for the question,
   against the reciprocal-rank fusion of searches for each aspect of it (its sentences, and the items of an
   enumeration such as "better ODE solvers, searched step schedules, or distillation").
2. Signals: leave-one-question-out AUC and the best F1 (with its recall / precision) of the logistic model over the
   six signals rag/overview.py uses, alone and with each of nine more added.
Questions: the overview and "which papers" dev questions, as bench/overview.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overview import fit, setup  # noqa: E402  (bench/overview.py)

ENUMERATION = re.compile(r"[—–(:]\s*([^—–()?:]+?(?:,[^—–()?:]+?)+)\s*(?:[—–)?]|$)")
EXTRA = ["search / best", "key / best", "key z-score", "best sentence cosine", "best sentence cosine to an aspect",
         "title cosine", "1/dense rank", "1/BM25 rank", "cosine to its 3 nearest candidates"]  # fmt: skip


def aspects(question: str) -> list[str]:
    """The question, its sentences when it has several, and the items of an enumeration in it."""
    from rag.evidence import content_terms

    out = [question]
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", question) if s.strip()]
    out += sentences if len(sentences) > 1 else []
    for m in ENUMERATION.finditer(question):
        items = [i.strip(" ,") for i in re.split(r",\s*(?:or\s+|and\s+)?|\s+or\s+", m.group(1)) if content_terms(i)]
        out += items if len(items) >= 2 else []
    return out


def fused(ranked_lists: list[list[str]], k: int = 60) -> list[str]:
    score: dict[str, float] = {}
    for ranked in ranked_lists:
        for rank, pid in enumerate(ranked):
            score[pid] = score.get(pid, 0.0) + 1 / (k + rank + 1)
    return sorted(score, key=score.__getitem__, reverse=True)


def signals(assistant, question: str) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """The candidates' titles, their 6 + 9 signals, and the ranked titles of each aspect's search."""
    from rag.evidence import asked_parts, score_sentences
    from rag.overview import OVERVIEW_CANDIDATES, key_sentences, paper_features

    s = assistant.searcher
    asks = asked_parts(question)
    vectors = s.embed(asks)
    hits = s.search(question, k=OVERVIEW_CANDIDATES, vector=vectors[0])
    stored = s.sentence_vectors([h.paper_id for h in hits])
    key = key_sentences(score_sentences(asks, vectors, hits, s.papers, s.embed, stored, s.roles))
    base = paper_features(question, hits, key, stored, vectors[0], s.papers)
    hits = [h for h in hits if h.paper_id in base]
    parts = aspects(question)
    part_vectors = np.asarray(s.embed(parts))
    per_aspect = [[h.title for h in s.search(p, k=OVERVIEW_CANDIDATES, vector=v)] for p, v in zip(parts, part_vectors)]
    q = np.asarray(vectors[0])
    titles = np.asarray(s.embed([h.title for h in hits]))
    keys = np.array([key[h.paper_id].score for h in hits])
    dense = {pid: r for r, (pid, _, _) in enumerate(s.ranked_papers(question, "dense", vectors[0]))}
    bm25 = {pid: r for r, (pid, _, _) in enumerate(s.ranked_papers(question, "bm25"))}
    means = np.asarray([np.mean(stored[h.paper_id], 0) for h in hits])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    rows = []
    for i, h in enumerate(hits):
        sentences = np.asarray(stored[h.paper_id])
        rows.append(
            base[h.paper_id]
            + [
                h.score / hits[0].score,
                keys[i] / keys.max(),
                (keys[i] - keys.mean()) / (keys.std() + 1e-6),
                float((sentences @ q).max()),
                float((sentences @ part_vectors.T).max()),
                float(titles[i] @ q),
                1 / (1 + dense.get(h.paper_id, 100)),
                1 / (1 + bm25.get(h.paper_id, 100)),
                float(np.sort(means @ means[i])[-4:-1].mean()),
            ]
        )
    return [h.title for h in hits], np.asarray(rows), per_aspect


def held_out(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    p = np.zeros(len(y))
    for g in np.unique(groups):
        w = fit(x[groups != g], y[groups != g])
        p[groups == g] = 1 / (1 + np.exp(-(x[groups == g] @ w[:-1] + w[-1])))
    return p


def summary(p: np.ndarray, y: np.ndarray, relevant: int) -> str:
    auc = float((p[y == 1][:, None] > p[y == 0][None, :]).mean())
    best = (0.0, 0.0, 0.0, 0.0)
    for t in np.arange(0.1, 0.6, 0.05):
        kept = p >= t
        found = float((kept & (y == 1)).sum())
        recall, precision = found / relevant, found / max(1, kept.sum())
        f1 = 2 * recall * precision / max(recall + precision, 1e-9)
        best = max(best, (f1, t, recall, precision))
    return f"| {auc:.3f} | {best[0]:.3f} (at {best[1]:.2f}: recall {best[2]:.2f}, precision {best[3]:.2f}) |"


def main() -> int:
    from rag.corpus import title_key

    assistant, questions = setup()
    rows, labels, groups, relevant, one, many = [], [], [], 0, 0, 0
    for i, q in enumerate(questions):
        gold = {title_key(t) for t in q["gold_titles"]}
        relevant += len(gold)
        titles, x, per_aspect = signals(assistant, q["question"])
        one += len(gold & {title_key(t) for t in per_aspect[0]})
        many += len(gold & {title_key(t) for t in fused(per_aspect)[: len(per_aspect[0])]})
        rows.append(x)
        labels += [title_key(t) in gold for t in titles]
        groups += [i] * len(titles)
    x, y, g = np.vstack(rows), np.array(labels, dtype=float), np.array(groups)
    print(f"{len(questions)} questions, {relevant} relevant papers")
    print(f"relevant papers among the candidates: one search {one / relevant:.3f}, aspects fused {many / relevant:.3f}")
    print("| signals | AUC (held out) | best F1 |\n|---|---:|---|")
    print("| the six of rag/overview.py " + summary(held_out(x[:, :6], y, g), y, relevant))
    for j, name in enumerate(EXTRA):
        print(f"| six + {name} " + summary(held_out(x[:, list(range(6)) + [6 + j]], y, g), y, relevant))
    print("| all fifteen " + summary(held_out(x, y, g), y, relevant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
