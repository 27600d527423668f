"""The HTTP server (rag/server.py) live on 127.0.0.1, driven by the official `openai` client and httpx: answers with
references, streaming, keys and roles, per-request settings, concurrency, deadlines, masking, index freshness."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from llama_index.core.llms import ChatMessage as LlamaMessage
from llama_index.core.llms import ChatResponse, CustomLLM, LLMMetadata

from rag import Assistant
from rag.access import AccessError, Keys
from rag.citations import parse_markers
from rag.server import build_app
from rag.settings import Settings
from tests.conftest import DEV_SET, FIXTURE_CORPUS
from tests.fakes import ScriptedLLM, tokens

QUESTION = "How much of the gap to the truly-tuned chat model does proxy-tuning close for Llama2-70B?"
ABSENT = "Which papers detect anomalies in multivariate sensor time series?"
PROXY = "Tuning Language Models by Proxy"
USER_KEY, ADMIN_KEY = "user-key-3f9a", "admin-key-77c1"
SCRIPT = tokens("Proxy-tuning closes 88% of the gap to the truly-tuned chat model [1].")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, log_level: str = "warning"):
    """The app served by uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def keyed(index_dir: Path, **kw) -> Settings:
    return Settings(index_dir=index_dir, api_keys=USER_KEY, admin_keys=ADMIN_KEY, **kw)


@pytest.fixture(scope="module")
def served(fixture_index):
    """(base url, assistant, scripted llm): the fixture index, a scripted LLM, user and admin keys, the UI mounted."""
    llm = ScriptedLLM(script=SCRIPT, prompts=[])
    assistant = Assistant(keyed(fixture_index), llm=llm)
    assistant.warm()
    with running(build_app(assistant)) as url:
        yield url, assistant, llm


def client(url: str, key: str = USER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def assert_cited(text: str, extra: dict):
    refs = extra["references"]
    assert refs[0]["title"] == PROXY and any("88%" in q for q in refs[0]["quotes"])
    assert extra["citations"] == [r["url"] for r in refs]
    assert extra["refused"] is False
    assert set(parse_markers(text)) <= {r["n"] for r in refs} and "[1]" in text


# --- the OpenAI-compatible API ---------------------------------------------------------------------------------


def test_openai_client_gets_a_cited_answer_with_references(served):
    url, _, _ = served
    response = client(url).chat.completions.create(
        model="abstract-rag", messages=[{"role": "user", "content": QUESTION}]
    )
    text = response.choices[0].message.content
    assert response.object == "chat.completion" and response.choices[0].finish_reason == "stop"
    assert text.startswith("Proxy-tuning closes 88% of the gap") and "Evidence:\n[1]" in text
    assert_cited(text, response.model_extra)


def test_openai_client_streams_the_same_answer_and_references_come_last(served):
    url, _, _ = served
    stream = client(url).chat.completions.create(
        model="abstract-rag", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks) and len(chunks) > 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert all("references" not in (c.model_extra or {}) for c in chunks[:-1])
    assert_cited(text, last.model_extra)
    whole = client(url).chat.completions.create(model="abstract-rag", messages=[{"role": "user", "content": QUESTION}])
    assert text == whole.choices[0].message.content


def test_follow_up_uses_the_conversation_and_per_request_k(served):
    url, assistant, _ = served
    first = client(url).chat.completions.create(model="abstract-rag", messages=[{"role": "user", "content": QUESTION}])
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": [{"type": "text", "text": "And for which model size?"}]},
    ]
    response = client(url).chat.completions.create(model="abstract-rag", messages=messages, extra_body={"k": 3})
    assert response.model_extra["references"][0]["title"] == PROXY  # found through the earlier question
    assert assistant.settings.search_k == 10  # the request's k changed nothing shared


def test_refusal_and_evidence_only_model(served):
    url, _, llm = served
    refused = client(url).chat.completions.create(model="abstract-rag", messages=[{"role": "user", "content": ABSENT}])
    assert refused.model_extra["refused"] is True and refused.model_extra["references"] == []
    assert refused.choices[0].message.content.startswith("I could not find this in the indexed papers")
    asked = len(llm.prompts)
    evidence = client(url).chat.completions.create(
        model="abstract-rag-evidence", messages=[{"role": "user", "content": QUESTION}]
    )
    assert len(llm.prompts) == asked  # no LLM for this model
    assert evidence.choices[0].message.content.startswith("From the indexed abstracts:")
    assert evidence.model_extra["references"][0]["title"] == PROXY
    models = [m.id for m in client(url).models.list()]
    assert models == ["abstract-rag", "abstract-rag-evidence"]


