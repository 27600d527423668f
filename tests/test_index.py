"""Indexing with the real embedding model on the 10-paper fixture corpus: search, incremental updates, crash safety."""

from __future__ import annotations

import json
import shutil

import pytest

from rag import Assistant, storage
from rag.cli import main
from rag.corpus import CorpusError
from rag.index import build_index, chunk_papers, load_papers
from rag.models import load_embedder
from rag.settings import Settings
from rag.storage import IndexingError
from tests.conftest import FIXTURE_CORPUS
from tests.live import PROXY


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


def test_search_finds_the_right_paper_in_every_mode(corpus, chroma_mode):
    build_index(Settings(), [corpus], progress=False)
    assistant = Assistant(Settings())
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
    papers, *_ = load_papers([str(FIXTURE_CORPUS)], skip_bad=False)
    nodes = chunk_papers(papers, embedder, 256)
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(embedder.location)  # counts [CLS] and [SEP] too
    lengths = [len(reference.encode(n.get_content(MetadataMode.EMBED))) for n in nodes]
    assert max(lengths) <= 256
    assert len(nodes) > len(papers)  # some abstracts needed two chunks
    assert all(n.get_content(MetadataMode.EMBED).startswith("title: ") for n in nodes)


def test_incremental_reindex(corpus, isolated_index, monkeypatch, chroma_mode):
    settings = Settings()
    first = build_index(settings, [corpus], progress=False)
    assert (first.papers, first.new, first.changed, first.removed) == (10, 10, 0, 0)
    version = storage.live_version(isolated_index)

    import rag.index

    embedded = []
    real_embed = rag.index.embed_papers
    monkeypatch.setattr(
        rag.index, "embed_papers", lambda papers, *a: (embedded.extend(papers), real_embed(papers, *a))[1]
    )

    again = build_index(settings, progress=False)
    assert (again.new, again.changed, again.removed) == (0, 0, 0) and not embedded
    assert storage.live_version(isolated_index) == version  # nothing rewritten

    rows = records(corpus)
    rows[1]["abstract"] += " We also release code."
    removed_title = rows.pop(2)["title"]
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
    assert {p.title for p in embedded} == {PROXY, "A Brand New Paper"}
    assert storage.live_version(isolated_index) != version
    searcher = Assistant(settings).searcher
    hits = searcher.search("brand new benchmark retrieval augmented generation", k=1)
    assert hits[0].title == "A Brand New Paper"
    assert len(searcher.papers) == 10 and removed_title not in {p.title for p in searcher.papers.values()}
    assert len(list(isolated_index.glob("store-*"))) == 1  # updated in place, no copy
    assert searcher.vectors.collection.count() == 10  # the replaced and removed papers' vectors are deleted


