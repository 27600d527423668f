"""The Gradio app: chat with cited answers and a sources panel, paper search, and a library to add corpus files.

`build_ui(assistant, keys)` only calls the `Assistant`; the handlers are plain functions of it (tested without Gradio
running). All HTML comes from `ui.render`, which escapes every piece of text. k and mode belong to each browser
session; changing the LLM (for everyone) and adding corpus files need the admin role. `rag serve` mounts this app
beside the HTTP API (rag/server.py).
"""

import re
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import get_args

import gradio as gr

from rag.access import ADMIN, Keys
from rag.answer import Answer
from rag.corpus import SUFFIXES, CorpusError
from rag.limits import QuestionError, check_question
from rag.settings import Backend, Mode, error_line
from rag.storage import UploadError
from ui import render

EXAMPLES = [
    "How much of the gap to the truly-tuned chat model does proxy-tuning close for Llama2-70B?",
    "How many denoising steps does SnapFusion need to beat Stable Diffusion v1.5 with 50 steps?",
    "Which papers study weak-to-strong generalization, supervising a strong model with a weaker one?",
    "How much money did it cost to train the Yi foundation models?",
]
BACKENDS = list(get_args(Backend))
MODES = list(get_args(Mode))
EXPORT_DIR = Path(tempfile.gettempdir()) / "abstract-rag-exports"
ADMIN_ONLY = "Only an admin can {}: log in with the user name 'admin' and an admin key."
NOT_YOURS = "This browser session belongs to another login."


# --- chat ----------------------------------------------------------------------------------------------------


def history_of(turns: list[Answer]) -> list[dict]:
    """The conversation in the messages format `Assistant.stream` takes for follow-ups."""
    out = []
    for a in turns:
        out += [{"role": "user", "content": a.question}, {"role": "assistant", "content": a.text}]
    return out


def chat(assistant, question: str, turns: list[Answer], k: int, mode: str):
    """Stream one answer. Yields (chatbot, sources, turns, notice, question box, export button) updates.

    Any failure ends the turn with one readable line (in the notice line and the chat), never a stack trace.
    """
    try:
        check_question(question or "", history_of(turns or []), assistant.settings)
    except QuestionError as e:  # refused before anything shows as asked; the conversation stays as it was
        yield gr.skip(), gr.skip(), turns, render.line(str(e), "error"), gr.skip(), gr.skip()
        return
    question = " ".join((question or "").split())
    if not question:
        yield gr.skip(), gr.skip(), turns, render.line("Type a question first."), gr.skip(), gr.skip()
        return
    turns = list(turns or [])
    yield render.chat_messages(turns, question), gr.skip(), turns, "", "", gr.skip()
    text, kind = "", "warn"
    try:
        stream = assistant.stream(question, history_of(turns), k=int(k) if k else None, mode=mode or None)
        for piece in stream:
            text += piece
            yield render.chat_messages(turns, question, text), gr.skip(), turns, gr.skip(), gr.skip(), gr.skip()
        answer = stream.answer
    except Exception as e:
        answer = Answer(question=question, prose=text, refused=False, notices=[f"Error: {error_line(e)}"])
        kind = "error"
    turns = turns + [answer]
    try:
        shown = {c.paper_id for a in turns for c in a.citations} | {h.paper_id for a in turns for h in a.closest}
        sources = render.sources_html(turns, assistant.papers(shown))
    except Exception as e:  # e.g. no index: the answer above already says so
        sources = render.sources_html(turns, {})
        answer.notices.append(f"Cannot show the abstracts: {error_line(e)}")
    notice = render.line(" · ".join(answer.notices), kind) if answer.notices else ""
    yield render.chat_messages(turns), sources, turns, notice, gr.skip(), export_file(turns)


def another_login(keys: Keys | None, owner: str | None, request) -> bool:
    """Whether this browser session's conversation belongs to another login than the request's. Gradio keeps a
    session's state by the session hash the browser chose, whoever sends it; with logins on, the conversation belongs
    to the login that opened the session (set on page load, or by its first question)."""
    return keys is not None and not keys.open and owner is not None and owner != getattr(request, "username", None)


