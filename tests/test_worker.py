"""Local generation in worker processes (rag/generation.py): a worker that crashes or hangs costs one answer its
generated sentences; the evidence answer and one notice still reach the user (CLI, API, stream or not); the worker is
back for the next question; other answers are untouched. The workers are real processes running a scripted model
(tests.fakes.WorkerLLM), except in the last tests, which run the bundled model under `rag serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from rag import Assistant, cli, generation
from rag.settings import Settings
from tests.fakes import FAULT
from tests.live import PROXY, QUESTION, USER_KEY, assert_cited, client, free_port, keyed, running


@pytest.fixture
def fault(tmp_path, monkeypatch):
    """Workers run tests.fakes.WorkerLLM; fault("segv") or fault("hang") arms the next answer's fault."""
    monkeypatch.setattr(generation, "FACTORY", "tests.fakes:worker_llm")
    path = tmp_path / "fault"
    monkeypatch.setenv(FAULT, str(path))
    return lambda kind: path.write_text(kind)


def assert_evidence_answer(answer):
    assert not answer.refused and answer.citations[0].title == PROXY
    assert "88% of the gap" in answer.opening and answer.text.rstrip().endswith("”")  # the references came


def test_a_worker_killed_by_sigsegv_costs_one_answer_its_generation_only(fixture_index, fault):
    assistant = Assistant(Settings(index_dir=fixture_index, llm_backend="llamacpp"))
    assistant.warm()
    assert assistant.health()["status"] == "ok"
    fault("segv")
    stream = assistant.stream(QUESTION)
    pieces = list(stream)
    answer = stream.answer
    assert "".join(pieces) == answer.prose
    assert_evidence_answer(answer)
    assert len(answer.notices) == 1 and "killed by SIGSEGV" in answer.notices[0], answer.notices
    assert answer.generated == {"kept": 0, "dropped": 0, "repeated": 0}
    again = assistant.ask(QUESTION)  # the worker is back
    assert_evidence_answer(again)
    assert again.notices == [] and sum(again.generated.values()) == 1
    assert assistant.health()["status"] == "ok"


def test_a_hung_worker_ends_at_the_deadline_and_is_replaced(fixture_index, fault):
    assistant = Assistant(Settings(index_dir=fixture_index, llm_backend="llamacpp", llm_deadline=3))
    assistant.warm()
    fault("hang")
    answer = assistant.ask(QUESTION)
    assert_evidence_answer(answer)
    assert len(answer.notices) == 1 and "RAG_LLM_DEADLINE" in answer.notices[0], answer.notices
    assistant.configure(llm_deadline=60)  # the next answer may wait for the new worker to load
    again = assistant.ask(QUESTION)
    assert again.notices == [] and sum(again.generated.values()) == 1


def test_rag_ask_exits_0_with_the_evidence_answer_and_a_notice(fixture_index, fault, monkeypatch, capsys):
    monkeypatch.setenv("RAG_INDEX_DIR", str(fixture_index))
    fault("segv")  # the worker's first generation is its start-up check; the answer's is the second
    assert cli.main(["ask", QUESTION]) == 0
    out, err = capsys.readouterr()
    assert "88% of the gap" in out.split("References:")[0] and f"[1] {PROXY}" in out
    notes = [line for line in err.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "killed by SIGSEGV" in notes[0], err


def sse_events(response) -> list:
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def test_the_server_survives_a_crash_mid_stream_and_other_answers_are_untouched(fixture_index, fault):
    assistant = Assistant(keyed(fixture_index, llm_backend="llamacpp", llm_parallel=2))
    assistant.warm()
    from rag.server import build_app

    with running(build_app(assistant, ui=False)) as url:
        fault("segv")  # one of two answers streamed at once takes it
        body = {"model": "abstract-rag", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
        results: list = [None, None]

        def stream(i):
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {USER_KEY}"}
            ) as r:
                results[i] = sse_events(r)

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        notices = []
        for events in results:
            assert events[-1] == "[DONE]"
            last = json.loads(events[-2])
            assert last["choices"][0]["finish_reason"] == "stop"
            text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
            assert_cited(text, last)
            notices.append(last["notices"])
        assert sorted(len(n) for n in notices) == [0, 1], notices  # the crash reached one answer only
        assert "killed by SIGSEGV" in [n for n in notices if n][0][0]
        for _ in range(10):
            response = client(url).chat.completions.create(
                model="abstract-rag", messages=[{"role": "user", "content": QUESTION}]
            )
            assert_cited(response.choices[0].message.content, response.model_extra)
            assert response.model_extra["notices"] == []
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"


def test_a_model_that_crashes_in_its_start_up_check_leaves_the_evidence_answer(fixture_index, fault, monkeypatch):
    monkeypatch.setattr(generation, "FACTORY", "tests.fakes:crashing_llm")
    assistant = Assistant(Settings(index_dir=fixture_index, llm_backend="llamacpp"))
    assistant.warm()
    health = assistant.health()
    assert health["status"] == "degraded" and "killed by SIGSEGV" in health["llm"]["error"]
    answer = assistant.ask(QUESTION)
    assert_evidence_answer(answer)
    assert len(answer.notices) == 1 and "start-up check" in answer.notices[0]


def test_rag_doctor_reports_the_cpu_the_index_and_why_the_llm_cannot_run(fixture_index, monkeypatch, capsys):
    monkeypatch.setattr(generation, "FACTORY", "tests.fakes:crashing_llm")
    monkeypatch.setenv("RAG_INDEX_DIR", str(fixture_index))
    assert cli.main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "llama.cpp is not available" not in report["cpu"]["llama_cpp"] and report["cpu"]["llm_repack"] is False
    assert report["embedder"]["providers"] == ["CPUExecutionProvider"] and report["index"]["papers"] == 10
    assert report["llm"]["ok"] is False and "killed by SIGSEGV" in report["llm"]["error"]
    assert cli.main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("LLM        llamacpp: ") and "cannot run" in lines[-1]


def test_llama_cpp_loads_without_weight_repacking_unless_asked():
    from rag.llm import make_llm

    assert make_llm(Settings(llm_backend="llamacpp"))._model.model_params.use_extra_bufts is False
    assert make_llm(Settings(llm_backend="llamacpp", llm_repack=True))._model.model_params.use_extra_bufts is True


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_killing_every_child_of_rag_serve_mid_stream(fixture_index, tmp_path):
    """The bundled model under a real `rag serve`: every child process is killed during a streaming answer."""
    port = free_port()
    env = {**os.environ, "RAG_INDEX_DIR": str(fixture_index), "RAG_UI_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        assert children(server.pid), "no worker process"
        body = {"model": "abstract-rag", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
        killed = []
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            events = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[len("data: ") :])
                    if len(events) == 2:  # the opening: the generation runs now
                        for pid in children(server.pid):
                            os.kill(pid, signal.SIGKILL)
                            killed.append(pid)
        assert killed and events[-1] == "[DONE]"
        last = json.loads(events[-2])
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert_cited(text, last)
        for _ in range(10):
            r = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False}, timeout=120)
            assert r.status_code == 200 and "88% of the gap" in r.json()["choices"][0]["message"]["content"]
        assert r.json()["notices"] == []  # the worker is back
        assert server.poll() is None and set(children(server.pid)).isdisjoint(killed)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
