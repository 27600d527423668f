"""One measured task per process (so its peak RSS is its own): `worker.py TASK OUT.json ARGS...`.

Tasks: index-ours, index-plain, query, quality, scale-build, scale-search. Each writes a JSON dict to OUT.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
PLAIN_COLLECTION = "plain"


def dev_questions() -> list[dict]:
    from rag.evaluate import load_questions

    return load_questions(Path(__file__).resolve().parent.parent / "tests" / "data" / "dev.jsonl")


def stats(values: list[float]) -> dict:
    from rag.evaluate import percentile

    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95)}


def index_ours(index_dir: str) -> dict:
    """Our `rag index` on the bundled corpus (cold when index_dir is empty, a no-op re-index otherwise)."""
    from rag.index import build_index
    from rag.settings import Settings

    imported = time.perf_counter()
    report = build_index(Settings(index_dir=Path(index_dir)), progress=False)
    return {
        "import_seconds": imported - STARTED,
        "build_seconds": time.perf_counter() - imported,
        "report": report.to_dict(),
    }


def plain_embedder():
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from rag.models import embed_model_location

    return HuggingFaceEmbedding(model_name=embed_model_location("bundled"))


def index_plain(persist_dir: str) -> dict:
    """The plain llama-index recipe over the same papers: title + abstract Documents, default SentenceSplitter,
    HuggingFaceEmbedding, VectorStoreIndex.from_documents into a Chroma PersistentClient collection."""
    import chromadb
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from rag.index import BUNDLED_SOURCE, load_papers

    imported = time.perf_counter()
    papers, *_ = load_papers([BUNDLED_SOURCE], skip_bad=False)
    docs = [Document(id_=p.id, text=f"{p.title}\n\n{p.abstract}") for p in papers]
    embed_model = plain_embedder()
    client = chromadb.PersistentClient(path=persist_dir, settings=chromadb.Settings(anonymized_telemetry=False))
    store = ChromaVectorStore(chroma_collection=client.get_or_create_collection(PLAIN_COLLECTION))
    VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model
    )
    chunks = client.get_collection(PLAIN_COLLECTION).count()
    return {
        "import_seconds": imported - STARTED,
        "build_seconds": time.perf_counter() - imported,
        "papers": len(papers),
        "chunks": chunks,
    }


class PlainSearch:
    """The plain recipe's retriever behind the `search` API, so rag.evaluate can score it at paper level."""

    def __init__(self, persist_dir: str, top_k: int = 10):
        import chromadb
        from llama_index.core import VectorStoreIndex
        from llama_index.vector_stores.chroma import ChromaVectorStore

        from rag.index import BUNDLED_SOURCE, load_papers

        client = chromadb.PersistentClient(path=persist_dir, settings=chromadb.Settings(anonymized_telemetry=False))
        store = ChromaVectorStore(chroma_collection=client.get_collection(PLAIN_COLLECTION))
        self.index = VectorStoreIndex.from_vector_store(store, embed_model=plain_embedder())
        self.retriever = self.index.as_retriever(similarity_top_k=top_k)
        self.titles = {p.id: p.title for p in load_papers([BUNDLED_SOURCE], skip_bad=False)[0]}

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list:
        from rag.search import Hit

        hits, seen = [], set()
        for item in self.retriever.retrieve(query):
            pid = item.node.ref_doc_id
            if pid not in seen:
                seen.add(pid)
                hits.append(Hit(len(hits) + 1, pid, self.titles[pid], "", float(item.score or 0), "", "plain"))
        return hits[:k] if k else hits


def timed_searches(search, questions: list[str]) -> dict:
    for q in questions[:3]:  # warm-up
        search(q)
    times = []
    for q in questions:
        t = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - t)
    return stats(times)


