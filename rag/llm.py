"""One factory for the answer generator: llama-index LLM objects for llama.cpp, transformers and OpenAI-compatible
endpoints (`RAG_LLM_BACKEND`). Each import is lazy and a missing piece is an error naming what to install or set."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

from rag.models import BUNDLED, BUNDLED_LLM_NAME, ModelError, gguf_location
from rag.settings import Settings, error_line, mask_url

LOCAL_BACKENDS = {"llamacpp", "transformers"}
EVIDENCE_ONLY = "none (evidence only)"


class LLMError(RuntimeError):
    """The LLM failed while answering (unreachable, timed out, bad output); the evidence answer still stands."""


def gguf_chat_template(model) -> Callable[[Sequence], str]:
    """messages_to_prompt for llama-index's LlamaCPP from the chat template stored in the GGUF itself.

    LlamaCPP formats prompts with Llama-2 tags unless told otherwise; a hand-written ChatML made SmolLM2 answer
    "Repeat exactly: ..." with an unrelated math story, while its own template (which adds its default system
    prompt) repeats the text exactly.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelError("the GGUF has no chat template (tokenizer.chat_template); use an instruct model")
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=model.detokenize([model.token_eos()]).decode(errors="ignore"),
        bos_token=model.detokenize([model.token_bos()]).decode(errors="ignore"),
    )

    def to_prompt(messages: Sequence) -> str:
        return formatter(messages=[{"role": m.role.value, "content": m.content} for m in messages]).prompt

    return to_prompt


def describe(settings: Settings) -> str:
    """The active LLM, for status lines."""
    match settings.llm_backend:
        case "none":
            return EVIDENCE_ONLY
        case "openai":
            return f"openai: {settings.openai_model} at {mask_url(settings.openai_base_url)}"
        case backend:
            return f"{backend}: {BUNDLED_LLM_NAME if settings.llm_model == BUNDLED else settings.llm_model}"


def make_llm(settings: Settings):
    """A llama-index LLM for the configured backend, or None for 'none'."""
    match settings.llm_backend:
        case "none":
            return None
        case "llamacpp":
            try:
                from llama_index.llms.llama_cpp import LlamaCPP
            except ImportError:
                raise ModelError(
                    "the llamacpp backend needs llama-cpp-python and llama-index-llms-llama-cpp "
                    "(pip install abstract-rag), or set RAG_LLM_BACKEND"
                ) from None
            path = gguf_location(settings.llm_model)
            try:
                llm = LlamaCPP(
                    model_path=str(path),
                    temperature=settings.llm_temperature,
                    max_new_tokens=settings.llm_max_tokens,
                    context_window=settings.llm_context,
                    generate_kwargs={"stop": ["<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>"]},
                    model_kwargs={"n_threads": settings.llm_threads, "n_ctx": settings.llm_context},
                    verbose=False,
                )
            except (ValueError, RuntimeError) as e:
                raise ModelError(f"cannot load {path} with llama.cpp (RAG_LLM_MODEL): {e}") from None
            llm.messages_to_prompt = gguf_chat_template(llm._model)
            return llm
        case "transformers":
            return make_transformers_llm(settings)
        case "openai":
            try:
                from llama_index.llms.openai_like import OpenAILike
            except ImportError:
                raise ModelError("the openai backend needs llama-index-llms-openai-like") from None
            key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
            return OpenAILike(
                model=settings.openai_model,
                api_base=settings.openai_base_url,
                api_key=key or os.environ.get("OPENAI_API_KEY") or "not-needed",
                is_chat_model=True,
                context_window=settings.llm_context,
                max_tokens=settings.llm_max_tokens,
                temperature=settings.llm_temperature,
                timeout=settings.openai_timeout,
                max_retries=settings.openai_retries,
            )
    raise ModelError(f"unknown RAG_LLM_BACKEND {settings.llm_backend!r} (llamacpp, transformers, openai or none)")


def make_transformers_llm(settings: Settings):
    """llama-index's HuggingFaceLLM over a model we load: a path or hub id, or the bundled GGUF via `gguf_file=`."""
    try:
        import torch
        from llama_index.llms.huggingface import HuggingFaceLLM
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ModelError("the transformers backend needs transformers and llama-index-llms-huggingface") from None
    if settings.llm_model == BUNDLED or settings.llm_model.endswith(".gguf"):
        path = gguf_location(settings.llm_model)
        where, extra = str(path.parent), {"gguf_file": path.name}
    else:
        where, extra = settings.llm_model, {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **extra)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **extra).eval()
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {settings.llm_model!r} with transformers (RAG_LLM_MODEL): {e}") from None
    torch.set_num_threads(settings.llm_threads)

    def to_prompt(messages: Sequence) -> str:
        rows = [{"role": m.role.value, "content": m.content} for m in messages]
        return tokenizer.apply_chat_template(rows, tokenize=False, add_generation_prompt=True)

    sampling = (
        {"do_sample": False}
        if settings.llm_temperature == 0
        else {"do_sample": True, "temperature": settings.llm_temperature}
    )
    return HuggingFaceLLM(
        model=model,
        tokenizer=tokenizer,
        model_name=settings.llm_model,
        context_window=settings.llm_context,
        max_new_tokens=settings.llm_max_tokens,
        messages_to_prompt=to_prompt,
        generate_kwargs=sampling,
        device_map="cpu",
        is_chat_model=True,
    )


