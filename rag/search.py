"""Paper search over an index generation: dense (Chroma) and BM25, fused by reciprocal rank, one hit per paper."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rag import storage
from rag.index import PAPERS, IndexingError, check_model, open_vector_store, read_manifest
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
        self.version = storage.live_version(settings.index_dir)  # compared by servers to notice a newer build
        self.manifest = read_manifest(gen)
        check_model(self.manifest, settings)
        self.papers = {p["id"]: p for p in storage.read_jsonl(gen / "papers.jsonl")}
        self._dense = self._bm25 = None

    def dense_retriever(self):
        """llama-index retriever over the per-paper vectors (mean of each paper's chunk vectors)."""
        if self._dense is None:
            from llama_index.core import VectorStoreIndex

            vector_store, _ = open_vector_store(self.generation / "chroma", PAPERS)
            embedder = load_embedder(self.settings.embed_model, self.settings.embed_batch_size)
            index = VectorStoreIndex.from_vector_store(vector_store, embed_model=embedder)
            self._dense = index.as_retriever(similarity_top_k=min(self.settings.candidates, len(self.papers)))
        return self._dense

    def bm25_retriever(self):
        if self._bm25 is None:
            from llama_index.retrievers.bm25 import BM25Retriever

            self._bm25 = BM25Retriever.from_persist_dir(str(self.generation / "bm25"))
            self._bm25.similarity_top_k = min(self.settings.candidates, self.manifest["chunks"])
        return self._bm25

    @property
    def vocabulary(self):
        """Stemmed words of the corpus (the BM25 vocabulary), for telling absent topics apart."""
        return self.bm25_retriever().bm25.vocab_dict

    def ranked_papers(self, query: str, mode: str) -> list[tuple[str, float, str]]:
        """(paper_id, score, snippet text) best first, for one retrieval mode."""
        if mode == "dense":
            return [
                (n.node.metadata["paper_id"], float(n.score or 0), "") for n in self.dense_retriever().retrieve(query)
            ]
        if mode == "bm25":
            return best_chunk_per_paper(self.bm25_retriever().retrieve(query))
        if mode == "hybrid":
            return fuse(
                self.ranked_papers(query, "dense"), self.ranked_papers(query, "bm25"), self.settings.dense_weight
            )
        raise ValueError(f"unknown search mode {mode!r} (hybrid, dense or bm25)")

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Hit]:
        query = " ".join(query.split())
        if not query:
            return []
        k = k or self.settings.search_k
        hits: list[Hit] = []
        for pid, score, text in self.ranked_papers(query, mode or self.settings.search_mode):
            paper = self.papers.get(pid)
            if paper is None:
                continue
            text = text or paper["abstract"]
            snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
            hits.append(
                Hit(len(hits) + 1, pid, paper["title"], paper["url"], round(score, 4), snippet, paper["source"])
            )
            if len(hits) == k:
                break
        return hits


def best_chunk_per_paper(ranked: list) -> list[tuple[str, float, str]]:
    """Chunk hits (NodeWithScore, best first) -> one entry per paper, scored by its best chunk."""
    seen, out = set(), []
    for item in ranked:
        pid = item.node.metadata["paper_id"]
        if pid not in seen:
            seen.add(pid)
            out.append((pid, float(item.score or 0), item.node.get_content()))
    return out


def fuse(
    dense: list[tuple[str, float, str]], sparse: list[tuple[str, float, str]], dense_weight: float
) -> list[tuple[str, float, str]]:
    """Relative-score fusion at paper level: each list's scores min-max normalized over its candidates, then
    dense_weight * dense + (1 - dense_weight) * bm25; a paper missing from a list gets 0 from it.

    This is llama-index's QueryFusionRetriever "relative_score" mode, done per paper: that retriever fuses nodes,
    and here dense ranks papers while BM25 ranks chunks. Measured on the dev set when chosen: Recall@5 0.955
    against 0.939 for reciprocal-rank fusion (k=60) of the same two rankings.
    """

    def normalized(ranking):
        if not ranking:
            return {}
        scores = [s for _, s, _ in ranking]
        lo, hi = min(scores), max(scores)
        return {pid: (s - lo) / (hi - lo) if hi > lo else 1.0 for pid, s, _ in ranking}

    d, b = normalized(dense), normalized(sparse)
    snippets = {pid: text for pid, _, text in dense}
    snippets.update({pid: text for pid, _, text in sparse if text})
    total = {pid: dense_weight * d.get(pid, 0.0) + (1 - dense_weight) * b.get(pid, 0.0) for pid in d.keys() | b.keys()}
    order = sorted(total, key=lambda pid: (-total[pid], pid))
    return [(pid, total[pid], snippets[pid]) for pid in order]
