"""abstract-rag: cited answers from research-paper abstracts."""

import os

# The bundled models live inside installed packages; never reach for a hub unless the user asks (HF_HUB_OFFLINE=0).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from rag.assistant import Assistant  # noqa: E402

__all__ = ["Assistant"]
