"""RAG_EMBED_URL: a real OpenAI-compatible /v1/embeddings server on 127.0.0.1 (FastAPI + uvicorn, wrapping the bundled
model in float32, as text-embeddings-inference or vLLM would serve it) embeds while indexing; search runs locally."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from rag import Assistant, storage
from rag.cli import main
from rag.index import build_index
from rag.models import load_embedder
from rag.settings import Settings
from tests.conftest import FIXTURE_CORPUS
from tests.live import free_port, running

PROXY = "Tuning Language Models by Proxy"


def embeddings_app(state: dict) -> FastAPI:
    """/v1/embeddings with the bundled model (float32 ONNX). `state`: requests seen (their texts), failures still to
    give (503), and what to serve: "same" model, "other" (another model's vectors: same dimension, other values) or
    "short" (256-dimensional vectors)."""
    model = load_embedder("bundled", "onnx")
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(body: dict):
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        state["requests"].append(texts)
        if state["fail"]:
            state["fail"] -= 1
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, status_code=503)
        vectors = np.asarray(model.encode(texts)) * 3.0  # not normalized, as some servers answer
        if state["serve"] == "other":
            vectors = np.roll(vectors, 7, axis=1)
        elif state["serve"] == "short":
            vectors = vectors[:, :256]
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        data.reverse()  # the order of `data` is not the order of `input`; `index` is
        usage = {"prompt_tokens": 0, "total_tokens": 0}
        return {"object": "list", "data": data, "model": body["model"], "usage": usage}

    return app


@pytest.fixture(scope="module")
def server():
    state = {"requests": [], "fail": 0, "serve": "same"}
    with running(embeddings_app(state)) as url:
        yield url, state


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "papers.jsonl"
    shutil.copy(FIXTURE_CORPUS, path)
    return path


def test_a_server_embeds_the_index_batched_and_retried_and_search_runs_locally(server, corpus, isolated_index):
    url, state = server
    state.update(requests=[], fail=1, serve="same")  # the first request fails: retried
    settings = Settings(embed_url=f"{url}/v1", embed_url_batch=8, embed_url_retries=2)
    report = build_index(settings, [corpus], progress=False)
    assert (report.papers, report.new) == (10, 10)
    sizes = [len(texts) for texts in state["requests"]]
    assert max(sizes) <= 8 and len(state["requests"]) >= 4  # the check, its retry, chunks and sentences, batched
    assert state["fail"] == 0

    local = Assistant(Settings(llm_backend="none"))  # a laptop: no RAG_EMBED_URL, questions embedded locally
    assert local.search("proxy-tuning black-box language models", k=1)[0].title == PROXY
    answer = local.ask("How does proxy-tuning steer a black-box language model?")
    assert not answer.refused and answer.evidence[0].title == PROXY

    # the sentence vectors were embedded by the server, each sentence alone (a server gives no token outputs)
    from rag.sentences import split_sentences

    hit = local.search("proxy-tuning", k=1)[0]
    stored = local.searcher.catalog.sentence_vectors([hit.paper_id])[hit.paper_id]
    sentences = split_sentences(local.searcher.papers[hit.paper_id].abstract)
    alone = np.asarray(load_embedder("bundled", "onnx").encode(sentences))
    assert np.asarray(stored).shape == alone.shape
    assert ((np.asarray(stored) * alone).sum(1) > 0.999).all()  # float16 storage of the server's vectors


@pytest.mark.parametrize(
    ("serve", "message"),
    [
        ("other", "does not give the local model's vectors (cosine"),
        ("short", "gives 256-dimensional vectors, the local model 384"),
    ],
)
def test_a_server_of_another_model_is_one_line_and_the_index_stays(server, corpus, capsys, monkeypatch, serve, message):
    url, state = server
    assert main(["index", str(corpus)]) == 0
    before = storage.live_version(Settings().index_dir)
    capsys.readouterr()
    state.update(requests=[], fail=0, serve=serve)
    monkeypatch.setenv("RAG_EMBED_URL", url.replace("http://", "http://user:s3cret@") + "/v1")
    rows = corpus.read_text().splitlines()
    corpus.write_text("\n".join(rows[:-1] + [rows[-1].replace('"abstract": "', '"abstract": "Changed. ')]) + "\n")
    assert main(["index", str(corpus)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the embedding server http://***@127.0.0.1:") and message in err
    assert err.count("\n") == 1 and "s3cret" not in err and "the existing index is unchanged" in err
    assert len(state["requests"]) == 1  # the check: nothing else was sent
    assert storage.live_version(Settings().index_dir) == before
    assert Assistant(Settings()).search("proxy-tuning black-box", k=1)[0].title == PROXY


def test_an_unreachable_server_is_one_line(corpus, capsys, monkeypatch):
    monkeypatch.setenv("RAG_EMBED_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("RAG_EMBED_URL_RETRIES", "0")
    assert main(["index", str(corpus)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the embedding server http://127.0.0.1:") and "APIConnectionError" in err
    assert err.count("\n") == 1
