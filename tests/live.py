"""A live `rag serve` app on a free loopback port for the server tests, and what they share."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import openai
import uvicorn

from rag.citations import parse_markers
from rag.settings import Settings
from tests.fakes import tokens

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


def client(url: str, key: str = USER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def assert_cited(text: str, extra: dict):
    refs = extra["references"]
    assert refs[0]["title"] == PROXY and any("88%" in q for q in refs[0]["quotes"])
    assert extra["citations"] == [r["url"] for r in refs]
    assert extra["refused"] is False
    assert set(parse_markers(text)) <= {r["n"] for r in refs} and "[1]" in text


def openai_backend(index_dir, url, **kw) -> Settings:
    """Settings for the `openai` backend at `url`; keyword arguments override any setting, these defaults too."""
    defaults = {"openai_model": "drip", "openai_retries": 1}
    return Settings(index_dir=index_dir, llm_backend="openai", openai_base_url=url, **{**defaults, **kw})
