"""Many users at once against a live server: parallel searches, generation serialized alone, the deadline for a
dripping or hanging endpoint, a newly published index, models loaded at start-up."""

from __future__ import annotations

import http.server
import json
import multiprocessing
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from llama_index.core.llms import ChatMessage as LlamaMessage
from llama_index.core.llms import ChatResponse, CustomLLM, LLMMetadata

from rag import Assistant
from rag.models import load_embedder
from rag.server import build_app
from rag.settings import Settings
from tests.conftest import DEV_SET, FIXTURE_CORPUS
from tests.live import (
    ABSENT,
    PROXY,
    QUESTION,
    SCRIPT,
    USER_KEY,
    client,
    keyed,
    openai_backend,
    running,
)

# --- concurrency -----------------------------------------------------------------------------------------------


def test_16_concurrent_searches_are_all_correct(fixture_index):
    assistant = Assistant(keyed(fixture_index, llm_backend="none"))
    assistant.warm()
    with running(build_app(assistant, ui=False)) as url:
        check_16_concurrent_searches(url)


def check_16_concurrent_searches(url: str):
    questions = [json.loads(line)["question"] for line in DEV_SET.read_text().splitlines()[:16]]
    headers = {"Authorization": f"Bearer {USER_KEY}"}

    def search(args):
        query, k = args
        r = httpx.post(f"{url}/v1/search", json={"query": query, "k": k}, headers=headers, timeout=120)
        return r.status_code, [h["paper_id"] for h in r.json()["data"]]

    jobs = [(q, 1 + i % 5) for i, q in enumerate(questions)]
    alone = [search(job) for job in jobs]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(search, jobs))
    assert together == alone and all(status == 200 for status, _ in together)
    assert [len(ids) for _, ids in together] == [k for _, k in jobs]  # each request's own k


class GatedLLM(CustomLLM):
    """Streams the script only once `gate` is set; counts generations running at once."""

    gate: Any = None
    running: int = 0
    most: int = 0
    started: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gated")

    def complete(self, prompt, formatted=False, **kw):
        raise NotImplementedError

    def stream_complete(self, prompt, formatted=False, **kw):
        raise NotImplementedError

    def stream_chat(self, messages, **kw):
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.set()
        try:
            self.gate.wait(60)
            text = ""
            for piece in SCRIPT:
                text += piece
                yield ChatResponse(message=LlamaMessage(role="assistant", content=text), delta=piece)
        finally:
            self.running -= 1


def test_a_generation_in_progress_blocks_neither_searches_nor_evidence_answers(fixture_index):
    llm = GatedLLM(gate=threading.Event(), started=threading.Event())
    assistant = Assistant(keyed(fixture_index), llm=llm)  # backend llamacpp: local, one context
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    body = {"model": "abstract-rag", "messages": [{"role": "user", "content": QUESTION}]}
    with running(build_app(assistant, ui=False)) as url, ThreadPoolExecutor(4) as pool:
        generating = [pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)
                      for _ in range(2)]  # fmt: skip
        assert llm.started.wait(60)
        search = httpx.post(f"{url}/v1/search", json={"query": "proxy-tuning"}, headers=headers, timeout=60)
        evidence = httpx.post(
            f"{url}/v1/chat/completions", json={**body, "model": "abstract-rag-evidence"}, headers=headers, timeout=60
        )
        refusal = httpx.post(
            f"{url}/v1/chat/completions",
            json={**body, "messages": [{"role": "user", "content": ABSENT}]},
            headers=headers,
            timeout=60,
        )
        assert not llm.gate.is_set() and not any(f.done() for f in generating)  # answered while generation waits
        assert search.json()["data"][0]["title"] == PROXY
        assert evidence.json()["references"][0]["title"] == PROXY and refusal.json()["refused"] is True
        llm.gate.set()
        answers = [f.result().json() for f in generating]
    assert llm.most == 1  # the local model's one context: generations took turns
    assert all(a["choices"][0]["message"]["content"].startswith("“") for a in answers)  # the answer first
    assert all(not a["notices"] for a in answers)  # every generation ran to its end