def owned_chat(assistant, keys: Keys | None, question: str, turns: list[Answer], k, mode, owner, request):
    """`chat` for the session's own login: an event sent with another login's session hash changes and shows
    nothing. Yields chat's updates plus the owner."""
    if another_login(keys, owner, request):
        yield (gr.skip(),) * 7
        return
    owner = owner or getattr(request, "username", None)
    for update in chat(assistant, question, turns, k, mode):
        yield (*update, owner)


def export_file(turns: list[Answer]):
    """The conversation as a Markdown file for the Export button (a button update). The file must outlive the
    handler: Gradio serves it from where it was written."""
    if not turns:
        return gr.DownloadButton(value=None, interactive=False)
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=EXPORT_DIR)) / f"conversation-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(render.export_markdown(turns, time.strftime("%Y-%m-%d %H:%M")), encoding="utf-8")
    return gr.DownloadButton(value=str(path), interactive=True)


def clear():
    return [], render.sources_html([], {}), [], "", "", gr.DownloadButton(value=None, interactive=False)


def pick_example(evt: gr.SelectData) -> str:
    value = evt.value
    return value.get("text", "") if isinstance(value, dict) else str(value)


# --- settings and status -------------------------------------------------------------------------------------


def status_html(assistant) -> str:
    try:
        return render.status_line(assistant.status())
    except Exception as e:
        return render.line(
            f"No index yet ({error_line(e)}): add a corpus file in the Library tab or run `rag index`.", "error"
        )


def configure_llm(assistant, backend: str, model: str, admin: bool = True):
    """Switch the LLM for everyone's next question (admins only; a local model must be 'bundled' or inside
    RAG_MODEL_DIR). Returns (status, notice)."""
    if not admin:
        return status_html(assistant), render.line(ADMIN_ONLY.format("change the LLM"), "error")
    try:
        described = assistant.switch_llm(backend, model)
        return status_html(assistant), render.line(f"LLM for the next question: {described}", "ok")
    except Exception as e:
        return status_html(assistant), render.line(f"Settings not applied: {error_line(e)}", "error")


# --- search --------------------------------------------------------------------------------------------------


def search(assistant, query: str, k: int, mode: str) -> str:
    try:
        return render.search_html(
            query or "", assistant.search(query or "", k=int(k) if k else None, mode=mode or None)
        )
    except QuestionError as e:
        return render.line(str(e), "error")
    except Exception as e:
        return render.line(f"Search failed: {error_line(e)}", "error")


# --- library -------------------------------------------------------------------------------------------------


def sources_rows(assistant) -> list[list]:
    try:
        return [[s["source"], s["papers"]] for s in assistant.sources()]
    except Exception:
        return []


def add_corpus(assistant, file, progress=gr.Progress(track_tqdm=True), admin: bool = True):
    """Upload handler: check and copy the file, index it incrementally. Returns (message, sources table, status).

    A rejected file leaves the index as it was and shows one line (the CorpusError text). Admins only.
    """
    if not admin:
        return render.line(ADMIN_ONLY.format("add corpus files"), "error"), sources_rows(assistant), gr.skip()
    if not file:
        return render.line("Choose a corpus file first."), sources_rows(assistant), status_html(assistant)
    src = Path(file)
    try:
        progress(0.1, desc=f"Indexing {src.name}")
        dest, report = assistant.add_upload(src, src.name, progress=True)
        message = render.line(f"Added {dest.name}: {report.new} new papers. Index now {report.summary()}", "ok")
    except (CorpusError, UploadError) as e:  # the server's folder is not named: the message names the file only
        text = re.sub(r"\S*/uploads/", "", error_line(e, typed=False))
        message = render.line(f"Rejected: {text}", "error")
    except Exception as e:
        message = render.line(f"Failed: {error_line(e)}", "error")
    return message, sources_rows(assistant), status_html(assistant)


