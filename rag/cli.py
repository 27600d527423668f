"""The `rag` command. Every subcommand calls `Assistant` (or the indexer); errors are one line, exit code 1."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import get_args

from rag.settings import Backend, Mode, Settings, error_line, mask_url

# Seconds `rag serve` lets requests in flight finish after SIGTERM or Ctrl-C before it cancels them: an answer without
# the LLM takes ~50 ms, and a streaming answer that waits on a slow endpoint must not hold the shutdown (measured
# before: a stream open on a dripping endpoint kept the server up until SIGKILL).
SHUTDOWN_GRACE_SECONDS = 5


def cmd_index(args, settings: Settings) -> int:
    from rag.index import build_index

    report = build_index(
        settings,
        args.paths,
        rebuild=args.rebuild,
        skip_bad=args.skip_bad,
        progress=not args.json and sys.stderr.isatty() or args.progress,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    for line in report.bad_files:
        print(f"skipped: {line}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.summary())
    return 0


def cmd_search(args, settings: Settings) -> int:
    from rag.assistant import Assistant

    hits = Assistant(settings).search(args.query, k=args.k, mode=args.mode)
    if args.json:
        print(json.dumps({"query": args.query, "results": [h.to_dict() for h in hits]}, indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print("No papers found.")
    for h in hits:
        print(f"{h.rank:>2}. {h.title}  [{h.score:.3f}]")
        print(f"    {h.url}")
        print(f"    {h.snippet[:200]}")
    return 0


def with_backend(settings: Settings, backend: str | None) -> Settings:
    return Settings.model_validate({**settings.model_dump(), "llm_backend": backend}) if backend else settings


def print_answer_stream(assistant, question: str, history: list | None, k: int | None, mode: str | None):
    """Print the answer as it streams, then the references and any notice; returns the Answer."""
    from rag.answer import references_block

    stream = assistant.stream(question, history, k=k, mode=mode)
    for piece in stream:
        print(piece, end="", flush=True)
    answer = stream.answer
    print(references_block(answer.citations))  # each paper once, with its quoted sentences
    for notice in answer.notices:
        print(f"note: {notice}", file=sys.stderr)
    return answer


def cmd_ask(args, settings: Settings) -> int:
    from rag.assistant import Assistant
    from rag.limits import check_question

    check_question(args.question, None, settings)  # before any model loads

    assistant = Assistant(with_backend(settings, args.backend))
    if args.json:
        print(
            json.dumps(assistant.ask(args.question, k=args.k, mode=args.mode).to_dict(), indent=2, ensure_ascii=False)
        )
    else:
        print_answer_stream(assistant, args.question, None, args.k, args.mode)
    return 0


def cmd_chat(args, settings: Settings) -> int:
    from rag.assistant import Assistant
    from rag.limits import QuestionError

    assistant = Assistant(with_backend(settings, args.backend))
    assistant.warm()  # the index opened and the LLM's start-up check run before the first question
    llm = assistant.health()["llm"]
    if not llm["ok"]:
        print(f"note: {llm['error']}; answers are quoted from the evidence", file=sys.stderr)
    history: list[dict] = []
    print("Ask about the indexed papers. Follow-up questions use the conversation. /clear forgets it; Ctrl-D quits.")
    while True:
        try:
            question = input("\n> ").strip()
        except EOFError:
            print()
            return 0
        if question in ("/quit", "/exit"):
            return 0
        if question == "/clear":
            history.clear()
            continue
        if question:
            try:
                answer = print_answer_stream(assistant, question, history, args.k, args.mode)
            except QuestionError as e:  # this question only: the conversation goes on
                print(f"error: {e}", file=sys.stderr)
                continue
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.text}]


def cmd_serve(args, settings: Settings) -> int:
    """The UI at / and the OpenAI-compatible API at /v1 in one server; models load before it accepts requests."""
    import time

    import uvicorn

    from rag.access import Keys
    from rag.assistant import Assistant
    from rag.server import build_app
    from rag.storage import IndexingError
    from rag.vectors import VectorStoreError

    overrides = {k: v for k, v in (("ui_host", args.host), ("ui_port", args.port)) if v is not None}
    settings = Settings.model_validate({**settings.model_dump(), **overrides})
    keys = Keys(settings)
    keys.check_host(settings.ui_host)
    assistant = Assistant(settings)
    started = time.perf_counter()
    print("loading the models and the index ...", file=sys.stderr, flush=True)
    try:
        assistant.warm()
    except IndexingError as e:
        print(f"note: {error_line(e, typed=False)}; add a corpus file in the UI's Library tab", file=sys.stderr)
    except VectorStoreError as e:  # BM25 search and answers work meanwhile; /healthz says "degraded"
        print(f"note: {error_line(e, typed=False)}", file=sys.stderr)
    llm = assistant.health()["llm"]
    if not llm["ok"]:
        print(f"note: {llm['error']}; answers are quoted from the evidence", file=sys.stderr)
    host = f"[{settings.ui_host}]" if ":" in settings.ui_host else settings.ui_host
    access = "no keys: this machine only, no login" if keys.open else f"{len(keys.roles)} keys"
    print(
        f"ready in {time.perf_counter() - started:.1f} s on http://{host}:{settings.ui_port}/ (UI), /v1 (API), "
        f"/docs; LLM {assistant.describe_llm()}; {access}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        build_app(assistant, keys),
        host=settings.ui_host,
        port=settings.ui_port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    return 0


def cmd_eval(args, settings: Settings) -> int:
    from rag.assistant import Assistant
    from rag.evaluate import evaluate, format_markdown

    report = evaluate(
        Assistant(with_backend(settings, args.backend)),
        args.file,
        mode=args.mode,
        limit=args.limit,
        answers=not args.search_only,
        progress=not args.json,
    )
    print(json.dumps(report, indent=2) if args.json else format_markdown(report))
    return 0


def cmd_config(args, settings: Settings) -> int:
    values = settings.masked()
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        width = max(map(len, values))
        for name, value in values.items():
            print(f"RAG_{name.upper():<{width}}  {value}")
    return 0


def cmd_doctor(args, settings: Settings) -> int:
    """What to paste into a bug report: CPU, llama.cpp, embedder, index, and the LLM's start-up check."""
    from rag.assistant import Assistant

    report = Assistant(settings).diagnose()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cpu, embedder, index, llm = report["cpu"], report["embedder"], report["index"], report["llm"]
    print(f"CPU        {cpu['model']}; {', '.join(cpu['features']) or 'no AVX2'}")
    print(f"llama.cpp  {cpu['llama_cpp']}")
    print(f"           weight repacking {'on' if cpu['llm_repack'] else 'off'} (RAG_LLM_REPACK)")
    if "error" in embedder:
        print(f"embedder   error: {embedder['error']}")
    else:
        print(f"embedder   {embedder['model']} on {embedder['runtime']} ({', '.join(embedder['providers'])})")
    if "error" in index:
        print(f"index      {index['index_dir']}: {index['error']}")
    else:
        built = f"{index['papers']} papers, {index['chunks']} chunks, built {index['built_at']}"
        print(f"index      {index['index_dir']}: {built}")
    state = "ok (start-up check passed)" if llm["ok"] else f"cannot run: {llm['error']}"
    print(f"LLM        {llm['backend']}: {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Cited answers from research-paper abstracts.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index corpus files (the bundled corpus when the index is empty)")
    p.add_argument(
        "paths", nargs="*", help="corpus files or folders to add (.txt page scrape, .json/.jsonl, .csv, .bib)"
    )
    p.add_argument("--rebuild", action="store_true", help="start from scratch instead of updating")
    p.add_argument("--skip-bad", action="store_true", help="index the good files and list the bad ones")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_index)

    p = sub.add_parser("search", help="find papers")
    p.add_argument("query")
    p.add_argument("--k", type=int, default=None, help="number of papers (default RAG_SEARCH_K)")
    p.add_argument("--mode", choices=get_args(Mode), default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_search)

    for name, helptext in (
        ("ask", "answer a question with cited evidence"),
        ("chat", "a conversation in the terminal"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "ask":
            p.add_argument("question")
            p.add_argument("--json", action="store_true", help="print the whole Answer as JSON")
        p.add_argument("--backend", choices=get_args(Backend), default=None)
        p.add_argument("--k", type=int, default=None, help="papers retrieved (default RAG_SEARCH_K)")
        p.add_argument("--mode", choices=get_args(Mode), default=None)
        p.set_defaults(run=cmd_ask if name == "ask" else cmd_chat)

    for name in ("serve", "ui"):
        p = sub.add_parser(
            name,
            help="start the server: chat UI at /, OpenAI-compatible API at /v1 (http://127.0.0.1:7860)"
            if name == "serve"
            else "the same as serve",
        )
        p.add_argument("--host", default=None, help="address to bind (default RAG_UI_HOST, 127.0.0.1); needs keys")
        p.add_argument("--port", type=int, default=None, help="port (default RAG_UI_PORT, 7860)")
        p.set_defaults(run=cmd_serve)

    p = sub.add_parser("eval", help="quality and latency on a question set (JSONL)")
    p.add_argument("file", help="questions, e.g. tests/data/dev.jsonl")
    p.add_argument("--backend", choices=get_args(Backend), default=None)
    p.add_argument("--mode", choices=get_args(Mode), default=None)
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--search-only", action="store_true", help="retrieval metrics only, no answers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("doctor", help="what a bug report needs: CPU, llama.cpp, embedder, index, LLM check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_doctor)

    p = sub.add_parser("config", help="print the effective settings (secrets masked)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rag.corpus import CorpusError
    from rag.models import ModelError
    from rag.storage import IndexingError

    args = build_parser().parse_args(argv)
    if args.command in ("ask", "chat", "ui", "serve", "eval", "doctor"):
        # torch's OpenMP threads spin after each embedding and starve llama.cpp's threads on 2 cores (first answer
        # after a search 6.6-8.8 s with this, 14.8-92 s without, in the browser test); indexing is 10% faster
        # without it, so only the commands that answer set it (before torch is imported).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        settings = Settings()
        return args.run(args, settings)
    except (CorpusError, IndexingError, ModelError, RuntimeError, ValueError) as e:  # ValueError: settings too
        print(f"error: {error_line(e, typed=False)}", file=sys.stderr)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {mask_url(str(e.strerror or e))}{where}; the existing index is unchanged", file=sys.stderr)
    except sqlite3.Error as e:  # the index's SQLite files, e.g. "database or disk is full"
        print(f"error: {error_line(e, typed=False)}; the existing index is unchanged", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; the existing index is unchanged", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
