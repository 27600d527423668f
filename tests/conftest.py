"""Shared fixtures. Every test gets its own RAG_INDEX_DIR; the real-model indexes are built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag.settings import Settings

DATA = Path(__file__).parent / "data"
FIXTURE_CORPUS = DATA / "fixture" / "papers.jsonl"
DEV_SET = DATA / "dev.jsonl"


@pytest.fixture(autouse=True)
def isolated_index(tmp_path, monkeypatch):
    """All on-disk state of a test under its tmp_path; no .env or RAG_* variable of the developer leaks in."""
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "index"


@pytest.fixture(scope="session")
def fixture_index(tmp_path_factory) -> Path:
    """The 10-paper fixture corpus indexed with the real embedding model (about 5 s)."""
    from rag.index import build_index

    index_dir = tmp_path_factory.mktemp("fixture-index")
    build_index(Settings(index_dir=index_dir), [FIXTURE_CORPUS], progress=False)
    return index_dir


@pytest.fixture(scope="session")
def bundled_index(tmp_path_factory) -> Path:
    """The full bundled corpus indexed with the real embedding model (about 35 s on 2 cores), once per session."""
    from rag.index import build_index

    index_dir = tmp_path_factory.mktemp("bundled-index")
    build_index(Settings(index_dir=index_dir), progress=False)
    return index_dir
