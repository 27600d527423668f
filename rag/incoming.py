"""The papers a build reads, parsed into a scratch SQLite file beside the index, merged by title and compared with
the catalog there: a build holds one batch of papers in memory, whatever the size of its files.

Holding every parsed paper in a list took 2.2 KB a paper (220 MB at 100k synthetic abstracts; the arXiv snapshot's
2.7M records would take about 6 GB), before any embedding.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from rag.catalog import live_during_build, staged_after
from rag.corpus import Paper, title_key

SCHEMA = """
CREATE TABLE parsed (
    seq INTEGER PRIMARY KEY, indexed INTEGER NOT NULL, id TEXT NOT NULL, title_key TEXT NOT NULL,
    title TEXT NOT NULL, abstract TEXT NOT NULL, length INTEGER NOT NULL, url TEXT NOT NULL, source TEXT NOT NULL,
    line INTEGER NOT NULL, authors TEXT NOT NULL, year TEXT NOT NULL, categories TEXT NOT NULL
);
"""
# One paper per normalized title: the longest abstract, the first read among equals (an indexed paper compared
# with new files counts as read first). Every place the title was read is kept, in reading order; the papers come
# back in the order their titles were first parsed.
MERGE = """
CREATE TABLE merged AS
WITH ranked AS (
    SELECT seq, id, title_key,
        row_number() OVER (PARTITION BY title_key ORDER BY length DESC, indexed DESC, seq) AS pick,
        min(seq) OVER (PARTITION BY title_key) AS first,
        json_group_array(source || ':' || line) OVER (
            PARTITION BY title_key ORDER BY indexed DESC, seq ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
        ) AS sources
    FROM parsed
)
SELECT seq, id, title_key, first, sources, NULL AS state, 0 AS embedded FROM ranked WHERE pick = 1;
CREATE UNIQUE INDEX merged_id ON merged(id);
CREATE INDEX merged_title_key ON merged(title_key);
CREATE INDEX merged_first ON merged(first);
"""
BATCH = 1000  # parsed papers inserted at once


class Incoming:
    """Parsed papers (`add`), merged (`merge`), compared with a catalog (`compare`), read back in batches."""

    def __init__(self, path: Path | None = None):
        """A scratch file at `path` (any leftover there is replaced), or in memory."""
        if path is not None:
            path.unlink(missing_ok=True)
        self.path = path
        self.conn = sqlite3.connect(":memory:" if path is None else path)
        self.conn.execute("PRAGMA journal_mode=OFF")  # scratch: nothing to recover after a crash
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.executescript(SCHEMA)
        self.pending: list[tuple] = []
        self.seq = 0

    def __enter__(self) -> Incoming:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def add(self, paper: Paper, indexed: bool = False) -> None:
        """A parsed paper, or (`indexed`) an indexed one the parsed ones may repeat or replace."""
        self.seq += 1
        self.pending.append(
            (self.seq, int(indexed), paper.id, title_key(paper.title), paper.title, paper.abstract)
            + (len(paper.abstract), paper.url, paper.source, paper.line, paper.authors, paper.year, paper.categories)
        )
        if len(self.pending) >= BATCH:
            self.flush()

    def discard_after(self, seq: int) -> None:
        """Forget the papers added after the `seq`th (a file that turned out malformed halfway)."""
        self.pending = [row for row in self.pending if row[0] <= seq]
        with self.conn:
            self.conn.execute("DELETE FROM parsed WHERE seq > ?", (seq,))
        self.seq = seq

    def flush(self) -> None:
        with self.conn:
            self.conn.executemany(f"INSERT INTO parsed VALUES ({','.join('?' * 13)})", self.pending)
        self.pending = []

    def title_keys(self) -> Iterator[list[str]]:
        """The parsed papers' normalized titles, each once, 500 at a time."""
        self.flush()
        self.conn.execute("CREATE INDEX IF NOT EXISTS parsed_title_key ON parsed(title_key)")
        last = ""
        while part := self.conn.execute(  # a page at a time: the caller adds papers meanwhile
            "SELECT DISTINCT title_key FROM parsed WHERE title_key > ? AND NOT indexed ORDER BY title_key LIMIT 500",
            (last,),
        ).fetchall():
            last = part[-1][0]
            yield [r[0] for r in part]

    def merge(self) -> list[str]:
        """One paper per title (corpus.py's ids hash title and abstract: equal ids, equal papers); a note for each
        title read with different abstracts."""
        self.flush()
        with self.conn:
            self.conn.executescript(MERGE)
        rows = self.conn.execute(
            "SELECT p.title, w.source, w.line FROM parsed p JOIN merged m ON m.title_key = p.title_key "
            "JOIN parsed w ON w.seq = m.seq WHERE p.id != m.id ORDER BY p.seq"
        )
        return [
            f"{title!r}: two different abstracts; kept the longer one ({source}:{line})" for title, source, line in rows
        ]

    def __len__(self) -> int:
        return self.conn.execute("SELECT count(*) FROM merged").fetchone()[0]

    def compare(self, catalog: Path, live: int, indexed_only: bool) -> tuple[list[str], list[str]]:
        """Mark each merged paper new, changed (a visible paper of the same title has another abstract),
        relabelled (url or source changed) or the same, against the papers visible at generation `live` in the
        catalog (with `indexed_only`, only the indexed papers added here), and which are embedded already (staged
        by a killed build). Returns (ids removed: visible but not merged; ids staged but not merged)."""
        live = int(live)
        self.conn.execute("ATTACH DATABASE ? AS catalog", (str(catalog),))
        scope = " AND id IN (SELECT id FROM parsed WHERE indexed)" if indexed_only else ""
        self.conn.execute(
            "CREATE TEMP VIEW old AS SELECT id, url, source, title_key FROM catalog.papers "
            f"WHERE {live_during_build(live)}{scope}"
        )
        with self.conn:
            self.conn.execute(
                "UPDATE merged SET state = (SELECT CASE WHEN p.url = o.url AND p.source = o.source THEN 'same' "
                "ELSE 'relabelled' END FROM old o, parsed p WHERE o.id = merged.id AND p.seq = merged.seq) "
                "WHERE id IN (SELECT id FROM old)"
            )
            self.conn.execute(
                "UPDATE merged SET state = 'changed' WHERE state IS NULL AND title_key IN "
                "(SELECT title_key FROM old WHERE id NOT IN (SELECT id FROM merged))"
            )
            self.conn.execute("UPDATE merged SET state = 'new' WHERE state IS NULL")
            self.conn.execute(
                "UPDATE merged SET embedded = 1 WHERE state IN ('new', 'changed') AND id IN "
                f"(SELECT id FROM catalog.papers WHERE {staged_after(live)})"
            )
        removed = [r[0] for r in self.conn.execute("SELECT id FROM old WHERE id NOT IN (SELECT id FROM merged)")]
        unwanted = self.conn.execute(
            f"SELECT id FROM catalog.papers WHERE {staged_after(live)} AND id NOT IN (SELECT id FROM merged)"
        )
        unwanted = [r[0] for r in unwanted]
        self.conn.execute("DROP VIEW old")
        self.conn.execute("DETACH DATABASE catalog")
        return removed, unwanted

    def count(self, *states: str, embedded: bool | None = None) -> int:
        query = f"SELECT count(*) FROM merged WHERE state IN ({','.join('?' * len(states))})"
        if embedded is not None:
            query += f" AND embedded = {int(embedded)}"
        return self.conn.execute(query, states).fetchone()[0]

    def papers(self, *states: str, embedded: bool | None = None, batch: int = 500) -> Iterator[list[Paper]]:
        """The merged papers (in the given states; all when none given), in reading order, `batch` at a time."""
        where = f"m.state IN ({','.join('?' * len(states))})" if states else "1"
        if embedded is not None:
            where += f" AND m.embedded = {int(embedded)}"
        rows = self.conn.execute(
            "SELECT p.id, p.title, p.abstract, p.url, p.source, p.line, p.authors, p.year, p.categories, m.sources "
            f"FROM merged m JOIN parsed p ON p.seq = m.seq WHERE {where} ORDER BY m.first",
            states,
        )
        while part := rows.fetchmany(batch):
            yield [Paper(*row[:9], sources=json.loads(row[9])) for row in part]
