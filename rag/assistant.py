"""`Assistant`: the one object the CLI, the UI and library users call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from rag import answer as answering
from rag.answer import Answer
from rag.index import IndexReport, build_index
from rag.llm import describe, make_llm
from rag.models import load_embedder
from rag.search import Hit, Searcher
from rag.settings import Settings

LLM_FIELDS = {"llm_backend", "llm_model", "llm_max_tokens", "llm_temperature", "llm_threads", "llm_context"} | {
    f for f in Settings.model_fields if f.startswith("openai_")
}
INDEX_FIELDS = {
    "index_dir",
    "embed_model",
    "embed_runtime",
    "candidates",
    "chroma_url",
    "chroma_token",
    "chroma_headers",
}


class Assistant:
    """Search and cited answers over one index. Models load on first use and are kept.

    `llm` may be given (a llama-index LLM, e.g. a scripted fake in tests); otherwise it is made from the settings.
    """

    def __init__(self, settings: Settings | None = None, llm=None):
        self.settings = settings or Settings()
        self._searcher: Searcher | None = None
        self._llm = llm
        self._llm_given = llm is not None
        self._llm_lock = threading.Lock()  # one generation at a time per local model

    @classmethod
    def open(cls, **overrides) -> Assistant:
        """Settings from RAG_* variables and .env, with keyword overrides (e.g. index_dir=..., llm_backend=...)."""
        return cls(Settings(**overrides))

    # --- state --------------------------------------------------------------------------------------------

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            self._searcher = Searcher(self.settings)
        return self._searcher

    @property
    def llm(self):
        if self._llm is None and self.settings.llm_backend != "none":
            self._llm = make_llm(self.settings)
        return self._llm if self.settings.llm_backend != "none" or self._llm_given else None

    def configure(self, **changes) -> None:
        """Change settings for the next question (backend, model, k, mode, ...) without a restart."""
        changes = {k: v for k, v in changes.items() if getattr(self.settings, k) != v}
        if not changes:
            return
        self.settings = Settings.model_validate({**self.settings.model_dump(), **changes})
        if LLM_FIELDS & changes.keys():
            self._llm, self._llm_given = None, False
        if INDEX_FIELDS & changes.keys():
            self._searcher = None

    def reload(self) -> None:
        """Pick up a newly published index generation."""
        self._searcher = None

    # --- the API ------------------------------------------------------------------------------------------

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Hit]:
        return self.searcher.search(query, k=k, mode=mode)

    def stream(
        self, question: str, history: list | None = None, k: int | None = None, mode: str | None = None
    ) -> Iterator[str | Answer]:
        """Yield the answer text in pieces as it is verified, then the final `Answer`."""
        s = self.settings
        embedder = load_embedder(s.embed_model, s.embed_batch_size, s.embed_runtime)
        with self._llm_lock:
            llm = self.llm
            yield from answering.run(
                question,
                history,
                settings=self.settings,
                searcher=self.searcher,
                embed=embedder.get_text_embedding_batch,
                llm=llm,
                backend=self.describe_llm(),
                k=k,
                mode=mode,
            )

    def ask(self, question: str, history: list | None = None, k: int | None = None, mode: str | None = None) -> Answer:
        for item in self.stream(question, history, k=k, mode=mode):
            if isinstance(item, Answer):
                return item
        raise RuntimeError("the answer pipeline ended without an answer")

    def add_files(self, paths: list[str | Path], skip_bad: bool = False, progress: bool = False) -> IndexReport:
        """Index more corpus files incrementally; the new papers are searchable as soon as this returns."""
        report = build_index(self.settings, paths, skip_bad=skip_bad, progress=progress)
        self.reload()
        return report

    def describe_llm(self) -> str:
        if self._llm_given:
            return f"custom: {self._llm.metadata.model_name}"
        return describe(self.settings)

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

    def sources(self) -> list[dict]:
        """Indexed source files with their paper counts."""
        counts: dict[str, int] = {}
        for paper in self.searcher.papers.values():
            counts[paper["source"]] = counts.get(paper["source"], 0) + 1
        return [{"source": name, "papers": n} for name, n in sorted(counts.items())]
