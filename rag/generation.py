"""Running the answer generator for many requests at once: deadlines, generation slots, and local models in worker
processes.

A local model (llamacpp, transformers) runs in child processes, one per generation slot (RAG_LLM_PARALLEL), and
streams its tokens back over a pipe. Native code can crash (llama.cpp's AMX weight repacking segfaulted on Xeons:
README "When the local LLM crashes"), so a worker that dies (a signal, out of memory) or hangs past the deadline
costs the answer in progress its generated sentences only: the caller gets an LLMError (the evidence answer stands,
with one notice), the worker is started again in the background, and no other request shares its fate.

Why not `concurrent.futures.ProcessPoolExecutor`: it hands back one result per call (no stream of tokens), and one
dead worker breaks the whole pool (BrokenProcessPool) for every request in flight. One `multiprocessing` Process
(spawn context: a threaded server is never forked) with its own Pipe per slot gives both streaming and failures that
stay with their slot. The protocol is four messages: the parent sends ("generate", messages) or ("stop", None); the
child answers ("delta", text)... then ("done", None) or ("error", line).

A remote endpoint (openai), and an LLM object handed to `Assistant` (test doubles), run in this process: in a thread
per generation, so that a dripping or hanging endpoint ends at the deadline.
"""

from __future__ import annotations

import importlib
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rag.llm import LLMError
from rag.models import ModelError
from rag.settings import Settings, error_line, mask_url

FACTORY = "rag.llm:make_llm"  # what a worker calls to make its LLM (tests name a double here)
LOAD_TIMEOUT = 600.0  # seconds a worker may take to load its model and pass the start-up check (an 8B GGUF: ~30 s)
STOP_GRACE = 2.0  # seconds an abandoned generation may take to stop at its next token before its worker is killed
RETRY_AFTER = 30.0  # seconds a worker that failed to start is not tried again (each try costs a model load)
POLL = 0.1  # seconds between checks that a silent worker is still alive
# The start-up check: one generation over an answer-sized prompt (more tokens than one batch of 512), so that the
# batched matrix products that crashed on AMX run, and every buffer is allocated, before a user's question comes.
CHECK_PROMPT = (
    "Context:\n"
    + " ".join(
        f"[{i}] Large language models are evaluated on reasoning benchmarks, where chain-of-thought prompting and "
        "retrieval of supporting passages improve accuracy while smaller distilled models keep most of the gains."
        for i in range(1, 21)
    )
    + "\n\nQuestion: Which approaches improve reasoning accuracy?"
)


