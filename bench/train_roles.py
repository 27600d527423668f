"""Train the sentence-role model (rag/roles.py) on CSAbstruct: train on train, choose on dev, report test once.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_roles.py [--data ../shared/benchmarks/csabstruct]

Embeds every CSAbstruct sentence once with the bundled embedder as indexing does (cached in
bench/results/.cache/, not committed), fits step 1 (vector + position) and step 2 (step-1 role probabilities of the
sentence and its neighbours + position) with scikit-learn, picks their regularization on dev macro-F1, writes the
numpy weights to rag/data/roles.npz (checked: rag.roles gives the same labels as scikit-learn), and prints a Markdown
table of accuracy and macro-F1 on dev and test for the model and its baselines (majority class, position only, the
issue's vector + position logistic regression, raw neighbour vectors). Then the dev fact-question check: are the
sentences that answer the dev set's fact questions predicted background? Results in bench/results/roles.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import KFold

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from rag import roles  # noqa: E402
from rag.roles import ROLES, context_features, position_features, sentence_features, shifted  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "benchmarks" / "csabstruct"
CACHE = BENCH / "results" / ".cache"
RESULTS = BENCH / "results" / "roles.json"
SPLITS = ("train", "dev", "test")
C_GRID = (0.3, 1.0, 3.0)


def load_split(data: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (data / f"{split}.jsonl").open(encoding="utf-8") if line.strip()]
    for row in rows:
        unknown = set(row["labels"]) - set(ROLES)
        if unknown:  # CSAbstruct's five labels are our five roles; anything else means the data changed
            raise SystemExit(f"{split}: abstract {row['abstract_id']} has labels {unknown} outside {ROLES}")
    return rows


def embedded(data: Path, splits: dict[str, list[dict]]) -> dict[str, list[np.ndarray]]:
    """split -> one (n, 384) array per abstract: the bundled embedder's vectors, embedded once and cached."""
    from rag.index import embed_texts
    from rag.models import BUNDLED, embed_model_label, load_embedder

    texts = {s: [t for row in rows for t in row["sentences"]] for s, rows in splits.items()}
    key = hashlib.sha1(json.dumps([embed_model_label(BUNDLED), [texts[s] for s in SPLITS]]).encode()).hexdigest()[:12]
    path = CACHE / f"csabstruct-{key}.npz"
    if path.exists():
        flat = dict(np.load(path))
    else:
        embedder = load_embedder(BUNDLED)
        flat = {}
        for s in SPLITS:
            start = time.perf_counter()
            flat[s] = np.asarray(embed_texts(texts[s], embedder, 16), dtype=np.float32)  # as rag index does
            print(f"embedded {s}: {len(texts[s])} sentences in {time.perf_counter() - start:.0f} s", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **flat)
    out = {}
    for s, rows in splits.items():
        bounds = np.cumsum([0] + [len(row["sentences"]) for row in rows])
        out[s] = [flat[s][a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return out


def labels(rows: list[dict]) -> np.ndarray:
    return np.array([ROLES.index(label) for row in rows for label in row["labels"]])


def stacked(features, abstracts: list[np.ndarray]) -> np.ndarray:
    return np.vstack([features(v) for v in abstracts])


def neighbour_vectors(v: np.ndarray) -> np.ndarray:
    """The obvious context feature, measured for the record: the vector, position, and the raw vectors of the
    sentences before and after."""
    return np.hstack([sentence_features(v), shifted(v, 1), shifted(v, -1)])


def scores(gold: np.ndarray, predicted: np.ndarray) -> dict:
    return {
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "macro_f1": round(float(f1_score(gold, predicted, average="macro", labels=range(len(ROLES)))), 4),
    }


def fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=5000).fit(x, y)


def per_abstract(probabilities: np.ndarray, abstracts: list[np.ndarray]) -> np.ndarray:
    """Step-2 features for every sentence, abstract by abstract."""
    out, start = [], 0
    for v in abstracts:
        out.append(context_features(probabilities[start : start + len(v)]))
        start += len(v)
    return np.vstack(out)


def out_of_fold(x: np.ndarray, y: np.ndarray, abstracts: list[np.ndarray], c: float, folds: int = 5) -> np.ndarray:
    """Step-1 probabilities of every train sentence from a model that did not see its abstract (step 2 must learn
    from probabilities as unsure as those it will get on new abstracts)."""
    bounds = np.cumsum([0] + [len(v) for v in abstracts])
    out = np.zeros((len(y), len(ROLES)))
    for fit_on, held in KFold(folds, shuffle=True, random_state=0).split(abstracts):
        rows = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(abstracts))]
        a, b = np.concatenate([rows[i] for i in fit_on]), np.concatenate([rows[i] for i in held])
        out[b] = fit(x[a], y[a], c).predict_proba(x[b])
    return out