def test_adding_a_file_parses_only_that_file(corpus, tmp_path, isolated_index, monkeypatch):
    import os

    import rag.index

    settings = Settings()
    build_index(settings, [corpus], progress=False)
    parsed = []
    real_read = rag.index.read_papers
    monkeypatch.setattr(rag.index, "read_papers", lambda path: (parsed.append(path.name), real_read(path))[1])
    added = tmp_path / "added.jsonl"
    write_records(added, [{"title": "A Brand New Paper", "abstract": "We introduce a brand new benchmark for tests."}])

    report = build_index(settings, [added], progress=False)
    assert parsed == ["added.jsonl"]  # the unchanged corpus file is not parsed again: its papers come from the catalog
    assert (report.papers, report.new, report.changed, report.removed) == (11, 1, 0, 0)
    assert Assistant(settings).search("brand new benchmark", k=1)[0].title == "A Brand New Paper"

    parsed.clear()
    assert build_index(settings, progress=False).new == 0 and parsed == []  # nothing changed: nothing parsed

    proxy = next(r for r in records(corpus) if r["title"] == PROXY)
    again, longer = tmp_path / "again.jsonl", tmp_path / "longer.jsonl"
    write_records(again, [proxy])  # a paper already indexed, from another file: the same paper
    report = build_index(settings, [again], progress=False)
    assert (report.papers, report.new, report.changed, report.metadata_updated) == (11, 0, 0, 0)
    write_records(longer, [{**proxy, "abstract": proxy["abstract"] + " A longer, revised abstract."}])
    report = build_index(settings, [longer], progress=False)  # a revised version: the longer abstract replaces it
    assert (report.papers, report.new, report.changed, report.removed) == (11, 0, 1, 0)
    hits = Assistant(settings).search("proxy-tuning black-box", k=3)
    assert [h.title for h in hits].count(PROXY) == 1
    assert Assistant(settings).searcher.papers[hits[0].paper_id].abstract.endswith("revised abstract.")
    again.unlink()
    longer.unlink()  # gone: every file is parsed again, and the first version of the paper is back
    report = build_index(settings, progress=False)
    assert (report.papers, report.changed) == (11, 1)
    parsed.clear()

    rows = records(corpus)
    removed_title = rows.pop(0)["title"]
    write_records(corpus, rows)  # an earlier file changed: every file is parsed, and the removal is seen
    report = build_index(settings, progress=False)
    assert sorted(parsed) == ["added.jsonl", "papers.jsonl"] and (report.papers, report.removed) == (10, 1)
    assert removed_title not in {h.title for h in Assistant(settings).search(removed_title, k=10)}

    parsed.clear()
    stat = added.stat()
    os.utime(added, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, not changed: parsed once more
    assert build_index(settings, progress=False).new == 0 and sorted(parsed) == ["added.jsonl", "papers.jsonl"]
    parsed.clear()
    assert build_index(settings, progress=False).new == 0 and parsed == []


def test_interrupted_build_leaves_the_previous_index(corpus, isolated_index, monkeypatch, chroma_mode):
    settings = Settings(index_batch_papers=2)
    build_index(settings, [corpus], progress=False)
    before = storage.live_version(isolated_index)
    rows = records(corpus)
    for row in rows:
        row["abstract"] += " Changed."
    write_records(corpus, rows)

    import rag.index

    real_embed, calls = rag.index.embed_papers, []

    def killed_on_third_batch(papers, *args):
        calls.append(len(papers))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_embed(papers, *args)

    monkeypatch.setattr(rag.index, "embed_papers", killed_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        build_index(settings, progress=False)
    assert storage.live_version(isolated_index) == before
    searcher = Assistant(settings).searcher
    hit = searcher.search("proxy-tuning black-box", k=1)[0]
    assert hit.title == PROXY and not searcher.papers[hit.paper_id].abstract.endswith("Changed.")
    assert all(not p.abstract.endswith("Changed.") for p in searcher.papers.values())

    calls.clear()
    monkeypatch.setattr(
        rag.index, "embed_papers", lambda papers, *a: (calls.append(len(papers)), real_embed(papers, *a))[1]
    )
    report = build_index(settings, progress=False)
    assert report.changed == 10 and len(calls) == 3  # 2 of 5 batches were written before the kill: not redone
    searcher = Assistant(settings).searcher
    assert all(p.abstract.endswith("Changed.") for p in searcher.papers.values()) and len(searcher.papers) == 10
    assert searcher.vectors.collection.count() == 10


def test_sigkill_mid_embedding_then_next_build_finishes(tmp_path, isolated_index, monkeypatch):
    """A real `rag index` process killed with SIGKILL while it embeds: search answers from the previous manifest,
    and the next build finishes without redoing the batches that were committed."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from rag.index import BUNDLED_SOURCE

    settings = Settings(index_batch_papers=16)
    build_index(settings, [FIXTURE_CORPUS], progress=False)
    before = storage.live_version(isolated_index)
    fixture_titles = {r["title"] for r in records(FIXTURE_CORPUS)}
    papers = [p for p in load_papers([BUNDLED_SOURCE], skip_bad=False)[0] if p.title not in fixture_titles]
    extra = tmp_path / "more.jsonl"
    write_records(extra, [{"title": p.title, "abstract": p.abstract} for p in papers[:120]])

    env = {**os.environ, "RAG_INDEX_DIR": str(isolated_index), "RAG_INDEX_BATCH_PAPERS": "16", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", str(extra)], env=env, cwd=tmp_path)
    catalog = storage.catalog_path(isolated_index, storage.read_manifest(isolated_index)["store"])
    live_gen = storage.read_manifest(isolated_index)["generation"]
    staged, deadline = 0, time.monotonic() + 300
    while staged < 32 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        with sqlite3.connect(catalog) as conn:
            staged = conn.execute("SELECT count(*) FROM papers WHERE added > ?", (live_gen,)).fetchone()[0]
    assert proc.poll() is None, "the build ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staged >= 32

    assert storage.live_version(isolated_index) == before
    searcher = Assistant(Settings()).searcher
    assert len(searcher.papers) == 10
    assert searcher.search("proxy-tuning black-box", k=1)[0].title == PROXY
    assert papers[0].title not in {h.title for h in searcher.search(papers[0].title, k=10)}

    import rag.index

    embedded, real_embed = set(), rag.index.embed_papers
    monkeypatch.setattr(
        rag.index,
        "embed_papers",
        lambda papers, *a: (embedded.update(p.id for p in papers), real_embed(papers, *a))[1],
    )
    report = build_index(Settings(), progress=False)
    assert report.new == 120 and storage.live_version(isolated_index) != before
    assert len(embedded) <= 120 - staged  # the batches committed before the kill are not embedded again
    searcher = Assistant(Settings()).searcher
    assert len(searcher.papers) == report.papers == 130
    assert searcher.search(papers[0].title, k=1)[0].title == papers[0].title


def test_rebuild_replaces_the_store_and_cleans_a_killed_one(corpus, isolated_index):
    settings = Settings()
    build_index(settings, [corpus], progress=False)
    first = storage.read_manifest(isolated_index)["store"]
    (isolated_index / "store-deadbeef0000").mkdir()  # a killed --rebuild's leftovers
    storage.mark_building(isolated_index, "deadbeef0000", [])
    report = build_index(settings, rebuild=True, progress=False)
    second = storage.read_manifest(isolated_index)["store"]
    assert report.new == 10
    # the store that was live stays beside the new one (a running server still reads it); the killed one is gone
    assert sorted(p.name for p in isolated_index.glob("store-*")) == sorted([f"store-{first}", f"store-{second}"])
    assert Assistant(settings).search("proxy-tuning black-box", k=1)[0].title == PROXY
    build_index(settings, rebuild=True, progress=False)  # the next rebuild drops the one before
    assert f"store-{first}" not in [p.name for p in isolated_index.glob("store-*")]


def test_bad_file_fails_whole_and_keeps_the_index(corpus, tmp_path, isolated_index):
    settings = Settings()
    build_index(settings, [corpus], progress=False)
    before = storage.live_version(isolated_index)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "Good", "abstract": "x" * 100}) + "\n" + json.dumps({"title": "No abstract"}))
    with pytest.raises(CorpusError, match="bad.jsonl:2"):
        build_index(settings, [bad], progress=False)
    assert storage.live_version(isolated_index) == before
    assert storage.read_manifest(isolated_index)["sources"] == [str(corpus.resolve())]

    report = build_index(settings, [bad, tmp_path / "papers.jsonl"], skip_bad=True, progress=False)
    assert report.papers == 10 and len(report.bad_files) == 1 and "bad.jsonl:2" in report.bad_files[0]


def test_index_built_with_another_model_is_refused(corpus, isolated_index):
    build_index(Settings(), [corpus], progress=False)
    other = Settings(embed_model="some/other-model")
    with pytest.raises(IndexingError, match="rag index --rebuild"):
        build_index(other, progress=False)
    with pytest.raises(IndexingError, match="built with the embedding model"):
        Assistant(other).search("anything")


def test_answers_embed_the_question_only_and_stored_sentence_vectors_match_fresh_ones(fixture_index):
    """Sentence vectors are computed at index time; answering embeds the question (and metadata lines), and the
    stored vectors (int8 model, kept as float16) score like vectors computed now."""
    import numpy as np

    from rag.evidence import score_sentences

    assistant = Assistant(Settings(index_dir=fixture_index, llm_backend="none"))
    embedder = load_embedder("bundled")
    embedded = []

    def embed(texts):
        embedded.extend(texts)
        return embedder.encode(texts)

    question = "How does proxy-tuning steer a black-box language model?"
    hits = assistant.search(question, k=3)
    stored = assistant.searcher.catalog.sentence_vectors([h.paper_id for h in hits])
    assert set(stored) == {h.paper_id for h in hits}
    ask = embedder.encode([question])
    with_stored = score_sentences([question], ask, hits, assistant.searcher.papers, embed, stored)
    assert all(t.startswith(("Authors: ", "Year: ")) for t in embedded)  # the abstracts' sentences were stored
    fresh = score_sentences([question], ask, hits, assistant.searcher.papers, embedder.encode)
    by_quote = {ev.quote: ev.score for ev in fresh}
    assert len(with_stored) == len(fresh)
    assert max(abs(ev.score - by_quote[ev.quote]) for ev in with_stored) < 0.02
    assert with_stored[0].quote == fresh[0].quote
    for vectors in stored.values():
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=0.01)


def test_without_sentence_vectors_answers_embed_the_evidence_when_asked(corpus, isolated_index):
    settings = Settings(sentence_vectors=False, llm_backend="none")
    build_index(settings, [corpus], progress=False)
    assistant = Assistant(settings)
    assert assistant.searcher.catalog.sentence_vectors(list(assistant.searcher.papers)) == {}
    answer = assistant.ask("How does proxy-tuning steer a black-box language model?")
    assert not answer.refused and answer.evidence[0].title == PROXY


@pytest.mark.parametrize(
    "sentence_vectors, paper_vectors", [(True, "head"), (True, "chunks"), (False, "head"), (False, "chunks")]
)
def test_what_each_setting_embeds(corpus, isolated_index, monkeypatch, sentence_vectors, paper_vectors):
    """Default: each paper's head (title and first HEAD_WORDS words) and each sentence alone; RAG_PAPER_VECTORS=
    chunks: every chunk instead of the heads; no sentence vectors: the heads or chunks only. Either paper vector
    finds a paper by its title. Stored sentence vectors are unit vectors, one per sentence, and answers quote the
    answering sentence."""
    import numpy as np

    from rag.index import HEAD_WORDS
    from rag.models import OnnxEmbedding
    from rag.sentences import split_sentences

    seen = []
    real = OnnxEmbedding.encode
    monkeypatch.setattr(OnnxEmbedding, "encode", lambda self, texts: (seen.extend(texts), real(self, texts))[1])
    settings = Settings(sentence_vectors=sentence_vectors, paper_vectors=paper_vectors, llm_backend="none")
    build_index(settings, [corpus], progress=False)
    papers, *_ = load_papers([str(corpus)], skip_bad=False)
    sentences = [s for p in papers for s in split_sentences(p.abstract)] if sentence_vectors else []
    labelled = [t for t in seen if t.startswith("title: ")]
    assert sorted(t for t in seen if t not in labelled) == sorted(sentences)
    if paper_vectors == "chunks":
        assert len(labelled) == 17  # the fixture's 10 papers in 17 chunks
    else:
        assert len(labelled) == len(papers) and all(len(t.split()) <= HEAD_WORDS + 20 for t in labelled)
        assert {t.split("\n\n")[0] for t in labelled} == {f"title: {p.title}" for p in papers}

    assistant = Assistant(settings)
    stored = assistant.searcher.catalog.sentence_vectors(list(assistant.searcher.papers))
    for pid, paper in assistant.searcher.papers.items():
        if sentence_vectors:
            assert len(stored[pid]) == len(split_sentences(paper.abstract))
            assert np.allclose(np.linalg.norm(stored[pid], axis=1), 1.0, atol=0.01)
        assert assistant.search(paper.title, k=1, mode="dense")[0].paper_id == pid
    answer = assistant.ask("How much of the gap to the truly-tuned chat model does proxy-tuning close?")
    assert answer.evidence[0].title == PROXY and "88%" in answer.evidence[0].quote


def test_an_update_keeps_the_index_kind_of_paper_vectors(corpus, isolated_index, tmp_path, monkeypatch):
    """Paper vectors of one index are of one kind: an update that does not set RAG_PAPER_VECTORS keeps the index's
    kind (an index built before heads were the default keeps its chunk vectors); one that sets the other kind is
    refused in one line, and the index is unchanged; --rebuild switches."""
    build_index(Settings(paper_vectors="chunks"), [corpus], progress=False)
    assert Assistant(Settings(llm_backend="none")).status()["paper_vectors"] == "chunks"  # rag doctor shows it
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"title": "A new paper", "abstract": "We study a new thing. It works well."}) + "\n")
    assert build_index(Settings(), [extra], progress=False).papers == 11  # the default is head: kept chunks
    before = storage.read_manifest(Settings().index_dir)
    assert before["paper_vectors"] == "chunks"
    monkeypatch.setenv("RAG_PAPER_VECTORS", "head")
    with pytest.raises(IndexingError, match="paper vectors made from chunks but RAG_PAPER_VECTORS gives head: run"):
        build_index(Settings(), [extra], progress=False)
    assert storage.read_manifest(Settings().index_dir) == before
    assert build_index(Settings(), [extra], rebuild=True, progress=False).papers == 11
    assert storage.read_manifest(Settings().index_dir)["paper_vectors"] == "head"
    storage.publish(Settings().index_dir, {**storage.read_manifest(Settings().index_dir), "paper_vectors": "sentences"})
    monkeypatch.delenv("RAG_PAPER_VECTORS")
    with pytest.raises(IndexingError, match="made from sentences, which this version no longer makes"):
        build_index(Settings(), [extra], progress=False)  # the opt-in of one earlier version


def test_embedding_runs_hold_texts_of_neighbouring_lengths(monkeypatch):
    """embed_texts: each run holds texts of neighbouring lengths (a run is padded to its longest only), the runs
    cover every text once, and the vectors come back in the caller's order."""
    import numpy as np

    from rag.index import embed_texts

    papers, *_ = load_papers([str(FIXTURE_CORPUS)], skip_bad=False)
    texts = [s for p in papers for s in p.abstract.split(". ")][:60]
    embedder = load_embedder("bundled")
    runs = []
    real = type(embedder).encode
    monkeypatch.setattr(type(embedder), "encode", lambda self, part: (runs.append(part), real(self, part))[1])
    vectors = embed_texts(texts, embedder, 16)
    lengths = sorted(([len(t) for t in run] for run in runs), key=min)  # runs finish in any order
    assert sorted(t for run in runs for t in run) == sorted(texts) and max(len(r) for r in runs) == 16 // 2
    assert all(max(a) <= min(b) for a, b in zip(lengths, lengths[1:]))
    alone = np.asarray(real(embedder, texts))
    assert (np.asarray(vectors) * alone).sum(1).min() > 0.98  # int8 activations are scaled per run


def test_index_progress_shows_papers_per_second_and_nothing_else(corpus, capsys):
    assert main(["index", str(corpus), "--progress"]) == 0
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith(("Reading:", "Embedding:", "BM25 segment:")) for line in lines), lines
    done = [line for line in lines if line.startswith("Embedding: 100%")]
    assert done and "10/10" in done[-1] and ("paper/s" in done[-1] or "s/paper" in done[-1])


def test_cli_index_search_and_config(corpus, capsys, monkeypatch):
    assert main(["index", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "10 papers" in out and "10 new" in out

    assert main(["search", "proxy-tuning of black-box language models", "--k", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["query"] == "proxy-tuning of black-box language models"
    first = data["results"][0]
    assert set(first) == {"rank", "paper_id", "title", "url", "score", "snippet", "source"}
    assert first["title"] == PROXY and first["source"] == str(corpus.resolve()) and len(data["results"]) == 2

    assert main(["search", "proxy-tuning"]) == 0
    assert f" 1. {PROXY}" in capsys.readouterr().out

    monkeypatch.setenv("RAG_OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("RAG_CHROMA_TOKEN", "chroma-secret")
    monkeypatch.setenv("RAG_CHROMA_HEADERS", '{"X-Chroma-Token": "header-secret"}')
    assert main(["config", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["openai_api_key"] == config["chroma_token"] == config["chroma_headers"] == "***"
    assert not {"sk-secret", "chroma-secret", "header-secret"} & set(json.dumps(config).split('"'))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["search", "anything"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no index in") and err.count("\n") == 1
    assert main(["index", str(tmp_path / "missing.jsonl")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["rag.incoming.Incoming.flush", "rag.catalog.Catalog.add"])
def test_a_full_disk_is_one_line_and_the_index_answers_as_before(where, corpus, tmp_path, capsys, monkeypatch):
    import sqlite3

    assert main(["index", str(corpus)]) == 0
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"title": "Axolotl Caching", "abstract": "Axolotl caching halves narwhal latency."}))
    capsys.readouterr()

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patched:
        patched.setattr(where, full)
        assert main(["index", str(more)]) == 1
    err = capsys.readouterr().err
    assert err == "error: database or disk is full; the existing index is unchanged\n"
    assert main(["search", "proxy-tuning", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["title"] == PROXY
    assert main(["index", str(more)]) == 0  # space again: the next build finishes the job
    assert "1 new" in capsys.readouterr().out


def test_uploads_survive_moving_the_index_and_same_named_files_stay_distinct(tmp_path, isolated_index):
    rows = records(FIXTURE_CORPUS)
    for folder, part in (("a", rows[:5]), ("b", rows[5:])):
        (tmp_path / "lab" / folder).mkdir(parents=True)
        write_records(tmp_path / "lab" / folder / "papers.jsonl", part)
    uploads = storage.uploads_dir(isolated_index)
    write_records(uploads / "mine.jsonl", rows[:2])
    build_index(Settings(), [tmp_path / "lab", uploads / "mine.jsonl"], progress=False)
    assert storage.read_manifest(isolated_index)["sources"] == [str((tmp_path / "lab").resolve()), "uploads/mine.jsonl"]
    shown = {p.source for p in Assistant(Settings()).searcher.papers.values()}
    lab = str((tmp_path / "lab").resolve())
    assert shown == {f"{lab}/a/papers.jsonl", f"{lab}/b/papers.jsonl"}  # the uploaded two are also in lab/a

    moved = tmp_path / "moved-index"
    isolated_index.rename(moved)
    report = build_index(Settings(index_dir=moved), progress=False)
    assert (report.papers, report.removed) == (10, 0)
    assert Assistant(Settings(index_dir=moved)).search("proxy-tuning black-box", k=1)[0].title == PROXY


def test_embedder_is_thread_safe_and_matches_the_float32_reference():
    """Several threads embed and tokenize at once (a server does): no "Already borrowed", the same vectors as one
    thread; and the int8 vectors stay close to the float32 ones (same meaning for retrieval)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    papers, *_ = load_papers([str(FIXTURE_CORPUS)], skip_bad=False)
    texts = [p.abstract for p in papers]
    embedder = load_embedder("bundled")
    alone = [embedder.encode(texts[i : i + 3]) for i in range(0, len(texts), 3)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda i: embedder.encode(texts[i : i + 3]), range(0, len(texts), 3)))
        counted = list(pool.map(embedder.token_ids, texts * 4))
    assert np.allclose(np.asarray(sum(alone, [])), np.asarray(sum(together, [])), atol=1e-5)
    assert counted == [embedder.token_ids(t) for t in texts] * 4

    reference = np.asarray(load_embedder("bundled", runtime="onnx").encode(texts))
    cosine = (np.asarray(sum(alone, [])) * reference).sum(1)
    assert cosine.min() > 0.97, cosine


def test_unreachable_chroma_server_is_one_line(corpus, capsys, monkeypatch):
    from tests.live import free_port

    monkeypatch.setenv("RAG_CHROMA_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["index", str(corpus)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the Chroma server at http://127.0.0.1:") and err.count("\n") == 1
