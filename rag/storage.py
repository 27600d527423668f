"""On-disk layout under RAG_INDEX_DIR, and the only place that writes files atomically.

    index/CURRENT          name of the live generation (replaced atomically when a build completes)
    index/gen-<n>/         one complete index: chroma/, bm25/, papers.jsonl, manifest.json
    index/uploads/         corpus files added through the UI
    index/.lock            held while a build runs

A build writes a new generation beside the live one and switches CURRENT at the very end, so a killed build, a full
disk or a bad file leaves the previous index in use.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: Path, text: str) -> None:
    """Write text to path so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows) -> None:
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def current_generation(index_dir: Path) -> Path | None:
    pointer = index_dir / "CURRENT"
    if not pointer.exists():
        return None
    gen = index_dir / pointer.read_text().strip()
    return gen if (gen / "manifest.json").exists() else None


def live_version(index_dir: Path) -> str | None:
    """A token that changes whenever a build publishes; a long-running server compares it to reopen the index."""
    gen = current_generation(index_dir)
    return gen.name if gen else None


def new_generation(index_dir: Path) -> Path:
    gen = index_dir / f"gen-{time.time_ns()}"
    gen.mkdir(parents=True)
    return gen


def publish(index_dir: Path, gen: Path) -> None:
    """Make gen the live generation, then drop all but it and the one before (a reader may still hold that)."""
    previous = current_generation(index_dir)
    atomic_write(index_dir / "CURRENT", gen.name + "\n")
    keep = {gen.name, previous.name if previous else ""}
    for old in index_dir.glob("gen-*"):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def uploads_dir(index_dir: Path) -> Path:
    path = index_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """One build at a time per index directory."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another `rag index` is building {index_dir}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