def answer_sentences(abstract_sentences: list[str], keyword_groups: list[list[str]]) -> list[int]:
    """The fewest sentences that state a fact question's answer: the sentence holding the most keyword groups, then
    the one holding most of the groups still missing, and so on (a group: any of its alternatives, matched as
    `rag eval` matches answers, case-insensitive substrings; ties go to the earlier sentence)."""
    low = [s.lower() for s in abstract_sentences]
    missing = [g for g in keyword_groups]
    chosen: list[int] = []
    while missing:
        held = [[g for g in missing if any(alt.lower() in s for alt in g)] for s in low]
        best = max(range(len(low)), key=lambda i: (len(held[i]), -i), default=None)
        if best is None or not held[best]:
            break  # a group the abstract does not hold
        chosen.append(best)
        missing = [g for g in missing if g not in held[best]]
    return sorted(chosen)


def fact_question_check(dev_set: Path) -> dict:
    """On the dev set's fact questions: the role predicted for each answer sentence, against the share of the other
    sentences of the same abstracts predicted background."""
    from rag.corpus import corpus_files, parse_file, title_key
    from rag.index import BUNDLED_DIR, embed_texts
    from rag.models import BUNDLED, load_embedder
    from rag.sentences import split_sentences

    papers = {title_key(p.title): p for f in corpus_files([BUNDLED_DIR]) for p in parse_file(f)}
    questions = [q for q in map(json.loads, dev_set.open(encoding="utf-8")) if q["type"] == "fact"]
    embedder = load_embedder(BUNDLED)
    answers, others, rows = [], [], []
    for q in questions:
        paper = papers[title_key(q["gold_titles"][0])]
        sentences = split_sentences(paper.abstract)
        predicted = roles.sentence_roles(embed_texts(sentences, embedder, 16))
        hit = answer_sentences(sentences, q["answer_keywords"])
        answers += [predicted[i] for i in hit]
        others += [r for i, r in enumerate(predicted) if i not in hit]
        wanted = roles.wanted_roles(q["question"])
        rows.append({"id": q["id"], "answer_sentences": hit, "roles": [predicted[i] for i in hit], "wanted": wanted})
    return {
        "questions": len(questions),
        "answer_sentences": len(answers),
        "answer_roles": {r: answers.count(r) for r in ROLES},
        "answers_background": answers.count("background"),
        "other_sentences": len(others),
        "others_background_share": round(others.count("background") / max(1, len(others)), 3),
        "answer_role_wanted": sum(r["roles"].count(w) for r in rows for w in set(r["wanted"])),
        "per_question": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the CSAbstruct folder")
    parser.add_argument("--out", type=Path, default=roles.WEIGHTS, help="where the weights go")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    splits = {s: load_split(args.data, s) for s in SPLITS}
    vectors = embedded(args.data, splits)
    y = {s: labels(splits[s]) for s in SPLITS}
    print({s: f"{len(splits[s])} abstracts, {len(y[s])} sentences" for s in SPLITS}, flush=True)

    dev_rows: list[tuple[str, dict]] = []  # (candidate, dev scores): what was chosen from

    def dev_row(name: str, predicted: np.ndarray) -> dict:
        result = scores(y["dev"], predicted)
        dev_rows.append((name, result))
        print(f"dev  {name}: {result}", flush=True)
        return result

    # Baselines. Majority: the most frequent role in train (method, by 6 sentences over background).
    majority = int(np.bincount(y["train"]).argmax())
    position = {s: stacked(position_features_of, vectors[s]) for s in SPLITS}
    position_model = fit(position["train"], y["train"], 1.0)

    # Step 1: vector + position (the baseline), regularization chosen on dev macro-F1.
    x1 = {s: stacked(sentence_features, vectors[s]) for s in SPLITS}
    step1 = {}
    for c in C_GRID:
        step1[c] = fit(x1["train"], y["train"], c)
        dev_row(f"step 1 (vector + position), C={c}", step1[c].predict(x1["dev"]))
    c1 = max(C_GRID, key=lambda c: f1_score(y["dev"], step1[c].predict(x1["dev"]), average="macro"))

    # The obvious context feature, for the record: raw neighbour vectors (dev says they overfit).
    x_nb = {s: stacked(neighbour_vectors, vectors[s]) for s in ("train", "dev")}
    dev_row("vector + position + neighbour vectors, C=0.3", fit(x_nb["train"], y["train"], 0.3).predict(x_nb["dev"]))

    # Step 2: role probabilities of the sentence and its neighbours, trained on out-of-fold step-1 probabilities.
    x2_train = per_abstract(out_of_fold(x1["train"], y["train"], vectors["train"], c1), vectors["train"])
    x2 = {s: per_abstract(step1[c1].predict_proba(x1[s]), vectors[s]) for s in ("dev", "test")}
    step2 = {}
    for c in C_GRID:
        step2[c] = fit(x2_train, y["train"], c)
        dev_row(f"step 2 (context of ±{roles.CONTEXT} sentences), C={c}", step2[c].predict(x2["dev"]))
    c2 = max(C_GRID, key=lambda c: f1_score(y["dev"], step2[c].predict(x2["dev"]), average="macro"))
    print(f"chosen on dev macro-F1: step 1 C={c1}, step 2 C={c2}", flush=True)

    # The weights, as numpy arrays; rag.roles must reproduce scikit-learn's labels.
    from rag.models import BUNDLED, embed_model_label

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        sentence_w=step1[c1].coef_.T.astype(np.float32),
        sentence_b=step1[c1].intercept_.astype(np.float32),
        context_w=step2[c2].coef_.T.astype(np.float32),
        context_b=step2[c2].intercept_.astype(np.float32),
        roles=np.array(ROLES),
        embedder=np.array(embed_model_label(BUNDLED)),
    )
    roles.role_model.cache_clear()
    shipped = np.array([ROLES.index(r) for v in vectors["dev"] for r in roles.sentence_roles(v)])
    agree = float((shipped == step2[c2].predict(x2["dev"])).mean())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} KB); rag.roles agrees on {agree:.4f} of dev")
    if agree < 0.999:
        raise SystemExit("rag.roles does not reproduce the trained model")

    # Test, once: every row with the choices made above.
    def both(predict) -> dict:
        return {s: scores(y[s], predict(s)) for s in ("dev", "test")}

    table = {
        f"majority class ({ROLES[majority]})": both(lambda s: np.full(len(y[s]), majority)),
        "position only (logistic regression, 3 features)": both(lambda s: position_model.predict(position[s])),
        f"vector + position (logistic regression, C={c1}; the issue's baseline)": both(
            lambda s: step1[c1].predict(x1[s])
        ),
        f"**role model**: + neighbours' roles (±{roles.CONTEXT}, C={c2}; shipped)": both(
            lambda s: np.array([ROLES.index(r) for v in vectors[s] for r in roles.sentence_roles(v)])
        ),
    }
    print("\n| CSAbstruct | dev accuracy | dev macro-F1 | test accuracy | test macro-F1 |\n|---|---:|---:|---:|---:|")
    for name, r in table.items():
        print(
            f"| {name} | {r['dev']['accuracy']:.3f} | {r['dev']['macro_f1']:.3f} "
            f"| {r['test']['accuracy']:.3f} | {r['test']['macro_f1']:.3f} |"
        )
    test_predicted = np.array([ROLES.index(r) for v in vectors["test"] for r in roles.sentence_roles(v)])
    per_role = f1_score(y["test"], test_predicted, average=None, labels=range(len(ROLES)))
    print("\ntest F1 per role: " + ", ".join(f"{r} {f:.3f}" for r, f in zip(ROLES, per_role)))

    check = fact_question_check(ROOT / "tests" / "data" / "dev.jsonl")
    print(
        f"\ndev fact questions: {check['answers_background']} of {check['answer_sentences']} answer sentences "
        f"({check['questions']} questions) predicted background, against "
        f"{check['others_background_share']:.0%} of the other {check['other_sentences']} sentences of the same "
        f"abstracts; answer sentences' roles {check['answer_roles']}; "
        f"{check['answer_role_wanted']} of them have a role wanted_roles(question) names"
    )
    RESULTS.write_text(
        json.dumps(
            {
                "table": table,
                "dev_candidates": dev_rows,
                "chosen": {"step1_C": c1, "step2_C": c2, "context": roles.CONTEXT},
                "test_f1_per_role": dict(zip(ROLES, [round(float(f), 4) for f in per_role])),
                "dev_fact_questions": check,
                "weights_kb": round(args.out.stat().st_size / 1024, 1),
                "seconds": round(time.perf_counter() - started),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"results in {RESULTS.relative_to(ROOT)}; {time.perf_counter() - started:.0f} s")
    return 0


def position_features_of(v: np.ndarray) -> np.ndarray:
    return position_features(len(v))


if __name__ == "__main__":
    raise SystemExit(main())
