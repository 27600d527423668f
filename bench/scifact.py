"""SciFact, an external benchmark: retrieval (nDCG@10, Recall@10/100) over its 5,183 abstracts and evidence selection
(do the answer's quoted sentences hold the rationale sentences experts marked?). For measuring only, never tuning.

    .venv/bin/python bench/scifact.py [--data ../shared/benchmarks/scifact] [--index-dir DIR] [--modes hybrid,bm25]

The index is built once into --index-dir (default bench/results/.scifact-index, not committed) and reused while
its manifest matches; `--rebuild` starts again. Results go to bench/results/scifact.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_DATA = BENCH.parent.parent / "shared" / "benchmarks" / "scifact"
DEFAULT_INDEX = BENCH / "results" / ".scifact-index"


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def same_sentence(a: str, b: str) -> bool:
    """Our splitter may cut sentences differently from SciFact's list: containment or 80% word overlap matches."""
    a, b = " ".join(a.split()), " ".join(b.split())
    if a in b or b in a:
        return True
    wa, wb = words(a), words(b)
    return bool(wa and wb) and len(wa & wb) / min(len(wa), len(wb)) >= 0.8


def load(data: Path) -> tuple[dict[str, dict], list[dict]]:
    corpus = {}
    with (data / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            corpus[row["id"]] = row
    with (data / "claims_dev.jsonl").open(encoding="utf-8") as f:
        claims = [json.loads(line) for line in f if line.strip()]
    return corpus, claims


def ndcg_at(ranked_ids: list[set[str]], gold: set[str], k: int = 10) -> float:
    """Binary-relevance nDCG@k; each ranked paper is the set of SciFact ids sharing its title."""
    gains, seen = [], set()
    for ids in ranked_ids[:k]:
        hit = (ids & gold) - seen
        seen |= hit
        gains.append(1.0 if hit else 0.0)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(gold))))
    return dcg / ideal if ideal else 0.0


def ensure_index(corpus_file: Path, index_dir: Path, rebuild: bool) -> float:
    """Build the SciFact index unless one is there; returns the build seconds (0 when reused)."""
    from rag import storage
    from rag.index import build_index
    from rag.settings import Settings

    if storage.live_version(index_dir) and not rebuild:
        return 0.0
    t = time.perf_counter()
    build_index(Settings(index_dir=index_dir), [corpus_file], rebuild=True, progress=sys.stderr.isatty())
    return time.perf_counter() - t


def measure(data: Path, index_dir: Path, modes: list[str], evidence: bool = True, limit: int | None = None) -> dict:
    from rag.assistant import Assistant
    from rag.corpus import title_key
    from rag.settings import Settings

    corpus, claims = load(data)
    claims = claims[:limit] if limit else claims
    ids_by_title: dict[str, set[str]] = {}
    for doc in corpus.values():
        ids_by_title.setdefault(title_key(doc["title"]), set()).add(doc["id"])
    assistant = Assistant(Settings(index_dir=index_dir, llm_backend="none"))
    out: dict = {"claims": len(claims), "retrieval": {}}
    for mode in modes:
        ndcg, r10, r100 = [], [], []
        for c in claims:
            gold = set(c["gold_ids"])
            hits = assistant.search(c["claim"], k=100, mode=mode)
            ranked = [ids_by_title.get(title_key(h.title), set()) for h in hits]
            ndcg.append(ndcg_at(ranked, gold))
            found10 = set().union(*ranked[:10]) if ranked else set()
            found100 = set().union(*ranked) if ranked else set()
            r10.append(len(gold & found10) / len(gold))
            r100.append(len(gold & found100) / len(gold))
        out["retrieval"][mode] = {
            "ndcg@10": round(sum(ndcg) / len(ndcg), 4),
            "recall@10": round(sum(r10) / len(r10), 4),
            "recall@100": round(sum(r100) / len(r100), 4),
        }
    if evidence:
        out["evidence"] = measure_evidence(assistant, corpus, claims, ids_by_title)
    return out


OUTCOMES = (
    "rationale in evidence",
    "its paper gave evidence, another sentence",
    "its paper in the top papers, under the evidence floor",
    "its paper not in the top papers",
    "refused",
)


def measure_evidence(assistant, corpus: dict, claims: list[dict], ids_by_title: dict) -> dict:
    """For claims with rationales: the answer's evidence (backend none) against the experts' rationale sentences."""
    from rag.corpus import title_key

    rows, outcomes = [], dict.fromkeys(OUTCOMES, 0)
    for c in claims:
        if not c["rationales"]:
            continue
        rationale = [(doc, corpus[doc]["sentences"][i]) for doc, idx in c["rationales"].items() for i in idx]
        answer = assistant.ask(c["claim"])
        marks = [
            any(
                doc in ids_by_title.get(title_key(ev.title), set()) and same_sentence(ev.quote, s)
                for doc, s in rationale
            )
            for ev in answer.evidence
        ]
        gold = set(c["rationales"])
        top = assistant.search(c["claim"], k=assistant.settings.answer_papers)  # the papers an answer scores
        found = [bool(ids_by_title.get(title_key(h.title), set()) & gold) for h in top]
        rows.append({"id": c["id"], "refused": answer.refused, "marks": marks, "first": found[:1] == [True]})
        rows[-1]["in_top"] = any(found)
        if answer.refused:
            outcomes["refused"] += 1
        elif any(marks):
            outcomes["rationale in evidence"] += 1
        elif any(ids_by_title.get(title_key(ev.title), set()) & gold for ev in answer.evidence):
            outcomes["its paper gave evidence, another sentence"] += 1
        elif any(found):
            outcomes["its paper in the top papers, under the evidence floor"] += 1
        else:
            outcomes["its paper not in the top papers"] += 1
    n = len(rows)
    shown = [m for r in rows for m in r["marks"]]
    return {
        "claims_with_rationale": n,
        "rationale_in_evidence": round(sum(any(r["marks"]) for r in rows) / n, 4),
        "first_is_rationale": round(sum(bool(r["marks"]) and r["marks"][0] for r in rows) / n, 4),
        "evidence_precision": round(sum(shown) / max(1, len(shown)), 4),
        "evidence_per_claim": round(len(shown) / n, 2),
        "refused": round(sum(r["refused"] for r in rows) / n, 4),
        "rationale_paper_first": round(sum(r["first"] for r in rows) / n, 4),  # retrieval's ceiling, with:
        "rationale_paper_in_top_papers": round(sum(r["in_top"] for r in rows) / n, 4),
        "outcomes": outcomes,  # where each claim's rationale ended up
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with corpus.jsonl, claims_dev.jsonl")
    parser.add_argument("--index-dir", type=Path, default=DEFAULT_INDEX)
    parser.add_argument("--rebuild", action="store_true", help="index the corpus again")
    parser.add_argument("--modes", default="hybrid,dense,bm25")
    parser.add_argument("--no-evidence", action="store_true", help="retrieval only")
    parser.add_argument("--limit", type=int, default=None, help="first N claims only")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "scifact.json")
    args = parser.parse_args()
    if not (args.data / "corpus.jsonl").exists():
        print(f"error: no SciFact data in {args.data} (give --data)", file=sys.stderr)
        return 1
    build_seconds = ensure_index(args.data / "corpus.jsonl", args.index_dir, args.rebuild)
    result = measure(args.data, args.index_dir, args.modes.split(","), not args.no_evidence, args.limit)
    if build_seconds:
        result["build_seconds"] = round(build_seconds, 1)
    print(json.dumps(result, indent=2))
    if not args.limit:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
