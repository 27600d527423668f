"""The UI's handlers and rendering with a fake Assistant: no models, no server."""

from __future__ import annotations

import html
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from rag.access import Keys
from rag.answer import Answer, AnswerStream
from rag.assistant import Assistant
from rag.corpus import CorpusError, Paper
from rag.evidence import Evidence
from rag.index import IndexReport
from rag.limits import check_text
from rag.search import Hit
from rag.settings import Settings
from rag.storage import UploadError, safe_name
from ui import app, render

XSS_TITLE = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "<script>alert(1)</script>"
ABSTRACT = (
    "We tune a large model by proxy. In experiments we close 88% of the gap to the truly-tuned chat model. "
    "The method needs no access to the weights."
)
PAPERS = {
    "p1": Paper(
        "p1", "Tuning Language Models by Proxy", ABSTRACT, "https://arxiv.org/abs/2401.08565", "papers.jsonl", 1
    ),
    "p2": Paper(
        "p2",
        XSS_TITLE,
        f"{XSS_SCRIPT} is what this abstract says. Nothing else.",
        "javascript:alert(1)",
        "evil.jsonl",
        1,
    ),
}


def evidence(n, pid, quote, score=0.7, rank=1):
    return Evidence(n, pid, PAPERS[pid].title, PAPERS[pid].url, quote, score, rank)


def cited_answer(question="How much of the gap does proxy-tuning close?") -> Answer:
    ev = [
        evidence(1, "p1", "In experiments we close 88% of the gap to the truly-tuned chat model.", 0.81),
        evidence(2, "p2", f"{XSS_SCRIPT} is what this abstract says.", 0.5, 2),
    ]
    return Answer(
        question=question,
        prose=f"“In experiments we close 88% of the gap to the truly-tuned chat model.” [1] {XSS_TITLE} [2].",
        refused=False,
        evidence=ev,
        backend="fake",
        opening="“In experiments we close 88% of the gap to the truly-tuned chat model.” [1]",
    )


def refused_answer() -> Answer:
    hit = Hit(1, "p2", XSS_TITLE, "https://example.org/p2", 0.03, f"{XSS_SCRIPT} snippet", "evil.jsonl")
    return Answer(
        question="Who wrote it?",
        prose="I could not find this in the indexed papers: no passage.",
        refused=True,
        closest=[hit],
    )


class FakeAssistant:
    """The Assistant API the UI calls, with canned answers; records what it was asked."""

    def __init__(self, index_dir: Path, answer: Answer | None = None, fail: Exception | None = None):
        self.settings = Settings(index_dir=index_dir, ui_max_upload_mb=1)
        self.answer, self.fail = answer or cited_answer(), fail
        self.calls: list = []

    def stream(self, question, history=None, k=None, mode=None):
        self.calls.append(("stream", question, history, k, mode))
        return AnswerStream(self.pieces())

    def pieces(self):
        if self.fail:
            yield "Partial "
            raise self.fail
        prose = self.answer.prose
        yield prose[:20]
        yield prose[20:]
        return self.answer

    def papers(self, ids):
        return {pid: PAPERS[pid] for pid in ids if pid in PAPERS}

    def search(self, query, k=None, mode=None):
        self.calls.append(("search", query, k, mode))
        return [Hit(1, "p2", XSS_TITLE, "https://example.org/p2", 0.5, f"{XSS_SCRIPT} snippet", "evil.jsonl")]

    switch_llm = Assistant.switch_llm  # the real door, over this fake's configure and add_files
    add_upload = Assistant.add_upload

    def describe_llm(self):
        return f"{self.settings.llm_backend}: fake"

    def configure(self, **changes):
        if changes.get("llm_backend") not in app.BACKENDS:
            raise ValueError("unknown backend")
        self.calls.append(("configure", changes))
        self.settings = self.settings.model_copy(update=changes)

    def status(self):
        return {
            "papers": len(PAPERS),
            "chunks": 3,
            "embed_model": "fake-embed",
            "built_at": "",
            "index_dir": str(self.settings.index_dir),
            "llm": f"{self.settings.llm_backend}: fake",
        }

    def sources(self):
        return [{"source": "papers.jsonl", "papers": 2}]

    def add_files(self, paths, skip_bad=False, progress=False):
        path = Path(paths[0])
        self.calls.append(("add_files", path))
        if "bad" in path.name:
            raise CorpusError(path, 3, "record has no title")
        return IndexReport(papers=3, chunks=4, new=1, index_dir=str(self.settings.index_dir))


