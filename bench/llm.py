"""The local LLM's speed: llama.cpp with and without weight repacking, and answers with the model in a worker
process against the same model in the server's own process. Medians of interleaved runs, ratios against the
baseline of the same run (the machine is shared: absolute times move, ratios much less).

    .venv/bin/python bench/llm.py [--index index] [--runs 9] [--questions 12]

Writes bench/results/llm.json and prints Markdown tables (README "When the local LLM crashes").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, ratio, save, secs, table  # noqa: E402


def answer_prompt(settings, question: str):
    """The messages an answer sends the LLM: the evidence of a real question from the index."""
    from rag.answer import build_messages
    from rag.assistant import Assistant

    answer = Assistant(settings).ask(question, generate=False)
    return build_messages(question, answer.evidence, None)


def generation_speed(settings, messages, repack: bool, runs: int) -> dict:
    """First token (the prompt's evaluation) and tokens per second after it, llama.cpp in this process."""
    from rag.llm import make_llm

    llm = make_llm(settings.model_copy(update={"llm_repack": repack, "llm_max_tokens": 64}))
    first, rates = [], []
    for _ in range(runs):
        llm._model.reset()  # no prompt cache: every run evaluates the whole prompt
        started = time.perf_counter()
        stamps = [time.perf_counter() for chunk in llm.stream_chat(messages) if chunk.delta]
        first.append(stamps[0] - started)
        if len(stamps) > 1:
            rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return {"first_token": statistics.median(first), "tokens_per_s": statistics.median(rates), "runs": runs}


def answer_times(assistant, questions: list[str]) -> dict:
    first, total = [], []
    for q in questions:
        answer = assistant.ask(q)
        if "first_token" in answer.timings:
            first.append(answer.timings["first_token"])
        total.append(answer.timings["total"])
    return {"first_token": first, "total": total}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", default="index", help="a built index (rag index)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--questions", type=int, default=12)
    args = parser.parse_args()

    import json

    from rag.assistant import Assistant
    from rag.llm import make_llm
    from rag.settings import Settings

    settings = Settings(index_dir=Path(args.index))
    dev = [json.loads(line) for line in (Path(__file__).parent.parent / "tests/data/dev.jsonl").open()]
    questions = [q["question"] for q in dev if q.get("type") != "unanswerable"][: args.questions]
    report: dict = {"machine": machine()}

    messages = answer_prompt(settings, questions[0])
    speed = {"off": [], "on": []}
    for _ in range(3):  # interleaved rounds, so that both settings see the same load
        for repack in (False, True):
            speed["on" if repack else "off"].append(generation_speed(settings, messages, repack, args.runs // 3))
    report["repack"] = {
        k: {m: statistics.median(r[m] for r in v) for m in ("first_token", "tokens_per_s")} for k, v in speed.items()
    }

    in_process = Assistant(settings, llm=make_llm(settings))  # an LLM handed in runs in this process
    worker = Assistant(settings)
    for assistant in (in_process, worker):
        assistant.warm()
        assistant.ask(questions[0])
    runs = {"in process": {"first_token": [], "total": []}, "worker": {"first_token": [], "total": []}}
    for _ in range(2):
        for name, assistant in (("in process", in_process), ("worker", worker)):
            for key, values in answer_times(assistant, questions).items():
                runs[name][key] += values
    report["worker"] = {
        name: {k: statistics.median(v) for k, v in values.items()} | {"answers": len(values["total"])}
        for name, values in runs.items()
    }
    save("llm", report)

    off, on = report["repack"]["off"], report["repack"]["on"]
    print(f"{report['machine']['cpu']}, {report['machine']['date']}, load {report['machine']['load_avg_at_start']:.2f}")
    print()
    print(
        table(
            ["llama.cpp, bundled model, answer prompt", "first token p50", "tokens/s p50", "first token ratio"],
            [
                ["repacking off (default)", secs(off["first_token"]), f"{off['tokens_per_s']:.0f}", "×1.00"],
                [
                    "repacking on (RAG_LLM_REPACK=true)",
                    secs(on["first_token"]),
                    f"{on['tokens_per_s']:.0f}",
                    ratio(on["first_token"], off["first_token"]),
                ],
            ],
        )
    )
    print()
    base = report["worker"]["in process"]
    print(
        table(
            ["answers (dev questions, bundled model)", "first token p50", "whole answer p50", "whole answer ratio"],
            [
                [name, secs(v["first_token"]), secs(v["total"]), ratio(v["total"], base["total"])]
                for name, v in report["worker"].items()
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
