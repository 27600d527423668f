"""Paper vectors in Chroma: embedded (`PersistentClient` in the store folder, the default) or a Chroma server
(`RAG_CHROMA_URL`, `chromadb.HttpClient`), through the same calls.

One collection per store, `papers-<store id>`, one record per paper: id = paper id, the vector = its head's (title
and first words of the abstract; RAG_PAPER_VECTORS=chunks: the normalized mean of its chunks' vectors; rag/index.py).
Chunk vectors are not stored: nothing searches them (dense search ranks papers by these vectors: hybrid Recall@5
0.955 against 0.934 with the best chunk per paper, dev set), and their HNSW index was half of Chroma's time at 100k
papers.

chromadb is used directly: llama-index's ChromaVectorStore wraps nodes around what are here plain (id, vector)
records and adds nothing to a query by vector.
"""

from __future__ import annotations

import json
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

from rag.settings import Settings, error_line, mask_url

ADD_BATCH = 1000  # Chroma's SQLite takes ~32k variables per statement
# HNSW's candidate list per query (Chroma's default is 100). Measured on the bundled index, 60 dev questions, top 30
# against exact cosine: 100 gave another top 30 for 10 questions (one or two gold papers in or out of the top 10), 150
# for 3, 250 for none. Approximate results also differed from build to build (the graph depends on insertion
# threads): CI once measured hybrid Recall@5 0.935 on a fresh index where other builds gave 0.955.
EF_SEARCH = 400


class VectorStoreError(RuntimeError):
    """Chroma cannot be reached or refused a request; the message names Chroma and the setting to check, one line,
    URL credentials masked."""


def chroma_name(settings: Settings) -> str:
    if settings.chroma_url:
        return f"the Chroma server at {mask_url(settings.chroma_url)} (RAG_CHROMA_URL)"
    return "the embedded Chroma store"


@contextmanager
def chroma_errors(settings: Settings, doing: str):
    """Any failure of a Chroma call as one VectorStoreError line that names Chroma (chromadb raises httpx,
    ValueError or its own errors, none of which says which service failed)."""
    try:
        yield
    except VectorStoreError:
        raise
    except Exception as e:
        raise VectorStoreError(f"{chroma_name(settings)} failed {doing}: {error_line(e)}") from None


def client(settings: Settings, store_path: Path):
    import chromadb

    if not settings.chroma_url:
        return chromadb.PersistentClient(path=str(store_path / "chroma"), settings=chroma_settings(settings))
    url = urllib.parse.urlparse(settings.chroma_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise VectorStoreError(f"RAG_CHROMA_URL={mask_url(settings.chroma_url)!r} is not an http(s) URL")
    headers = {}
    if settings.chroma_headers:
        try:
            headers = {str(k): str(v) for k, v in json.loads(settings.chroma_headers.get_secret_value()).items()}
        except (ValueError, AttributeError):
            raise VectorStoreError('RAG_CHROMA_HEADERS must be a JSON object, e.g. {"X-Chroma-Token": "..."}') from None
    if settings.chroma_token:
        headers.setdefault("Authorization", f"Bearer {settings.chroma_token.get_secret_value()}")
    try:
        return chromadb.HttpClient(
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            headers=headers,
            settings=chroma_settings(settings),
        )
    except Exception as e:  # chromadb raises ValueError / httpx errors for an unreachable server
        raise VectorStoreError(
            f"cannot reach the Chroma server at {mask_url(settings.chroma_url)} (RAG_CHROMA_URL): {error_line(e)}"
        ) from None


def chroma_settings(settings: Settings):
    import chromadb

    return chromadb.Settings(anonymized_telemetry=False)


def collection_name(store: str) -> str:
    return f"papers-{store}"


class PaperVectors:
    """The paper-vector collection of one store."""

    def __init__(self, settings: Settings, store_path: Path, store: str):
        self.settings = settings
        self.client = client(settings, store_path)
        self.name = collection_name(store)
        with chroma_errors(settings, "to open the paper vectors"):
            self.collection = self.client.get_or_create_collection(
                self.name, configuration={"hnsw": {"space": "cosine", "ef_search": EF_SEARCH}}
            )

    def upsert(self, ids: list[str], vectors: list) -> None:
        with chroma_errors(self.settings, "to store paper vectors"):
            for start in range(0, len(ids), ADD_BATCH):
                batch = slice(start, start + ADD_BATCH)
                self.collection.upsert(ids=ids[batch], embeddings=vectors[batch])

    def delete(self, ids: list[str]) -> None:
        with chroma_errors(self.settings, "to delete paper vectors"):
            for start in range(0, len(ids), ADD_BATCH):
                self.collection.delete(ids=ids[start : start + ADD_BATCH])

    def query(self, vector: list[float], n: int) -> list[tuple[str, float]]:
        """(paper id, cosine similarity) best first; fewer than n when the collection holds fewer."""
        with chroma_errors(self.settings, "to search the paper vectors"):
            got = self.collection.query(query_embeddings=[vector], n_results=n, include=["distances"])
        return [(pid, 1.0 - dist) for pid, dist in zip(got["ids"][0], got["distances"][0])]


def drop_collection(settings: Settings, store_path: Path, store: str) -> None:
    """Delete a store's collection (after a rebuild switched away from it, or a killed build's); gone is fine."""
    try:
        client(settings, store_path).delete_collection(collection_name(store))
    except Exception:  # chromadb raises NotFoundError / ValueError depending on version and mode
        pass
