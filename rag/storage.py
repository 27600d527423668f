"""On-disk layout under RAG_INDEX_DIR, and the only place that writes files atomically.

    index/manifest.json          the live manifest: store, generation, embedding model, sources, counts. Written
                                 last by a build (atomic rename): what it names is what search shows.
    index/store-<id>/catalog.sqlite   papers and chunk texts with BM25 (rag/catalog.py), rows tagged by generation
    index/store-<id>/bm25/<name>/   the catalog's BM25 segment, memory-mapped (rag/bm25.py)
    index/store-<id>/chroma/     embedded Chroma holding collection papers-<id> (absent with RAG_CHROMA_URL: then
                                 the collection lives on the Chroma server)
    index/building.json          what a running build does: the sources it was asked for (a killed build's are
                                 indexed by the next build) and the new store it writes, if any (deleted by the next
                                 build when it was not published)
    index/uploads/               corpus files added through the UI
    index/.lock                  held while a build runs

An update writes the new and changed papers into the live store in place (no copy), invisible until the manifest
naming the new generation is published; `--rebuild` and a first build write a new store and switch to it.
"""

from __future__ import annotations

import fcntl
import filecmp
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag.corpus import SUFFIXES

MANIFEST = "manifest.json"
BUILDING = "building.json"


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


def read_manifest(index_dir: Path) -> dict:
    """The live manifest, or {} when nothing was published yet."""
    try:
        return json.loads((Path(index_dir) / MANIFEST).read_text())
    except FileNotFoundError:
        return {}


def paper_vectors_of(manifest: dict) -> str:
    """What the index's paper vectors are made from (RAG_PAPER_VECTORS); "chunks" for an index built before the
    setting existed."""
    return manifest.get("paper_vectors", "chunks")


def version_of(manifest: dict) -> str | None:
    """A token that changes whenever a build publishes; a long-running server compares it to reopen the index."""
    return f"{manifest['store']}.{manifest['generation']}" if manifest else None


def live_version(index_dir: Path) -> str | None:
    return version_of(read_manifest(index_dir))


class IndexingError(RuntimeError):
    """An index that cannot be built or opened as asked; the message says what to do."""


def check_model(manifest: dict, settings) -> None:
    """The index was built with the embedding model and runtime the settings name (else its vectors mean nothing to
    the query's)."""
    from rag.models import embed_model_label

    built_with = manifest.get("embed_model")
    wanted = embed_model_label(settings.embed_model, settings.embed_runtime)
    if built_with and built_with != wanted:
        raise IndexingError(
            f"the index in {settings.index_dir} was built with the embedding model {built_with!r} "
            f"but RAG_EMBED_MODEL / RAG_EMBED_RUNTIME give {wanted!r}: run `rag index --rebuild`"
        )


def new_store_id() -> str:
    return uuid.uuid4().hex[:12]


def store_dir(index_dir: Path, store: str) -> Path:
    return Path(index_dir) / f"store-{store}"


def catalog_path(index_dir: Path, store: str) -> Path:
    return store_dir(index_dir, store) / "catalog.sqlite"


def publish(index_dir: Path, manifest: dict) -> None:
    """Make `manifest` the live one (the last step of a build)."""
    write_json(Path(index_dir) / MANIFEST, manifest)


def mark_building(index_dir: Path, store: str | None, sources: list[str] | None = None) -> None:
    """Record what a build is doing (the new store it writes, if any, and the sources it was asked to index), so the
    next build can finish or clean up after a killed one; None clears it."""
    path = Path(index_dir) / BUILDING
    if sources is None:
        path.unlink(missing_ok=True)
    else:
        write_json(path, {"store": store, "sources": sources})


def unfinished_build(index_dir: Path) -> dict:
    """{"store": new store or None, "sources": [...]} of a build that did not finish, or {}."""
    try:
        data = json.loads((Path(index_dir) / BUILDING).read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def stale_stores(index_dir: Path, live: str | None) -> list[str]:
    """Store folders other than the live one (a finished rebuild's predecessor, a killed build's leftovers)."""
    return [p.name.removeprefix("store-") for p in Path(index_dir).glob("store-*") if p.name != f"store-{live}"]


def remove_store_dir(index_dir: Path, store: str) -> None:
    shutil.rmtree(store_dir(index_dir, store), ignore_errors=True)


class UploadError(ValueError):
    """An upload refused before indexing (name, type or size); str() is one line."""


def safe_name(name: str) -> str:
    """A file name to write under uploads/ from an untrusted upload name: the last path component only, no
    leading dots or '..', only [A-Za-z0-9._-], and a corpus suffix (.txt .json .jsonl .csv .bib)."""
    base = re.split(r"[\\/]", name or "")[-1].strip()
    suffix = Path(base).suffix.lower()
    if suffix not in SUFFIXES:
        raise UploadError(f"{base or 'the file'}: not a corpus file (use {', '.join(SUFFIXES)})")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base[: -len(suffix)])
    stem = re.sub(r"\.{2,}", ".", stem).strip("._-")[:80]
    return (stem or "upload") + suffix


def save_upload(src: Path, name: str, folder: Path, max_mb: float) -> tuple[Path, bool]:
    """Copy an uploaded file under `folder` with a safe name. Returns (path, whether an identical file was there).

    A file with that name and other content is kept: the upload gets a numbered name instead.
    """
    size = src.stat().st_size
    if size > max_mb * 2**20:
        raise UploadError(
            f"{safe_name(name)} is {size / 2**20:.1f} MB: the limit is {max_mb} MB (RAG_UI_MAX_UPLOAD_MB)"
        )
    first = dest = folder / safe_name(name)
    n = 2
    while dest.exists() and not filecmp.cmp(dest, src, shallow=False):
        dest = first.with_name(f"{first.stem}-{n}{first.suffix}")
        n += 1
    existed = dest.exists()
    if not existed:
        shutil.copyfile(src, dest)
    return dest, existed


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