# --- the app -------------------------------------------------------------------------------------------------


def ask_tab(assistant, keys: Keys | None, status, is_admin):
    """The Ask tab: the chat, its settings and the sources panel, wired. Returns (backend, model, owner): the
    admin-only controls and the login the conversation belongs to, for the page's load event."""
    s = assistant.settings
    turns = gr.State([])
    owner = gr.State(None)  # the login this session's conversation belongs to (see owned_chat)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(
                label="Answers",
                show_label=False,
                height=600,
                render_markdown=False,
                sanitize_html=True,
                latex_delimiters=[],
                feedback_options=None,
                buttons=[],  # copy would copy HTML: use Export
                examples=[{"text": q} for q in EXAMPLES],
                placeholder="Ask about the indexed papers. Every claim in an answer cites its source.",
            )
            with gr.Row():
                question = gr.Textbox(
                    show_label=False, placeholder="Ask a question and press Enter", scale=6, elem_id="question"
                )
                ask = gr.Button("Ask", variant="primary", scale=1, min_width=80)
            with gr.Row():
                clear_btn = gr.Button("Clear", size="sm")
                export = gr.DownloadButton("Export (Markdown)", size="sm", interactive=False)
            notice = gr.HTML(js_on_load=None, elem_id="notice")
            with gr.Accordion("Settings", open=False, elem_id="settings"):
                with gr.Row():
                    backend = gr.Dropdown(BACKENDS, value=s.llm_backend, label="LLM backend")
                    model = gr.Textbox(
                        value=s.llm_model, label="LLM model ('bundled', a GGUF path, or a transformers model)"
                    )
                with gr.Row():
                    k = gr.Slider(1, 30, value=s.search_k, step=1, label="Papers retrieved (k)")
                    mode = gr.Radio(MODES, value=s.search_mode, label="Retrieval mode")
        with gr.Column(scale=2):
            sources = gr.HTML(render.sources_html([], {}), js_on_load=None, elem_id="sources")

    def on_chat(question_value, turns_value, k_value, mode_value, owner_value, request: gr.Request):
        yield from owned_chat(assistant, keys, question_value, turns_value, k_value, mode_value, owner_value, request)

    def on_clear(owner_value, request: gr.Request):
        return (gr.skip(),) * 6 if another_login(keys, owner_value, request) else clear()

    def on_configure(backend_value: str, model_value: str, request: gr.Request):
        return configure_llm(assistant, backend_value, model_value, admin=is_admin(request))

    chat_io = dict(
        fn=on_chat,
        inputs=[question, turns, k, mode, owner],
        outputs=[chatbot, sources, turns, notice, question, export, owner],
        concurrency_limit=4,
    )
    question.submit(**chat_io, api_name="chat", api_visibility="undocumented")
    ask.click(**chat_io, api_name="chat_click", api_visibility="private")
    chatbot.example_select(pick_example, None, question, api_visibility="private").then(
        **chat_io, api_visibility="private"
    )
    for event in (clear_btn.click, chatbot.clear):  # the chatbot's own trash icon clears the conversation too
        event(on_clear, owner, [chatbot, sources, turns, notice, question, export], api_visibility="private")
    for event in (backend.input, model.submit, model.blur):
        event(on_configure, [backend, model], [status, notice], api_visibility="private")
    return backend, model, owner


def search_tab(assistant) -> None:
    s = assistant.settings
    with gr.Row():
        query = gr.Textbox(show_label=False, placeholder="Search the papers", scale=6, elem_id="query")
        search_btn = gr.Button("Search", variant="primary", scale=1, min_width=80)
    with gr.Row():
        search_k = gr.Slider(1, 50, value=s.search_k, step=1, label="Results")
        search_mode = gr.Radio(MODES, value=s.search_mode, label="Retrieval mode")
    results = gr.HTML(render.search_html("", []), js_on_load=None, elem_id="results")
    search_io = dict(
        fn=partial(search, assistant),
        inputs=[query, search_k, search_mode],
        outputs=results,
        concurrency_limit=4,
        api_visibility="private",
    )
    query.submit(**search_io, api_name="search_submit")
    search_btn.click(**search_io, api_name="search_click")


