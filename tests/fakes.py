"""Test doubles: a scripted LLM (a real llama-index CustomLLM, so the pipeline's calls are the production ones)."""

from __future__ import annotations

import random
import re
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


class SynthesisLLM(ScriptedLLM):
    """A "capable model" that reads the numbered context of its prompt and answers in sentences built from it: a
    paraphrase of the first paper's first quote (true), then that quote with a number changed, with a finding
    flipped, and spliced with the second paper's quote (each false under its [n])."""

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        from tests import adversarial

        quotes = [(int(n), q) for n, q in re.findall(r'^\[(\d+)\] "([^"]+)"', prompt, re.M)]
        (n1, first), second = quotes[0], quotes[min(1, len(quotes) - 1)][1]
        rng = random.Random(0)
        lines = [f"{adversarial.paraphrase(first).rstrip('.')} [{n1}]."]
        for false in (
            adversarial.change_number(first, rng),
            adversarial.flip_polarity(first) or adversarial.negate(first),
            adversarial.splice(first, second),
        ):
            if false:
                lines.append(f"{false.rstrip('.')} [{n1}].")
        self.script = tokens(" ".join(lines))
        return super().stream_complete(prompt, formatted, **kwargs)