def test_search_and_papers(served):
    url, _, _ = served
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    r = httpx.post(
        f"{url}/v1/search", json={"query": "proxy-tuning truly-tuned", "k": 3, "mode": "bm25"}, headers=headers
    )
    hits = r.json()["data"]
    assert r.status_code == 200 and len(hits) == 3 and hits[0]["title"] == PROXY
    paper = httpx.get(f"{url}/v1/papers/{hits[0]['paper_id']}", headers=headers).json()
    assert paper["title"] == PROXY and "88%" in paper["abstract"]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert "/v1/chat/completions" in httpx.get(f"{url}/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("post", "/v1/search", {"query": "x", "k": 0}, 400, "k: Input should be greater than or equal to 1"),
        ("post", "/v1/search", {"query": "x", "mode": "magic"}, 400, "mode: Input should be"),
        ("post", "/v1/search", "not json", 400, "JSON"),
        ("get", "/v1/papers/no-such-paper", None, 404, "no paper 'no-such-paper' in the index"),
        ("post", "/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404,
         "model 'gpt-4' does not exist"),
        ("post", "/v1/chat/completions", {"model": "abstract-rag", "messages": []}, 400, "messages: List should have"),
        ("post", "/v1/chat/completions", {"model": "abstract-rag", "messages": [{"role": "assistant", "content": "x"}]},
         400, "the last message must be the user's question"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_line_json_errors(served, method, path, body, status, message):
    url, _, _ = served
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    kwargs = {"content": body} if isinstance(body, str) else {"json": body} if body is not None else {}
    r = httpx.request(method, f"{url}{path}", headers={**headers, "Content-Type": "application/json"}, **kwargs)
    error = r.json()["error"]
    assert r.status_code == status and message in error["message"], error
    assert "\n" not in error["message"] and "Traceback" not in r.text


# --- keys and roles --------------------------------------------------------------------------------------------


def test_requests_without_a_valid_key_get_401(served):
    url, _, _ = served
    with pytest.raises(openai.AuthenticationError) as e:
        client(url, "wrong-key").chat.completions.create(
            model="abstract-rag", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 401
    for headers in ({}, {"Authorization": "Basic " + USER_KEY}, {"Authorization": "Bearer " + USER_KEY + "x"}):
        r = httpx.post(f"{url}/v1/search", json={"query": "proxy"}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["message"].startswith("missing or unknown API key")
        assert USER_KEY not in r.text


def test_a_user_key_cannot_change_the_llm_or_add_files(served, tmp_path):
    url, assistant, _ = served
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    before = (assistant.describe_llm(), assistant.status()["papers"])
    r = httpx.post(f"{url}/v1/admin/llm", json={"backend": "none"}, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["message"] == "this needs an admin key"
    corpus = tmp_path / "more.jsonl"
    corpus.write_text(json.dumps({"title": "Quokka photon sorting", "abstract": "We sort photons."}) + "\n")
    r = httpx.post(f"{url}/v1/admin/files", files={"file": ("more.jsonl", corpus.read_bytes())}, headers=headers)
    assert r.status_code == 403
    assert (assistant.describe_llm(), assistant.status()["papers"]) == before


def test_admin_changes_the_llm_and_adds_files(fixture_index, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(fixture_index, index_dir)
    models = tmp_path / "models"
    models.mkdir()
    assistant = Assistant(keyed(index_dir, model_dir=models, llm_backend="none"))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with running(build_app(assistant, ui=False)) as url:
        # a model outside RAG_MODEL_DIR: the same answer whether the file exists or not
        errors = []
        for model in ("/etc/passwd", "/no/such/file.gguf", "../../../etc/passwd", str(models / "missing.gguf")):
            r = httpx.post(f"{url}/v1/admin/llm", json={"backend": "llamacpp", "model": model}, headers=headers)
            assert r.status_code == 400
            errors.append(r.json()["error"]["message"].replace(repr(model), "M"))
        assert set(errors) == {"M is not 'bundled' or a model inside RAG_MODEL_DIR"}
        assert assistant.describe_llm() == "none (evidence only)"
        (models / "broken.gguf").write_text("not a model")
        r = httpx.post(f"{url}/v1/admin/llm", json={"backend": "llamacpp", "model": "broken.gguf"}, headers=headers)
        assert r.status_code == 400 and "\n" not in r.json()["error"]["message"]
        assert assistant.describe_llm() == "none (evidence only)"  # a model that fails to load changes nothing

        r = httpx.post(
            f"{url}/v1/admin/files",
            files={"file": ("../quokka.jsonl", json.dumps({"title": "Quokka Photon Sorting", "abstract": "We sort "
                   "photons by wavelength for marsupial vision benchmarks."}) + "\n")},
            headers=headers,
            timeout=120,
        )  # fmt: skip
        assert r.status_code == 200 and r.json()["file"] == "quokka.jsonl" and r.json()["new"] == 1
        hits = httpx.post(f"{url}/v1/search", json={"query": "quokka photon sorting"}, headers=headers).json()["data"]
        assert hits[0]["title"] == "Quokka Photon Sorting"
        r = httpx.post(f"{url}/v1/admin/files", files={"file": ("bad.jsonl", "{}\n")}, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("bad.jsonl:1")
        assert not (index_dir / "uploads" / "bad.jsonl").exists()


def test_keys_file_and_ui_login(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# team keys\nuser alice-key\nadmin root-key\n")
    keys = Keys(Settings(keys_file=path, api_keys="bob-key"))
    assert [keys.role(k) for k in ("alice-key", "bob-key", "root-key", "nope", "", None)] == [
        "user", "user", "admin", None, None, None
    ]  # fmt: skip
    assert keys.ui_login("alice", "alice-key") and keys.ui_login("admin", "root-key")
    assert not keys.ui_login("admin", "alice-key") and not keys.ui_login("alice", "wrong")
    path.write_text("superuser x\n")
    with pytest.raises(AccessError, match=r"keys:1: expected 'user KEY' or 'admin KEY'"):
        Keys(Settings(keys_file=path))
    with pytest.raises(AccessError, match="refusing to serve on 0.0.0.0 without keys"):
        Keys(Settings()).check_host("0.0.0.0")
    Keys(Settings(api_keys="k")).check_host("0.0.0.0")


def test_serve_without_keys_refuses_another_address(capsys):
    from rag.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to serve on 0.0.0.0 without keys") and err.count("\n") == 1


def test_the_ui_asks_for_a_key_and_logs_in_with_it(served):
    url, _, _ = served
    with httpx.Client(base_url=url) as browser:
        assert browser.post("/login", data={"username": "ann", "password": "wrong"}).status_code >= 400
        assert browser.get("/config").status_code == 401
        assert browser.post("/login", data={"username": "ann", "password": USER_KEY}).status_code == 200
        assert browser.get("/config").status_code == 200


def test_no_key_is_logged(fixture_index, caplog, capfd):
    assistant = Assistant(keyed(fixture_index, llm_backend="none"))
    with caplog.at_level("DEBUG"), running(build_app(assistant, ui=False), log_level="debug") as url:
        for key in (USER_KEY, "a-wrong-key-5e1"):
            httpx.post(f"{url}/v1/search", json={"query": "proxy"}, headers={"Authorization": f"Bearer {key}"})
    logged = caplog.text + "".join(capfd.readouterr())  # uvicorn's access log goes to the terminal
    assert '"POST /v1/search HTTP/1.1" 200' in logged and '"POST /v1/search HTTP/1.1" 401' in logged
    assert USER_KEY not in logged and "a-wrong-key-5e1" not in logged


# --- concurrency -----------------------------------------------------------------------------------------------


def test_16_concurrent_searches_are_all_correct(served):
    url, _, _ = served
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
    assert all(a["choices"][0]["message"]["content"].startswith("Proxy-tuning closes 88%") for a in answers)


def drip_server(seconds_per_token: float = 1.0):
    """A fake OpenAI-compatible endpoint that streams one token per second, forever (until the client leaves)."""

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for i in range(1000):
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


def openai_backend(index_dir, url, **kw) -> Settings:
    return Settings(
        index_dir=index_dir,
        llm_backend="openai",
        openai_base_url=url,
        openai_model="drip",
        openai_retries=1,
        **kw,
    )


def test_a_dripping_endpoint_ends_at_the_deadline_with_the_evidence(fixture_index):
    drip = drip_server()
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
    assert waited < 20  # bounded by the deadline; without it the drip goes on for 1000 s
    text = response.choices[0].message.content
    assert text.startswith("From the indexed abstracts:") and "88%" in text
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


def test_credentials_in_the_endpoint_url_are_masked_everywhere(fixture_index, capsys, monkeypatch):
    from rag.cli import main

    url = f"http://bob:s3cret-pw@127.0.0.1:{free_port()}/v1"
    settings = openai_backend(fixture_index, url, openai_api_key="sk-live-123", api_keys="user-secret-9")
    assistant = Assistant(settings)
    answer = assistant.ask(QUESTION)  # unreachable: the notice names the backend
    monkeypatch.setenv("RAG_OPENAI_BASE_URL", url)
    monkeypatch.setenv("RAG_API_KEYS", "user-secret-9")
    assert main(["config", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)
    shown = json.dumps([settings.masked(), assistant.status(), answer.to_dict(), config])
    for secret in ("s3cret-pw", "bob:", "sk-live-123", "user-secret-9"):
        assert secret not in shown
    assert config["openai_base_url"] == "http://***@127.0.0.1:" + url.split(":")[-1]
    assert answer.backend.startswith("openai: drip at http://***@127.0.0.1:") and "failed" in answer.notices[0]


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
    setup = assistant.loaded_setup()
    assert setup.loaded and setup.llm is not None and setup.slots.size == 1 and not setup.error
    assert assistant._searcher is not None


@pytest.mark.slow
def test_the_bundled_model_through_the_openai_client(fixture_index):
    assistant = Assistant(keyed(fixture_index))  # the default backend: llama.cpp with the bundled SmolLM2
    assistant.warm()
    with running(build_app(assistant, ui=False)) as url:
        stream = client(url).chat.completions.create(
            model="abstract-rag", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    extra = chunks[-1].model_extra
    assert not any("failed" in n for n in extra["notices"]), extra["notices"]
    assert_cited(text, extra)
    assert "88%" in text
