"""`rag index`: corpus files -> chunks and sentences -> embeddings: paper vectors in Chroma; chunk texts (BM25) and
sentence vectors in the catalog; incremental and crash-safe.

The sources are parsed into a scratch SQLite file beside the index (rag/incoming.py), where papers are merged by
title and compared with the catalog, so a build holds one batch of papers in memory, whatever the size of its files.
An update writes in place, batch by batch: new and changed papers are chunked, embedded (chunks and sentences) and
written (paper vectors to Chroma; papers, chunk texts and sentence vectors to the catalog) in batches of
RAG_INDEX_BATCH_PAPERS papers, each committed;
removed papers are marked; then the manifest naming the new generation is published, last. Until then search shows
the previous generation. A killed build leaves its finished batches behind, invisible; the next build keeps them (no
re-embedding) and finishes the job, or deletes them when they are no longer wanted.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag import storage
from rag.catalog import Catalog, CatalogReader
from rag.corpus import CorpusError, Paper, corpus_files, read_papers
from rag.incoming import Incoming
from rag.models import embed_model_label, load_embedder
from rag.sentences import split_sentences
from rag.settings import Settings, mask_url
from rag.storage import IndexingError, check_model
from rag.vectors import PaperVectors, drop_collection

BUNDLED_SOURCE = "bundled:hf-papers"
BUNDLED_DIR = Path(__file__).parent / "data" / "hf-papers"
CHUNK_OVERLAP = 0  # chunks end on sentence boundaries; an overlap added 15% more tokens to embed for no recall
META_KEYS = ("paper_id", "title", "url", "source")
INCOMING = "incoming.sqlite"  # the papers a build reads, merged and compared (rag/incoming.py); deleted after


@dataclass
class IndexReport:
    papers: int = 0
    chunks: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    metadata_updated: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    store_seconds: float = 0.0
    bm25_seconds: float = 0.0
    embed_model: str = ""
    index_dir: str = ""
    bad_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        embedded = self.new + self.changed
        rate = f", {embedded / self.seconds:.1f} papers/s" if embedded and self.seconds else ""
        return (
            f"{self.papers} papers, {self.chunks} chunks: {self.new} new, {self.changed} changed, "
            f"{self.removed} removed in {self.seconds:.1f} s{rate} ({self.index_dir})"
        )


def resolve_source(source: str, index_dir: Path) -> Path:
    """A recorded source -> its path: the bundled corpus, a path relative to the index directory, or a full path."""
    if source == BUNDLED_SOURCE:
        return BUNDLED_DIR
    path = Path(source)
    return path if path.is_absolute() else Path(index_dir).resolve() / path


def source_label(path: str | Path, index_dir: Path) -> str:
    """What the manifest records for a source: paths inside the index directory (uploads) relative to it, so moving
    the index directory keeps them; other paths in full."""
    path = Path(path).resolve()
    if path == BUNDLED_DIR.resolve():
        return BUNDLED_SOURCE
    try:
        return str(path.relative_to(Path(index_dir).resolve()))
    except ValueError:
        return str(path)


def read_sources(
    sources: list[str],
    skip_bad: bool,
    index_dir: Path,
    known: dict[str, list[int]],
    incoming: Incoming,
    progress: bool = False,
) -> tuple[list[str], dict[str, list[int]]]:
    """Parse every file of the sources into `incoming`, a paper at a time, with a progress bar on stderr (papers
    read and papers/s: how many a file holds is not known before it is read); returns (bad-file lines, {file label:
    fingerprint} of the files read). Raises CorpusError.

    Files whose fingerprint (size, mtime) equals the one in `known` are not parsed: adding one file to a large index
    does not re-read every other one (at 10k synthetic abstracts, parsing was 83% of adding one paper).
    """
    from tqdm import tqdm

    bad, files = [], {}
    with tqdm(desc="Reading", unit="paper", disable=not progress, file=sys.stderr, smoothing=0, delay=0.5) as bar:
        for source in sources:
            root = resolve_source(source, index_dir)
            for path in corpus_files([root]):
                shown = source if path == root else f"{source}/{path.relative_to(root).as_posix()}"
                stat = path.stat()
                fingerprint = [stat.st_size, stat.st_mtime_ns]
                if known.get(shown) == fingerprint:
                    files[shown] = fingerprint
                    continue
                start = incoming.seq
                try:
                    for paper in read_papers(path):
                        paper.source = shown  # distinct for same-named files in different folders
                        incoming.add(paper)
                        bar.update()
                    files[shown] = fingerprint
                except CorpusError as e:
                    if not skip_bad:
                        raise
                    incoming.discard_after(start)  # the papers read before the error: the whole file is skipped
                    bad.append(str(e))
    return bad, files


def load_papers(
    sources: list[str], skip_bad: bool, index_dir: Path = Path(".")
) -> tuple[list[Paper], list[str], list[str]]:
    """The merged papers of the sources, in memory (for small corpora: benchmarks and tests); (papers, bad-file
    lines, notes). Raises CorpusError."""
    with Incoming() as incoming:
        bad, _ = read_sources(sources, skip_bad, index_dir, {}, incoming)
        notes = incoming.merge()
        return [p for part in incoming.papers() for p in part], bad, notes


def unchanged_files(live: dict, sources: list[str], index_dir: Path) -> dict[str, list[int]]:
    """The live index's file fingerprints when every file it was built from is still there, unchanged (then only
    new files need parsing); else {} (a file changed or went away: every file is parsed again)."""
    known = live.get("files") or {}
    if not known:
        return {}
    for label, fingerprint in known.items():
        source = next((s for s in sources if label == s or label.startswith(f"{s}/")), None)
        if source is None:
            return {}
        root = resolve_source(source, index_dir)
        path = root if label == source else root / label[len(source) + 1 :]
        try:
            stat = path.stat()
        except OSError:
            return {}
        if [stat.st_size, stat.st_mtime_ns] != fingerprint:
            return {}
    return known


def chunk_papers(papers: list[Paper], embedder, chunk_tokens: int) -> list:
    """llama-index nodes: SentenceSplitter over each abstract, the title prepended (as metadata) to every chunk.

    The splitter counts the title against the chunk budget; 4 tokens stay free for the [CLS]/[SEP] markers and
    the "title: " label, so no embedded text exceeds the model's window (tests/test_index.py checks this).
    """
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(
        chunk_size=chunk_tokens - 4,
        chunk_overlap=CHUNK_OVERLAP,
        tokenizer=embedder.token_ids,  # thread-safe, unlike a shared transformers tokenizer
        chunking_tokenizer_fn=split_sentences,  # instead of NLTK punkt: 1.6 s less import per cold index
        id_func=lambda i, doc: f"{doc.id_}-{i}",
        include_prev_next_rel=False,
    )
    hidden = [k for k in META_KEYS if k != "title"]
    docs = [
        Document(
            id_=p.id,
            text=p.abstract,
            metadata={"paper_id": p.id, "title": p.title, "url": p.url, "source": p.source},
            excluded_embed_metadata_keys=hidden,
            excluded_llm_metadata_keys=hidden,
        )
        for p in papers
    ]
    return splitter.get_nodes_from_documents(docs)


def build_index(
    settings: Settings,
    paths: list[str | Path] | None = None,
    rebuild: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> IndexReport:
    """Index the recorded sources plus `paths` (the bundled corpus when there is nothing yet).

    Unchanged papers are not re-embedded, changed ones replaced, removed ones deleted; the new state is published
    by writing the manifest, last.
    """
    started = time.perf_counter()
    index_dir = Path(settings.index_dir)
    label = embed_model_label(settings.embed_model, settings.embed_runtime)
    report = IndexReport(index_dir=str(index_dir), embed_model=label)
    with storage.build_lock(index_dir):
        live = storage.read_manifest(index_dir)
        if live and not rebuild:
            check_model(live, settings)
        settings = settings.model_copy(update={"paper_vectors": paper_vector_kind(settings, {} if rebuild else live)})
        sources = list(live.get("sources", []))
        for recorded in clean_unfinished(settings, live):  # what a killed build was asked to add: finish it
            if recorded not in sources and resolve_source(recorded, index_dir).exists():
                sources.append(recorded)
        for p in paths or []:
            if not Path(p).exists():
                raise CorpusError(p, None, "no such file or folder")
            recorded = source_label(p, index_dir)
            if recorded not in sources:
                sources.append(recorded)
        if not sources:
            sources = [BUNDLED_SOURCE]
        missing = [s for s in sources if not resolve_source(s, index_dir).exists()]
        for s in missing:
            report.notes.append(f"{s} no longer exists: its papers are removed from the index")
        # Every file of the live index unchanged: only new files are read, and compared with the indexed papers
        # of the same titles only; nothing else of the index is read
        known = {} if rebuild or not live else unchanged_files(live, sources, index_dir)
        present = [s for s in sources if s not in missing]
        with Incoming(index_dir / INCOMING) as incoming:
            report.bad_files, files = read_sources(present, skip_bad, index_dir, known, incoming, progress)
            if known:  # the indexed papers the new ones may repeat or replace, merged first as if read first
                reader = CatalogReader(storage.catalog_path(index_dir, live["store"]), live["generation"])
                try:
                    for keys in incoming.title_keys():
                        for paper in reader.papers.titled(keys):
                            incoming.add(paper, indexed=True)
                finally:
                    reader.close()
            report.notes += incoming.merge()
            publish_update(settings, incoming, live, sources, files, bool(known), rebuild, report, progress)
        report.seconds = time.perf_counter() - started
    return report


def publish_update(settings, incoming, live, sources, files, known, rebuild, report, progress) -> None:
    """Compare the merged papers with the live index, write what changed in batches, publish the manifest, then
    free what the new generation no longer lists."""
    index_dir = Path(settings.index_dir)
    fresh = rebuild or not live
    store = storage.new_store_id() if fresh else live["store"]
    live_gen = 0 if fresh else live["generation"]
    generation = live_gen + 1
    storage.mark_building(index_dir, store if fresh else None, sources)
    catalog = Catalog(storage.catalog_path(index_dir, store))
    try:
        catalog.undo_unpublished_removals(live_gen)
        removed, unwanted = incoming.compare(catalog.path, live_gen, indexed_only=known)
        report.new, report.changed = incoming.count("new"), incoming.count("changed")
        report.removed = len(removed) - report.changed
        report.metadata_updated = incoming.count("relabelled")
        report.papers = live["papers"] if known else len(incoming)  # (counted from the catalog when published)
        staged = incoming.count("new", "changed", embedded=True) + len(unwanted)  # a killed build's papers
        changes = report.new or report.changed or removed or report.metadata_updated or staged
        if not fresh and not changes and sources == live["sources"]:
            if files != live.get("files"):  # touched, not changed: remember, so the next build skips them
                storage.publish(index_dir, {**live, "files": files})
            storage.mark_building(index_dir, None)
            update_segment(catalog, report, progress)  # one a killed build did not finish writing
            report.chunks = live["chunks"]
            return
        if not len(incoming) and not known:
            raise IndexingError("no papers to index: every source is gone or empty")

        vectors = PaperVectors(settings, storage.store_dir(index_dir, store), store)
        vectors.delete(unwanted)  # a killed build's papers no longer asked for
        catalog.purge(unwanted)
        step = settings.index_batch_papers
        total = incoming.count("new", "changed", embedded=False)  # staged ones are embedded already
        batches = incoming.papers("new", "changed", embedded=False, batch=step)
        write_batches(settings, batches, total, catalog, vectors, generation, report, progress)
        relabelled = (p for part in incoming.papers("relabelled") for p in part)
        catalog.finish(generation, live_gen, removed, relabelled)
        report.papers, report.chunks = catalog.counts(generation)
        storage.publish(
            index_dir,
            {
                "store": store,
                "generation": generation,
                "embed_model": report.embed_model,
                "chunk_tokens": settings.chunk_tokens,
                "paper_vectors": settings.paper_vectors,
                "chroma": mask_url(settings.chroma_url) or "embedded",
                "sources": sources,
                "files": files,
                "papers": report.papers,
                "chunks": report.chunks,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        # Published. What follows only frees space; a kill here is cleaned up by the next build.
        storage.mark_building(index_dir, None)
        gone = catalog.removed_ids(generation)
        vectors.delete(gone)
        catalog.purge(gone)
        update_segment(catalog, report, progress)
    finally:
        catalog.close()
    if fresh:
        # the store that was live until now stays until the next rebuild: a running server still reads it until
        # it has opened and warmed the new one
        previous = live.get("store") if live else None
        for old in storage.stale_stores(index_dir, store):
            if old != previous:
                drop_store(settings, old)


def update_segment(catalog: Catalog, report: IndexReport, progress: bool) -> None:
    """Write the BM25 segment when due (rag/bm25.py). The index is published already and the segment only speeds
    search up, so a failure to write it (a full disk) is a note: FTS5 answers for every chunk until the next build."""
    t = time.perf_counter()
    try:
        if catalog.update_segment(progress):
            report.bm25_seconds = time.perf_counter() - t
    except OSError as e:
        report.notes.append(f"the BM25 segment was not written ({e.strerror or e}): `rag index` again to write it")


def clean_unfinished(settings: Settings, live: dict) -> list[str]:
    """After a killed build: delete the new store it was writing (a killed `--rebuild` or first build; never the
    live store) and return the sources it was asked to index."""
    index_dir = Path(settings.index_dir)
    unfinished = storage.unfinished_build(index_dir)
    store = unfinished.get("store")
    if store and store != live.get("store"):
        drop_store(settings, store)
    return list(unfinished.get("sources") or [])


def drop_store(settings: Settings, store: str) -> None:
    index_dir = Path(settings.index_dir)
    drop_collection(settings, storage.store_dir(index_dir, store), store)
    storage.remove_store_dir(index_dir, store)


def write_batches(settings, batches, total: int, catalog, vectors, generation, report, progress) -> None:
    """Chunk, embed and write `batches` of papers (`total` in all), each committed (vectors first, then the catalog
    rows that make them count), with a progress bar on stderr: papers done, papers/s and the ETA from the rate
    measured since the start (the cost per paper is steady; tqdm's default smoothing followed the batches' noise)."""
    from tqdm import tqdm

    if not total:
        return
    embedder = load_embedder(settings.embed_model, settings.embed_runtime)
    if settings.embed_url:
        embedder = remote_embedder(settings, embedder)
    with tqdm(total=total, desc="Embedding", unit="paper", disable=not progress, file=sys.stderr, smoothing=0) as bar:
        for batch in batches:
            nodes = chunk_papers(batch, embedder, settings.chunk_tokens)
            t = time.perf_counter()
            shown = bar.n  # the bar moves as the batch's texts are embedded, not only when the batch is written
            advance = lambda share, shown=shown, n=len(batch): bar.update(int(shown + share * n) - bar.n)  # noqa: E731
            sentences, paper_vectors = embed_papers(batch, nodes, embedder, settings, advance)
            report.embed_seconds += time.perf_counter() - t
            t = time.perf_counter()
            vectors.upsert(list(paper_vectors), list(paper_vectors.values()))
            texts: dict[str, list[tuple[str, str]]] = {}
            for node in nodes:
                texts.setdefault(node.metadata["paper_id"], []).append((node.get_content(), node_text(node)))
            catalog.add(batch, texts, sentences, generation)
            report.store_seconds += time.perf_counter() - t
            bar.update(shown + len(batch) - bar.n)


def remote_embedder(settings: Settings, local):
    """The embedding server of RAG_EMBED_URL, checked against the local model before anything is embedded."""
    from rag.remote import RemoteEmbedding

    remote = RemoteEmbedding(settings, local)
    remote.check()
    return remote


def node_text(node) -> str:
    """The chunk text embedded and indexed by BM25: title and chunk."""
    from llama_index.core.schema import MetadataMode

    return node.get_content(MetadataMode.EMBED)


def embed_texts(texts: list[str], embedder, batch_size: int, advance=None) -> list:
    """The vectors of `texts`, in order. `advance(share)` is told the share of texts done after each run.

    Texts are sorted by length and cut into runs of batch_size / parallel texts: each run is padded to its own
    longest text only (ONNX Runtime runs a batch as one rectangle), and `embedder.parallel` runs go at once, so as
    many texts are in flight as with one batch of batch_size (ONNX Runtime keeps each run's activations: same peak
    memory). Sorted by characters, not tokens (bench/embed.py, 128 bundled papers' chunks): runs sorted by tokens
    compute 2.1% more tokens than the texts hold, by characters 8.1%, in corpus order 38%; counting the tokens
    first cost 2.2% of the embedding time, so sorting by tokens would gain about 4%. Not taken: int8 activations
    are scaled per run, so other runs give other vectors, and stored sentence vectors then drifted from vectors
    computed at question time beyond what tests/test_index.py allows (score 0.027 apart, 0.02 allowed)."""
    out: list = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    size = max(1, batch_size // embedder.parallel)
    parts = [order[start : start + size] for start in range(0, len(order), size)]
    done = 0
    with ThreadPoolExecutor(embedder.parallel) as pool:
        for part, vectors in zip(parts, pool.map(lambda part: embedder.encode([texts[i] for i in part]), parts)):
            for k, i in enumerate(part):
                out[i] = vectors[k]
            done += len(part)
            if advance:
                advance(done / len(texts))
    return out


def embed_papers(
    papers: list[Paper], nodes: list, embedder, settings: Settings, advance=None
) -> tuple[dict[str, list], dict[str, list]]:
    """Embed a batch of papers: (paper id -> the vectors of its abstract's sentences, split as evidence scoring
    splits them, or {} when RAG_SENTENCE_VECTORS is off; paper id -> its paper vector, what dense search ranks).

    Stored sentence vectors, each sentence embedded alone, spare embedding the evidence when a question is asked
    (first answer text 10x sooner on the dev set). Paper vectors (RAG_PAPER_VECTORS): `head` (the default) embeds
    each paper's title and the first HEAD_WORDS words of its abstract, a third of the tokens; `chunks` embeds every
    chunk (title + chunk) and takes their mean, a second pass over as many tokens as the sentences (README "Index at
    scale": indexing x1.5, and search finds fewer of the relevant papers).

    Not taken: sentence vectors pooled from the chunk pass's token outputs ("late chunking"). Measured on the dev
    set, they select evidence worse: within a paper they are alike (cosine 0.71 on average against 0.41 alone), so
    the sentence answering the second part of a question stops standing out. Nor paper vectors made from the
    sentence vectors and the title's (one pass, x0.74): dev Recall@5 0.948 and overview dev Recall@10 0.647,
    where heads give 0.970 and 0.646.
    """
    # texts in flight: a server's requests, or local runs (each of embed_batch_size / parallel texts)
    size = settings.embed_url_batch * settings.embed_url_parallel if settings.embed_url else settings.embed_batch_size
    sentences = {p.id: split_sentences(p.abstract) for p in papers} if settings.sentence_vectors else {}
    from_chunks = settings.paper_vectors == "chunks"
    passes = {
        "sentences": [s for p in papers for s in sentences.get(p.id, [])],
        "chunks": [node_text(n) for n in nodes] if from_chunks else [],
        "heads": [] if from_chunks else [head_text(p) for p in papers],
    }
    total, done, out = sum(len(t) for texts in passes.values() for t in texts) or 1, 0, {}
    for name, texts in passes.items():  # each pass in runs of its own: a run's int8 activations are scaled by the run
        share = sum(len(t) for t in texts) / total  # progress by characters, about the cost
        tell = advance and (lambda d, done=done, share=share: advance(done + d * share))
        out[name] = embed_texts(texts, embedder, size, tell)
        done += share
    vectors = iter(out["sentences"])
    found = {pid: [next(vectors) for _ in parts] for pid, parts in sentences.items()}
    if from_chunks:
        return found, chunk_mean_vectors(nodes, out["chunks"])
    return found, {p.id: list(v) for p, v in zip(papers, out["heads"])}


# A paper's vector (RAG_PAPER_VECTORS=head) embeds its title and the first HEAD_WORDS words of its abstract, where
# abstracts say what the paper is about; the rest is mostly results, which BM25 and the sentence vectors find. Chosen
# on the dev sets (60, 80, 100, 130 words tried; README "Index at scale"); SciFact measured after, never tuned on.
HEAD_WORDS = 80


def head_text(paper: Paper) -> str:
    """What a paper's vector embeds: "title: <title>", a blank line, then the abstract's first HEAD_WORDS words (the
    chunks' format)."""
    return f"title: {paper.title}\n\n" + " ".join(paper.abstract.split()[:HEAD_WORDS])


def paper_vector_kind(settings: Settings, live: dict) -> str:
    """What paper vectors a build makes: RAG_PAPER_VECTORS when it is set, else what the live index holds (`live`,
    its manifest; an update keeps an index's kind), else the default. One kind per index: an update that sets the
    other kind is refused, and so is one of an index whose kind is no longer made."""
    explicit = "paper_vectors" in settings.model_fields_set
    if not live:
        return settings.paper_vectors
    had = storage.paper_vectors_of(live)
    if explicit and had != settings.paper_vectors:
        raise IndexingError(
            f"the index in {settings.index_dir} has paper vectors made from {had} but RAG_PAPER_VECTORS gives "
            f"{settings.paper_vectors}: run `rag index --rebuild`, or set it back"
        )
    if had not in ("chunks", "head"):
        raise IndexingError(
            f"the index in {settings.index_dir} has paper vectors made from {had}, which this version no longer "
            "makes: run `rag index --rebuild`"
        )
    return had


def chunk_mean_vectors(chunk_nodes: list, vectors: list) -> dict[str, list[float]]:
    """Paper id -> the normalized mean of its chunks' vectors (`vectors`, one per node).

    RAG_PAPER_VECTORS=chunks (the default before heads): on the dev set they fused with BM25 better than the best
    chunk of each paper did (hybrid Recall@5 0.955 against 0.934, measured when chosen).
    """
    import numpy as np

    grouped: dict[str, list] = {}
    for node, vector in zip(chunk_nodes, vectors):
        grouped.setdefault(node.metadata["paper_id"], []).append(vector)
    out = {}
    for pid, vecs in grouped.items():
        out[pid] = unit(np.mean(np.asarray(vecs, dtype=np.float32), axis=0)).tolist()
    return out


def unit(vector):
    """`vector` (numpy) scaled to length 1; a zero vector stays zero."""
    import numpy as np

    return vector / max(float(np.linalg.norm(vector)), 1e-12)
