"""Shared helpers of the benchmarks: machine facts, worker subprocesses with their peak RSS, tables, ratios."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DEV_SET = ROOT / "tests" / "data" / "dev.jsonl"
PYTHON = sys.executable


def machine() -> dict:
    """Where and when the numbers were measured."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "commit": commit.stdout.strip(),
        "load_avg_at_start": os.getloadavg()[0],
    }


def worker_env() -> dict:
    """The environment of a user running `rag`: offline, no telemetry, default settings (no RAG_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    if CHROMA_URL:
        env["RAG_CHROMA_URL"] = CHROMA_URL  # bench/run.py --chroma-server: the same runs against a Chroma server
    return env


CHROMA_URL = ""  # set by bench/run.py --chroma-server
CHROMA_DIR = Path()


def run_worker(task: str, *args, workdir: Path) -> dict:
    """Run `bench/worker.py task args` in a fresh process; its JSON result plus wall seconds, CPU seconds (user +
    system, less sensitive than wall time to other load on the machine) and peak RSS (MB).

    The rusage comes from wait4() on that one child, so every run is measured on its own.
    """
    out = workdir / f"{task}-{time.time_ns()}.json"
    cmd = [PYTHON, str(BENCH / "worker.py"), task, str(out), *map(str, args)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, env=worker_env())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {task} failed with exit code {proc.returncode}")
    result = json.loads(out.read_text())
    out.unlink()
    return {
        **result,
        "process_seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20, 1)


def ratio(value: float | None, baseline: float | None) -> str:
    """'×0.42' style ratio of a figure to its baseline, or '–'."""
    if value is None or not baseline:
        return "–"
    r = value / baseline
    return f"×{r:.2f}" if r >= 0.1 else f"×{r:.2g}"


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; numbers right-aligned."""
    out = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {**data, "load_avg_after": os.getloadavg()[0]}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def secs(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:.2f} s"
