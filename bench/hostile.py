"""Hostile requests against a real `rag serve`: long questions cost their sender a 4xx, never everyone's service.

    .venv/bin/python bench/hostile.py [--index DIR] [--no-limits]

A fresh `rag serve` (backend none; the requests use model abstract-rag-evidence) on a free loopback port, on a copy of
the bundled index (or DIR). One at a time, then 16 at once: the issue's question ("How many denoising steps does
SnapFusion need? ", repeated) at 8 KB, 64 KB and 1 MB, with and without "?" (without, it is one part; with, one part
per repetition), streaming and not; a 1 MB search; an 8 MB body; and two questions within the limits. For each: the
status, the error code, the seconds to the response, the server's RSS growth (peak, VmHWM, over the RSS after a
first normal question), and the slowest /healthz answer while it ran (a thread polls /healthz every 50 ms).
Before the fix (the issue): 8 KB took the server over 3 GB, 1 MB to 24 GB and the kernel killed it; 1 MB without
"?" held every request, /healthz included, for 69 s.
--no-limits lifts RAG_MAX_QUESTION_CHARS and RAG_MAX_QUESTION_PARTS (to 2,000,000 and 100,000): what the embedder's
token budget and the linear regexes hold on their own.
Results: bench/results/hostile.json (hostile-no-limits.json) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import machine, ms, save, table
from serve import build_index, start_server

REPEATED = "How many denoising steps does SnapFusion need? "
KB = 1024
LIMITS = {"seconds": 5.0, "rss_mb": 500.0, "healthz_seconds": 2.0}


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / KB, int(fields["VmHWM"].split()[0]) / KB


def question(size: int, mark: bool) -> str:
    unit = REPEATED if mark else REPEATED.replace("?", "")
    return (unit * (size // len(unit) + 1))[:size]


class HealthPoller:
    """Polls /healthz every 50 ms in a thread; the slowest answer (or failure) in a time window."""

    def __init__(self, url: str):
        self.url, self.polls, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(f"{self.url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.polls.append((started, time.perf_counter() - started, ok))
                time.sleep(0.05)

    def worst(self, since: float, until: float) -> tuple[float | None, bool]:
        """The slowest poll that overlapped the window (None: the window fell between two polls)."""
        window = [(seconds, ok) for at, seconds, ok in self.polls if since <= at + seconds and at <= until]
        return max((s for s, _ in window), default=None), all(ok for _, ok in window)


def send(client: httpx.Client, url: str, kind: str, text: str, stream: bool = False) -> tuple[int, str]:
    """(status, error code or '') of one request; ('failed', the exception) when it got no response."""
    try:
        if kind == "search":
            r = client.post(f"{url}/v1/search", json={"query": text})
        else:
            body = {"model": "abstract-rag-evidence", "messages": [{"role": "user", "content": text}], "stream": stream}
            r = client.post(f"{url}/v1/chat/completions", json=body)
    except httpx.HTTPError as e:
        return "failed", type(e).__name__
    try:
        return r.status_code, r.json().get("error", {}).get("code") or ""
    except ValueError:  # a stream of events: an answer
        return r.status_code, ""


def send_alone(url: str, text: str) -> tuple[int, str]:
    with httpx.Client(timeout=300) as client:
        return send(client, url, "chat", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="a built index of the bundled corpus (else one is built)")
    parser.add_argument("--no-limits", action="store_true", help="lift the question length and parts limits")
    args = parser.parse_args()
    lifted = {"RAG_MAX_QUESTION_CHARS": "2000000", "RAG_MAX_QUESTION_PARTS": "100000"} if args.no_limits else {}
    cases = [
        ("question within the limits: 8 parts", "chat", REPEATED * 8, False),
        ("question within the limits: 3,990 characters", "chat", question(3990, False), False),
    ]
    for size, label in ((8 * KB, "8 KB"), (64 * KB, "64 KB"), (KB * KB, "1 MB")):
        for mark in (True, False):
            cases.append((f"{label} question {'with' if mark else 'without'} '?'", "chat", question(size, mark), False))
    cases += [
        ("1 MB question with '?', streamed", "chat", question(KB * KB, True), True),
        ("1 MB search query", "search", question(KB * KB, False), False),
        ("8 MB question (body past 4 MB)", "chat", question(8 * KB * KB, False), False),
    ]
    report = {"machine": machine(), "limits": LIMITS, "settings": lifted, "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        work = Path(tmp)
        index_dir = work / "index"
        if args.index:
            shutil.copytree(args.index, index_dir)
        else:
            index_dir = build_index(work)
        proc, url, startup = start_server(index_dir, "none", work / "serve.log", lifted)
        poller = HealthPoller(url)
        try:
            with httpx.Client(timeout=300) as client:
                assert send(client, url, "chat", REPEATED)[0] == 200  # every lazy load done
                base_rss, _ = rss_mb(proc.pid)
                poller.thread.start()
                for label, kind, text, stream in cases:
                    started = time.perf_counter()
                    status, code = send(client, url, kind, text, stream)
                    ended = time.perf_counter()
                    worst, up = poller.worst(started, ended)
                    report["rows"].append(
                        row(label, len(text), status, code, ended - started, proc, base_rss, worst, up)
                    )
                    print(f"{label}: {status} {code} in {ended - started:.2f} s", flush=True)

                if not args.no_limits:  # lifted: 16 x 67 s of scoring 22,000 parts on 2 cores (why the parts limit)
                    burst = [question(KB * KB, i % 2 == 0) for i in range(16)]
                    started = time.perf_counter()
                    with ThreadPoolExecutor(16) as pool:
                        results = list(pool.map(lambda q: send_alone(url, q), burst))
                    ended = time.perf_counter()
                    worst, up = poller.worst(started, ended)
                    statuses = "/".join(sorted({str(s) for s, _ in results}))
                    codes = "/".join(sorted({c for _, c in results}))
                    label = "16 clients at once, 1 MB each (all of them)"
                    report["rows"].append(
                        row(label, 16 * KB * KB, statuses, codes, ended - started, proc, base_rss, worst, up)
                    )
                assert send(client, url, "chat", REPEATED)[0] == 200  # still answering
        finally:
            poller.stop.set()
            proc.terminate()
            proc.wait(30)
        polls = poller.polls
        report["healthz"] = {
            "polls": len(polls),
            "slowest": max(t for _, t, _ in polls),
            "failed": sum(not ok for *_, ok in polls),
        }
        report["startup_seconds"] = startup
        report["base_rss_mb"] = round(base_rss, 1)
    path = save("hostile-no-limits" if args.no_limits else "hostile", report)
    print(markdown(report))
    print(f"\nsaved {path.relative_to(path.parents[2])}")


def row(label, chars, status, code, seconds, proc, base_rss, worst, up) -> dict:
    _, peak = rss_mb(proc.pid)
    return {
        "request": label,
        "characters": chars,
        "status": status,
        "code": code,
        "seconds": round(seconds, 3),
        "rss_growth_mb": round(peak - base_rss, 1),
        "healthz_worst_seconds": None if worst is None else round(worst, 3),
        "healthz_always_up": up,
    }


def markdown(report: dict) -> str:
    m, limits = report["machine"], report["limits"]
    lifted = ", ".join(f"{k}={v}" for k, v in report["settings"].items()) or "default limits"
    out = [
        f"{lifted}. Measured {m['date']} on {m['cpu']} ({m['nproc']} cores, load average "
        f"{m['load_avg_at_start']:.2f} at start), commit {m['commit']}; the server's RSS after a first question: "
        f"{report['base_rss_mb']:.0f} MB.\n"
    ]
    rows, ok = [], True
    for r in report["rows"]:
        good = (
            r["seconds"] <= limits["seconds"]
            and r["rss_growth_mb"] < limits["rss_mb"]
            and (r["healthz_worst_seconds"] or 0) < limits["healthz_seconds"]
            and r["healthz_always_up"]
        )
        ok = ok and good
        rows.append(
            [r["request"], r["status"], r["code"] or "–", f"{r['seconds']:.2f} s", f"{r['rss_growth_mb']:.0f} MB",
             ms(r["healthz_worst_seconds"]), "yes" if good else "**no**"]
        )  # fmt: skip
    out.append(table(["request", "status", "code", "time", "RSS growth (peak)", "slowest /healthz", "ok"], rows))
    h = report["healthz"]
    out.append(f"\n/healthz polled {h['polls']} times meanwhile: slowest {ms(h['slowest'])}, {h['failed']} failed.")
    out.append(
        f"ok: a 4xx or an answer within {limits['seconds']:g} s, RSS growth under {limits['rss_mb']:g} MB, "
        f"/healthz within {limits['healthz_seconds']:g} s throughout: {'all rows' if ok else 'NOT all rows'}."
    )
    return "\n".join(out)


if __name__ == "__main__":
    main()