class Deadline:
    """The time an answer may spend waiting for and using the LLM (RAG_LLM_DEADLINE), from when it was asked."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> LLMError:
        return LLMError(f"no complete answer within the deadline of {self.seconds:g} s (RAG_LLM_DEADLINE)")


class Slots:
    """Generators of which each serves one generation at a time: a local model's worker processes (RAG_LLM_PARALLEL
    of them), or one LLM object handed in. Generations wait for a free one. Searches and evidence never wait here."""

    def __init__(self, members: list):
        self.size = len(members)
        self._free: queue.Queue = queue.Queue()
        for member in members:
            self._free.put(member)

    @contextmanager
    def take(self, deadline: Deadline):
        while True:
            try:
                member = self._free.get(timeout=min(POLL, max(deadline.remaining(), 0.001)))
                break
            except queue.Empty:
                if deadline.remaining() <= 0:
                    raise LLMError(f"no free LLM slot within the deadline of {deadline.seconds:g} s") from None
        try:
            yield member
        finally:
            self._free.put(member)

    def retire(self) -> None:
        """Close every worker once its generation in progress has ended (the settings changed); in the background."""

        def close_all():
            for _ in range(self.size):
                member = self._free.get()
                if isinstance(member, LocalWorker):
                    member.close()

        threading.Thread(target=close_all, name="llm-retire", daemon=True).start()


def start_workers(settings: Settings, factory: str | None = None) -> Slots:
    """RAG_LLM_PARALLEL workers for a local backend, started (model loaded, start-up check passed) in parallel.
    A worker that cannot start raises its ModelError; the others are closed."""
    if settings.llm_backend == "llamacpp" and (factory or FACTORY) == "rag.llm:make_llm":
        from rag.models import gguf_location

        gguf_location(settings.llm_model)  # a path that is no GGUF fails now, not in each worker
    workers = [LocalWorker(settings, factory) for _ in range(settings.llm_parallel)]
    errors: list[BaseException] = []

    def start(worker):
        try:
            worker.ensure_started()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for w in workers:
            w.close()
        raise errors[0]
    return Slots(workers)


@dataclass(frozen=True)
class Writer:
    """The LLM an answer is written with: its name (for notices and `Answer.backend`) and where it runs: `slots`
    of worker processes (local models) or of one LLM object, or `llm`, an object of this process called directly
    (a remote endpoint, in parallel with others)."""

    name: str
    llm: Any = None
    slots: Slots | None = None

    def stream(self, messages, deadline: Deadline | None = None) -> Iterator[str]:
        """The LLM's answer as text deltas, bounded by the deadline on the wall clock, whatever the generator does
        (a steady stream, a drip, a hang, a crash). With slots, the generation first waits for a free one (within
        the deadline). A failure is re-raised as it came, or as a one-line LLMError when its message held URL
        credentials."""
        deadline = deadline or Deadline(float("inf"))
        if self.slots is None:
            yield from stream_in_thread(self.llm, messages, deadline)
            return
        with self.slots.take(deadline) as member:
            if isinstance(member, LocalWorker):
                yield from member.stream(messages, deadline)
            else:
                yield from stream_in_thread(member, messages, deadline, hold=True)


def stream_in_thread(llm, messages, deadline: Deadline, hold: bool = False) -> Iterator[str]:
    """An LLM object of this process, generating in its own thread: this generator ends at the deadline with an
    LLMError even while the endpoint streams steadily or hangs; the thread stops at its next token (or when its read
    times out); a remote endpoint's read timeout is cut to what is left of the deadline. hold: return only once the
    thread has stopped (up to STOP_GRACE), as the slot it holds is busy."""
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    stopped = threading.Event()

    def generate():
        try:
            kwargs = {}
            if settings_timeout(llm) is not None and deadline.remaining() < float("inf"):
                kwargs["timeout"] = max(0.1, min(settings_timeout(llm), deadline.remaining()))
            chunks = llm.stream_chat(messages, **kwargs)
            try:
                for chunk in chunks:
                    if stop.is_set():
                        break
                    out.put(chunk.delta or "")
            finally:
                close = getattr(chunks, "close", None)
                if close:
                    close()  # stops llama.cpp's generation, or closes the HTTP stream
            out.put(None)
        except BaseException as e:
            out.put(e)
        finally:
            stopped.set()

    threading.Thread(target=generate, name="llm-generation", daemon=True).start()
    try:
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise deadline.passed()
            try:
                item = out.get(timeout=remaining if remaining != float("inf") else None)
            except queue.Empty:
                raise deadline.passed() from None
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
        if hold:
            stopped.wait(STOP_GRACE)


def settings_timeout(llm) -> float | None:
    """The per-request timeout an OpenAI-compatible LLM accepts (None for others)."""
    timeout = getattr(llm, "timeout", None) if type(llm).__name__ in ("OpenAILike", "OpenAI") else None
    return float(timeout) if isinstance(timeout, (int, float)) else None


# --- local models in worker processes ---------------------------------------------------------------------------


class LocalWorker:
    """One child process holding one copy of the local model; one generation at a time (a Slots member).

    Started on first use and after a death, in the background; `close()` ends it. Thread-safe for one generation at
    a time (Slots ensures that) plus the restart thread."""

    def __init__(self, settings: Settings, factory: str | None = None):
        self.settings = settings
        self.factory = factory or FACTORY
        self._lock = threading.Lock()  # starting and stopping the child
        self._process = None
        self._conn = None
        self._failed: tuple[float, ModelError] | None = None
        self._closed = False

    def ensure_started(self) -> None:
        """Start the child if it is not running: it loads the model and passes the start-up check, or this raises a
        one-line ModelError (what failed, the setting to change)."""
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            self._discard()
            if self._closed:
                raise ModelError("the local LLM was replaced by another one")
            if self._failed and time.monotonic() - self._failed[0] < RETRY_AFTER:
                raise self._failed[1]
            try:
                self._process, self._conn = launch(self.settings, self.factory)
                self._failed = None
            except ModelError as e:
                self._failed = (time.monotonic(), e)
                raise

    def stream(self, messages, deadline: Deadline) -> Iterator[str]:
        """Text deltas of one generation in the child. A dead child or the deadline ends it with an LLMError; an
        abandoned generation (deadline, or the caller stopped reading) is stopped, or its child killed."""
        self.ensure_started()
        process, conn = self._process, self._conn
        ended = False
        try:
            conn.send(("generate", [(m.role.value, m.content) for m in messages]))
            while True:
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise deadline.passed()
                if not conn.poll(min(POLL, remaining)):
                    if not process.is_alive():
                        raise died(process)
                    continue
                kind, value = conn.recv()
                if kind == "delta":
                    if value:
                        yield value
                elif kind == "done":
                    ended = True
                    return
                else:
                    ended = True
                    raise LLMError(value)
        except (EOFError, OSError):
            raise died(process) from None
        finally:
            if not ended:
                self._settle(process, conn)

    def _settle(self, process, conn) -> None:
        """After an abandoned generation: ask the child to stop and drain the pipe to its end marker. A child that
        is dead, or does not stop within STOP_GRACE (hung in native code), is killed and started again in the
        background."""
        if process.is_alive():
            try:
                conn.send(("stop", None))
                until = time.monotonic() + STOP_GRACE
                while (left := until - time.monotonic()) > 0 and conn.poll(left):
                    if conn.recv()[0] in ("done", "error"):
                        return
            except (EOFError, OSError):
                pass
        self.restart()

    def restart(self) -> None:
        """Kill the child (if alive) and start a new one in the background; the next generation waits for it."""
        with self._lock:
            self._discard()

        def start():
            try:
                self.ensure_started()
            except ModelError:
                pass  # remembered: the next generation gets this error as its notice

        threading.Thread(target=start, name="llm-worker-restart", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._discard()

    def _discard(self) -> None:
        """Kill and forget the child (holding the lock)."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
            self._conn.close()
        self._process = self._conn = None


