"""Indexing with the real embedding model on the 10-paper fixture corpus: search, incremental updates, crash safety."""

from __future__ import annotations

import json
import shutil

import pytest

from rag import Assistant, storage
from rag.cli import main
from rag.corpus import CorpusError
from rag.index import IndexingError, build_index, chunk_papers, load_papers
from rag.models import load_embedder
from rag.settings import Settings
from tests.conftest import FIXTURE_CORPUS

PROXY = "Tuning Language Models by Proxy"


@pytest.fixture
def corpus(tmp_path):
    """A writable copy of the fixture corpus."""
    path = tmp_path / "papers.jsonl"
    shutil.copy(FIXTURE_CORPUS, path)
    return path


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_records(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_search_finds_the_right_paper_in_every_mode(fixture_index):
    assistant = Assistant(Settings(index_dir=fixture_index))
    for mode in ("hybrid", "dense", "bm25"):
        hits = assistant.search(
            "decoding-time algorithm steering a black-box LM with a small tuned model", k=3, mode=mode
        )
        assert hits[0].title == PROXY, mode
        assert [h.rank for h in hits] == [1, 2, 3]
        assert len({h.paper_id for h in hits}) == 3  # one hit per paper


def test_no_chunk_exceeds_the_embedding_window():
    from llama_index.core.schema import MetadataMode

    embedder = load_embedder("bundled")
    papers, _, _ = load_papers([str(FIXTURE_CORPUS)], skip_bad=False)
    nodes = chunk_papers(papers, embedder, 256)
    lengths = [len(embedder.tokenizer.encode(n.get_content(MetadataMode.EMBED))) for n in nodes]
    assert max(lengths) <= 256
    assert len(nodes) > len(papers)  # some abstracts needed two chunks
    assert all(n.get_content(MetadataMode.EMBED).startswith("title: ") for n in nodes)


def test_incremental_reindex(corpus, isolated_index, monkeypatch):
    settings = Settings()
    first = build_index(settings, [corpus], progress=False)
    assert (first.papers, first.new, first.changed, first.removed) == (10, 10, 0, 0)
    generation = storage.current_generation(isolated_index)

    import rag.index

    embedded = []
    real_embed = rag.index.embed_nodes
    monkeypatch.setattr(
        rag.index, "embed_nodes", lambda nodes, *a, **k: (embedded.extend(nodes), real_embed(nodes, *a, **k))
    )

    again = build_index(settings, progress=False)
    assert (again.new, again.changed, again.removed) == (0, 0, 0) and not embedded
    assert storage.current_generation(isolated_index) == generation  # nothing rewritten

    rows = records(corpus)
    rows[1]["abstract"] += " We also release code."
    del rows[2]
    rows.append(
        {
            "title": "A Brand New Paper",
            "abstract": "We introduce a brand new benchmark for testing retrieval "
            "augmented generation over abstracts of scientific papers.",
        }
    )
    write_records(corpus, rows)
    update = build_index(settings, progress=False)
    assert (update.papers, update.new, update.changed, update.removed) == (10, 1, 1, 1)
    assert {n.metadata["title"] for n in embedded} == {PROXY, "A Brand New Paper"}
    hits = Assistant(settings).search("brand new benchmark retrieval augmented generation", k=1)
    assert hits[0].title == "A Brand New Paper"
    assert len(list(isolated_index.glob("gen-*"))) == 2  # the live one and the one before


def test_interrupted_build_leaves_the_previous_index(corpus, isolated_index, monkeypatch):
    settings = Settings()
    build_index(settings, [corpus], progress=False)
    before = storage.current_generation(isolated_index)
    rows = records(corpus)
    rows[0]["abstract"] += " Changed."
    write_records(corpus, rows)

    import rag.index

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rag.index, "embed_nodes", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(settings, progress=False)
    assert storage.current_generation(isolated_index) == before
    assert list(isolated_index.glob("gen-*")) == [before]  # the half-built generation is gone
    assert Assistant(settings).search("proxy-tuning black-box", k=1)[0].title == PROXY


def test_bad_file_fails_whole_and_keeps_the_index(corpus, tmp_path, isolated_index):
    settings = Settings()
    build_index(settings, [corpus], progress=False)
    before = storage.current_generation(isolated_index)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "Good", "abstract": "x" * 100}) + "\n" + json.dumps({"title": "No abstract"}))
    with pytest.raises(CorpusError, match="bad.jsonl:2"):
        build_index(settings, [bad], progress=False)
    assert storage.current_generation(isolated_index) == before
    assert json.loads((before / "manifest.json").read_text())["sources"] == [str(corpus.resolve())]

    report = build_index(settings, [bad, tmp_path / "papers.jsonl"], skip_bad=True, progress=False)
    assert report.papers == 10 and len(report.bad_files) == 1 and "bad.jsonl:2" in report.bad_files[0]


def test_index_built_with_another_model_is_refused(corpus, isolated_index):
    build_index(Settings(), [corpus], progress=False)
    other = Settings(embed_model="some/other-model")
    with pytest.raises(IndexingError, match="rag index --rebuild"):
        build_index(other, progress=False)
    with pytest.raises(IndexingError, match="built with the embedding model"):
        Assistant(other).search("anything")


def test_cli_index_search_and_config(corpus, capsys, monkeypatch):
    assert main(["index", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "10 papers" in out and "10 new" in out

    assert main(["search", "proxy-tuning of black-box language models", "--k", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["query"] == "proxy-tuning of black-box language models"
    first = data["results"][0]
    assert set(first) == {"rank", "paper_id", "title", "url", "score", "snippet", "source"}
    assert first["title"] == PROXY and first["source"] == "papers.jsonl" and len(data["results"]) == 2

    assert main(["search", "proxy-tuning"]) == 0
    assert f" 1. {PROXY}" in capsys.readouterr().out

    monkeypatch.setenv("RAG_OPENAI_API_KEY", "sk-secret")
    assert main(["config", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["openai_api_key"] == "***" and "sk-secret" not in json.dumps(config)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["search", "anything"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no index in") and err.count("\n") == 1
    assert main(["index", str(tmp_path / "missing.jsonl")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
