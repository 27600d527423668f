"""abstract-rag: cited answers from research-paper abstracts."""

import os

# The bundled models live inside installed packages; never reach for a hub unless the user asks (HF_HUB_OFFLINE=0).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# torch's OpenMP threads spin after each embedding batch and starve llama.cpp's threads on 2 cores (first answer
# after a search: 6.6-8.8 s with this, 14.8-92 s without, measured in the browser test)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rag.assistant import Assistant  # noqa: E402

__all__ = ["Assistant"]