@pytest.fixture
def fake(tmp_path):
    return FakeAssistant(tmp_path / "index")


def run_chat(assistant, question="How much of the gap does proxy-tuning close?", turns=None, k=5, mode="bm25"):
    return list(app.chat(assistant, question, turns or [], k, mode))


def assert_inert(markup: str):
    """Dangerous payloads appear only as escaped text."""
    assert "<img" not in markup and "<script" not in markup and "javascript:" not in markup


# --- chat ----------------------------------------------------------------------------------------------------


def test_build_ui_names_the_api(fake):
    demo = app.build_ui(fake)
    assert isinstance(demo, gr.Blocks)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"ask", "search", "chat", "add_corpus"} <= names


def test_chat_streams_pieces_then_renders_cited_answer(fake):
    updates = run_chat(fake)
    chatbots = [u[0] for u in updates if isinstance(u[0], list)]
    assert chatbots[0][-1]["content"].startswith('<span class="rag-wait">')  # the question shows at once
    streamed = [c[-1]["content"] for c in chatbots[1:-1]]
    assert len(streamed) == 2 and "“In experiments we c" in streamed[0]
    final_chat, sources, turns, notice, _, export = updates[-1]
    assert [t.question for t in turns] == [fake.answer.question]
    assert fake.calls[0] == ("stream", fake.answer.question, [], 5, "bm25")
    message = final_chat[-1]["content"]
    assert '<a class="rag-cite" href="#src-0-1">[1]</a>' in message
    assert 'id="src-0-1"' in sources and 'id="src-0-2"' in sources  # each [n] has its card
    assert "<mark" in sources and "88% of the gap" in sources and "score 0.81" in sources
    assert notice == ""
    assert Path(export.value["path"]).read_text().startswith("# abstract-rag conversation")


def test_chat_passes_history_for_follow_ups(fake):
    first = run_chat(fake)[-1][2]
    run_chat(fake, "And how does it compare?", turns=first)
    history = fake.calls[-1][2]
    assert history[0] == {"role": "user", "content": fake.answer.question}
    assert history[1]["role"] == "assistant" and history[1]["content"] == fake.answer.text


def test_chat_escapes_everything(fake):
    final_chat, sources, *_ = run_chat(fake, question=XSS_SCRIPT)[-1]
    for markup in (final_chat[0]["content"], final_chat[1]["content"], sources):
        assert_inert(markup)
    assert html.escape(XSS_TITLE) in final_chat[1]["content"]
    assert html.escape(XSS_TITLE) in sources and html.escape(XSS_SCRIPT) in sources
    assert "javascript" not in sources  # the bad url is dropped, the title stays as text


def test_refusal_looks_different_and_lists_closest_papers(tmp_path):
    fake = FakeAssistant(tmp_path, answer=refused_answer())
    final_chat, sources, *_ = run_chat(fake, "Who wrote it?")[-1]
    assert "rag-refused" in final_chat[-1]["content"] and "Not in the indexed papers" in final_chat[-1]["content"]
    assert "rag-closest" in sources and "they do not answer" in sources
    assert_inert(sources)


def test_a_failing_answer_is_one_line(tmp_path):
    fake = FakeAssistant(tmp_path, fail=RuntimeError("llama.cpp exploded\nTraceback (most recent call last): ..."))
    final_chat, _, turns, notice, _, _ = run_chat(fake)[-1]
    assert "Error: RuntimeError: llama.cpp exploded" in notice and "Traceback" not in notice and "rag-error" in notice
    assert "Partial" in final_chat[-1]["content"] and len(turns) == 1


def test_answer_notices_show_as_one_line(tmp_path):
    answer = cited_answer()
    answer.notices = [
        "The LLM (llamacpp) failed: ModelError: cannot load x.gguf. The answer is quoted from the evidence."
    ]
    final_chat, _, _, notice, _, _ = run_chat(FakeAssistant(tmp_path, answer=answer))[-1]
    assert "rag-warn" in notice and "cannot load x.gguf" in notice and notice.count("<div") == 1
    assert "cannot load x.gguf" in final_chat[-1]["content"]


def test_empty_question_does_nothing(fake):
    (update,) = run_chat(fake, "   ")
    assert "Type a question" in update[3] and not fake.calls