def query(index_dir: str, plain_dir: str, n_ask: str) -> dict:
    """Warm search latency per mode and for the plain retriever; then answers, ours and the plain query engine."""
    from rag.assistant import Assistant
    from rag.models import load_embedder

    questions = [q["question"] for q in dev_questions()]
    assistant = Assistant.open(index_dir=Path(index_dir))
    plain = PlainSearch(plain_dir)
    out = {
        "search": {
            mode: timed_searches(lambda q, m=mode: assistant.search(q, k=10, mode=m), questions)
            for mode in ("hybrid", "dense", "bm25")
        }
    }
    out["search"]["plain"] = timed_searches(lambda q: plain.search(q, k=10), questions)
    embedder = load_embedder(assistant.settings.embed_model)
    out["search"]["embed_query"] = timed_searches(lambda q: embedder.encode([q]), questions)
    subset = questions[:: max(1, len(questions) // int(n_ask))][: int(n_ask)]
    out["ask"] = ask_ours(assistant, subset)
    from rag.llm import make_llm

    out["ask_plain"] = ask_plain(plain, make_llm(assistant.settings), subset)  # the plain recipe: in this process
    out["backend"] = assistant.status()["llm"]
    return out


def ask_ours(assistant, questions: list[str]) -> dict:
    assistant.ask(questions[0])  # warm-up: loads the LLM
    first_token, first_text, total, refused = [], [], [], 0
    for q in questions:
        t, shown = time.perf_counter(), None
        stream = assistant.stream(q)
        for _piece in stream:
            if shown is None:
                shown = time.perf_counter() - t
        answer = stream.answer
        total.append(time.perf_counter() - t)
        first_text.append(shown)
        refused += answer.refused
        if "first_token" in answer.timings:
            first_token.append(answer.timings["first_token"])
    return {
        "questions": len(questions),
        "refused": refused,
        "first_token": stats(first_token),
        "first_text": stats(first_text),
        "total": stats(total),
    }


def ask_plain(plain: PlainSearch, llm, questions: list[str]) -> dict:
    """llama-index's default streaming query engine (top 2 chunks, compact synthesis) with the same LLM object."""
    engine = plain.index.as_query_engine(llm=llm, streaming=True)
    "".join(engine.query(questions[0]).response_gen)  # warm-up
    first_token, total = [], []
    for q in questions:
        t, first = time.perf_counter(), None
        for delta in engine.query(q).response_gen:
            if delta and first is None:
                first = time.perf_counter() - t
        total.append(time.perf_counter() - t)
        if first is not None:
            first_token.append(first)
    return {"questions": len(questions), "first_token": stats(first_token), "total": stats(total)}


def quality(index_dir: str, plain_dir: str) -> dict:
    """rag.evaluate (search only) per mode, and for the plain recipe's retriever."""
    from rag.assistant import Assistant
    from rag.evaluate import evaluate

    dev = Path(__file__).resolve().parent.parent / "tests" / "data" / "dev.jsonl"
    assistant = Assistant.open(index_dir=Path(index_dir))
    out = {
        mode: evaluate(assistant, dev, mode=mode, answers=False, progress=False) for mode in ("hybrid", "dense", "bm25")
    }
    out["plain"] = evaluate(PlainSearch(plain_dir), dev, mode="plain", answers=False, progress=False)
    for report in out.values():
        report.pop("rows")
    return out


def scale_build(corpus_dir: str, index_dir: str, vectors: str) -> dict:
    """`build_index` on a synthetic corpus, every step as in `rag index` except the embedding model: each chunk
    gets its vector from bench/synth.py (real chunks their real vector, synthetic ones a derived one)."""
    import synth  # bench/ is on sys.path: this file runs as a script

    import rag.index
    from rag.settings import Settings

    rag.index.embed_papers = synth.paper_assigner(vectors)
    imported = time.perf_counter()
    report = rag.index.build_index(Settings(index_dir=Path(index_dir)), [corpus_dir], progress=False)
    return {
        "chroma": Settings().chroma_url or "embedded",
        "import_seconds": imported - STARTED,
        "build_seconds": time.perf_counter() - imported,
        "report": report.to_dict(),
    }


def scale_add(corpus_dir: str, index_dir: str, vectors: str, n: str) -> dict:
    """Time to add n new papers to a built synthetic index (one `rag index FILE` as a user runs it)."""
    import synth

    import rag.index
    from rag.settings import Settings

    rag.index.embed_papers = synth.paper_assigner(vectors)
    path = Path(corpus_dir) / f"added-{n}.jsonl"
    synth.write_jsonl(path, synth.add_records(int(n), serial=int(n)))
    t = time.perf_counter()
    report = rag.index.build_index(Settings(index_dir=Path(index_dir)), [path], progress=False)
    return {"add_seconds": time.perf_counter() - t, "report": report.to_dict()}


def scale_search(index_dir: str) -> dict:
    """Open the index as the CLI/UI does, then warm search latency per mode and the dev-set recall (hybrid)."""
    from rag.assistant import Assistant
    from rag.evaluate import evaluate

    t = time.perf_counter()
    assistant = Assistant.open(index_dir=Path(index_dir))
    assistant.search("warm up", k=10)
    opened = time.perf_counter() - t
    questions = [q["question"] for q in dev_questions()]
    out = {
        "open_seconds": opened,
        "search": {
            mode: timed_searches(lambda q, m=mode: assistant.search(q, k=10, mode=m), questions)
            for mode in ("hybrid", "dense", "bm25")
        },
    }
    dev = Path(__file__).resolve().parent.parent / "tests" / "data" / "dev.jsonl"
    report = evaluate(assistant, dev, mode="hybrid", answers=False, progress=False)
    out["dev_hybrid"] = report["answerable"]
    return out


TASKS = {
    "index-ours": index_ours,
    "index-plain": index_plain,
    "query": query,
    "quality": quality,
    "scale-build": scale_build,
    "scale-add": scale_add,
    "scale-search": scale_search,
}

if __name__ == "__main__":
    task, out, *args = sys.argv[1:]
    if task in ("query", "quality", "scale-search"):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `rag ask/chat/ui/eval` set it (rag/cli.py)
    result = TASKS[task](*args)
    Path(out).write_text(json.dumps(result, indent=2, default=str))
