"""BM25 with an on-disk segment (rag/bm25.py) beside FTS5, on the fixture corpus with the real embedding model:
the ranking is Lucene BM25 as bm25s computes it, and papers added, removed and re-added stay searchable."""

from __future__ import annotations

import json
import shutil

import pytest

import rag.bm25
from rag import storage
from rag.catalog import CatalogReader, segments_dir
from rag.index import build_index
from rag.settings import Settings
from tests.conftest import FIXTURE_CORPUS

QUERIES = [
    "decoding-time algorithm steering a black-box LM with a small tuned model",
    "retrieval augmented generation for language models",
    "instruction tuning data quality",
    "sparse mixture of experts training",
]


def reader_of(index_dir) -> CatalogReader:
    manifest = storage.read_manifest(index_dir)
    return CatalogReader(storage.catalog_path(index_dir, manifest["store"]), manifest["generation"])


def top_title(reader: CatalogReader, query: str) -> str:
    return reader.papers[reader.bm25(query, 5)[0][0]].title


def add_paper(path, title, abstract):
    with path.open("a") as f:
        f.write(json.dumps({"title": title, "abstract": abstract}) + "\n")


@pytest.fixture
def segmented(tmp_path, isolated_index):
    """The fixture corpus indexed (with its BM25 segment); a writable copy of its file."""
    corpus = tmp_path / "papers.jsonl"
    shutil.copy(FIXTURE_CORPUS, corpus)
    report = build_index(Settings(), [corpus], progress=False)
    assert report.bm25_seconds > 0
    return corpus


def test_segment_ranks_like_bm25s(segmented, isolated_index):
    """Every chunk ranked through the segment matches bm25s (Lucene BM25, k1 1.5, b 0.75) over the same terms."""
    import bm25s
    import numpy as np

    reader = reader_of(isolated_index)
    segment = reader.segment()
    assert segment is not None
    rows = reader.conn.execute("SELECT c.paper_id, t.terms FROM chunks c JOIN chunk_terms t ON t.rowid = c.rowid")
    ids, terms = zip(*[(r[0], r[1].split()) for r in rows])
    assert segment.last_rowid == reader.conn.execute("SELECT max(rowid) FROM chunks").fetchone()[0]
    oracle = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    oracle.index(list(terms), show_progress=False)
    for query in QUERIES:
        from rag.catalog import bm25_terms

        expected = oracle.get_scores(bm25_terms(query)) * (1.5 + 1)  # ours keeps Lucene's (k1 + 1) factor
        ours = reader.bm25(query, limit=len(ids))
        assert ours, query
        best = [i for i in np.argsort(-expected, kind="stable") if expected[i] > 0]
        assert ours[0][0] == ids[best[0]], query
        assert [round(s, 3) for _, s, _ in ours] == [round(float(expected[i]), 3) for i in best], query


def test_segment_written_in_small_blocks_is_the_same(segmented, isolated_index, tmp_path, monkeypatch):
    """Postings are placed a block at a time (bounded memory): blocks of 7 postings give the same arrays."""
    import numpy as np

    reader = reader_of(isolated_index)
    live = segments_dir(reader.path) / reader.conn.execute("SELECT name FROM bm25_segment").fetchone()[0]
    monkeypatch.setattr(rag.bm25, "BLOCK_POSTINGS", 7)
    rows = reader.conn.execute("SELECT rowid, terms FROM chunk_terms ORDER BY rowid").fetchall()
    out = tmp_path / "segments"
    out.mkdir()
    meta = rag.bm25.write_segment(rows, len(rows), out, "small-blocks")
    assert meta == json.loads((live / "meta.json").read_text())
    for name in ("indptr", "docs", "weights", "rowids"):
        assert np.array_equal(np.load(live / f"{name}.npy"), np.load(out / "small-blocks" / f"{name}.npy")), name
    assert [p.name for p in out.iterdir()] == ["small-blocks"]
    assert sorted(p.name for p in (out / "small-blocks").iterdir()) == sorted(p.name for p in live.iterdir())


