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

        quotes = [(int(n), q) for n, q in re.findall(r'^\[(\d+)\] (?:[^"\n]*: )?"([^"]+)"', prompt, re.M)]
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


FAULT = "ABSTRACT_RAG_TEST_FAULT"  # names a file; its content, "segv" or "hang", is the next answer's fault


class WorkerLLM(ScriptedLLM):
    """The local model of the worker-process tests, made in the child by `worker_llm` (rag.generation.FACTORY).

    It streams `script`. Its first generation is the worker's start-up check; in a later one, after two pieces, it
    kills its own process with SIGSEGV, or hangs, when the file named by $ABSTRACT_RAG_TEST_FAULT exists and says
    so. The file is removed first, so the restarted worker answers (and of two workers, one takes the fault)."""

    calls: int = 0

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        import os
        import signal
        import time

        self.calls += 1
        inner = super().stream_complete(prompt, formatted, **kwargs)

        def gen():
            for i, chunk in enumerate(inner):
                if i == 2 and self.calls > 1:
                    try:
                        path = os.environ.get(FAULT, "")
                        fault = open(path).read().strip()
                        os.unlink(path)
                    except OSError:
                        fault = ""
                    if fault == "segv":
                        os.kill(os.getpid(), signal.SIGSEGV)
                    elif fault == "hang":
                        time.sleep(3600)
                yield chunk

        return gen()


def worker_llm(settings) -> WorkerLLM:
    from tests.live import SCRIPT

    return WorkerLLM(script=SCRIPT, prompts=[])


class CrashingLLM(ScriptedLLM):
    """A local model that kills its worker with SIGSEGV in every generation, the start-up check included."""

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)


def crashing_llm(settings) -> CrashingLLM:
    return CrashingLLM()


class JudgingLLM(ScriptedLLM):
    """A capable model that also judges (RAG_VERIFY_WITH_LLM): judge prompts get `verdict`, except the two control
    questions, answered right (YES for "8 denoising steps", NO for "80"); every other prompt gets `script`."""

    verdict: str = "NO: the quotes do not say so"
    judged: list[str] = []

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        if "You check one sentence" not in prompt:
            return super().stream_complete(prompt, formatted, **kwargs)
        sentence = prompt.split("Sentence: ", 1)[1].split("\n", 1)[0]
        if "denoising steps" in sentence:
            reply = 'YES: "Our method needs only 8 denoising steps"' if " 8 " in sentence else "NO: it says 8"
        else:
            self.judged.append(sentence)
            reply = self.verdict

        def gen():
            yield CompletionResponse(text=reply, delta=reply)

        return gen()