def test_a_refused_question_is_one_line_and_adds_no_turn(fake):
    earlier = run_chat(fake)[-1][2]
    calls = len(fake.calls)
    (update,) = run_chat(fake, "How many steps does it need? " * 150, turns=earlier)
    chatbot, _, turns, notice, *_ = update
    assert "at most 4,000 (RAG_MAX_QUESTION_CHARS)" in notice and notice.count("<div") == 1 and "rag-error" in notice
    assert turns == earlier and len(fake.calls) == calls  # nothing asked, the conversation as it was
    fake.search = lambda *a, **kw: check_text("x" * 4001, "the query", 4000)  # what Assistant.search does
    assert app.search(fake, "x" * 4001, 5, "bm25").count("at most 4,000 (RAG_MAX_QUESTION_CHARS)") == 1


def test_a_session_belongs_to_the_login_that_opened_it(fake):
    """Gradio keys session state by a hash the browser sends: another login sending it gets nothing and changes
    nothing."""
    keys = Keys(Settings(api_keys="ann-key,bob-key"))
    ann, bob = SimpleNamespace(username="ann"), SimpleNamespace(username="bob")
    mine = list(app.owned_chat(fake, keys, "How much of the gap?", [], 5, "bm25", None, ann))
    turns, owner = mine[-1][2], mine[-1][6]
    assert owner == "ann" and len(turns) == 1  # the first question claims a session no page load claimed
    calls = len(fake.calls)
    (theirs,) = app.owned_chat(fake, keys, "What did ann ask?", turns, 5, "bm25", owner, bob)
    assert all(isinstance(update, type(gr.skip())) for update in theirs) and len(theirs) == 7
    assert len(fake.calls) == calls
    assert list(app.owned_chat(fake, keys, "And then?", turns, 5, "bm25", owner, ann))[-1][6] == "ann"
    assert app.another_login(keys, "ann", bob) and not app.another_login(Keys(Settings()), "ann", bob)


def test_clear_resets_the_conversation():
    chatbot, sources, turns, notice, question, export = app.clear()
    assert chatbot == [] and turns == [] and "Sources" in sources and export.interactive is False


def test_export_markdown_has_questions_answers_and_references():
    md = render.export_markdown([cited_answer(), refused_answer()], "2025-01-01 12:00")
    assert "## 1. How much of the gap does proxy-tuning close?" in md
    assert "1. [Tuning Language Models by Proxy](<https://arxiv.org/abs/2401.08565>)" in md
    assert "References:" in md and "Closest papers" in md
    assert "\\<script\\>" in md and "(<>)" in md  # markup escaped, the javascript: url dropped


# --- rendering -----------------------------------------------------------------------------------------------


def test_highlight_marks_the_evidence_in_the_abstract():
    out = render.highlight(ABSTRACT, [(1, "The method needs no access to the weights.", 0.6), (2, "Year: 2024.", 0.5)])
    assert (
        '<mark title="evidence [1], score 0.60">The method needs no access to the weights.<sup>[1]</sup></mark>' in out
    )
    assert out.startswith("We tune a large model by proxy.") and "Year: 2024." in out


def test_source_cards_write_latex_out_and_still_mark_the_quote():
    abstract = "Prior work is slow. Our method is 3$\\times$ faster and reaches 54.37\\% accuracy. We release code."
    out = render.highlight(abstract, [(1, "Our method is 3$\\times$ faster and reaches 54.37\\% accuracy.", 0.7)])
    assert '<mark title="evidence [1], score 0.70">Our method is 3× faster and reaches 54.37% accuracy.<sup>' in out
    assert "\\" not in out and "$" not in out and out.startswith("Prior work is slow. ")
    assert (
        render.highlight('We introduce T\\"ULU 3, G{\\"o}del and \\`A-la-carte tuning.', [])
        == "We introduce TÜLU 3, Gödel and À-la-carte tuning."
    )
    # math after a letter keeps its dollars rather than pairing them with the next formula's; prices stay
    kept = "an F$_1$ of 90.1 and a 2× speedup for 100$ per model"
    assert render.highlight("an F$_1$ of 90.1 and a 2$\\times$ speedup for 100$ per model", []) == kept


def test_citations_link_only_to_evidence_that_exists():
    answer = cited_answer()
    out = render.answer_html(3, "Claim [1]. Not a citation [7].", answer)
    assert 'href="#src-3-1"' in out and "[7]" in out and "src-3-7" not in out


def test_search_results_are_escaped(fake):
    out = app.search(fake, XSS_SCRIPT, 5, "dense")
    assert_inert(out)
    assert html.escape(XSS_TITLE) in out and fake.calls[-1] == ("search", XSS_SCRIPT, 5, "dense")


