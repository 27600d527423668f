"""An OpenAI-compatible endpoint (real HTTP on 127.0.0.1) that answers like a capable model: for a dev question it
replays the labelled sentences of tests/data/claims-synthesis-dev.jsonl (faithful and subtly wrong, in order), their
[n] renumbered to the evidence the prompt shows, streamed or whole. `python -m tests.replay` prints two answers
before and after verification."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rag.citations import MARKER, parse_markers, strip_markers, text_units

CLAIMS = Path(__file__).parent / "data" / "claims-synthesis-dev.jsonl"
PROMPT_LINE = re.compile(r'^\[(\d+)\] (?:[^"\n]*?: )?(".*) \(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*$')


def squash(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def key(text: str) -> str:
    """What a sentence's words are, for finding it in an answer (markers, case and punctuation aside)."""
    return squash(strip_markers(text))


@dataclass
class Sent:
    id: str
    label: str
    text: str  # as the replay sent it, markers renumbered to the prompt's
    comparable: bool  # the prompt showed every quote the labelled evidence of its cited papers had


@dataclass
class Replay:
    rows: dict[str, list[dict]]  # question -> its labelled sentences, in answer order
    sent: dict[str, list[Sent]] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)

    def reply(self, prompt: str) -> str:
        question = next(
            (line[len("Question: ") :] for line in prompt.splitlines() if line.startswith("Question: ")), ""
        )
        rows = self.rows.get(question.strip())
        if not rows:
            return "OK."
        shown = {}  # title -> (n, quotes as the prompt shows them)
        for line in prompt.splitlines():
            m = PROMPT_LINE.match(line)
            if m:
                shown[squash(m.group(3))] = (int(m.group(1)), squash(m.group(2)))
        sent = []
        for row in rows:
            by_n = defaultdict(list)
            for e in row["evidence"]:
                by_n[e["n"]].append(e)
            mapping, comparable = {}, True
            for n in dict.fromkeys(parse_markers(row["sentence"])):
                evs = by_n.get(n, [])
                target = shown.get(squash(evs[0]["title"])) if evs else None
                if target is None:
                    comparable = False
                    continue
                mapping[n] = target[0]
                comparable &= all(squash(e["quote"]) in target[1] for e in evs)

            def renumber(m, mapping=mapping):
                return "[" + ", ".join(str(mapping.get(n, n)) for n in parse_markers(m.group(0))) + "]"

            text = MARKER.sub(renumber, row["sentence"])
            sent.append(Sent(row["id"], row["label"], text, comparable))
        self.sent[question.strip()] = sent
        self.prompts[question.strip()] = prompt
        return " ".join(s.text for s in sent)


def load(path: Path = CLAIMS) -> Replay:
    rows = defaultdict(list)
    for line in path.open(encoding="utf-8"):
        if line.strip():
            row = json.loads(line)
            rows[row["question"].strip()].append(row)
    return Replay(dict(rows))


def serve(replay: Replay) -> http.server.ThreadingHTTPServer:
    """The replay behind /v1/chat/completions on a free loopback port (stream or not, as asked)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            messages = body.get("messages") or []
            prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
            text = replay.reply(prompt)
            base = {"id": "replay", "created": 0, "model": body.get("model", "replay")}
            if not body.get("stream"):
                message = {"role": "assistant", "content": text}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                self.answer(200, "application/json", json.dumps({**base, "object": "chat.completion",
                                                                  "choices": [choice], "usage": usage}))  # fmt: skip
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            pieces = re.findall(r"\S+\s*", text) or [""]
            for i, piece in enumerate(pieces):
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                chunk = {**base, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            end = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()

        def answer(self, status, kind, payload):
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def survival(replay: Replay, answers: dict[str, str]) -> dict:
    """Of the replayed sentences the prompt's evidence can support (comparable), the faithful ones shown in the
    answer and the wrong ones shown; a MISCITED one shown re-cited to other papers counts as corrected, as in
    `rag eval`. Sentences citing quotes the prompt did not show are counted apart."""
    out = {"faithful": [0, 0], "wrong": [0, 0], "recited": 0, "not comparable": 0, "wrong shown": [],
           "faithful dropped": []}  # fmt: skip
    for question, text in answers.items():
        units = {key(u): set(parse_markers(u)) for u in text_units(text)}
        for s in replay.sent.get(question, []):
            if not s.comparable:
                out["not comparable"] += 1
                continue
            group = "faithful" if s.label == "SUPPORTED" else "wrong"
            cited = units.get(key(s.text))
            here = cited is not None
            if here and s.label == "MISCITED" and not cited & set(parse_markers(s.text)):
                out["recited"] += 1
                here = False
            out[group][0] += here
            out[group][1] += 1
            if here and group == "wrong":
                out["wrong shown"].append(s.id)
            if not here and group == "faithful":
                out["faithful dropped"].append(s.id)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.replay INDEX_DIR d012 d021`: those dev answers as the replay sends them (before) and as
    `rag ask` shows them (after verification), through a real replay endpoint and a `rag ask` process."""
    import os
    import subprocess
    import sys

    args = argv if argv is not None else sys.argv[1:]
    index_dir, wanted = args[0], args[1:] or ["d012", "d021"]
    data = load()
    server = serve(data)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    env = {**os.environ, "RAG_INDEX_DIR": index_dir, "RAG_LLM_BACKEND": "openai", "RAG_ANSWER_STYLE": "synthesis",
           "RAG_OPENAI_BASE_URL": url, "RAG_OPENAI_MODEL": "replay"}  # fmt: skip
    for question, rows in data.rows.items():
        if rows[0]["id"].split("-")[0] not in wanted:
            continue
        after = subprocess.run(
            [sys.executable, "-c", "import sys; from rag.cli import main; sys.exit(main())", "ask", question],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        before = " ".join(s.text for s in data.sent[question])
        print(f"Q: {question}\n\nBefore (the replayed model's text):\n{before}\n\nAfter (rag ask):\n{after}\n")
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
