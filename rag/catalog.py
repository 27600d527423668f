"""The catalog: papers and chunk texts in one SQLite file, with BM25 by SQLite FTS5 (standard library).

Every row carries the generation that added it and, once it is dropped, the generation that removed it. The live
manifest names a generation; search shows exactly the papers visible at it:

    added <= generation AND (removed IS NULL OR removed > generation)

so a build can write new papers in place (in batches, each committed) and they stay invisible until the manifest
naming the new generation is published, which is the build's last step. A killed build leaves rows of a newer
generation behind: invisible, and picked up (not re-embedded) or deleted by the next build.

BM25: each chunk's text is tokenized as bm25s tokenizes it (lowercase words of 2+ characters, English stopwords
removed, PyStemmer english stems). Chunks are scored with Lucene's BM25 (k1 1.5, b 0.75) from the memory-mapped
segment (rag/bm25.py); the chunks written since the segment are found by FTS5 and rescored the same way
(`CatalogReader.bm25`). The vocabulary holds PyStemmer stems, as `rag.evidence.topic_words` expects.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path

from rag.bm25 import Segment, bm25_weight, needs_segment, remove_segments, write_segment
from rag.corpus import Paper, title_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS papers (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, abstract TEXT NOT NULL, url TEXT NOT NULL, source TEXT NOT NULL,
    authors TEXT NOT NULL DEFAULT '', year TEXT NOT NULL DEFAULT '', title_key TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}', chunks INTEGER NOT NULL, added INTEGER NOT NULL, removed INTEGER
);
CREATE INDEX IF NOT EXISTS papers_title_key ON papers(title_key);
CREATE INDEX IF NOT EXISTS papers_added ON papers(added);
CREATE INDEX IF NOT EXISTS papers_removed ON papers(removed);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY, paper_id TEXT NOT NULL, text TEXT NOT NULL, length INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_paper ON chunks(paper_id);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0), chunks INTEGER NOT NULL, terms INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS chunk_added AFTER INSERT ON chunks
    BEGIN UPDATE totals SET chunks = chunks + 1, terms = terms + NEW.length; END;
CREATE TRIGGER IF NOT EXISTS chunk_removed AFTER DELETE ON chunks
    BEGIN UPDATE totals SET chunks = chunks - 1, terms = terms - OLD.length; END;
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms
    USING fts5(terms, tokenize="unicode61 remove_diacritics 0 tokenchars '_'");
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_vocab USING fts5vocab(chunk_terms, 'row');
CREATE TABLE IF NOT EXISTS sentence_vectors (paper_id TEXT PRIMARY KEY, vectors BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bm25_segment (
    id INTEGER PRIMARY KEY CHECK (id = 0), name TEXT NOT NULL, last_rowid INTEGER NOT NULL, chunks INTEGER NOT NULL
);
"""


def visible_at(generation: int, table: str = "") -> str:
    """The visibility rule, as SQL: the papers (of `table`, e.g. "p.") visible at a generation (an int, inlined)."""
    g = int(generation)
    return f"{table}added <= {g} AND ({table}removed IS NULL OR {table}removed > {g})"


def live_during_build(live: int) -> str:
    """The same rule while a build runs, against the live generation: removals are only marked when the build
    finishes, so `removed` is NULL for every paper that counts. `+removed` keeps SQLite off the index on `removed`,
    where every live paper is NULL (a scan of the catalog: 0.15 s a statement at 100k papers)."""
    return f"added <= {int(live)} AND +removed IS NULL"


def staged_after(live: int) -> str:
    """Papers a build wrote after the live generation that are not published yet (a killed build's, or this one's)."""
    return f"added > {int(live)} AND +removed IS NULL"


PAPER_KEYS = ("id", "title", "abstract", "url", "source", "authors", "year")
WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern
RERANK_POOL = 200  # chunks FTS5 finds before they are rescored
COMMON_SHARE = 0.2  # query terms in more chunks than this share only rescore, they do not select
SEGMENT_SLACK = 20  # more chunks asked of a segment than wanted: some may belong to papers removed since