def test_status_and_settings(fake, tmp_path):
    assert "2 papers" in app.status_html(fake) and "fake-embed" in app.status_html(fake)
    status, notice = app.configure_llm(fake, "none", "")
    assert fake.calls[-1] == ("configure", {"llm_backend": "none"})
    assert "none: fake" in status and "rag-ok" in notice
    _, notice = app.configure_llm(fake, "bogus", "x")
    assert "Settings not applied: ValueError: unknown backend" in notice
    app.configure_llm(fake, "llamacpp", "")
    assert fake.calls[-1] == ("configure", {"llm_backend": "llamacpp", "llm_model": "bundled"})


def test_only_an_admin_changes_the_llm(fake):
    calls = len(fake.calls)
    _, notice = app.configure_llm(fake, "none", "", admin=False)
    assert "Only an admin can change the LLM" in notice and len(fake.calls) == calls


@pytest.mark.parametrize("model", ["/etc/passwd", "/no/such/model.gguf", "../../etc/passwd"])
def test_a_model_outside_the_model_dir_is_refused_the_same_way(fake, tmp_path, model):
    fake.settings = fake.settings.model_copy(update={"model_dir": tmp_path})
    _, notice = app.configure_llm(fake, "llamacpp", model)
    assert f"ModelError: {model!r} is not 'bundled' or a model inside RAG_MODEL_DIR" in html.unescape(notice)
    assert not any(c[0] == "configure" for c in fake.calls)


def test_one_sessions_k_and_mode_do_not_reach_another(fake):
    run_chat(fake, k=3, mode="bm25")
    run_chat(fake, k=12, mode="dense")
    assert [c[3:] for c in fake.calls if c[0] == "stream"] == [(3, "bm25"), (12, "dense")]
    assert fake.settings.search_k == 10 and fake.settings.search_mode == "hybrid"


# --- library -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("papers.jsonl", "papers.jsonl"),
        ("../../etc/passwd.jsonl", "passwd.jsonl"),
        ("..\\..\\win.CSV", "win.csv"),
        ("..jsonl", "upload.jsonl"),
        (".hidden.bib", "hidden.bib"),
        ("my papers (1).json", "my_papers_1.json"),
        ("a..b...txt", "a.b.txt"),
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


@pytest.mark.parametrize("name", ["evil.sh", "papers.jsonl.exe", "noext", "", "../"])
def test_safe_name_rejects_other_files(name):
    with pytest.raises(UploadError):
        safe_name(name)


def test_upload_is_copied_under_uploads_and_indexed(fake, tmp_path):
    src = tmp_path / "..weird name.jsonl"
    src.write_text('{"title": "T", "abstract": "A"}\n')
    message, rows, status = app.add_corpus(fake, str(src), progress=lambda *a, **k: None)
    dest = fake.calls[-1][1]
    assert dest == Path(fake.settings.index_dir) / "uploads" / "weird_name.jsonl"
    assert dest.read_text() == src.read_text()
    assert "Added weird_name.jsonl: 1 new papers" in message and rows == [["papers.jsonl", 2]]
    # same name, other content: kept beside it, never overwritten
    src.write_text('{"title": "U", "abstract": "B"}\n')
    app.add_corpus(fake, str(src), progress=lambda *a, **k: None)
    assert fake.calls[-1][1].name == "weird_name-2.jsonl"


def test_rejected_file_shows_the_corpus_error_and_is_not_kept(fake, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text("{}\n")
    message, *_ = app.add_corpus(fake, str(src), progress=lambda *a, **k: None)
    assert "Rejected: bad.jsonl:3: record has no title" in message and "rag-error" in message
    assert not (Path(fake.settings.index_dir) / "uploads" / "bad.jsonl").exists()


def test_upload_size_limit(fake, tmp_path):
    src = tmp_path / "big.jsonl"
    src.write_bytes(b" " * (2**20 + 1))  # the fake's limit is 1 MB
    message, *_ = app.add_corpus(fake, str(src), progress=lambda *a, **k: None)
    assert "big.jsonl is 1.0 MB: the limit is 1 MB" in message
    assert not any(c[0] == "add_files" for c in fake.calls)


def test_a_user_cannot_add_files(fake, tmp_path):
    src = tmp_path / "papers.jsonl"
    src.write_text('{"title": "T", "abstract": "A"}\n')
    message, *_ = app.add_corpus(fake, str(src), progress=lambda *a, **k: None, admin=False)
    assert "Only an admin can add corpus files" in message
    assert not any(c[0] == "add_files" for c in fake.calls)
    assert not (Path(fake.settings.index_dir) / "uploads").exists()