def test_added_removed_and_readded_papers_stay_searchable(segmented, isolated_index, monkeypatch):
    settings = Settings()
    monkeypatch.setattr(rag.bm25, "SEGMENT_GROWTH", 1.0)  # the changes below keep the first segment
    reader = reader_of(isolated_index)
    first = reader.segment()
    folder = segments_dir(reader.path)

    # remove the paper whose chunk has the segment's last rowid (the last rowid of all): a paper added next gets a
    # rowid after the segment's (SQLite would reuse the freed one, which the segment scores as the chunk it held)
    last = reader.conn.execute("SELECT paper_id FROM chunks WHERE rowid = ?", (first.last_rowid,)).fetchone()[0]
    title = reader.papers[last].title
    rows = [json.loads(line) for line in segmented.read_text().splitlines()]
    segmented.write_text("".join(json.dumps(r) + "\n" for r in rows if r["title"] != title))
    assert build_index(settings, progress=False).removed == 1
    add_paper(segmented, "Axolotl Caching", "Axolotl caching halves the latency of narwhal inference servers.")
    assert build_index(settings, progress=False).bm25_seconds == 0  # FTS5 finds it
    reader = reader_of(isolated_index)
    assert reader.segment().last_rowid == first.last_rowid
    (rowid,) = reader.conn.execute(
        "SELECT c.rowid FROM chunks c JOIN papers p ON p.id = c.paper_id WHERE p.title = 'Axolotl Caching'"
    ).fetchone()
    assert rowid > first.last_rowid
    assert top_title(reader, "axolotl narwhal caching") == "Axolotl Caching"
    assert all(pid != last for pid, _, _ in reader.bm25(title, 50))

    # enough new chunks: a new segment replaces the old one, and a reader already open switches to it
    monkeypatch.setattr(rag.bm25, "SEGMENT_GROWTH", 0.0)
    add_paper(segmented, "Capybara Sharding", "Capybara sharding balances wombat shards across servers.")
    assert build_index(settings, progress=False).bm25_seconds > 0
    assert [p.name for p in folder.iterdir()] == [reader.conn.execute("SELECT name FROM bm25_segment").fetchone()[0]]
    assert reader.segment().last_rowid > first.last_rowid
    assert top_title(reader, "axolotl narwhal caching") == "Axolotl Caching"  # its generation, from the new segment
    assert not reader.bm25("capybara wombat", 5)  # not published when this reader opened
    assert top_title(reader_of(isolated_index), "capybara wombat sharding") == "Capybara Sharding"


def test_segment_a_killed_build_did_not_write_is_written_by_the_next(tmp_path, isolated_index, monkeypatch):
    import rag.catalog

    corpus = tmp_path / "papers.jsonl"
    shutil.copy(FIXTURE_CORPUS, corpus)
    real_write = rag.catalog.write_segment

    def killed(rows, total, folder, name, progress=False):
        (folder / f"tmp-{name}").mkdir(parents=True)  # what a build killed mid-write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(rag.catalog, "write_segment", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(Settings(), [corpus], progress=False)
    reader = reader_of(isolated_index)  # published before the segment: search answers through FTS5
    assert reader.segment() is None
    assert top_title(reader, "decoding-time algorithm steering a black-box LM") == "Tuning Language Models by Proxy"

    monkeypatch.setattr(rag.catalog, "write_segment", real_write)
    again = build_index(Settings(), progress=False)  # nothing new to index, but the segment is written
    assert again.new == 0
    segment = reader.segment()
    assert segment is not None and [p.name for p in segments_dir(reader.path).iterdir()] == [
        reader.conn.execute("SELECT name FROM bm25_segment").fetchone()[0]
    ]  # the killed write's folder is gone
    assert top_title(reader, "decoding-time algorithm steering a black-box LM") == "Tuning Language Models by Proxy"


def test_segment_write_on_a_full_disk_is_a_note_and_leaves_nothing(tmp_path, isolated_index, monkeypatch):
    import errno

    corpus = tmp_path / "papers.jsonl"
    shutil.copy(FIXTURE_CORPUS, corpus)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(rag.bm25.os, "posix_fallocate", full)
        report = build_index(Settings(), [corpus], progress=False)
    assert report.notes == ["the BM25 segment was not written (No space left on device): `rag index` again to write it"]
    reader = reader_of(isolated_index)  # published: search answers through FTS5
    folder = segments_dir(reader.path)
    assert reader.segment() is None and not (folder.exists() and any(folder.iterdir()))
    assert top_title(reader, "decoding-time algorithm steering a black-box LM") == "Tuning Language Models by Proxy"

    assert build_index(Settings(), progress=False).bm25_seconds > 0
    assert reader.segment() is not None
