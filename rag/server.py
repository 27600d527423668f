"""One server for people and programs: an OpenAI-compatible HTTP API over `Assistant`, the Gradio UI at `/`.

    POST /v1/chat/completions   model "abstract-rag" (or "abstract-rag-evidence": the evidence answer, no LLM);
                                stream or not; every response adds citations, references and refused
    GET  /v1/models             POST /v1/search      GET /v1/papers/{id}      GET /healthz      GET /docs
    POST /v1/admin/llm          POST /v1/admin/files (admin keys only)

Errors are OpenAI-shaped, one line: {"error": {"message", "type", "code"}}, unknown /v1 routes included. Keys come as
`Authorization: Bearer KEY` (rag.access); nothing here logs a key or a request header. The Host, cross-site and
body-size checks run before any route (rag.gate); a question is checked (rag.limits) before any work is done for it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.access import ADMIN, Keys
from rag.answer import Answer, AnswerStream, references_block
from rag.corpus import CorpusError
from rag.gate import error_body, guard
from rag.limits import QuestionError, check_question
from rag.models import ModelError
from rag.settings import Backend, Mode, Settings, error_line
from rag.storage import IndexingError, UploadError
from rag.vectors import VectorStoreError

MODEL = "abstract-rag"
EVIDENCE_MODEL = "abstract-rag-evidence"
MODELS = {MODEL: "cited answers: the server's LLM writes, the evidence verifies", EVIDENCE_MODEL: "evidence only"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


# --- request bodies --------------------------------------------------------------------------------------------


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # [{"type": "text", "text": ...}, ...]
            return " ".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, ... are accepted and ignored
    model: str = Field(description=f"{MODEL}, or {EVIDENCE_MODEL} for the evidence answer without the LLM")
    messages: list[Message] = Field(min_length=1, description="the conversation; the last one is the question")
    stream: bool = False
    k: int | None = Field(None, ge=1, le=100, description="papers retrieved (this request only)")
    mode: Mode | None = Field(None, description="retrieval mode (this request only)")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, description="at most RAG_MAX_QUESTION_CHARS characters")
    k: int | None = Field(None, ge=1, le=100)
    mode: Mode | None = None


class LLMChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Backend
    model: str = Field("bundled", description="local backends: 'bundled' or a model inside RAG_MODEL_DIR")


# --- responses -------------------------------------------------------------------------------------------------


def answer_extras(answer: Answer) -> dict:
    """What every completion adds to the OpenAI shape: the references of the answer (one per cited paper)."""
    return {
        "citations": [c.url for c in answer.citations],
        "references": [c.to_dict() for c in answer.citations],
        "refused": answer.refused,
        "notices": answer.notices,
        "dropped": answer.dropped,  # generated sentences the evidence does not state, for the curious
        "kind": answer.kind,
        "sections": [section.to_dict() for section in answer.sections],
    }


def completion(answer: Answer, model: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop"}],
        **answer_extras(answer),
    }


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def completion_chunks(stream: AnswerStream, model: str):
    """Server-sent `chat.completion.chunk` events: the text as it is verified, then a last chunk with
    finish_reason 'stop' and the references, then [DONE]. A failure mid-stream is one OpenAI error event."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = model

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    yield chunk({"role": "assistant", "content": ""})
    try:
        for piece in stream:
            if piece:
                yield chunk({"content": piece})
        answer = stream.answer
        references = references_block(answer.citations)
        if references:
            yield chunk({"content": references})
    except Exception as e:
        yield sse(error_body(error_line(e), "server_error"))
        yield "data: [DONE]\n\n"
        return
    yield chunk({}, "stop", **answer_extras(answer))
    yield "data: [DONE]\n\n"


def parse_chat(req: ChatRequest, settings: Settings) -> tuple[str, list[dict], bool]:
    """(question, history, generate) from an OpenAI chat request, checked before any work (a stream cannot change
    its status once it has started)."""
    if req.model not in MODELS:
        raise ApiError(
            404, f"model {req.model!r} does not exist: use {MODEL!r} or {EVIDENCE_MODEL!r}", code="model_not_found"
        )
    turns = [{"role": m.role, "content": m.text()} for m in req.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise ApiError(400, "the last message must be the user's question", code="invalid_messages")
    try:
        check_question(turns[-1]["content"], turns[:-1], settings)
    except QuestionError as e:
        raise ApiError(400, str(e), code=e.code) from None
    return turns[-1]["content"], turns[:-1], req.model == MODEL


# --- the app ---------------------------------------------------------------------------------------------------


def guarded(fn, *args, **kwargs):
    """Call the Assistant; its errors become one-line JSON errors (503 while there is no index or Chroma is down)."""
    try:
        return fn(*args, **kwargs)
    except IndexingError as e:
        raise ApiError(503, error_line(e), "server_error") from None
    except VectorStoreError as e:  # Chroma down: BM25 search still works
        raise ApiError(503, error_line(e, typed=False), "server_error", "vector_store_unavailable") from None
    except QuestionError as e:
        raise ApiError(400, str(e), code=e.code) from None
    except (CorpusError, ModelError, UploadError, ValueError) as e:
        raise ApiError(400, error_line(e, typed=False) if str(e).strip() else error_line(e)) from None
    except ApiError:
        raise
    except Exception as e:
        raise ApiError(500, error_line(e), "server_error") from None


def key_checks(keys: Keys):
    """FastAPI dependencies: (any valid key, an admin key); each raises the one-line 401 or 403."""

    def role(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        found = keys.role(token.strip() if scheme.lower() == "bearer" else None)
        if found is None:
            raise ApiError(401, "missing or unknown API key: send Authorization: Bearer KEY", "invalid_api_key")
        return found

    def admin(found: str = Depends(role)) -> str:
        if found != ADMIN:
            raise ApiError(403, "this needs an admin key", "permission_denied")
        return found

    return role, admin


def openai_routes(assistant) -> APIRouter:
    """The OpenAI-compatible part: /v1/models and /v1/chat/completions."""
    router = APIRouter(prefix="/v1", tags=["openai"])

    @router.get("/models")
    def models():
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "abstract-rag", "description": text}
                for name, text in MODELS.items()
            ],
        }

    @router.post("/chat/completions")
    def chat_completions(req: ChatRequest):
        """An answer to the last user message, the earlier ones as the conversation; cited, with references."""
        question, history, generate = parse_chat(req, assistant.settings)
        if req.stream:
            stream = assistant.stream(question, history, k=req.k, mode=req.mode, generate=generate)
            return StreamingResponse(completion_chunks(stream, req.model), media_type="text/event-stream")
        answer = guarded(assistant.ask, question, history, k=req.k, mode=req.mode, generate=generate)
        return completion(answer, req.model)

    return router