def how_it_ended(process) -> str:
    process.join(1)
    code = process.exitcode
    if code is None:
        return "stopped answering"
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def died(process) -> LLMError:
    return LLMError(f"the local LLM process died ({how_it_ended(process)}); it is restarted for the next question")


def launch(settings: Settings, factory: str):
    """A started child (process, connection) whose model loaded and passed the start-up check, or a ModelError."""
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    process = context.Process(target=serve, args=(child_conn, settings, factory), name="rag-llm-worker", daemon=True)
    process.start()
    child_conn.close()  # the child holds the other end: its death is an EOF here
    hint = (
        "set RAG_LLM_REPACK=false"
        if settings.llm_backend == "llamacpp" and settings.llm_repack
        else "set RAG_LLM_BACKEND=none for evidence-only answers, or another RAG_LLM_MODEL"
    )
    try:
        if not conn.poll(LOAD_TIMEOUT):
            raise ModelError(f"the local LLM did not load within {LOAD_TIMEOUT:g} s")
        kind, value = conn.recv()
    except (EOFError, OSError):
        raise ModelError(
            f"the local LLM process died ({how_it_ended(process)}) while loading or in its start-up check ({hint})"
        ) from None
    except ModelError:
        process.kill()
        raise
    if kind != "ready":
        process.join(5)
        raise ModelError(f"{value} ({hint})")
    return process, conn


# --- the child's side -------------------------------------------------------------------------------------------


def serve(conn, settings: Settings, factory: str) -> None:
    """The worker process: make the LLM, run the start-up check, then serve generations until the pipe closes."""
    from llama_index.core.llms import ChatMessage

    try:
        module, _, name = factory.partition(":")
        llm = getattr(importlib.import_module(module), name)(settings)
        if llm is None:
            raise ModelError(f"RAG_LLM_BACKEND={settings.llm_backend} has no local model")
        chunks = llm.stream_chat([ChatMessage(role="user", content=CHECK_PROMPT)])
        next(iter(chunks), None)  # the prompt is evaluated and one token generated
        close = getattr(chunks, "close", None)
        if close:
            close()
    except Exception as e:
        conn.send(("failed", f"the local LLM failed to load or in its start-up check: {error_line(e)}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if kind == "generate":
            generate(conn, llm, [ChatMessage(role=role, content=content) for role, content in payload])


def generate(conn, llm, messages) -> None:
    chunks = None
    try:
        chunks = llm.stream_chat(messages)
        for chunk in chunks:
            conn.send(("delta", chunk.delta or ""))
            if conn.poll() and conn.recv()[0] == "stop":
                break
        conn.send(("done", None))
    except (EOFError, OSError):
        raise SystemExit(0) from None  # the parent is gone
    except Exception as e:
        conn.send(("error", error_line(e)))
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()
