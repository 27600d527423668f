"""`Assistant`: the one object the CLI, the UI, the HTTP API and library users call.

One Assistant serves many requests at once. Nothing a request does mutates it: k and mode are arguments; the
settings and the LLM made from them are one immutable `Setup` that `configure` replaces as a whole (a request in
flight keeps the one it started with); a newer index generation is opened and warmed beside the current one and
swapped in. Only local-model generation is serialized (`rag.generation.Slots`), and it runs in worker processes,
so a crash in native code costs one answer its generated sentences, never the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rag import answer as answering
from rag import limits, storage
from rag.answer import Answer, AnswerStream
from rag.corpus import Paper
from rag.generation import Deadline, Slots, Writer, start_workers
from rag.index import IndexReport, build_index
from rag.llm import LOCAL_BACKENDS, admin_model, describe, make_llm
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
    llm: Any = None  # a llama-index LLM in this process (a remote endpoint, or one given); None otherwise
    slots: Slots | None = None  # local models: their worker processes (or the given LLM), one generation each
    given: bool = False  # the LLM was passed in (a custom or scripted LLM)
    loaded: bool = False
    error: str = ""  # why the LLM could not be loaded or failed its start-up check (one line, no secrets)

    def describe(self) -> str:
        return f"custom: {self.llm.metadata.model_name}" if self.given else describe(self.settings)

    @property
    def writer(self) -> Writer | None:
        """What answers generate with; None for evidence-only answers (backend 'none', or an LLM that failed)."""
        if self.llm is None and self.slots is None:
            return None
        return Writer(self.describe(), self.llm, self.slots)


def load(setup: Setup, strict: bool = False) -> Setup:
    """The setup with its LLM loaded. strict: a ModelError is raised (for `configure`), else kept as `error`."""
    if setup.loaded:
        return setup
    settings = setup.settings
    try:
        if setup.given:
            llm = setup.llm
            slots = Slots([llm]) if settings.llm_backend in LOCAL_BACKENDS else None
        elif settings.llm_backend in LOCAL_BACKENDS:
            llm, slots = None, start_workers(settings)  # each worker loads the model and passes a start-up check
        else:
            llm, slots = make_llm(settings), None
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
            if new.slots is not current.slots and current.slots is not None and not current.given:
                current.slots.retire()  # its workers end when the answers in flight on them are done

    def reload(self) -> None:
        """Open the newly published index generation now, and use it from the next request on."""
        with self._opening:
            self._searcher = open_searcher(self.settings)

    def warm(self) -> None:
        """Load every model and open the index now, so the first question is as fast as the next ones. A local LLM
        is loaded in its worker processes, each of which runs one generation before it is ready (the start-up
        check); if that fails, answers are the evidence answer and `health()` says why."""
        setup = self.loaded_setup()
        self.ask(WARM_QUESTION, generate=False)  # search, evidence scoring, the refusal test: every lazy load
        if setup.llm is not None and setup.slots is None:  # a remote endpoint: open its connection
            from llama_index.core.llms import ChatMessage

            try:
                for _delta in setup.writer.stream([ChatMessage(role="user", content=WARM_QUESTION)], Deadline(60)):
                    break
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
    ) -> AnswerStream:
        """The answer as it is written: iterate for the prose in pieces, each verified; then `.answer`.

        generate=False gives the evidence answer without the LLM (what backend 'none' gives), for this call only."""
        return AnswerStream(self._answer(question, history, k, mode, generate))

    def _answer(self, question, history, k, mode, generate) -> Generator[str, None, Answer]:
        setup = self.loaded_setup() if generate else self._setup
        deadline = Deadline(setup.settings.llm_deadline)  # from when asked; a first-use model load is not counted
        writer = setup.writer if generate else None
        answer = yield from answering.run(
            question,
            history,
            settings=setup.settings,
            searcher=self.searcher,
            writer=writer,
            deadline=deadline,
            k=k,
            mode=mode,
        )
        if generate and setup.error and not answer.refused:
            answer.notices.append(
                f"The LLM ({setup.describe()}) failed: {setup.error}. The answer is quoted from the evidence."
            )
        return answer

    def ask(self, question: str, history: list | None = None, **options) -> Answer:
        """The whole answer at once: `stream(question, history, **options)` run to its end (k, mode, generate)."""
        return self.stream(question, history, **options).result()

    def add_files(self, paths: list[str | Path], skip_bad: bool = False, progress: bool = False) -> IndexReport:
        """Index more corpus files incrementally; the new papers are searchable as soon as this returns."""
        report = build_index(self.settings, paths, skip_bad=skip_bad, progress=progress)
        self.reload()
        return report

    def add_upload(self, src: Path, name: str, progress: bool = False) -> tuple[Path, IndexReport]:
        """Index an uploaded corpus file (the UI's Library, POST /v1/admin/files): copied under the index's uploads
        folder with a safe name (UploadError for a wrong name, type or size), then indexed incrementally; a copy
        that fails to index is removed. Returns (where it was kept, the report)."""
        folder = storage.uploads_dir(Path(self.settings.index_dir))
        dest, existed = storage.save_upload(src, name, folder, self.settings.ui_max_upload_mb)
        try:
            return dest, self.add_files([dest], progress=progress)
        except BaseException:
            if not existed:
                dest.unlink(missing_ok=True)
            raise

    def switch_llm(self, backend: str, model: str = "bundled") -> str:
        """Switch the LLM for everyone's next question (an admin's action): a local model must be 'bundled' or one
        inside RAG_MODEL_DIR (ModelError otherwise); it is loaded before it replaces the current one. Returns the
        description of the LLM now in use."""
        changes = {"llm_backend": backend}
        if backend in LOCAL_BACKENDS:
            changes["llm_model"] = admin_model(model, self.settings.model_dir)
        self.configure(**changes)
        return self.describe_llm()

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

    def diagnose(self) -> dict:
        """What a bug report needs (`rag doctor`): the CPU and llama.cpp's view of it, the embedder's runtime, the
        index's state, and the LLM after its start-up check. Loads the models; every part that fails says why."""
        from rag.llm import cpu_report
        from rag.models import embed_model_label

        settings = self.settings
        out: dict = {"cpu": {**cpu_report(), "llm_repack": settings.llm_repack}}
        try:
            embedder = load_embedder(settings.embed_model, settings.embed_runtime)
            session = getattr(embedder, "session", None)
            out["embedder"] = {
                "model": embed_model_label(settings.embed_model, settings.embed_runtime),
                "runtime": settings.embed_runtime,
                "providers": session.get_providers() if session is not None else ["torch"],
            }
        except Exception as e:
            out["embedder"] = {"error": error_line(e)}
        try:
            out["index"] = {k: v for k, v in self.status().items() if k != "llm"}
        except Exception as e:
            out["index"] = {"index_dir": str(settings.index_dir), "error": error_line(e)}
        self.loaded_setup()
        out["llm"] = self.health()["llm"]
        return out

    def status(self) -> dict:
        """Index and LLM facts for status lines."""
        s = self.searcher
        return {
            "papers": s.manifest["papers"],
            "chunks": s.manifest["chunks"],
            "embed_model": s.manifest["embed_model"],
            "paper_vectors": storage.paper_vectors_of(s.manifest),
            "built_at": s.manifest.get("built_at", ""),
            "index_dir": str(self.settings.index_dir),
            "llm": self.describe_llm(),
        }

    def paper(self, paper_id: str) -> Paper | None:
        """One indexed paper, or None."""
        return self.searcher.papers.get(paper_id)

    def papers(self, paper_ids) -> dict[str, Paper]:
        """The indexed papers of these ids, by id (ids not in the index are left out); one lookup each."""
        table = self.searcher.papers
        return {pid: paper for pid in dict.fromkeys(paper_ids) if (paper := table.get(pid)) is not None}

    def papers_titled(self, titles: list[str]) -> list[Paper]:
        """The indexed papers whose normalized title is one of these titles'."""
        return self.searcher.papers.titled(titles)

    def sources(self) -> list[dict]:
        """Indexed source files with their paper counts (counted by the catalog, not by reading every paper)."""
        return [{"source": name, "papers": n} for name, n in self.searcher.catalog.source_counts()]
