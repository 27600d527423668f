"""Serving benchmark: `rag serve` under 1, 4 and 16 concurrent OpenAI-client users, backend none and the default.

    .venv/bin/python bench/serve.py [--index DIR] [--quick]

For each backend a fresh `rag serve` process on a free loopback port (start-up includes loading every model):
- the first question after start-up against the same question asked again (warm at start);
- 1, 4 and 16 clients (threads, each its own `openai.OpenAI`) sharing the dev questions: p50/p95 latency, answers per
  second, errors (an exception, or a response without `references`/`refused`);
- default backend only: evidence-only (`abstract-rag-evidence`) answers and refusals (the dev set's unanswerable
  questions that the pipeline refuses), alone and while 4 clients keep the LLM generating.
Results: bench/results/serve.json (serve-quick.json with --quick) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
from common import DEV_SET, PYTHON, ROOT, machine, ms, ratio, save, table, worker_env

from rag.evaluate import percentile  # the same percentile as `rag eval` (linear interpolation)

LEVELS = (1, 4, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    index_dir: Path, backend: str, log: Path, settings: dict | None = None
) -> tuple[subprocess.Popen, str, float]:
    """`rag serve` in its own process (`settings`: more RAG_* variables); (process, base url, seconds until it
    answered /healthz)."""
    port = free_port()
    env = {**worker_env(), "RAG_INDEX_DIR": str(index_dir), "RAG_LLM_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    env.update(settings or {})
    started = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, "-m", "rag.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - started < 300:
        if proc.poll() is not None:
            raise RuntimeError(f"rag serve exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url, time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("rag serve did not start within 300 s")


def ask(client: openai.OpenAI, question: str, model: str = "abstract-rag") -> tuple[float, bool, dict]:
    """(seconds, ok, extras) of one non-streaming completion."""
    started = time.perf_counter()
    try:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
        extra = r.model_extra or {}
        ok = bool(r.choices[0].message.content) and "references" in extra and "refused" in extra
        return time.perf_counter() - started, ok, extra
    except Exception as e:  # counted as an error, never fatal
        return time.perf_counter() - started, False, {"error": f"{type(e).__name__}: {e}"[:200]}


def summary(latencies: list[float], errors: int, wall: float) -> dict:
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "answers_per_s": (len(latencies) - errors) / wall if wall else None,
        "wall": wall,
    }


def run_clients(url: str, questions: list[str], clients: int) -> dict:
    """`clients` threads share the questions (each asked once); the latency of each, the wall time of all."""
    todo: queue.Queue = queue.Queue()
    for q in questions:
        todo.put(q)
    latencies, errors, lock = [], [], threading.Lock()

    def worker():
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
        while True:
            try:
                q = todo.get_nowait()
            except queue.Empty:
                return
            seconds, ok, extra = ask(client, q)
            with lock:
                latencies.append(seconds)
                if not ok:
                    errors.append(extra.get("error", "incomplete response"))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {**summary(latencies, len(errors), time.perf_counter() - started), "error_samples": errors[:3]}


def probes(url: str, evidence_questions: list[str], absent: list[str], load_questions: list[str] | None) -> dict:
    """Evidence-only and refusal answers, one at a time, optionally while 4 clients keep the LLM busy."""
    stop = threading.Event()
    generated = []

    def generate():
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
        i = 0
        while not stop.is_set():
            generated.append(ask(client, load_questions[i % len(load_questions)])[0])
            i += 1

    busy = [threading.Thread(target=generate) for _ in range(4 if load_questions else 0)]
    for t in busy:
        t.start()
    if busy:
        time.sleep(3)  # the generations are under way
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    out = {}
    for name, model, qs in (
        ("evidence", "abstract-rag-evidence", evidence_questions),
        ("refusal", "abstract-rag", absent),
    ):
        results = [ask(client, q, model) for q in qs]
        refused = sum(1 for _, _, extra in results if extra.get("refused"))
        out[name] = {
            **summary([s for s, _, _ in results], sum(1 for _, ok, _ in results if not ok), 1),
            "refused": refused,
        }
    stop.set()
    for t in busy:
        t.join()
    out["generations_meanwhile"] = len(generated)
    return out


def first_vs_later(url: str, questions: list[str]) -> dict:
    """The first question after start-up against the next three, all different (llama.cpp reuses the evaluated
    prompt of a repeated question, so repeating the first one would flatter the later ones)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    # the client's own first-use cost (the openai package imports its chat types lazily, ~0.6 s here) is not the
    # server's: paid before the clock starts, with a request that does not answer anything
    client.models.list()
    _ = client.chat.completions
    first = ask(client, questions[0])[0]
    later = [ask(client, q)[0] for q in questions[1:4]]
    return {"first": first, "later_median": statistics.median(later)}


