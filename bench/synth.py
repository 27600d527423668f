"""Deterministic synthetic corpora for the scale benchmark, and the vectors their chunks get instead of embeddings.

A corpus of N papers holds the 693 bundled papers (so the dev questions still have their answers) plus N - 693
synthetic ones. A synthetic paper takes 2-4 bundled papers as sources and draws as many sentences as a random bundled
abstract has, each from one of its sources; its title is 4 words from the sources' titles plus a serial number.

Embedding 100k abstracts would take hours on 2 cores, so vectors are derived instead: a bundled chunk keeps its real
vector; a synthetic chunk gets the normalized mean of its sources' paper vectors (each the mean of that paper's real
chunk vectors), weighted by the sentences taken from each, plus N(0, NOISE²) per dimension, then normalized again.
"""

from __future__ import annotations

import json
import os
import random
from functools import lru_cache
from pathlib import Path

import numpy as np

SEED = 20240601
NOISE = 0.01  # per dimension: cosine ~0.98 between a synthetic chunk and its base vector
FILE_PAPERS = 10_000


def real_index(index_dir: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(papers, paper id -> paper vector) of a built bundled index (the vectors its Chroma collection holds)."""
    from rag import storage
    from rag.search import Searcher
    from rag.settings import Settings

    searcher = Searcher(Settings(index_dir=index_dir))
    papers = [p.to_dict() for p in searcher.papers.values()]
    got = searcher.vectors.collection.get(include=["embeddings"], limit=len(papers) + 1000)
    vectors = {pid: np.asarray(vec, dtype=np.float32) for pid, vec in zip(got["ids"], got["embeddings"], strict=True)}
    assert storage.read_manifest(index_dir)["papers"] == len(vectors)
    return papers, vectors


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def make_corpus(real_index_dir: Path, size: int, out_dir: Path) -> dict:
    """Write corpus files (real.jsonl, synth-NN.jsonl) and vectors.npz for a corpus of `size` papers."""
    from rag.corpus import paper_id
    from rag.sentences import split_sentences

    papers, paper_vecs = real_index(real_index_dir)
    rng = random.Random(SEED)
    sentences = {p["id"]: split_sentences(p["abstract"]) for p in papers}
    lengths = [len(s) for s in sentences.values()]
    words = sorted({w for p in papers for w in p["title"].replace(":", " ").split() if len(w) > 3 and w.isalpha()})
    ids = [p["id"] for p in papers]
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = ("title", "abstract", "url", "authors", "year", "categories")
    write_jsonl(out_dir / "real.jsonl", [{k: p[k] for k in keep if p.get(k)} for p in papers])
    synth_ids, synth_vecs, records = [], [], []
    for i in range(max(0, size - len(papers))):
        sources = rng.sample(ids, rng.randint(2, 4))
        picks = [rng.choice(sources) for _ in range(rng.choice(lengths))]
        abstract = " ".join(rng.choice(sentences[pid]) for pid in picks)
        title = " ".join(rng.sample(words, 4)).title() + f": Synthetic Study {i:06d}"
        records.append({"title": title, "abstract": abstract, "url": f"https://example.org/synthetic/{i}"})
        synth_ids.append(paper_id(title, abstract))
        synth_vecs.append(unit(np.sum([paper_vecs[pid] for pid in picks], axis=0)))
        if len(records) == FILE_PAPERS:
            write_jsonl(out_dir / f"synth-{i // FILE_PAPERS:02d}.jsonl", records)
            records = []
    if records:
        write_jsonl(out_dir / f"synth-{len(synth_ids) // FILE_PAPERS:02d}.jsonl", records)
    vectors = out_dir.parent / f"{out_dir.name}-vectors.npz"
    dim = len(next(iter(paper_vecs.values())))
    np.savez(
        vectors,
        real_ids=np.array(list(paper_vecs)),
        real_vecs=np.array(list(paper_vecs.values())),
        paper_ids=np.array(synth_ids),
        paper_vecs=np.array(synth_vecs, dtype=np.float32).reshape(-1, dim),
    )
    return {"papers": size, "real": len(papers), "synthetic": len(synth_ids), "vectors": str(vectors)}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def add_records(n: int, serial: int) -> list[dict]:
    """n new papers to add to a built synthetic index: bundled abstracts under new titles (vectors: vector_assigner)."""
    from rag.corpus import parse_file
    from rag.index import BUNDLED_DIR

    rng = random.Random(SEED + serial)
    pool = [p for f in sorted(BUNDLED_DIR.glob("*.txt")) for p in parse_file(f)]
    picks = [rng.choice(pool) for _ in range(n)]
    return [
        {"title": f"Added Study {serial}-{i:05d}: {p.title}", "abstract": p.abstract + f" (Added {serial}-{i}.)"}
        for i, p in enumerate(picks)
    ]


class DerivedVectors:
    """The vectors of a corpus's vectors.npz, looked up by paper id without holding the synthetic papers' vectors in
    memory (1.5 KB a paper: 154 MB at 100k, which would count in the measured peak memory of the build): their
    array is copied out of the npz once, into a file beside it, and rows are read with pread."""

    def __init__(self, vectors_path: str):
        import zipfile

        data = np.load(vectors_path)
        self.real = dict(zip(data["real_ids"].tolist(), data["real_vecs"], strict=True))
        self.real_list = list(self.real.values())
        ids = data["paper_ids"].astype("S16")  # 16 bytes a paper
        self.order = np.argsort(ids)
        self.ids = ids[self.order]
        rows = Path(vectors_path).with_suffix(".paper_vecs.npy")
        if not rows.exists() or rows.stat().st_mtime < Path(vectors_path).stat().st_mtime:
            partial = rows.with_suffix(".partial")
            with zipfile.ZipFile(vectors_path) as z, z.open("paper_vecs.npy") as src, partial.open("wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            partial.rename(rows)
        with rows.open("rb") as f:
            np.lib.format.read_magic(f)
            shape, _, _ = np.lib.format.read_array_header_1_0(f)
            self.offset = f.tell()
        self.dim = shape[1] if len(shape) == 2 else len(self.real_list[0])
        self.fd = os.open(rows, os.O_RDONLY)

    def synthetic(self, pid: str):
        """A synthetic paper's base vector, or None for a paper the corpus did not make."""
        key = pid.encode()
        at = int(np.searchsorted(self.ids, key))
        if at >= len(self.ids) or self.ids[at] != key:
            return None
        row = int(self.order[at])
        return np.frombuffer(os.pread(self.fd, 4 * self.dim, self.offset + 4 * self.dim * row), dtype=np.float32)


@lru_cache(maxsize=2)
def derived_vectors(vectors_path: str) -> DerivedVectors:
    return DerivedVectors(vectors_path)


def vector_assigner(vectors_path: str):
    """The chunk half of a stand-in for rag.index.embed_papers: each chunk's vector from vectors.npz: a bundled
    paper's chunks get its real paper vector (so its mean is the real one), a synthetic paper's chunks its
    derived vector plus noise, any other paper (added by the bench) a noisy copy of a random real paper's vector."""
    vectors = derived_vectors(vectors_path)
    rng = np.random.default_rng(SEED)

    def embed_nodes(nodes: list, embedder, batch_size: int) -> None:
        for node in nodes:
            pid = node.metadata["paper_id"]
            vec = vectors.real.get(pid)
            if vec is None:
                seed = vectors.synthetic(pid)
                if seed is None:
                    seed = vectors.real_list[int(rng.integers(len(vectors.real_list)))]
                vec = unit(seed + rng.normal(0.0, NOISE, vectors.dim))
            node.embedding = vec.astype(np.float32).tolist()

    return embed_nodes


def sentence_assigner(vectors_path: str):
    """The sentence half of a stand-in for rag.index.embed_papers: each sentence of a paper gets the paper's vector
    from vectors.npz (a random real paper's for papers the bench adds) plus noise, so the stored sentence vectors
    take the disk space and write time real ones take."""
    from rag.sentences import split_sentences

    vectors = derived_vectors(vectors_path)
    rng = np.random.default_rng(SEED)

    def embed_sentences(papers: list, embedder, batch_size: int) -> dict[str, list]:
        out = {}
        for paper in papers:
            vec = vectors.real.get(paper.id)
            if vec is None:
                vec = vectors.synthetic(paper.id)
            if vec is None:
                vec = vectors.real_list[int(rng.integers(len(vectors.real_list)))]
            out[paper.id] = [
                unit(vec + rng.normal(0.0, NOISE, len(vec))).astype(np.float32).tolist()
                for _ in split_sentences(paper.abstract)
            ]
        return out

    return embed_sentences


def paper_assigner(vectors_path: str):
    """A stand-in for rag.index.embed_papers (same signature and result): each paper's vector as `vector_assigner`
    gives its chunks (a bundled paper's real paper vector), sentence vectors as `sentence_assigner` sets them."""
    embed_nodes, embed_sentences = vector_assigner(vectors_path), sentence_assigner(vectors_path)

    def embed_papers(papers: list, nodes: list, embedder, settings, advance=None) -> tuple[dict, dict]:
        from rag.index import chunk_mean_vectors

        embed_nodes(nodes, embedder, settings.embed_batch_size)
        sentences = embed_sentences(papers, embedder, settings.embed_batch_size) if settings.sentence_vectors else {}
        return sentences, chunk_mean_vectors(nodes, [node.embedding for node in nodes])

    return embed_papers
