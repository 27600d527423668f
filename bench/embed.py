"""Indexing's embedding cost: a cold `rag index` of the bundled corpus with and without sentence vectors, with
paper vectors from each paper's head (the default) and from its chunks (RAG_PAPER_VECTORS=chunks, the default before
issue 20: its build without sentence vectors is the baseline), and the embedder's settings (ONNX Runtime
threads, int8 against float32, batch size, sorting by tokens against characters). Medians of interleaved rounds,
ratios against a baseline of the same run: the machine is shared, absolute times move, ratios much less.

    .venv/bin/python bench/embed.py [--rounds 3] [--base DIR] [--sections index,embedder] [--papers 256]

--base DIR adds `rag index` runs of another checkout (e.g. a worktree of main) to the same rounds. Writes
bench/results/embed.json and prints Markdown tables (README "Index at scale"); `bench/embed.py --print FILE`
prints the tables of a saved result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, ROOT, machine, ratio, save, table, worker_env  # noqa: E402


def cold_index(tree: Path, env: dict) -> dict:
    """`python -m rag.cli index --json` of the bundled corpus into an empty index directory, in a fresh process
    (the ONNX export is cached); wall and CPU seconds from wait4() on that process."""
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        full = {**worker_env(), **env, "RAG_INDEX_DIR": tmp, "PYTHONPATH": str(tree)}
        out = Path(tmp) / "report.json"
        started = time.perf_counter()
        with out.open("w") as f:
            proc = subprocess.Popen([PYTHON, "-m", "rag.cli", "index", "--json"], cwd=tree, env=full, stdout=f)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"rag index failed in {tree} with {env}")
        report = json.loads(out.read_text())
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "embed": report["embed_seconds"],
        "papers": report["papers"],
        "rss_mb": usage.ru_maxrss / 1024,
    }


BASELINE = "chunk paper vectors, without sentence vectors"


def index_section(rounds: int, base: Path | None) -> dict:
    variants = {
        BASELINE: (ROOT, {"RAG_SENTENCE_VECTORS": "false", "RAG_PAPER_VECTORS": "chunks"}),
        "chunk paper vectors, with sentence vectors (the default before)": (ROOT, {"RAG_PAPER_VECTORS": "chunks"}),
        "head paper vectors, without sentence vectors": (ROOT, {"RAG_SENTENCE_VECTORS": "false"}),
        "head paper vectors, with sentence vectors (default)": (ROOT, {}),
    }
    if base:
        variants["base: without sentence vectors"] = (base, {"RAG_SENTENCE_VECTORS": "false"})
        variants["base: with sentence vectors"] = (base, {})
    runs: dict[str, list] = {name: [] for name in variants}
    for r in range(rounds):
        for name, (tree, env) in variants.items():
            runs[name].append(cold_index(tree, env))
            print(f"round {r + 1}: {name}: {runs[name][-1]['wall']:.1f} s", file=sys.stderr)
    out = {}
    for name, rows in runs.items():
        out[name] = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        out[name]["walls"] = [round(row["wall"], 1) for row in rows]
    return out


def chunk_texts(papers: int) -> tuple[list[str], list[str]]:
    """The chunk texts and the sentences of the first `papers` bundled papers, as `rag index` embeds them."""
    from rag.index import BUNDLED_DIR, chunk_papers, load_papers, node_text
    from rag.models import load_embedder
    from rag.sentences import split_sentences

    found, *_ = load_papers([str(BUNDLED_DIR)], skip_bad=False)
    found = found[:papers]
    nodes = chunk_papers(found, load_embedder("bundled"), 256)
    return [node_text(n) for n in nodes], [s for p in found for s in split_sentences(p.abstract)]


def with_session(embedder, threads: int, spinning: bool, parallel: int):
    """A copy of the embedder whose ONNX session runs `threads` threads per run, `parallel` runs at once."""
    import copy

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    other = copy.copy(embedder)
    other.session = ort.InferenceSession(embedder.session._model_path, options, providers=["CPUExecutionProvider"])
    other.parallel = parallel
    return other


def padded_tokens(texts: list[str], embedder, size: int, key) -> tuple[int, int]:
    """(real tokens, tokens the runs compute) when texts sorted by `key` are cut into runs of `size`."""
    lengths = [len(embedder.token_ids(t)) + 2 for t in texts]  # + [CLS], [SEP]
    order = sorted(range(len(texts)), key=lambda i: key(texts[i]))
    runs = [order[s : s + size] for s in range(0, len(order), size)]
    return sum(lengths), sum(max(lengths[i] for i in run) * len(run) for run in runs)


def embedder_section(rounds: int, papers: int) -> dict:
    import rag.index
    from rag.models import load_embedder

    texts, sentences = chunk_texts(papers)
    int8, fp32 = load_embedder("bundled"), load_embedder("bundled", "onnx")
    cores = os.cpu_count() or 1
    variants = {
        f"int8, 1 thread per run, {int8.parallel} runs at once, batch 16 (default)": (int8, 16),
        "int8, batch 8": (int8, 8),
        "int8, batch 32": (int8, 32),
        f"int8, {cores} threads per run, one run at once, no spinning": (with_session(int8, cores, False, 1), 16),
        f"int8, {cores} spinning threads, one run at once (ONNX Runtime's default)": (
            with_session(int8, cores, True, 1),
            16,
        ),
        "float32, 1 thread per run (as the default)": (fp32, 16),
    }
    for embedder, _ in variants.values():
        embedder.encode(texts[:4])  # warm
    runs: dict[str, list] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (embedder, size) in variants.items():
            t = time.perf_counter()
            rag.index.embed_texts(texts, embedder, size)
            runs[name].append(time.perf_counter() - t)
    out = {"chunks": len(texts), "sentences": len(sentences)}
    out["seconds"] = {name: statistics.median(v) for name, v in runs.items()}
    size = 16 // int8.parallel
    real, by_tokens = padded_tokens(texts, int8, size, lambda t: len(int8.token_ids(t)))
    _, by_chars = padded_tokens(texts, int8, size, len)
    _, unsorted = padded_tokens(texts, int8, size, lambda t: 0)
    sreal, s_tokens = padded_tokens(sentences, int8, size, lambda t: len(int8.token_ids(t)))
    out["padding"] = {
        "chunks, real tokens": real,
        "sorted by tokens": by_tokens,
        "sorted by characters": by_chars,
        "in corpus order": unsorted,
        "sentences, real tokens": sreal,
        "sentences sorted by tokens": s_tokens,
    }
    t = time.perf_counter()
    for _ in range(3):
        [len(int8.token_ids(x)) for x in texts]
    out["token_count_seconds"] = (time.perf_counter() - t) / 3
    return out


def print_tables(result: dict) -> None:
    m = result.get("machine_index") or result["machine_embedder"]
    print(f"\n{m['cpu']}, {m['nproc']} cores, load average {m['load_avg_at_start']:.2f} at start, {m['date']}\n")
    if "index" in result:
        rows = result["index"]
        plain, base_plain = rows[BASELINE], rows.get("base: without sentence vectors", {})
        headers = ["cold `rag index`, bundled corpus", "wall (median)", "runs", "CPU (user+sys)", "peak RSS"]
        out = []
        for name, r in rows.items():
            baseline = base_plain if name.startswith("base") else plain
            out.append(
                [
                    name,
                    f"{r['wall']:.1f} s ({ratio(r['wall'], baseline.get('wall'))})",
                    " / ".join(map(str, r["walls"])),
                    f"{r['cpu']:.1f} s ({ratio(r['cpu'], baseline.get('cpu'))})",
                    f"{r['rss_mb']:.0f} MB",
                ]
            )
        print(table(headers, out))
    if "embedder" in result:
        e = result["embedder"]
        secs = e["seconds"]
        first = next(iter(secs.values()))
        print(f"\nembedding {e['chunks']} chunks ({e['sentences']} sentences) in-process, medians:\n")
        print(table(["embedder", "seconds", "ratio"], [[k, f"{v:.2f} s", ratio(v, first)] for k, v in secs.items()]))
        p = e["padding"]
        real = p["chunks, real tokens"]
        print(
            "\ntokens computed (padding included), runs of 8 chunks: "
            + ", ".join(f"{k} {v:,} (×{v / real:.3f})" for k, v in p.items() if k.startswith(("sorted", "in")))
            + f"; counting tokens {e['token_count_seconds'] * 1000:.0f} ms"
        )


def main() -> int:
    if sys.argv[1:2] == ["--print"]:  # the tables of a saved result: bench/embed.py --print FILE
        print_tables(json.loads(Path(sys.argv[2]).read_text()))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", type=Path, help="another checkout whose `rag index` runs in the same rounds")
    parser.add_argument("--sections", default="index,embedder")
    parser.add_argument("--papers", type=int, default=256, help="papers whose chunks the embedder section embeds")
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    saved = ROOT / "bench" / "results" / "embed.json"
    result: dict = json.loads(saved.read_text()) if saved.exists() else {}  # the sections not run are kept
    sections = args.sections.split(",")
    if "embedder" in sections:
        result.update(machine_embedder=machine(), embedder=embedder_section(args.rounds, args.papers))
    if "index" in sections:
        result.update(machine_index=machine(), index=index_section(args.rounds, args.base))
    save("embed", result)
    print_tables({k: v for k, v in result.items() if k.split("_")[-1] in sections})
    return 0


if __name__ == "__main__":
    sys.exit(main())
