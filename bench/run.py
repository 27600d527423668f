"""Benchmarks: indexing, query latency, retrieval quality and scale, each against a baseline measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--skip-scale] [--sections indexing,query,quality,scale]

Every measured task runs in its own process (bench/worker.py), so wall time, CPU time and peak RSS are per run. Each
section saves bench/results/<section>.json (<section>-quick.json with --quick) with the machine and date; the Markdown
tables of all saved sections are printed and written to bench/results/tables.md (tables-quick.md), and the scale plot
to docs/scale.png (bench/results/scale-quick.png).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common
from common import RESULTS, ROOT, dir_mb, machine, ms, ratio, run_worker, save, secs, table

SECTIONS = ("indexing", "query", "quality", "scale")

# --- measuring ------------------------------------------------------------------------------------------------------


def measure_indexing(work: Path) -> dict:
    """The plain llama-index recipe, our cold `build_index`, then our re-index with nothing changed."""
    ours_dir, plain_dir = work / "index-ours", work / "index-plain"
    plain = run_worker("index-plain", plain_dir, workdir=work)
    cold = run_worker("index-ours", ours_dir, workdir=work)
    again = run_worker("index-ours", ours_dir, workdir=work)
    return {
        "plain": plain,
        "ours_cold": cold,
        "ours_reindex": again,
        "index_dir": str(ours_dir),
        "plain_dir": str(plain_dir),
    }


def measure_scale(work: Path, index_dir: Path, embed_rate: float, sizes: list[int]) -> dict:
    """Per corpus size: make the synthetic corpus, build it (one process), search it (another process)."""
    import synth

    runs = []
    for size in sizes:
        t = time.perf_counter()
        corpus = synth.make_corpus(index_dir, size, work / f"corpus-{size}")
        made = time.perf_counter() - t
        target = work / f"scale-{size}"
        build = run_worker("scale-build", work / f"corpus-{size}", target, corpus["vectors"], workdir=work)
        disk = dir_mb(target) + (dir_mb(common.CHROMA_DIR) if common.CHROMA_URL else 0.0)
        search = run_worker("scale-search", target, workdir=work)
        add = {
            n: run_worker("scale-add", work / f"corpus-{size}", target, corpus["vectors"], n, workdir=work)
            for n in (1, 1000)
        }
        r = build["report"]
        pipeline = r["seconds"] - r["embed_seconds"]  # everything but setting the (synthetic) vectors
        est_embed = r["chunks"] / embed_rate
        runs.append(
            {
                "papers": r["papers"],
                "chunks": r["chunks"],
                "corpus": corpus,
                "corpus_seconds": made,
                "build": build,
                "disk_mb": disk,
                "search": search,
                "add": add,
                "pipeline_seconds": pipeline,
                "est_embed_seconds": est_embed,
                "papers_per_s_without_embedding": r["papers"] / pipeline,
                "papers_per_s_estimated": r["papers"] / (pipeline + est_embed),
            }
        )
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(work / f"corpus-{size}", ignore_errors=True)
        print(f"scale {size:,}: built in {build['process_seconds']:.0f} s, searched", file=sys.stderr)
    return {
        "embed_chunks_per_s": embed_rate,
        "noise": synth.NOISE,
        "seed": synth.SEED,
        "method": synth.__doc__,
        "runs": runs,
    }


# --- rendering (from the saved JSON, so any section can be re-run alone) ---------------------------------------------

INDEXING_NOTE = (
    "Process = wall time of the whole command in a fresh process (interpreter, imports, model load, build, exit); "
    "CPU = its user + system time; build = the indexing call alone (wall). Peak RSS of that process. Ratios against "
    "the plain recipe: title + abstract Documents, default SentenceSplitter, HuggingFaceEmbedding over the same "
    "bundled model, `VectorStoreIndex.from_documents` into Chroma."
)
SEARCH_NOTE = (
    "Search: {n} dev questions per mode after 3 warm-up searches, k=10 papers, query embedding included. Ratios of "
    "p50 against the plain llama-index retriever (HuggingFaceEmbedding)."
)
ASK_NOTE = (
    "Answers with {backend} on {n} dev questions spread over the set ({refused} refused by ours, which skips the "
    "LLM), after a warm-up answer; OMP_WAIT_POLICY=PASSIVE as `rag ask/ui` set it. First text = the first verified "
    "sentence (or refusal) shown; the plain engine shows its first token. The same LLM object answers for both."
)
SCALE_NOTE = (
    "Each corpus = the 693 bundled papers + synthetic ones made of their recombined sentences (seeded). Chunk vectors "
    "are not computed by the model: bundled chunks keep their real vector, a synthetic chunk gets the normalized "
    "sentence-weighted mean of its 2-4 source papers' vectors plus N(0, {noise}²) noise per dimension, and each "
    "sentence (stored for evidence) its paper's vector plus the same noise. Everything else "
    "is `build_index` as `rag index` runs it (parse, chunk, Chroma add, paper vectors, BM25) in a fresh process. "
    "Throughput *without embedding* is measured; *with embedding* adds chunks / {rate:.1f} chunks/s, the model's rate "
    "measured on the bundled corpus in this run (extrapolated, not measured at that size). Ratios against the "
    "{first}-paper corpus."
)
SCALE_SEARCH_NOTE = (
    "Search: the 60 dev questions per mode after 3 warm-up searches, k=10; open = `Assistant` creation and a first "
    "search (models and index loaded); peak RSS of that search process; Recall@10 of the 50 answerable dev questions "
    "with hybrid search (the synthetic distractors reuse the real sentences, so they are harder than real papers)."
)


def render_indexing(d: dict) -> str:
    plain, cold, again = d["plain"], d["ours_cold"], d["ours_reindex"]
    r = cold["report"]

    def row(name: str, run: dict, papers: int, chunks: int) -> list:
        times = [secs(run["process_seconds"]), secs(run["cpu_seconds"]), secs(run["build_seconds"])]
        ratios = [ratio(run[k], plain[k]) for k in ("process_seconds", "cpu_seconds", "peak_rss_mb")]
        return [name, *times, f"{run['peak_rss_mb']:.0f} MB", papers, chunks, *ratios]

    rows = [
        row("plain llama-index recipe (baseline)", plain, plain["papers"], plain["chunks"]),
        row("ours, cold `build_index`", cold, r["papers"], r["chunks"]),
        row("ours, re-index with nothing changed", again, again["report"]["papers"], again["report"]["chunks"]),
    ]
    steps = [
        ("interpreter + imports + exit", cold["process_seconds"] - r["seconds"]),
        ("parse + chunk + model load", r["seconds"] - r["embed_seconds"] - r["store_seconds"] - r["bm25_seconds"]),
        ("embed (model)", r["embed_seconds"]),
        ("store (Chroma add)", r["store_seconds"]),
        ("BM25 (read back + build + save)", r["bm25_seconds"]),
    ]
    headers = ["run", "process", "CPU", "build", "peak RSS", "papers", "chunks"]
    headers += ["process vs plain", "CPU vs plain", "RSS vs plain"]
    shares = [[name, f"{s:.2f}", f"{s / cold['process_seconds']:.0%}"] for name, s in steps]
    return "\n\n".join([
        "### Indexing the bundled corpus",
        INDEXING_NOTE,
        table(headers, rows),
        "Where a cold `rag index` spends its time (share of the process wall time):",
        table(["step", "seconds", "share"], shares),
    ])  # fmt: skip


def render_query(d: dict) -> str:
    base = d["search"]["plain"]["p50"]
    names = {
        "plain": "plain llama-index retriever, top 10 chunks (baseline)",
        "hybrid": "ours, hybrid",
        "dense": "ours, dense",
        "bm25": "ours, bm25",
        "embed_query": "of which: embedding the query (ours)",
    }
    rows = [
        [names[m], ms(d["search"][m]["p50"]), ms(d["search"][m]["p95"]), ratio(d["search"][m]["p50"], base)]
        for m in names
        if m in d["search"]
    ]
    ours, plain = d["ask"], d["ask_plain"]
    ask_rows = [
        ["plain query engine: top 2 chunks, default prompt (baseline)", plain["questions"]]
        + [secs(plain[k]["p50"]) for k in ("first_token", "first_token", "total")]
        + [secs(plain["total"]["p95"]), "×1.00"],
        ["ours: `Assistant.stream`", ours["questions"]]
        + [secs(ours[k]["p50"]) for k in ("first_token", "first_text", "total")]
        + [secs(ours["total"]["p95"]), ratio(ours["total"]["p50"], plain["total"]["p50"])],
    ]
    ask_headers = ["answer", "n", "first token p50", "first text p50", "total p50", "total p95", "total vs plain"]
    return "\n\n".join([
        "### Query latency (bundled corpus, warm)",
        SEARCH_NOTE.format(n=d["search"]["hybrid"]["n"]),
        table(["search", "p50", "p95", "p50 vs plain"], rows),
        ASK_NOTE.format(backend=d["backend"], n=ours["questions"], refused=ours["refused"]),
        table(ask_headers, ask_rows),
        f"Peak RSS of this process (both pipelines and the LLM loaded): {d['peak_rss_mb']:.0f} MB.",
    ])  # fmt: skip


def render_quality(d: dict) -> str:
    base = d["plain"]["answerable"]
    names = {"plain": "plain llama-index retriever (baseline)", "dense": "ours, dense", "bm25": "ours, bm25"}
    names["hybrid"] = "ours, hybrid"
    rows = []
    for key, name in names.items():
        a, t = d[key]["answerable"], d[key]["by_type"]
        overall = [f"{a[k]:.3f}" for k in ("recall@5", "recall@10", "mrr")]
        per_type = [f"{t[k]['recall@10']:.3f}" for k in ("lookup", "fact", "multi")]
        rows.append([name, *overall, *per_type, ratio(a["mrr"], base["mrr"])])
    headers = ["retriever", "Recall@5", "Recall@10", "MRR", "R@10 lookup", "R@10 fact", "R@10 multi", "MRR vs plain"]
    return "\n\n".join([
        "### Retrieval quality (dev set, paper level)",
        f"{d['hybrid']['answerable']['n']} answerable dev questions (`rag eval --search-only`), k=10.",
        table(headers, rows),
    ])  # fmt: skip


def render_scale(d: dict) -> str:
    runs = d["runs"]
    b, first = runs[0], f"{runs[0]['papers']:,}"
    build_rows, search_rows = [], []
    for s in runs:
        r, h, build, search = s["build"]["report"], s["search"]["search"], s["build"], s["search"]
        build_rows.append([
            f"{s['papers']:,}", f"{s['chunks']:,}", f"{build['process_seconds']:.0f} s",
            f"{s['papers_per_s_without_embedding']:.0f}", f"{s['papers_per_s_estimated']:.1f}",
            f"{r['store_seconds']:.0f} s", f"{r['bm25_seconds']:.0f} s", f"{s['disk_mb']:.0f} MB",
            f"{build['peak_rss_mb']:.0f} MB", ratio(s["disk_mb"], b["disk_mb"]),
            ratio(build["peak_rss_mb"], b["build"]["peak_rss_mb"]),
            *(secs(s["add"][n]["add_seconds"]) if "add" in s else "–" for n in ("1", "1000")),
        ])  # fmt: skip
        search_rows.append([
            f"{s['papers']:,}", ms(h["hybrid"]["p50"]), ms(h["hybrid"]["p95"]), ms(h["dense"]["p50"]),
            ms(h["bm25"]["p50"]), secs(search["open_seconds"]), f"{search['peak_rss_mb']:.0f} MB",
            f"{search['dev_hybrid']['recall@10']:.3f}",
            ratio(h["hybrid"]["p50"], b["search"]["search"]["hybrid"]["p50"]),
            ratio(search["peak_rss_mb"], b["search"]["peak_rss_mb"]),
        ])  # fmt: skip
    build_headers = ["papers", "chunks", "build process", "papers/s w/o embedding", "papers/s with embedding (extrap.)"]
    build_headers += ["Chroma add", "BM25", "disk", "build peak RSS", f"disk vs {first}", f"RSS vs {first}"]
    build_headers += ["add 1 paper", "add 1,000 papers"]
    search_headers = ["papers", "hybrid p50", "hybrid p95", "dense p50", "bm25 p50", "open", "search peak RSS"]
    search_headers += ["dev R@10", f"hybrid p50 vs {first}", f"RSS vs {first}"]
    return "\n\n".join([
        "### Scale (synthetic corpora)",
        SCALE_NOTE.format(noise=d["noise"], rate=d["embed_chunks_per_s"], first=first),
        table(build_headers, build_rows),
        SCALE_SEARCH_NOTE,
        table(search_headers, search_rows),
    ])  # fmt: skip


def plot_scale(d: dict, path: Path) -> None:
    """Search latency, peak RSS, disk and index throughput against corpus size, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = d["runs"]
    n = [r["papers"] for r in runs]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for mode, style in (("hybrid", "o-"), ("dense", "s--"), ("bm25", "^:")):
        ax[0, 0].plot(n, [r["search"]["search"][mode]["p50"] * 1000 for r in runs], style, label=f"{mode} p50")
    ax[0, 0].plot(n, [r["search"]["search"]["hybrid"]["p95"] * 1000 for r in runs], "o-", alpha=0.4, label="hybrid p95")
    ax[0, 0].set(title="Search latency, warm (k=10, query embedding incl.)", ylabel="ms")
    ax[0, 1].plot(n, [r["build"]["peak_rss_mb"] for r in runs], "o-", label="index build (process peak)")
    ax[0, 1].plot(n, [r["search"]["peak_rss_mb"] for r in runs], "s--", label="search (process peak)")
    ax[0, 1].set(title="Peak RSS", ylabel="MB")
    ax[1, 0].plot(n, [r["disk_mb"] for r in runs], "o-", label="index generation on disk")
    ax[1, 0].set(title="Disk size (Chroma + BM25 + papers)", ylabel="MB")
    ax[1, 1].plot(n, [r["papers_per_s_without_embedding"] for r in runs], "o-", label="measured, vectors precomputed")
    ax[1, 1].plot(
        n,
        [r["papers_per_s_estimated"] for r in runs],
        "s--",
        label=f"with embedding, extrapolated ({d['embed_chunks_per_s']:.0f} chunks/s)",
    )
    ax[1, 1].set(title="Index throughput", ylabel="papers / s")
    for a in ax.flat:
        a.set(xscale="log", yscale="log", xlabel="papers in the index")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    m = d["machine"]
    fig.suptitle(
        f"abstract-rag at scale: synthetic corpora (bundled papers + recombined sentences, derived vectors), "
        f"{m['nproc']} cores ({m['cpu']}), {m['date']}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


RENDER = {"indexing": render_indexing, "query": render_query, "quality": render_quality, "scale": render_scale}


def render_all(suffix: str) -> str:
    """The tables of every saved section, each headed by where and when it was measured."""
    parts = []
    for name in SECTIONS:
        path = RESULTS / f"{name}{suffix}.json"
        if path.exists():
            d = json.loads(path.read_text())
            m = d["machine"]
            parts.append(
                RENDER[name](d) + f"\n\n_Measured {m['date']} on {m['nproc']} cores ({m['cpu']}, "
                f"{m['ram_gb']} GB RAM), Python {m['python']}, torch {m['torch']}, commit {m['commit']}; "
                f"load average {m['load_avg_at_start']:.2f} before, {d['load_avg_after']:.2f} after._"
            )
    return "\n\n".join(parts) + "\n"


def start_chroma(work: Path):
    """A `chroma run` server on a free local port; the workers use it through RAG_CHROMA_URL."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common.CHROMA_DIR = work / "chroma-server"
    chroma = Path(sys.executable).parent / "chroma"
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(common.CHROMA_DIR), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    common.CHROMA_URL = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{common.CHROMA_URL}/api/v2/heartbeat", timeout=1)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("chroma run did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scale 1k and 10k only, 6 answers")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary indexes")
    parser.add_argument(
        "--chroma-server", action="store_true", help="scale section against a local `chroma run` server"
    )
    parser.add_argument("--sizes", default="", help="scale corpus sizes, e.g. 1000,10000")
    parser.add_argument(
        "--reuse-index", default="", help="a built bundled index (rag index --json report beside it as report.json)"
    )
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s and not (args.skip_scale and s == "scale")]
    suffix = "-quick" if args.quick else ""
    info = machine()
    if info["load_avg_at_start"] > 0.5:
        print(
            f"warning: load average {info['load_avg_at_start']:.2f}: other processes share the CPU; timings will "
            "be noisy",
            file=sys.stderr,
        )
    work = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    started = time.perf_counter()
    try:
        if args.reuse_index:  # e.g. the scale section alone on a busy machine
            report = json.loads((Path(args.reuse_index) / "report.json").read_text())
            idx = {"machine": info, "index_dir": args.reuse_index, "plain_dir": "", "ours_cold": {"report": report}}
        else:
            idx = {"machine": info, **measure_indexing(work)}  # every other section uses this fresh index
        if "indexing" in sections:
            save("indexing" + suffix, idx)
        index_dir, plain_dir = idx["index_dir"], idx["plain_dir"]
        if "query" in sections:
            save(
                "query" + suffix,
                {
                    "machine": machine(),
                    **run_worker("query", index_dir, plain_dir, 6 if args.quick else 20, workdir=work),
                },
            )
        if "quality" in sections:
            save(
                "quality" + suffix, {"machine": machine(), **run_worker("quality", index_dir, plain_dir, workdir=work)}
            )
        if "scale" in sections:
            r = idx["ours_cold"]["report"]
            sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
            if args.sizes:
                sizes = [int(s) for s in args.sizes.split(",")]
            server = start_chroma(work) if args.chroma_server else None
            data = {
                "machine": machine(),
                **measure_scale(work, Path(index_dir), r["chunks"] / r["embed_seconds"], sizes),
            }
            if server:
                server.kill()
                data["chroma"] = "server"
            save("scale" + ("-server" if server else "") + suffix, data)
            plot_scale(data, RESULTS / "scale-quick.png" if args.quick else ROOT / "docs" / "scale.png")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = render_all(suffix)
    (RESULTS / f"tables{suffix}.md").write_text(text)
    print(text)
    print(f"Benchmark wall time {(time.perf_counter() - started) / 60:.1f} min.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
