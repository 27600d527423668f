"""One factory for the answer generator: llama-index LLM objects for llama.cpp, transformers and OpenAI-compatible
endpoints (`RAG_LLM_BACKEND`). Each import is lazy and a missing piece is an error naming what to install or set."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

from rag.models import BUNDLED, BUNDLED_LLM_NAME, ModelError, gguf_location
from rag.settings import Settings, mask_url

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


SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_report() -> dict:
    """The CPU and what llama.cpp makes of it (its system info line): what a bug report about a crash needs."""
    import platform

    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    try:
        import llama_cpp

        system_info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    except Exception as e:
        system_info = f"llama.cpp is not available: {e}"
    return {
        "model": model or platform.processor() or platform.machine(),
        "features": [f for f in SIMD_FLAGS if f in flags],
        "llama_cpp": system_info,
    }


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
                with weight_repacking(settings.llm_repack):
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


@contextmanager
def weight_repacking(enabled: bool):
    """llama.cpp loads models with "extra buffer types" by default: weights repacked for the CPU's fastest kernels
    (AMX on Intel Xeons). That path segfaulted on a Sapphire Rapids Xeon (ggml_backend_amx_mul_mat,
    ggml-org/llama.cpp#20824), so it is off unless RAG_LLM_REPACK=true (README "When the local LLM crashes" has the
    speed cost). llama-cpp-python's Llama takes no use_extra_bufts argument: it builds its model parameters from
    llama_model_default_params(), so for the load that function returns them with use_extra_bufts set. The served
    model loads in a worker process of its own (rag.generation), where nothing else runs during the swap."""
    import llama_cpp.llama_cpp as native

    defaults = native.llama_model_default_params

    def model_params():
        params = defaults()
        params.use_extra_bufts = enabled
        return params

    native.llama_model_default_params = model_params
    try:
        yield
    finally:
        native.llama_model_default_params = defaults


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
