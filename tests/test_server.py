"""The HTTP server (rag/server.py) live on 127.0.0.1, driven by the official `openai` client and httpx: answers with
references, streaming, errors, keys and roles, masking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import openai
import pytest

from rag import Assistant
from rag.access import AccessError, Keys
from rag.server import build_app
from rag.settings import Settings
from tests.fakes import ScriptedLLM
from tests.live import (
    ABSENT,
    ADMIN_KEY,
    PROXY,
    QUESTION,
    SCRIPT,
    USER_KEY,
    assert_cited,
    client,
    free_port,
    keyed,
    openai_backend,
    running,
)


@pytest.fixture(scope="module")
def served(fixture_index):
    """(base url, assistant, scripted llm): the fixture index, a scripted LLM, user and admin keys, the UI mounted."""
    llm = ScriptedLLM(script=SCRIPT, prompts=[])
    assistant = Assistant(keyed(fixture_index), llm=llm)
    assistant.warm()
    with running(build_app(assistant)) as url:
        yield url, assistant, llm


# --- the OpenAI-compatible API ---------------------------------------------------------------------------------


def test_openai_client_gets_a_cited_answer_with_references(served):
    url, _, _ = served
    response = client(url).chat.completions.create(
        model="abstract-rag", messages=[{"role": "user", "content": QUESTION}]
    )
    text = response.choices[0].message.content
    assert response.object == "chat.completion" and response.choices[0].finish_reason == "stop"
    opening, references = text.split("\n\nReferences:\n")
    assert opening.startswith("“") and "88% of the gap" in opening  # the answer first, quoted and cited
    assert references.startswith(f"[1] {PROXY} <")
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
    content = evidence.choices[0].message.content
    assert content.startswith("“") and "88% of the gap" in content.split("\n\nReferences:")[0]
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
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
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


@pytest.mark.browser
@pytest.mark.parametrize("username, key, admin", [("ann", USER_KEY, False), ("admin", ADMIN_KEY, True)])
def test_browser_login_with_a_key_and_the_admin_controls(fixture_index, username, key, admin):
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    assistant = Assistant(keyed(fixture_index, llm_backend="none"))
    assistant.warm()
    with running(build_app(assistant)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(url + "/", wait_until="domcontentloaded")
        page.get_by_label("username").fill(username)
        page.get_by_label("password").fill(key)
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#question textarea", timeout=60_000)
        page.fill("#question textarea", QUESTION)
        page.press("#question textarea", "Enter")
        page.wait_for_selector(".rag-answer", timeout=60_000)
        assert "88%" in page.locator(".rag-answer").last.inner_text()
        page.locator("#settings").get_by_text("Settings").click()
        backend = page.get_by_label("LLM backend")
        if admin:
            backend.click()
            page.get_by_role("option", name="llamacpp").click()
            page.wait_for_selector("#notice .rag-ok", timeout=120_000)
            assert assistant.settings.llm_backend == "llamacpp"
        else:
            expect(backend).to_be_disabled(timeout=60_000)  # set by the session's load event
            assert assistant.settings.llm_backend == "none"
        browser.close()