def library_tab(assistant, status, is_admin):
    """The Library tab: add a corpus file (admins), the indexed sources. Returns the upload control."""
    s = assistant.settings
    gr.Markdown(
        f"Add a corpus file ({', '.join(SUFFIXES)}, at most {s.ui_max_upload_mb} MB). Its papers "
        "are indexed incrementally and searchable as soon as indexing ends."
    )
    upload = gr.File(label="Corpus file", file_types=list(SUFFIXES), type="filepath", height=160, elem_id="upload")
    upload_msg = gr.HTML(js_on_load=None, elem_id="upload-msg")
    table = gr.Dataframe(
        partial(sources_rows, assistant), headers=["source", "papers"], label="Indexed sources", interactive=False
    )

    def on_upload(file, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        return add_corpus(assistant, file, progress, admin=is_admin(request))

    upload.upload(
        on_upload,
        upload,
        [upload_msg, table, status],
        concurrency_limit=1,
        api_name="add_corpus",
        api_visibility="undocumented",
    ).then(lambda: None, None, upload, api_visibility="private")
    return upload


def api_endpoints(assistant) -> None:
    """Gradio's own API (gradio_client): ask and search, as JSON."""

    def api_ask(question: str, k: int = 0, mode: str = "") -> dict:
        """Answer a question from the indexed abstracts; the Answer as JSON (text, citations, evidence...)."""
        try:
            return assistant.ask(question, k=k or None, mode=mode or None).to_dict()
        except Exception as e:
            raise gr.Error(error_line(e)) from None

    def api_search(query: str, k: int = 0, mode: str = "") -> list[dict]:
        """Rank the indexed papers for a query: rank, paper_id, title, url, score, snippet, source."""
        try:
            return [h.to_dict() for h in assistant.search(query, k=k or None, mode=mode or None)]
        except Exception as e:
            raise gr.Error(error_line(e)) from None

    gr.api(api_ask, api_name="ask", concurrency_limit=4)
    gr.api(api_search, api_name="search", concurrency_limit=4)


def build_ui(assistant, keys: Keys | None = None) -> gr.Blocks:
    """The app for one Assistant. Events are queued; each browser session has its own conversation, k and mode.
    With `keys` that are not open, only a session logged in as 'admin' may change the LLM or add files."""

    def is_admin(request: gr.Request | None) -> bool:
        return keys is None or keys.open or getattr(request, "username", None) == ADMIN

    # Gradio's cache (uploads, exports): every hour, files older than a day go
    with gr.Blocks(title="abstract-rag", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.HTML(
            "<h2 style='margin:0'>abstract-rag</h2><div class='rag-muted'>Questions answered from research-paper "
            "abstracts, every claim cited to a paper.</div>",
            head=render.STYLE,
            js_on_load=None,
        )
        status = gr.HTML(partial(status_html, assistant), js_on_load=None)
        with gr.Tabs():
            with gr.Tab("Ask"):
                backend, model, owner = ask_tab(assistant, keys, status, is_admin)
            with gr.Tab("Search"):
                search_tab(assistant)
            with gr.Tab("Library"):
                upload = library_tab(assistant, status, is_admin)

        def on_load(owner_value, request: gr.Request):
            """Admin-only controls are shown read-only to the other sessions (their handlers check again); the
            session's conversation belongs to the login that opened it."""
            read_only = gr.update(interactive=is_admin(request))
            return read_only, read_only, read_only, owner_value or getattr(request, "username", None)

        demo.load(on_load, owner, [backend, model, upload, owner], api_visibility="private")
        api_endpoints(assistant)
    return demo