def build_index(work: Path) -> Path:
    index_dir = work / "index"
    env = {**worker_env(), "RAG_INDEX_DIR": str(index_dir), "PYTHONPATH": str(ROOT)}
    subprocess.run([PYTHON, "-m", "rag.cli", "index"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return index_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="a built index of the bundled corpus (else one is built)")
    parser.add_argument("--quick", action="store_true", help="fewer questions, for a local check")
    parser.add_argument("--backends", default="none,llamacpp", help="comma-separated (default none,llamacpp)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in DEV_SET.read_text().splitlines()]
    answerable = [r["question"] for r in rows if r["type"] != "unanswerable"]
    absent = [r["question"] for r in rows if r["type"] == "unanswerable"]
    n = {"none": 12 if args.quick else 180, "llamacpp": 8 if args.quick else 24}  # none: each question 3 times
    report = {"machine": machine(), "levels": list(LEVELS), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        index_dir = args.index or build_index(work)
        for backend in args.backends.split(","):
            proc, url, startup = start_server(index_dir, backend, work / f"serve-{backend}.log")
            try:
                result = {"startup_seconds": startup, "first_question": first_vs_later(url, answerable[:4])}
                questions = ((answerable + absent) * 3)[: n[backend]]
                result["clients"] = {c: run_clients(url, questions, c) for c in LEVELS}
                if backend == "llamacpp":
                    evidence_model = openai.OpenAI(base_url=f"{url}/v1", api_key="none", timeout=600)
                    # the unanswerable questions the pipeline refuses (before any LLM): 2 of 10 are not
                    refused = [q for q in absent if ask(evidence_model, q, "abstract-rag-evidence")[2].get("refused")]
                    ev, ab = answerable[-10:], refused
                    if args.quick:
                        ev, ab = ev[:4], ab[:4]
                    result["probes_alone"] = probes(url, ev, ab, None)
                    result["probes_while_generating"] = probes(url, ev, ab, answerable[:12])
                report["backends"][backend] = result
                print(f"{backend}: done (load average {os.getloadavg()[0]:.2f})", flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    report["load_avg_after"] = os.getloadavg()[0]
    path = save("serve-quick" if args.quick else "serve", report)
    print(markdown(report))
    print(f"\nsaved {path.relative_to(ROOT)}")


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"Measured {m['date']}, {m['nproc']} cores, load average {m['load_avg_at_start']:.2f} at start.\n"]
    rows = []
    for backend, r in report["backends"].items():
        one = r["clients"][1]["answers_per_s"] if 1 in r["clients"] else r["clients"]["1"]["answers_per_s"]
        for c, s in r["clients"].items():
            rows.append(
                [backend, c, s["requests"], s["errors"], ms(s["p50"]), ms(s["p95"]), f"{s['answers_per_s']:.2f}",
                 ratio(s["answers_per_s"], one)]
            )  # fmt: skip
    out.append(table(["backend", "clients", "requests", "errors", "p50", "p95", "answers/s", "vs 1 client"], rows))
    out.append("")
    rows = []
    for backend, r in report["backends"].items():
        f = r["first_question"]
        rows.append([backend, f"{r['startup_seconds']:.1f} s", ms(f["first"]), ms(f["later_median"]),
                     ratio(f["first"], f["later_median"])])  # fmt: skip
    out.append(table(["backend", "start-up (to /healthz)", "first question", "next 3 (median)", "ratio"], rows))
    r = report["backends"].get("llamacpp", {})
    if "probes_alone" in r:
        out.append("")
        rows = []
        for kind in ("evidence", "refusal"):
            alone, busy = r["probes_alone"][kind], r["probes_while_generating"][kind]
            rows.append([kind, busy["requests"], ms(alone["p50"]), ms(alone["p95"]), ms(busy["p50"]), ms(busy["p95"]),
                         ratio(busy["p95"], alone["p95"]), busy["errors"]])  # fmt: skip
        out.append(
            table(
                [
                    "answer (default backend)",
                    "requests",
                    "p50 alone",
                    "p95 alone",
                    "p50 while 4 generate",
                    "p95 while 4 generate",
                    "p95 ratio",
                    "errors",
                ],
                rows,
            )  # fmt: skip
        )
        out.append(f"\n{r['probes_while_generating']['generations_meanwhile']} generations ran during the probes.")
    return "\n".join(out)


if __name__ == "__main__":
    main()
