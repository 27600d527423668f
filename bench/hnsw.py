"""What Chroma's HNSW candidate list (`ef_search`, rag/vectors.py EF_SEARCH) costs and buys at scale.

    .venv/bin/python bench/hnsw.py [--papers 100000] [--queries 200]

Synthetic 384-dimensional unit vectors clustered around 64 topics (papers near their topic, as real abstracts'
embeddings are), inserted into an embedded Chroma collection created with each `ef_search`; then the same queries:
p50 / p95 query time and the share of the exact top 30 (cosine, numpy) that the collection returns.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np


def clustered(rng: np.random.Generator, topics: np.ndarray, n: int) -> np.ndarray:
    vectors = topics[rng.integers(0, len(topics), n)] + 0.6 * rng.normal(size=(n, topics.shape[1])).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    import chromadb

    rng = np.random.default_rng(0)
    topics = rng.normal(size=(64, 384)).astype(np.float32)
    vectors, queries = clustered(rng, topics, args.papers), clustered(rng, topics, args.queries)
    exact = [set(np.argsort(-(vectors @ q))[:30].astype(str)) for q in queries]
    client = chromadb.PersistentClient(tempfile.mkdtemp(), settings=chromadb.Settings(anonymized_telemetry=False))
    print(f"{args.papers} papers, {args.queries} queries, top 30")
    print("| ef_search | query p50 | p95 | share of the exact top 30 |\n|---:|---:|---:|---:|")
    for ef in (100, 400):
        configuration = {"hnsw": {"space": "cosine", "ef_search": ef}}
        collection = client.create_collection(f"papers-{ef}", configuration=configuration)
        for start in range(0, args.papers, 1000):
            ids = [str(i) for i in range(start, min(args.papers, start + 1000))]
            collection.upsert(ids=ids, embeddings=vectors[start : start + 1000])
        collection.query(query_embeddings=[queries[0].tolist()], n_results=30, include=[])  # loads the index
        times, found = [], 0
        for q, best in zip(queries, exact):
            started = time.perf_counter()
            got = collection.query(query_embeddings=[q.tolist()], n_results=30, include=[])
            times.append(time.perf_counter() - started)
            found += len(best & set(got["ids"][0]))
        p95 = sorted(times)[int(0.95 * len(times)) - 1]
        print(
            f"| {ef} | {statistics.median(times) * 1000:.2f} ms | {p95 * 1000:.2f} ms | "
            f"{found / (30 * len(queries)):.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