# --- using the LLM from many requests at once -------------------------------------------------------------------


class Deadline:
    """The time an answer may spend waiting for and using the LLM (RAG_LLM_DEADLINE), from when it was asked."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()


class Slots:
    """LLM instances of which each serves one generation at a time: a local model has one context per instance
    (RAG_LLM_PARALLEL of them); generations wait for a free one. Searches and evidence never wait for this."""

    def __init__(self, llms: list):
        self.size = len(llms)
        self._free: queue.Queue = queue.Queue()
        for llm in llms:
            self._free.put(llm)

    @contextmanager
    def take(self, give_up: threading.Event):
        while True:
            try:
                llm = self._free.get(timeout=0.05)
                break
            except queue.Empty:
                if give_up.is_set():
                    raise TimeoutError("gave up waiting for a free LLM context") from None
        try:
            yield llm
        finally:
            self._free.put(llm)


def make_slots(settings: Settings, first) -> Slots | None:
    """Slots for a local backend (the first instance given, the others loaded here); None for remote ones."""
    if settings.llm_backend not in LOCAL_BACKENDS:
        return None
    return Slots([first] + [make_llm(settings) for _ in range(settings.llm_parallel - 1)])


def stream_text(llm, messages, *, slots: Slots | None = None, deadline: Deadline | None = None) -> Iterator[str]:
    """The LLM's answer as text deltas, bounded by the deadline.

    A local model generates in one of `slots` (held for the generation only); a remote endpoint is called directly,
    in parallel with others, with its read timeout cut to what is left of the deadline. The generation runs in its
    own thread so that an endpoint that drips one token a second, or hangs, ends here at the deadline with an
    LLMError; the thread stops at its next token (or when its read times out) and frees its slot.
    A failure is re-raised as it came, or as a one-line LLMError when its message held URL credentials.
    """
    deadline = deadline or Deadline(float("inf"))
    out: queue.Queue = queue.Queue()
    stop = threading.Event()

    def generate():
        try:
            with slots.take(stop) if slots else nullcontext(llm) as model:
                if stop.is_set():
                    return
                kwargs = {}
                if settings_timeout(model) is not None and deadline.remaining() < float("inf"):
                    kwargs["timeout"] = max(0.1, min(settings_timeout(model), deadline.remaining()))
                chunks = model.stream_chat(messages, **kwargs)
                try:
                    for chunk in chunks:
                        out.put(chunk.delta or "")
                        if stop.is_set():
                            break
                finally:
                    close = getattr(chunks, "close", None)
                    if close:
                        close()  # stops llama.cpp's generation, or closes the HTTP stream
            out.put(None)
        except BaseException as e:
            out.put(e)

    threading.Thread(target=generate, name="llm-generation", daemon=True).start()
    try:
        while True:
            try:
                remaining = deadline.remaining()
                item = out.get(timeout=max(0.0, remaining) if remaining != float("inf") else None)
            except queue.Empty:
                raise LLMError(
                    f"no complete answer within the deadline of {deadline.seconds:g} s (RAG_LLM_DEADLINE)"
                ) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                if mask_url(str(item)) != str(item):
                    raise LLMError(error_line(item)) from None  # the message named a URL with credentials
                raise item
            if item:
                yield item
    finally:
        stop.set()


def settings_timeout(llm) -> float | None:
    """The per-request timeout an OpenAI-compatible LLM accepts (None for others)."""
    timeout = getattr(llm, "timeout", None) if type(llm).__name__ in ("OpenAILike", "OpenAI") else None
    return float(timeout) if isinstance(timeout, (int, float)) else None


def admin_model(name: str, model_dir: Path | None) -> str:
    """The model an admin may switch to: 'bundled', or a file or folder inside RAG_MODEL_DIR. The error is the same
    for a path outside that folder, existing or not, so the setting cannot probe the server's file system."""
    name = (name or "").strip() or BUNDLED
    if name == BUNDLED:
        return BUNDLED
    refused = ModelError(f"{name!r} is not 'bundled' or a model inside RAG_MODEL_DIR")
    if model_dir is None:
        raise refused
    root = Path(model_dir).expanduser().resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root or not path.exists():
        raise refused
    return str(path)
