"""Every function that runs regexes over user text, timed on 1 MB of pathological text against 1 KB of the same.

    .venv/bin/python bench/long_text.py [--size-kb 1024]

Linear work takes ~1024x as long on 1 MB as on 1 KB; a backtracking regex ~1,000,000x (before the fix,
`does .* (outperform|beat|improve)` took 69 s on a 1 MB question and held the GIL, so every request waited). Each
function gets each input (a unit repeated to the size: the issue's question with and without "?", and the units that
made some pattern backtrack) and the worst ratio is printed. The question limits (RAG_MAX_QUESTION_CHARS) keep these
inputs out of a server; this is the second line of defence, for what gets past them (the conversation, evidence,
generated text, corpus files).
Results: bench/results/long_text.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import time

from common import machine, save, table

from rag import answer, catalog, citations, conversation, evidence, sentences, settings
from rag.evidence import Evidence

QUESTION = "How many denoising steps does SnapFusion need to beat Stable Diffusion v1.5 with 50 steps?"
UNITS = ["How many denoising steps does SnapFusion need? ", "How many denoising steps does SnapFusion need ",
         "does x ", "when was ", "what did ", " ", "a.", ".", ", and ", "? ", "[1", "1,", "<|", "://a@", "aB ",
         "A "]  # fmt: skip
EVIDENCE = [Evidence(1, "p1", "SnapFusion", "https://arxiv.org/abs/1", "Our model needs 8 denoising steps.", 0.9, 1)]
FUNCTIONS = {
    "evidence.question_parts": evidence.question_parts,
    "evidence.asked_kind (FACT_KINDS)": evidence.asked_kind,
    "evidence.ANSWER_KINDS (what a question asks)": lambda t: [k.search(t) for k, _ in evidence.ANSWER_KINDS],
    "evidence.content_terms": evidence.content_terms,
    "evidence.topic_words": lambda t: evidence.topic_words(t, set()),
    "evidence.BOILERPLATE": evidence.BOILERPLATE.search,
    "conversation.is_followup": conversation.is_followup,
    "answer.WHICH_PAPERS / WHICH_PAPER": lambda t: (answer.WHICH_PAPERS.search(t), answer.WHICH_PAPER.search(t)),
    "answer.answering_clause": lambda t: answer.answering_clause(t, QUESTION),
    "answer.quoted": answer.quoted,
    "citations.check_sentence (the verifier)": lambda t: citations.check_sentence(t, EVIDENCE, QUESTION),
    "citations.numbers": citations.numbers,
    "citations.names": citations.names,
    "citations.clauses": citations.clauses,
    "citations.core_and_end": citations.core_and_end,
    "citations.text_units": citations.text_units,
    "sentences.split_sentences": sentences.split_sentences,
    "catalog.bm25_terms": catalog.bm25_terms,
    "settings.mask_url": settings.mask_url,
}


def seconds(fn, text: str, least: float, tries: int) -> float:
    """Seconds per call: the best of `tries` batches, each repeating calls until they took `least` (the machine is
    shared: the best is the least disturbed)."""
    best = float("inf")
    for _ in range(tries):
        calls, started = 0, time.perf_counter()
        while True:
            fn(text)
            calls += 1
            took = time.perf_counter() - started
            if took >= least:
                break
        best = min(best, took / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-kb", type=int, default=1024, help="the long input (default 1024 KB = 1 MB)")
    args = parser.parse_args()
    small, large = 1024, args.size_kb * 1024
    rows = []
    for name, fn in FUNCTIONS.items():
        worst = None
        for unit in UNITS:
            short, long = (unit * (small // len(unit) + 1))[:small], (unit * (large // len(unit) + 1))[:large]
            ratio = (t_long := seconds(fn, long, 0, tries=2)) / (t_short := seconds(fn, short, 0.02, tries=5))
            if worst is None or ratio > worst["ratio"]:
                worst = {"function": name, "unit": unit, "short_s": t_short, "long_s": t_long, "ratio": ratio}
        rows.append(worst)
        print(f"{name}: worst x{worst['ratio']:.0f} ({worst['unit']!r})", flush=True)
    report = {"machine": machine(), "small_bytes": small, "large_bytes": large, "rows": rows}
    path = save("long_text", report)
    print(markdown(report))
    print(f"\nsaved {path.relative_to(path.parents[2])}")


def markdown(report: dict) -> str:
    m, scale = report["machine"], report["large_bytes"] / report["small_bytes"]
    out = [
        f"Measured {m['date']} on {m['cpu']} ({m['nproc']} cores, load average {m['load_avg_at_start']:.2f}), commit "
        f"{m['commit']}: {report['large_bytes'] // 1024} KB against {report['small_bytes'] // 1024} KB (linear: "
        f"x{scale:.0f}, quadratic: x{scale**2:,.0f}); each function's worst input of {len(UNITS)}.\n"
    ]
    rows = [
        [r["function"], repr(r["unit"]), f"{r['short_s'] * 1e6:.0f} µs", f"{r['long_s'] * 1000:.0f} ms",
         f"x{r['ratio']:,.0f}", "yes" if r["ratio"] < 4 * scale else "**no**"]
        for r in report["rows"]
    ]  # fmt: skip
    out.append(table(["function", "worst input (repeated)", "1 KB", "long", "ratio", "linear"], rows))
    return "\n".join(out)


if __name__ == "__main__":
    main()