def drip_server(seconds_per_token: float = 1.0):
    """A fake OpenAI-compatible endpoint that streams a token every `seconds_per_token`, never ending a sentence,
    for as long as the client reads (100,000 tokens)."""

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for i in range(100_000):
                    delta = {"role": "assistant", "content": "Proxy " if i == 0 else "tuning "}
                    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "drip",
                             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(seconds_per_token)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("seconds_per_token", [1.0, 0.005], ids=["dripping", "streaming-steadily"])
def test_a_dripping_endpoint_ends_at_the_deadline_with_the_evidence(fixture_index, seconds_per_token):
    drip = drip_server(seconds_per_token)
    try:
        url = f"http://127.0.0.1:{drip.server_address[1]}/v1"
        assistant = Assistant(openai_backend(fixture_index, url, llm_deadline=3, api_keys=USER_KEY))
        with running(build_app(assistant, ui=False)) as server_url:
            started = time.perf_counter()
            response = client(server_url).chat.completions.create(
                model="abstract-rag", messages=[{"role": "user", "content": QUESTION}], timeout=120
            )
            waited = time.perf_counter() - started
    finally:
        drip.shutdown()
    notices = response.model_extra["notices"]
    assert len(notices) == 1 and "deadline of 3 s (RAG_LLM_DEADLINE)" in notices[0], notices
    assert waited < 20  # bounded by the deadline; without it the stream goes on for 100,000 tokens
    text = response.choices[0].message.content
    assert text.startswith("“") and "88% of the gap" in text.split("\n\nReferences:")[0]  # the evidence answer
    assert response.model_extra["references"][0]["title"] == PROXY


def test_a_hanging_endpoint_ends_at_the_deadline(fixture_index):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        assistant = Assistant(openai_backend(fixture_index, url, llm_deadline=2, openai_timeout=30))
        started = time.perf_counter()
        answer = assistant.ask(QUESTION)
        waited = time.perf_counter() - started
    finally:
        listener.close()
    assert "deadline of 2 s" in answer.notices[0] and answer.citations
    assert waited < 20  # 2 tries x 30 s without the deadline


# --- secrets, freshness, start-up ------------------------------------------------------------------------------


def test_the_server_notices_a_build_published_by_the_cli(fixture_index, tmp_path):
    from rag.index import build_index

    index_dir = tmp_path / "index"
    shutil.copytree(fixture_index, index_dir)
    assistant = Assistant(keyed(index_dir, llm_backend="none"))
    assistant.warm()
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    with running(build_app(assistant, ui=False)) as url:
        old = assistant.searcher
        corpus = tmp_path / "new.jsonl"
        corpus.write_text(json.dumps({"title": "Wombat Burrow Acoustics", "abstract": "We record wombat burrows "
                          "and measure how their acoustics change with burrow depth."}) + "\n")  # fmt: skip
        build_index(Settings(index_dir=index_dir), [FIXTURE_CORPUS, corpus], progress=False)  # as `rag index` would
        build_index(Settings(index_dir=index_dir), [FIXTURE_CORPUS, corpus], rebuild=True, progress=False)
        found = []
        for _ in range(100):
            r = httpx.post(f"{url}/v1/search", json={"query": "wombat burrow acoustics", "k": 1}, headers=headers)
            assert r.status_code == 200  # the old generation serves until the new one is warm
            found = [h["title"] for h in r.json()["data"]]
            if found == ["Wombat Burrow Acoustics"]:
                break
            time.sleep(0.2)
    assert found == ["Wombat Burrow Acoustics"] and assistant.searcher is not old


def test_warm_loads_everything_before_the_first_question(fixture_index):
    assistant = Assistant(Settings(index_dir=fixture_index, llm_backend="llamacpp"))
    assistant.warm()
    assert assistant.health()["status"] == "ok"
    assert [p.name for p in multiprocessing.active_children()].count("rag-llm-worker") >= 1  # its model loaded
    assert load_embedder.cache_info().currsize >= 1  # the embedding model too
