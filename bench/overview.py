"""Calibrates and measures overview answers' per-paper relevance (rag/overview.py) on the dev questions.

    .venv/bin/python bench/overview.py [--index index]

For each overview question (tests/data/overview-dev.jsonl) and "which papers" question (type multi in
tests/data/dev.jsonl), the top OVERVIEW_CANDIDATES papers of the search and their six relevance signals; a logistic
regression fitted on all of them gives rag/overview.py's WEIGHTS and BIAS; leave-one-question-out figures tell
what to expect on unseen questions (recall and precision of the kept papers against the gold lists).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def candidates(assistant, question: str) -> tuple[list, np.ndarray]:
    """The candidates' titles and their feature rows, as rag/overview.py computes them."""
    from rag.evidence import asked_parts, score_sentences
    from rag.overview import OVERVIEW_CANDIDATES, key_sentences, paper_features
    from rag.roles import wanted_roles

    s = assistant.searcher
    asks = asked_parts(question)
    vectors = s.embed(asks)
    hits = s.search(question, k=OVERVIEW_CANDIDATES, vector=vectors[0])
    stored = s.sentence_vectors([h.paper_id for h in hits])
    scored = score_sentences(asks, vectors, hits, s.papers, s.embed, stored, s.roles)
    key = key_sentences(scored, wanted_roles(question), question)
    features = paper_features(question, hits, key, stored, vectors[0], s.papers)
    titles = [h.title for h in hits if h.paper_id in features]
    return titles, np.array([features[h.paper_id] for h in hits if h.paper_id in features])


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method with an L2 penalty (bias unpenalized); weights then bias."""
    a = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(a.shape[1])
    penalty = np.eye(a.shape[1]) * l2
    penalty[-1, -1] = 0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-a @ w))
        gradient = a.T @ (p - y) + penalty @ w
        hessian = a.T @ (a * (p * (1 - p))[:, None]) + penalty
        w -= np.linalg.solve(hessian, gradient)
    return w


def setup() -> tuple:
    """(an evidence-only Assistant over --index, the overview and "which papers" dev questions)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", default="index")
    args = parser.parse_args()
    from rag.assistant import Assistant
    from rag.settings import Settings

    data = ROOT / "tests" / "data"
    questions = [json.loads(line) for line in (data / "overview-dev.jsonl").open()]
    questions += [q for q in map(json.loads, (data / "dev.jsonl").open()) if q["type"] == "multi"]
    return Assistant(Settings(index_dir=Path(args.index), llm_backend="none")), questions


def main() -> int:
    from rag.corpus import title_key

    assistant, questions = setup()
    rows, labels, groups, gold_total = [], [], [], 0
    for i, q in enumerate(questions):
        gold = {title_key(t) for t in q["gold_titles"]}
        gold_total += len(gold)
        titles, x = candidates(assistant, q["question"])
        rows.append(x)
        labels += [title_key(t) in gold for t in titles]
        groups += [i] * len(titles)
    x, y, g = np.vstack(rows), np.array(labels, dtype=float), np.array(groups)
    held_out = np.zeros(len(y))
    for i in range(len(questions)):
        w = fit(x[g != i], y[g != i])
        held_out[g == i] = 1 / (1 + np.exp(-(x[g == i] @ w[:-1] + w[-1])))
    print(f"{len(questions)} questions, {gold_total} relevant papers, {int(y.sum())} of them among the candidates")
    print("| kept at probability | recall (of all relevant) | precision | papers kept per question |")
    print("|---:|---:|---:|---:|")
    for threshold in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4):
        kept = held_out >= threshold
        hits = float((kept & (y == 1)).sum())
        print(
            f"| {threshold:.2f} | {hits / gold_total:.3f} | {hits / max(1, kept.sum()):.3f} | "
            f"{kept.sum() / len(questions):.1f} |"
        )
    w = fit(x, y)
    print("WEIGHTS =", tuple(round(float(v), 2) for v in w[:-1]), " BIAS =", round(float(w[-1]), 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