def search_routes(assistant) -> APIRouter:
    """Searching the papers and reading one."""
    router = APIRouter(prefix="/v1", tags=["search"])

    @router.post("/search")
    def search(req: SearchRequest):
        """Papers ranked for a query: rank, paper_id, title, url, score, snippet, source."""
        hits = guarded(assistant.search, req.query, k=req.k, mode=req.mode)
        return {"object": "list", "query": req.query, "data": [h.to_dict() for h in hits]}

    @router.get("/papers/{paper_id}")
    def paper(paper_id: str):
        found = guarded(assistant.paper, paper_id)
        if found is None:
            raise ApiError(404, f"no paper {paper_id!r} in the index", code="paper_not_found")
        return found.to_dict()

    return router


def admin_routes(assistant) -> APIRouter:
    """What only admins may do: switch the server's LLM, add corpus files."""
    router = APIRouter(prefix="/v1/admin", tags=["admin"])

    @router.post("/llm")
    def change_llm(req: LLMChange):
        """Switch the server's LLM for everyone's next question (loaded first; on failure nothing changes)."""
        return {"llm": guarded(assistant.switch_llm, req.backend, req.model)}

    @router.post("/files")
    def add_file(file: UploadFile = File(...)):
        """Index one more corpus file (.txt .json .jsonl .csv .bib); its papers are searchable when this returns."""
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "upload"
            with src.open("wb") as out:
                shutil.copyfileobj(file.file, out)
            try:
                dest, report = guarded(assistant.add_upload, src, file.filename or "")
            except ApiError as e:  # the server's folders are not named: the message names the file only
                e.message = re.sub(r"\S*/uploads/", "", e.message)
                raise
        return {"file": dest.name, **report.to_dict()}

    return router


def error_handlers(app: FastAPI) -> None:
    """Every error as one OpenAI-shaped JSON line."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse(error_body(e.message, e.kind, e.code), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return JSONResponse(error_body(message.splitlines()[0][:300], "invalid_request_error"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return JSONResponse(error_body(str(e.detail), "invalid_request_error"), status_code=e.status_code)


def build_app(assistant, keys: Keys | None = None, ui: bool = True) -> FastAPI:
    """The API over `assistant`, with the Gradio app (logging in with the same keys) mounted at / when `ui`."""
    settings = assistant.settings
    keys = keys or Keys(settings)
    app = FastAPI(
        title="abstract-rag",
        version="1",
        description="Cited answers from research-paper abstracts. OpenAI-compatible: point any OpenAI client at "
        "/v1 with model 'abstract-rag'. Send `Authorization: Bearer KEY` when the server has keys.",
    )
    error_handlers(app)
    role, admin = key_checks(keys)

    @app.get("/healthz", tags=["server"])
    async def healthz():
        """Liveness, no key needed: "ok", or "degraded" with what does not work (answers still come). Answered on the
        event loop, never waiting for a worker thread that requests may all be using."""
        return assistant.health()

    routers = [(openai_routes(assistant), role), (search_routes(assistant), role), (admin_routes(assistant), admin)]
    for router, needs in routers:
        app.include_router(router, dependencies=[Depends(needs)])
    known = [route.path_regex for router, _ in routers for route in router.routes]

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown_route(request: Request, path: str):
        """Every other /v1 path: the OpenAI 404 instead of the UI's (Gradio is mounted at /); a known path with
        another method: 405."""
        if any(path_regex.match(request.url.path) for path_regex in known):
            raise ApiError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
        raise ApiError(404, f"Invalid URL ({request.method} {request.url.path})", code="unknown_url")

    guard(app, settings, keys)
    if ui:
        import gradio as gr

        from ui.app import build_ui

        demo = build_ui(assistant, keys)
        gr.mount_gradio_app(
            app,
            demo,
            path="/",
            auth=None if keys.open else keys.ui_login,
            auth_message="Log in with your key as the password (user name 'admin' with an admin key).",
            max_file_size=f"{settings.ui_max_upload_mb}mb",
        )
    return app
