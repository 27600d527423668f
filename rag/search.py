"""Paper search over an index generation: dense (Chroma) and BM25, fused by reciprocal rank, one hit per paper."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rag import storage
from rag.index import IndexingError, check_model, open_vector_store, read_manifest
from rag.models import load_embedder
from rag.settings import Settings

SNIPPET_CHARS = 300


@dataclass
class Hit:
    rank: int
    paper_id: str
    title: str
    url: str
    score: float
    snippet: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Opens one index generation read-only and answers searches; cheap to keep, slow to create (loads models)."""

    def __init__(self, settings: Settings):
        gen = storage.current_generation(settings.index_dir)
        if gen is None:
            raise IndexingError(f"no index in {settings.index_dir}: run `rag index` first")
        self.settings = settings
        self.generation: Path = gen
        self.manifest = read_manifest(gen)
        check_model(self.manifest, settings)
        self.papers = {p["id"]: p for p in storage.read_jsonl(gen / "papers.jsonl")}
        self._dense = self._bm25 = None

    def dense_retriever(self):
        if self._dense is None:
            from llama_index.core import VectorStoreIndex

            vector_store, _ = open_vector_store(self.generation / "chroma")
            embedder = load_embedder(self.settings.embed_model, self.settings.embed_batch_size)
            index = VectorStoreIndex.from_vector_store(vector_store, embed_model=embedder)
            self._dense = index.as_retriever(similarity_top_k=self.settings.candidates)
        return self._dense

    def bm25_retriever(self):
        if self._bm25 is None:
            from llama_index.retrievers.bm25 import BM25Retriever

            self._bm25 = BM25Retriever.from_persist_dir(str(self.generation / "bm25"))
            self._bm25.similarity_top_k = min(self.settings.candidates, self.manifest["chunks"])
        return self._bm25

    def ranked_chunks(self, query: str, mode: str) -> list:
        """NodeWithScore list, best first, for one retrieval mode."""
        if mode == "dense":
            return self.dense_retriever().retrieve(query)
        if mode == "bm25":
            return self.bm25_retriever().retrieve(query)
        if mode == "hybrid":
            return fuse([self.dense_retriever().retrieve(query), self.bm25_retriever().retrieve(query)],
                        self.settings.rrf_k)
        raise ValueError(f"unknown search mode {mode!r} (hybrid, dense or bm25)")

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Hit]:
        query = " ".join(query.split())
        if not query:
            return []
        k = k or self.settings.search_k
        hits: list[Hit] = []
        seen = set()
        for item in self.ranked_chunks(query, mode or self.settings.search_mode):
            pid = item.node.metadata["paper_id"]
            if pid in seen or pid not in self.papers:
                continue
            seen.add(pid)
            paper = self.papers[pid]
            text = item.node.get_content()
            snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
            hits.append(Hit(len(hits) + 1, pid, paper["title"], paper["url"], round(float(item.score or 0), 4),
                            snippet, paper["source"]))
            if len(hits) == k:
                break
        return hits


def fuse(rankings: list[list], rrf_k: int) -> list:
    """Reciprocal rank fusion at paper level: each paper scores sum(1 / (rrf_k + rank)) over the rankings, where
    its rank in a ranking is that of its best chunk; the paper is represented by its best-ranked chunk.

    llama-index's QueryFusionRetriever fuses at chunk level, so a paper split into two chunks could be counted twice
    in one ranking and a one-chunk paper not; fusing per paper keeps every paper on equal terms.
    """
    from llama_index.core.schema import NodeWithScore

    scores: dict[str, float] = {}
    best: dict[str, tuple[int, object]] = {}
    for ranking in rankings:
        rank = 0
        seen = set()
        for item in ranking:
            pid = item.node.metadata["paper_id"]
            if pid in seen:
                continue
            seen.add(pid)
            rank += 1
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (rrf_k + rank)
            if pid not in best or rank < best[pid][0]:
                best[pid] = (rank, item.node)
    order = sorted(scores, key=lambda pid: (-scores[pid], best[pid][0]))
    return [NodeWithScore(node=best[pid][1], score=scores[pid]) for pid in order]
