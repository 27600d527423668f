"""`Assistant`: the one object the CLI, the UI, the HTTP API and library users call.

One Assistant serves many requests at once. Nothing a request does mutates it: k and mode are arguments; the
settings and the LLM made from them are one immutable `Setup` that `configure` replaces as a whole (a request in
flight keeps the one it started with); a newer index generation is opened and warmed beside the current one and
swapped in. Only local-model generation is serialized (`rag.llm.Slots`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rag import answer as answering
from rag import limits, storage
from rag.answer import Answer
from rag.index import IndexReport, build_index
from rag.llm import (
    EVIDENCE_ONLY,
    LOCAL_BACKENDS,
    Deadline,
    Slots,
    describe,
    make_llm,
    make_slots,
    stream_text,
)
from rag.models import load_embedder
from rag.search import Hit, Searcher
from rag.settings import Settings, error_line
from rag.vectors import VectorStoreError

LLM_FIELDS = {
    "llm_backend",
    "llm_model",
    "llm_max_tokens",
    "llm_temperature",
    "llm_threads",
    "llm_context",
    "llm_parallel",
} | {f for f in Settings.model_fields if f.startswith("openai_")}
INDEX_FIELDS = {
    "index_dir",
    "embed_model",
    "embed_runtime",
    "candidates",
    "chroma_url",
    "chroma_token",
    "chroma_headers",
}
FRESHNESS_CHECK_SECONDS = 1.0  # how often a request may look for a newly published index generation
WARM_QUESTION = "Which papers improve large language models?"


@dataclass(frozen=True)
class Setup:
    """Settings and the LLM made from them, replaced together and never changed in place."""

    settings: Settings
    llm: Any = None  # a llama-index LLM; None for backend 'none', before loading, or when loading failed
    slots: Slots | None = None  # local models: the contexts generations take turns on
    given: bool = False  # the LLM was passed in (a custom or scripted LLM)
    loaded: bool = False
    error: str = ""  # why the LLM could not be loaded (one line, no secrets)

    def describe(self) -> str:
        return f"custom: {self.llm.metadata.model_name}" if self.given else describe(self.settings)


def load(setup: Setup, strict: bool = False) -> Setup:
    """The setup with its LLM loaded. strict: a ModelError is raised (for `configure`), else kept as `error`."""
    if setup.loaded:
        return setup
    settings = setup.settings
    try:
        if setup.given:
            llm = setup.llm
            slots = Slots([llm]) if settings.llm_backend in LOCAL_BACKENDS else None
        else:
            llm = make_llm(settings)
            slots = make_slots(settings, llm) if llm is not None else None
    except Exception as e:
        if strict:
            raise
        return replace(setup, loaded=True, error=error_line(e))
    return replace(setup, llm=llm, slots=slots, loaded=True)


def open_searcher(settings: Settings) -> Searcher:
    """A Searcher with its retrievers built and models loaded, ready to answer at full speed. A Chroma that cannot be
    reached does not stop it: BM25 search works without it, dense search raises a VectorStoreError naming Chroma,
    and `searcher.vector_error` says why (in /healthz)."""
    searcher = Searcher(settings)
    searcher.search(WARM_QUESTION, k=1, mode="bm25")  # the BM25 tables
    try:
        searcher.search(WARM_QUESTION, k=1, mode="dense")  # the embedding model, then the paper vectors
    except VectorStoreError:
        pass
    return searcher


class Assistant:
    """Search and cited answers over one index. `warm()` loads everything; otherwise models load on first use.

    `llm` may be given (a llama-index LLM, e.g. a scripted fake in tests); otherwise it is made from the settings.
    """

    def __init__(self, settings: Settings | None = None, llm=None):
        self._setup = Setup(settings or Settings(), llm=llm, given=llm is not None)
        self._searcher: Searcher | None = None
        self._changing = threading.Lock()  # configure and LLM loading, one at a time
        self._opening = threading.Lock()  # opening an index generation, one at a time
        self._checked = 0.0
        self._open_error = ""  # why the index could not be opened (one line), for /healthz

    @classmethod
    def open(cls, **overrides) -> Assistant:
        """Settings from RAG_* variables and .env, with keyword overrides (e.g. index_dir=..., llm_backend=...)."""
        return cls(Settings(**overrides))

    # --- state --------------------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._setup.settings

    def loaded_setup(self) -> Setup:
        setup = self._setup
        if setup.loaded:
            return setup
        with self._changing:
            if self._setup.settings is setup.settings and not self._setup.loaded:
                self._setup = load(self._setup)
            return self._setup

    @property
    def llm(self):
        return self.loaded_setup().llm

    @property
    def searcher(self) -> Searcher:
        """The current index generation's Searcher. At most once a second a request checks whether a build has
        published a newer one; if so it is opened and warmed in the background and replaces this one when ready
        (requests in flight keep the Searcher they started with)."""
        searcher = self._searcher
        if searcher is None:
            with self._opening:
                if self._searcher is None:
                    try:
                        self._searcher = open_searcher(self.settings)
                    except Exception as e:
                        self._open_error = error_line(e, typed=False)
                        raise
                return self._searcher
        now = time.monotonic()
        if now - self._checked >= FRESHNESS_CHECK_SECONDS:
            self._checked = now
            if storage.live_version(Path(self.settings.index_dir)) != searcher.version and self._opening.acquire(
                blocking=False
            ):
                threading.Thread(target=self._swap_searcher, name="index-reopen", daemon=True).start()
        return searcher

    def _swap_searcher(self) -> None:
        """Open and warm the live generation, then swap it in; runs holding `_opening` and releases it."""
        try:
            self._searcher = open_searcher(self.settings)
        except Exception:
            pass  # e.g. the generation vanished meanwhile: keep serving the current one, try again later
        finally:
            self._opening.release()

    def configure(self, **changes) -> None:
        """Change settings for the next questions (backend, model, ...) without a restart.

        The new LLM is loaded before it replaces the old one; if it cannot be loaded, this raises and nothing
        changes. Requests in flight finish with the settings and LLM they started with."""
        with self._changing:
            current = self._setup
            changes = {k: v for k, v in changes.items() if getattr(current.settings, k) != v}
            if not changes:
                return
            settings = Settings.model_validate({**current.settings.model_dump(), **changes})
            if LLM_FIELDS & changes.keys():
                new = load(Setup(settings), strict=True)
            else:
                new = replace(current, settings=settings)
            if INDEX_FIELDS & changes.keys():
                with self._opening:
                    self._searcher = open_searcher(settings)
            self._setup = new

    def reload(self) -> None:
        """Open the newly published index generation now, and use it from the next request on."""
        with self._opening:
            self._searcher = open_searcher(self.settings)

    def warm(self) -> None:
        """Load every model and open the index now, so the first question is as fast as the next ones."""
        setup = self.loaded_setup()
        self.ask(WARM_QUESTION, generate=False)  # search, evidence scoring, the refusal test: every lazy load
        hits = self.search(WARM_QUESTION, k=setup.settings.answer_papers)
        abstracts = [self.searcher.papers[h.paper_id]["abstract"] for h in hits]
        if setup.llm is not None:
            from llama_index.core.llms import ChatMessage

            # an answer-sized prompt in each context (the slots rotate), so every buffer is allocated before users come
            prompt = "Context:\n" + "\n".join(abstracts)[:3000] + f"\n\nQuestion: {WARM_QUESTION}"
            for _ in range(setup.slots.size if setup.slots else 1):
                try:
                    for _delta in stream_text(
                        setup.llm, [ChatMessage(role="user", content=prompt)], slots=setup.slots, deadline=Deadline(60)
                    ):
                        break  # the first token: the prompt is evaluated
                except Exception:
                    pass  # a failing endpoint shows in the answers' notices, not at start-up

    # --- the API ------------------------------------------------------------------------------------------

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Hit]:
        limits.check_text(query, "the query", self.settings.max_question_chars)
        return self.searcher.search(query, k=k, mode=mode)

    def stream(
        self,
        question: str,
        history: list | None = None,
        k: int | None = None,
        mode: str | None = None,
        generate: bool = True,
    ) -> Iterator[str | Answer]:
        """Yield the answer text in pieces as it is verified, then the final `Answer`.

        generate=False gives the evidence answer without the LLM (what backend 'none' gives), for this call only."""
        setup = self.loaded_setup() if generate else self._setup
        deadline = Deadline(setup.settings.llm_deadline)  # from when asked; a first-use model load is not counted
        backend = setup.describe() if generate else EVIDENCE_ONLY
        embedder = load_embedder(setup.settings.embed_model, setup.settings.embed_runtime)
        for item in answering.run(
            question,
            history,
            settings=setup.settings,
            searcher=self.searcher,
            embed=embedder.encode,
            llm=setup.llm if generate else None,
            backend=backend,
            k=k,
            mode=mode,
            slots=setup.slots,
            deadline=deadline,
        ):
            if isinstance(item, Answer) and generate and setup.error and not item.refused:
                item.notices.append(
                    f"The LLM ({backend}) failed: {setup.error}. The answer is quoted from the evidence."
                )
            yield item

    def ask(
        self,
        question: str,
        history: list | None = None,
        k: int | None = None,
        mode: str | None = None,
        generate: bool = True,
    ) -> Answer:
        for item in self.stream(question, history, k=k, mode=mode, generate=generate):
            if isinstance(item, Answer):
                return item
        raise RuntimeError("the answer pipeline ended without an answer")

    def add_files(self, paths: list[str | Path], skip_bad: bool = False, progress: bool = False) -> IndexReport:
        """Index more corpus files incrementally; the new papers are searchable as soon as this returns."""
        report = build_index(self.settings, paths, skip_bad=skip_bad, progress=progress)
        self.reload()
        return report

    def describe_llm(self) -> str:
        return self._setup.describe()

    def health(self) -> dict:
        """What /healthz reports: "degraded" when the LLM could not be loaded or failed its start-up check (answers
        are then the evidence answer, with a notice saying why), or when the index is missing or Chroma could not
        be reached at the last dense search (BM25 search and answers still work). Never waits on anything."""
        setup = self._setup
        llm = {"backend": setup.describe(), "ok": not setup.error}
        if setup.error:
            llm["error"] = setup.error
        index = self.index_health()
        return {"status": "degraded" if setup.error or not index["ok"] else "ok", "llm": llm, "index": index}

    def index_health(self) -> dict:
        """{"ok", "state": ok | missing | unusable | chroma unreachable, "papers", "error"} from what is known now: the
        open index generation and its last dense search; before one is open, the published manifest."""
        searcher = self._searcher
        if searcher is not None:
            papers = searcher.manifest["papers"]
            if searcher.vector_error:
                return {"ok": False, "state": "chroma unreachable", "papers": papers, "error": searcher.vector_error}
            return {"ok": True, "state": "ok", "papers": papers}
        manifest = storage.read_manifest(Path(self.settings.index_dir))
        if not manifest:
            return {"ok": False, "state": "missing", "papers": 0, "error": f"no index in {self.settings.index_dir}"}
        if self._open_error:
            return {"ok": False, "state": "unusable", "papers": manifest["papers"], "error": self._open_error}
        return {"ok": True, "state": "ok", "papers": manifest["papers"]}

    def status(self) -> dict:
        """Index and LLM facts for status lines."""
        s = self.searcher
        return {
            "papers": s.manifest["papers"],
            "chunks": s.manifest["chunks"],
            "embed_model": s.manifest["embed_model"],
            "built_at": s.manifest.get("built_at", ""),
            "index_dir": str(self.settings.index_dir),
            "llm": self.describe_llm(),
        }

    def paper(self, paper_id: str) -> dict | None:
        """One indexed paper (id, title, abstract, url, source, ...), or None."""
        return self.searcher.papers.get(paper_id)

    def sources(self) -> list[dict]:
        """Indexed source files with their paper counts."""
        counts: dict[str, int] = {}
        for paper in self.searcher.papers.values():
            counts[paper["source"]] = counts.get(paper["source"], 0) + 1
        return [{"source": name, "papers": n} for name, n in sorted(counts.items())]
