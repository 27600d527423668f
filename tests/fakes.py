"""Test doubles: a scripted LLM (a real llama-index CustomLLM, so the pipeline's calls are the production ones)."""

from __future__ import annotations

from typing import Any

from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback


class ScriptedLLM(CustomLLM):
    """Streams `script` piece by piece; raises `error` after `fail_after` pieces; records every prompt."""

    script: list[str] = []
    fail_after: int | None = None
    error: str = "connection reset by peer"
    prompts: list[str] = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        return CompletionResponse(text="".join(self.script))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        self.prompts.append(prompt)

        def gen():
            text = ""
            if not self.script:  # servers end even an empty answer with one empty chunk
                yield CompletionResponse(text="", delta="")
            for i, piece in enumerate(self.script):
                if self.fail_after is not None and i == self.fail_after:
                    raise ConnectionError(self.error)
                text += piece
                yield CompletionResponse(text=text, delta=piece)

        return gen()


def tokens(text: str) -> list[str]:
    """Split text into word-sized streaming pieces, as an LLM would send it."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]
