"""Bounded work per question: the length, parts and text limits, regexes that stay linear on pathological text, the
embedder's token budget. (The server's side of it is in test_server.py; the timings in bench/long_text.py and
bench/hostile.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag import Assistant, answer, citations, conversation, evidence, sentences
from rag.cli import main
from rag.limits import QuestionError, check_question
from rag.models import TOKEN_BUDGET, load_embedder, token_batches
from rag.search import Searcher
from rag.settings import Settings
from tests.conftest import FIXTURE_CORPUS

QUESTION = "How much of the gap to the truly-tuned chat model does proxy-tuning close for Llama2-70B?"
REPEATED = "How many denoising steps does SnapFusion need? "  # the repro, x 170 = 8 KB
MB = 2**20


@pytest.fixture
def counted_searches(monkeypatch):
    """How many searches reached the index."""
    calls = []
    real = Searcher.search
    monkeypatch.setattr(Searcher, "search", lambda self, *a, **kw: calls.append(a) or real(self, *a, **kw))
    return calls


@pytest.mark.parametrize(
    "question, code, message",
    [
        (REPEATED * 170, "question_too_long", "the question is 7,990 characters long: at most 4,000"),
        (REPEATED * 9, "too_many_parts", "the question asks 9 things at once: at most 8 (RAG_MAX_QUESTION_PARTS)"),
        ("proxy \ud800 tuning", "invalid_text", "character 7 is a lone surrogate (U+D800)"),
        ("proxy \udcff tuning", "invalid_text", "byte 0xff is not UTF-8"),
    ],
)
def test_a_question_past_the_limits_is_refused_before_any_work(
    fixture_index, counted_searches, question, code, message
):
    assistant = Assistant(Settings(index_dir=fixture_index, llm_backend="none"))
    assert assistant.searcher  # opened (and warmed) once for every question: not this question's work
    counted_searches.clear()
    with pytest.raises(QuestionError) as refused:
        assistant.ask(question)
    assert refused.value.code == code and message in str(refused.value) and "\n" not in str(refused.value)
    assert counted_searches == []  # nothing was searched, embedded or scored


def test_questions_within_the_limits_are_answered(fixture_index):
    assistant = Assistant(Settings(index_dir=fixture_index, llm_backend="none", max_question_chars=200))
    assert not assistant.ask(QUESTION).refused
    check_question(REPEATED * 8, None, Settings())  # 8 parts: the limit
    with pytest.raises(QuestionError, match="an earlier question of the conversation is 201 characters long"):
        assistant.ask("And for which model size?", [{"role": "user", "content": "x" * 201}])
    with pytest.raises(QuestionError, match="the query is 201 characters long: at most 200"):
        assistant.search("x" * 201)


def test_cli_refuses_bad_bytes_and_long_questions_in_one_line(fixture_index, capsys, monkeypatch):
    monkeypatch.setenv("RAG_INDEX_DIR", str(fixture_index))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "RAG_LLM_BACKEND": "none"}
    for command, shown in ((["search", b"\xff"], "the query"), (["ask", b"caf\xe9 proxy tuning"], "the question")):
        run = subprocess.run([sys.executable, "-m", "rag.cli", *command], env=env, capture_output=True, timeout=120)
        assert run.returncode == 1 and run.stdout == b""
        byte = command[1][-1] if command[0] == "search" else 0xE9
        assert run.stderr.decode() == f"error: {shown} is not valid text: byte 0x{byte:02x} is not UTF-8\n"
    chat = subprocess.run(
        [sys.executable, "-m", "rag.cli", "chat"],
        input=b"proxy \xff tuning\n" + QUESTION.encode() + b"\n",
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert chat.returncode == 0 and b"Traceback" not in chat.stderr
    assert b"error: the question is not valid text: byte 0xff is not UTF-8" in chat.stderr
    assert b"88% of the gap" in chat.stdout  # the next question is answered
    monkeypatch.setenv("RAG_LLM_BACKEND", "llamacpp")  # refused before the model would load
    assert main(["ask", REPEATED * 170]) == 1
    err = capsys.readouterr().err
    assert err == "error: the question is 7,990 characters long: at most 4,000 (RAG_MAX_QUESTION_CHARS)\n"


# --- regexes on user text: linear ---------------------------------------------------------------------------------

# Text that made a regex backtrack: each a unit repeated to 512 KB (see bench/long_text.py for the timings).
UNITS = [REPEATED.replace("?", ""), "does x ", "when was ", "what did ", " ", "a.", ", and ", "? ", "[1"]


def user_text_patterns() -> list[re.Pattern]:
    """The compiled patterns that read questions, evidence or generated text (each once)."""
    found: dict[int, re.Pattern] = {}
    for module in (evidence, answer, citations, conversation, sentences):
        for value in vars(module).values():
            values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
            for item in values:
                for pattern in item if isinstance(item, tuple) else (item,):
                    if isinstance(pattern, re.Pattern):
                        found[id(pattern)] = pattern
    return list(found.values())


@pytest.mark.timeout(
    300
)  # linear: ~20 s in all on 2 busy cores; quadratic: 'does .* outperform' took 69 s on 1 MB, 18 min on 4 MB
def test_regexes_on_user_text_finish_on_megabytes_of_pathological_text():
    patterns = user_text_patterns()
    assert len(patterns) > 25
    for unit in UNITS:
        text = unit * (MB // 2 // len(unit))  # quadratic on a run of spaces: hours
        for pattern in patterns:
            for _ in pattern.finditer(text):
                pass
    for unit in ("does x ", "when was ", "what did "):  # the three `a .* b` patterns, on 4 MB
        text = unit * (4 * MB // len(unit))
        assert not any(kind.search(text) for kind, _ in evidence.ANSWER_KINDS[1:2] + list(evidence.FACT_KINDS.values()))
    text = REPEATED.replace("?", "") * (MB // len(REPEATED))
    assert evidence.question_parts(text) == [text]
    assert conversation.is_followup(text) is False
    assert citations.core_and_end("“" + "." * MB + "!") == ("", "!")
    assert len(sentences.split_sentences("a." * (MB // 2) + " Next one.")) == 2
    assert citations.clauses(" " * MB + "we tune models; it closes the gap") == ["we tune models", "it closes the gap"]


def test_the_rewritten_patterns_match_as_before():
    kind = evidence.ANSWER_KINDS[1][0]
    assert kind.search("Does proxy-tuning beat tuning the model directly?")
    assert kind.search("does a does improve")  # from the first "does", as `does .* improve` matched
    assert not kind.search("Does it improves?") and not kind.search("does improve")
    year = evidence.FACT_KINDS["year"][0]
    assert year.search("When was the Yi model published?") and not year.search("when was it")
    assert evidence.FACT_KINDS["money"][0].search("What did training Yi cost?")
    assert citations.names("We use GPT-4 and LoRA on Llama2-70B, e.g. RL.") == {"gpt-4", "lora", "llama2-70b", "rl"}
    assert citations.core_and_end(' "It improves FID!" ') == ("It improves FID", "!")


# --- the embedder's token budget -----------------------------------------------------------------------------------


def test_token_batches_stay_within_the_budget():
    lengths = [5, 300, 10, 256, 256, 20, 3000, 40, 256, 256, 256, 256, 256, 256, 256, 256]
    batches = token_batches(lengths, budget=2048)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 2048


def test_the_embedder_runs_within_its_budget_and_gives_the_same_vectors(monkeypatch):
    """Float32 ONNX: the vectors of one unbounded run, run by run; no run over TOKEN_BUDGET padded tokens."""
    texts = [json.loads(line)["abstract"] for line in FIXTURE_CORPUS.read_text().splitlines()] * 3
    texts += ["How many steps?", "short", REPEATED * 20]
    embedder = load_embedder("bundled", runtime="onnx")
    runs = []
    real_session = embedder.session

    class Recorder:
        def run(self, names, feed):
            runs.append(feed["input_ids"].shape)
            return real_session.run(names, feed)

    monkeypatch.setattr(embedder, "session", Recorder())
    budgeted = np.asarray(embedder.encode(texts))
    assert len(runs) > 1 and all(rows * width <= TOKEN_BUDGET for rows, width in runs), runs
    monkeypatch.setattr("rag.models.token_batches", lambda lengths: [list(range(len(lengths)))])
    whole = np.asarray(embedder.encode(texts))
    assert runs[-1] == (len(texts), 256)  # the reference: one run of everything, padded to the window
    assert np.allclose(budgeted, whole, atol=1e-5)