@lru_cache(maxsize=1)
def _stemmer_and_stopwords():
    """PyStemmer's english stemmer and bm25s's English stopwords. The stopword module is loaded from its file:
    `import bm25s` runs the package's __init__ (scipy.sparse and more, 0.35 s of opening an index, measured)."""
    import importlib.util

    import Stemmer

    package = importlib.util.find_spec("bm25s")
    if package is None or not package.submodule_search_locations:
        raise ImportError("the package 'bm25s' is not installed (pip install bm25s)")
    path = Path(list(package.submodule_search_locations)[0]) / "stopwords.py"
    spec = importlib.util.spec_from_file_location("bm25s_stopwords", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Stemmer.Stemmer("english"), frozenset(module.STOPWORDS_EN)


def bm25_terms(text: str) -> list[str]:
    """Text -> BM25 terms, as bm25s.tokenize(stopwords="en", stemmer=english) makes them."""
    stemmer, stopwords = _stemmer_and_stopwords()
    return stemmer.stemWords([w for w in WORD.findall(text.lower()) if w not in stopwords])


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")  # readers go on while a build writes
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
    conn.row_factory = sqlite3.Row
    return conn


class Catalog:
    """Writer side, used by one build at a time (under the index lock)."""

    def __init__(self, path: Path):
        self.path = path
        self.conn = connect(path)

    def close(self) -> None:
        self.conn.close()

    def undo_unpublished_removals(self, live: int) -> None:
        """A killed build may have marked removals it never published: they are live again."""
        with self.conn:
            self.conn.execute("UPDATE papers SET removed = NULL WHERE removed > ?", (live,))

    def add(self, papers: list, chunks: dict[str, list[tuple[str, str]]], sentence_vectors: dict, generation: int):
        """Insert papers as of `generation`, with their chunks as (text shown, text BM25 indexes) and the vectors of
        their abstract's sentences (one per sentence; none stored for papers missing from `sentence_vectors`), in one
        transaction."""
        with self.conn:
            # never below the segment's last rowid: SQLite reuses the rowids of deleted last rows, and a reused one
            # would be scored by the segment as the chunk it held before (and missed by FTS5, which only looks after)
            rowid = self.conn.execute(
                "SELECT max(coalesce((SELECT max(rowid) FROM chunks), 0), "
                "coalesce((SELECT last_rowid FROM bm25_segment), 0))"
            ).fetchone()[0]
            for p in papers:
                texts = chunks[p.id]
                self._delete_chunks([p.id])  # a staged copy from a killed build
                if sentence_vectors.get(p.id):
                    self.conn.execute(
                        "INSERT INTO sentence_vectors VALUES (?, ?)", (p.id, pack_vectors(sentence_vectors[p.id]))
                    )
                self.conn.execute(
                    "INSERT OR REPLACE INTO papers VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL)",
                    (p.id, p.title, p.abstract, p.url, p.source, p.authors, p.year, title_key(p.title))
                    + (json.dumps(extra_of(p)), len(texts), generation),
                )
                for text, indexed in texts:
                    terms = bm25_terms(indexed)
                    rowid += 1
                    self.conn.execute(
                        "INSERT INTO chunks (rowid, paper_id, text, length) VALUES (?, ?, ?, ?)",
                        (rowid, p.id, text, len(terms)),
                    )
                    self.conn.execute("INSERT INTO chunk_terms (rowid, terms) VALUES (?, ?)", (rowid, " ".join(terms)))

    def finish(self, generation: int, live: int, removed: list[str], relabelled) -> None:
        """One transaction before publishing: staged papers join `generation`, removals are marked, metadata
        (url, source, ...) of unchanged papers updated (`relabelled`: papers, any iterable)."""
        with self.conn:
            self.conn.execute(f"UPDATE papers SET added = ? WHERE {staged_after(live)}", (generation,))
            self.conn.executemany("UPDATE papers SET removed = ? WHERE id = ?", [(generation, pid) for pid in removed])
            self.conn.executemany(
                "UPDATE papers SET url = ?, source = ?, authors = ?, year = ?, extra = ? WHERE id = ?",
                ((p.url, p.source, p.authors, p.year, json.dumps(extra_of(p)), p.id) for p in relabelled),
            )

    def purge(self, ids: list[str]) -> None:
        """Delete papers and their chunks for good (removed and published, or staged and no longer wanted)."""
        with self.conn:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                self._delete_chunks(part)
                self.conn.execute(f"DELETE FROM papers WHERE id IN ({','.join('?' * len(part))})", part)

    def update_segment(self, progress: bool = False) -> bool:
        """Write a new BM25 segment (rag/bm25.py) of every chunk when enough were written since the live one;
        whether it did. A killed write leaves a temporary folder, removed by the next one."""
        live = self.conn.execute("SELECT name, last_rowid, chunks FROM bm25_segment").fetchone()
        covered, last = (live["chunks"], live["last_rowid"]) if live else (0, 0)
        since = self.conn.execute("SELECT count(*) FROM chunks WHERE rowid > ?", (last,)).fetchone()[0]
        total = self.conn.execute("SELECT chunks FROM totals").fetchone()[0]  # kept by triggers: no table scan
        deleted = covered - (total - since)
        if not needs_segment(covered, since + deleted):
            return False
        folder = segments_dir(self.path)
        remove_segments(folder, keep=live["name"] if live else None)  # what a failed write left, before writing
        name = f"segment-{time.time_ns()}"  # a new name each time: the live one may be mapped by readers
        rows = self.conn.execute("SELECT rowid, terms FROM chunk_terms ORDER BY rowid")
        meta = write_segment(rows, total, folder, name, progress)
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO bm25_segment VALUES (0, ?, ?, ?)", (name, meta["last_rowid"], meta["chunks"])
            )
        remove_segments(folder, keep=name)
        return True

    def removed_ids(self, generation: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM papers WHERE removed <= ?", (generation,))]

    def _delete_chunks(self, ids: list[str]) -> None:
        marks = ",".join("?" * len(ids))
        self.conn.execute(f"DELETE FROM sentence_vectors WHERE paper_id IN ({marks})", ids)
        self.conn.execute(
            f"DELETE FROM chunk_terms WHERE rowid IN (SELECT rowid FROM chunks WHERE paper_id IN ({marks}))", ids
        )
        self.conn.execute(f"DELETE FROM chunks WHERE paper_id IN ({marks})", ids)

    def counts(self, generation: int) -> tuple[int, int]:
        row = self.conn.execute(
            f"SELECT count(*), coalesce(sum(chunks), 0) FROM papers WHERE {visible_at(generation)}"
        ).fetchone()
        return row[0], row[1]


def segments_dir(catalog_path: Path) -> Path:
    return catalog_path.parent / "bm25"


def pack_vectors(vectors) -> bytes:
    """Sentence vectors (one row each, at least one) as stored: float16 rows with their dimension first (half the
    disk of float32; dot products change in the 4th decimal)."""
    import numpy as np

    array = np.asarray(vectors, dtype=np.float16)
    return np.int32(array.shape[1]).tobytes() + array.tobytes()


def unpack_vectors(blob: bytes):
    import numpy as np

    dim = int(np.frombuffer(blob[:4], dtype=np.int32)[0])
    return np.frombuffer(blob[4:], dtype=np.float16).astype(np.float32).reshape(-1, dim)


def extra_of(paper) -> dict:
    return {"line": paper.line, "categories": paper.categories, "sources": paper.sources}


class CatalogReader:
    """Read side for one published generation; safe to share between threads (one connection per thread)."""

    def __init__(self, path: Path, generation: int):
        self.path, self.generation = path, generation
        self._local = threading.local()
        self._stats: tuple[int, float] | None = None
        self._segment: tuple[str, Segment | None] = ("", None)  # (name, mapped segment)
        self._segment_lock = threading.Lock()
        self.papers = PaperTable(self)
        self.vocabulary = Vocabulary(self)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, readonly=True)
        return conn

    def source_counts(self) -> list[tuple[str, int]]:
        """(source file, papers) of the visible papers, by source name."""
        return self.conn.execute(
            f"SELECT source, count(*) FROM papers WHERE {visible_at(self.generation)} GROUP BY source ORDER BY source"
        ).fetchall()

    def visible(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT id FROM papers WHERE id IN ({marks}) AND {visible_at(self.generation)}", ids)
        return {r[0] for r in rows}

    def bm25(self, query: str, limit: int) -> list[tuple[str, float, str]]:
        """(paper_id, score, chunk text) for the best chunks, best first, visible papers only; higher is better.

        Lucene's BM25 (k1 1.5, b 0.75, idf log(1 + ...)), the variant bm25s computes. The catalog's chunks are
        scored through its segment (rag/bm25.py), every chunk holding a query term, exactly. The chunks written
        after the segment (all of them in a catalog written before segments existed) are found by FTS5: its
        built-in bm25() picks the RERANK_POOL best over the query's selective terms (those in at most COMMON_SHARE
        of the chunks; the 3 rarest at least), so a query with "model" or "language" does not rank most of the
        corpus, and they are rescored with Lucene's BM25: dev Recall@5 0.946 as with bm25s (FTS5's own ranking,
        k1 1.2 and an idf clamped to ~0 for terms in half the chunks, gave 0.921). With a segment, its mean chunk
        length serves both.
        """
        query_terms = bm25_terms(query)  # a repeated word counts once per occurrence, as in bm25s
        terms = list(dict.fromkeys(query_terms))
        if not terms:
            return []
        chunks, avg_len = self.stats()
        segment = self.segment()
        after = segment.last_rowid if segment else 0
        later = self.conn.execute("SELECT max(rowid) > ? FROM chunks", (after,)).fetchone()[0]
        df = Counter(segment.df(terms) if segment else {})
        if later:
            df.update(self._df(terms, after))
        known = sorted((t for t in terms if df[t]), key=lambda t: df[t])
        if not known:
            return []
        idf = {t: math.log(1 + (chunks - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
        scored = []
        if segment:
            avg_len = segment.avg_len
            size = limit + SEGMENT_SLACK
            while True:  # chunks of papers removed since the segment was written are skipped: ask for more
                best = segment.best(query_terms, idf, size)
                shown = self._chunks([rowid for rowid, _ in best])
                if len(shown) >= limit or len(best) < size:
                    break
                size *= 4
            scored += [(*shown[rowid], score) for rowid, score in best if rowid in shown]
        if later:
            pool = max(RERANK_POOL, limit)
            selective = [t for i, t in enumerate(known) if i < 3 or df[t] <= COMMON_SHARE * chunks]
            rows = self._candidates(selective, pool, after)
            if len(rows) < limit and len(selective) < len(known):  # too few chunks hold a rare term: use them all
                rows = self._candidates(known, pool, after)
            for pid, indexed, text in rows:
                words = indexed.split()
                counts = Counter(words)
                score = sum(idf[t] * bm25_weight(counts[t], len(words), avg_len) for t in query_terms if counts[t])
                scored.append((pid, text, score))
        scored.sort(key=lambda r: -r[2])
        return [(pid, score, text) for pid, text, score in scored[:limit]]

    def _df(self, terms: list[str], after: int) -> dict[str, int]:
        """term -> how many chunks after rowid `after` hold it (fts5vocab counts them all when `after` is 0)."""
        if not after:
            marks = ",".join("?" * len(terms))
            rows = self.conn.execute(f"SELECT term, doc FROM chunk_vocab WHERE term IN ({marks})", terms)
            return {r[0]: r[1] for r in rows}
        query = "SELECT count(*) FROM chunk_terms WHERE chunk_terms MATCH ? AND rowid > ?"
        return {t: self.conn.execute(query, (f'"{t}"', after)).fetchone()[0] for t in terms}

    def _candidates(self, terms: list[str], pool: int, after: int) -> list:
        """(paper_id, indexed terms, text) of the best chunks by FTS5 for any of `terms` among those after rowid
        `after`, visible papers only."""
        return self.conn.execute(
            "SELECT c.paper_id, t.terms, c.text FROM "
            "(SELECT rowid, terms, rank FROM chunk_terms WHERE chunk_terms MATCH ? AND rowid > ? "
            "ORDER BY rank LIMIT ?) AS t "
            "JOIN chunks c ON c.rowid = t.rowid JOIN papers p ON p.id = c.paper_id "
            f"WHERE {visible_at(self.generation, 'p.')}",
            (" OR ".join(f'"{t}"' for t in terms), after, pool),
        ).fetchall()

    def _chunks(self, rowids: list[int]) -> dict[int, tuple[str, str]]:
        """rowid -> (paper_id, text) of these chunks, visible papers only."""
        if not rowids:
            return {}
        rows = self.conn.execute(
            "SELECT c.rowid, c.paper_id, c.text FROM chunks c JOIN papers p ON p.id = c.paper_id "
            f"WHERE c.rowid IN ({','.join('?' * len(rowids))}) AND {visible_at(self.generation, 'p.')}",
            rowids,
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def segment(self) -> Segment | None:
        """The catalog's live BM25 segment, mapped once per reader; None without one (small catalogs, or one
        written before segments existed) or when it was just replaced (FTS5 then finds every chunk)."""
        try:
            row = self.conn.execute("SELECT name FROM bm25_segment").fetchone()
        except sqlite3.OperationalError:  # a catalog written before the table existed
            return None
        if row is None:
            return None
        with self._segment_lock:
            if self._segment[0] != row[0]:
                try:
                    self._segment = (row[0], Segment(segments_dir(self.path) / row[0]))
                except (OSError, ValueError):
                    return None
            return self._segment[1]

    def sentence_vectors(self, ids: list[str]) -> dict:
        """paper id -> the vectors of its abstract's sentences (float32, one row per sentence), computed at index
        time; papers indexed before they were stored are missing (their sentences are embedded when asked)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        try:
            rows = self.conn.execute(f"SELECT paper_id, vectors FROM sentence_vectors WHERE paper_id IN ({marks})", ids)
            return {pid: unpack_vectors(blob) for pid, blob in rows}
        except sqlite3.OperationalError:  # a catalog written before the table existed
            return {}

    def stats(self) -> tuple[int, float]:
        """(chunks, mean terms per chunk) of the whole catalog, for BM25 (read once per reader)."""
        if self._stats is None:
            chunks, total = self.conn.execute("SELECT chunks, terms FROM totals").fetchone()  # kept by triggers
            self._stats = (max(chunks, 1), max(total / max(chunks, 1), 1.0))
        return self._stats


class PaperTable(Mapping):
    """paper id -> its `Paper`, read from disk."""

    def __init__(self, reader: CatalogReader):
        self._reader = reader
        self._len: int | None = None

    @staticmethod
    def _row(row: sqlite3.Row) -> Paper:
        return Paper(**{k: row[k] for k in PAPER_KEYS}, **json.loads(row["extra"]))

    def __getitem__(self, pid: str) -> Paper:
        row = self._reader.conn.execute(
            f"SELECT * FROM papers WHERE id = ? AND {visible_at(self._reader.generation)}", (pid,)
        ).fetchone()
        if row is None:
            raise KeyError(pid)
        return self._row(row)

    def __iter__(self) -> Iterator[str]:
        rows = self._reader.conn.execute(f"SELECT id FROM papers WHERE {visible_at(self._reader.generation)}")
        return (r[0] for r in rows)

    def __len__(self) -> int:
        if self._len is None:
            self._len = self._reader.conn.execute(
                f"SELECT count(*) FROM papers WHERE {visible_at(self._reader.generation)}"
            ).fetchone()[0]
        return self._len

    def values(self):
        rows = self._reader.conn.execute(f"SELECT * FROM papers WHERE {visible_at(self._reader.generation)}")
        return [self._row(r) for r in rows]

    def titled(self, titles: list[str]) -> list[Paper]:
        """The papers whose normalized title is one of these titles'."""
        keys, out = sorted({title_key(t) for t in titles}), []
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            rows = self._reader.conn.execute(
                f"SELECT * FROM papers WHERE title_key IN ({','.join('?' * len(part))}) "
                f"AND {visible_at(self._reader.generation)}",
                part,
            )
            out += [self._row(r) for r in rows]
        return out


class Vocabulary:
    """`stem in vocabulary`: is this PyStemmer-english stem a BM25 term of the corpus?"""

    def __init__(self, reader: CatalogReader):
        self._reader = reader

    def __contains__(self, stem: object) -> bool:
        if not isinstance(stem, str):
            return False
        segment = self._reader.segment()
        if segment and stem in segment.columns:  # fts5vocab reads a term's whole doclist: 4 ms for a common one
            return True
        row = self._reader.conn.execute("SELECT 1 FROM chunk_vocab WHERE term = ? LIMIT 1", (stem,)).fetchone()
        return row is not None
