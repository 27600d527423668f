"""`rag eval`: retrieval quality, answer quality and latency on a question set (JSONL), per question type.

A question is {"id", "type": lookup|fact|multi|unanswerable, "question", "gold_titles": [...],
"answer_keywords": [[alternatives...], ...]}. Retrieval is scored at paper level (a paper counts once however many of
its chunks match). An answer hits its keywords when its text holds (case-insensitively) one alternative of every group.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from rag.answer import Citation
from rag.citations import parse_markers
from rag.corpus import title_key
from rag.overview import OVERVIEW_CANDIDATES

TYPES = ("lookup", "fact", "multi", "overview", "unanswerable")
SEARCH_K = 10
LATENCY_STAGES = ("search", "first_token", "first_text", "total")
KEY_POINT_WORDS = 0.3  # share of a key point's content words its paper's quote must hold to count as made

# --- metrics: small pure functions ---------------------------------------------------------------------------------


def recall_at(ranked_titles: list[str], gold: list[str], k: int) -> float | None:
    """Share of the gold papers among the first k distinct papers; None when there is no gold paper."""
    wanted = {title_key(t) for t in gold}
    if not wanted:
        return None
    found = {title_key(t) for t in distinct(ranked_titles)[:k]}
    return len(wanted & found) / len(wanted)


def mrr(ranked_titles: list[str], gold: list[str]) -> float | None:
    """1 / rank of the first gold paper (0 when none is ranked); None when there is no gold paper."""
    wanted = {title_key(t) for t in gold}
    if not wanted:
        return None
    for rank, title in enumerate(distinct(ranked_titles), 1):
        if title_key(title) in wanted:
            return 1.0 / rank
    return 0.0


def distinct(titles: list[str]) -> list[str]:
    """Titles in order, each paper once."""
    seen, out = set(), []
    for t in titles:
        if title_key(t) not in seen:
            seen.add(title_key(t))
            out.append(t)
    return out


def keyword_hit(text: str, groups: list[list[str]]) -> bool | None:
    """True when the text holds one alternative of every group (case-insensitive); None when there are no groups."""
    if not groups:
        return None
    low = text.lower()
    return all(any(alt.lower() in low for alt in group) for group in groups)


def citations_valid(text: str, citations: list[Citation], retrieved_ids: set[str]) -> bool:
    """Every [n] in the text names a citation whose paper was among the retrieved papers."""
    by_n = {c.n: c for c in citations}
    return all(n in by_n and by_n[n].paper_id in retrieved_ids for n in parse_markers(text))


def gold_cited(citations: list[Citation], gold: list[str]) -> bool | None:
    """True when a cited paper is one of the gold papers; None when there is no gold paper."""
    wanted = {title_key(t) for t in gold}
    if not wanted:
        return None
    return any(title_key(c.title) in wanted for c in citations)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks as numpy's default; None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def mean(values: list) -> float | None:
    """Mean of the values that are not None (booleans count 0/1); None when there are none."""
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def followup_figures(path: str | Path) -> dict:
    """Follow-up detection on labelled conversation turns ({history, question, followup})."""
    from rag.conversation import is_followup

    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    wrong = [r["id"] for r in rows if is_followup(r["question"]) != r["followup"]]
    return {"turns": len(rows), "accuracy": 1 - len(wrong) / max(1, len(rows)), "wrong": wrong}


def verifier_figures(rows: list[dict], align: float | None = None) -> dict:
    """The verifier on labelled sentences ({id, question, evidence: [{n, title, quote}], sentence, label}): the share
    of bad ones dropped (a MISCITED one re-cited to the evidence that states it also counts) and of supported ones
    kept, per label, with the sentences it got wrong. Sentences of one answer (ids "d001-c1", "d001-c2", ...: the
    same prefix and evidence) go through one Verifier in order, as a stream does, so "It ..." refers back."""
    from rag.citations import ALIGN, Verifier
    from rag.evidence import Evidence

    per_label: dict[str, list[bool]] = {}
    errors = []
    verifier, answer = None, None
    for row in rows:
        key = (row.get("id", "").rsplit("-", 1)[0], json.dumps(row["evidence"], sort_keys=True))
        if key != answer:
            evidence = [
                Evidence(e["n"], e.get("paper_id", e["title"]), e["title"], "", e["quote"], 1.0, 1)
                for e in row["evidence"]
            ]
            verifier = Verifier(evidence, row.get("question", ""), align=ALIGN if align is None else align)
            answer = key
        checked = verifier.check(row["sentence"])
        cited = set(parse_markers(row["sentence"]))
        if row["label"] == "SUPPORTED":
            right = bool(checked.text)
        elif row["label"] == "MISCITED":
            right = not checked.text or not (set(checked.cited) & cited)
        else:
            right = not checked.text
        per_label.setdefault(row["label"], []).append(right)
        if not right:
            errors.append(f"{row['id']} {row['label']}: {'kept ' + checked.text if checked.text else checked.reason}")
    bad = [r for label, rs in per_label.items() if label != "SUPPORTED" for r in rs]
    good = per_label.get("SUPPORTED", [])
    out = {
        "sentences": len(rows),
        "bad_dropped": mean(bad),
        "supported_kept": mean(good),
        "per_label": {label: {"n": len(rs), "right": sum(rs)} for label, rs in sorted(per_label.items())},
        "errors": errors,
    }
    out["summary"] = (
        f"{len(rows)} sentences: bad dropped {sum(bad)}/{len(bad)} ({fmt(out['bad_dropped'], True)}), "
        f"supported kept {sum(good)}/{len(good)} ({fmt(out['supported_kept'], True)})"
    )
    return out


# --- running --------------------------------------------------------------------------------------------------------


def load_questions(path: str | Path, limit: int | None = None) -> list[dict]:
    """The questions of a JSONL file (blank lines skipped), the first `limit` only when given."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("type") not in TYPES or not row.get("question"):
                raise ValueError(f"{path}:{number}: needs a question and a type in {', '.join(TYPES)}")
            rows.append(row)
    return rows[:limit] if limit else rows


def score_question(q: dict, hits: list, answer=None, retrieved: list | None = None) -> dict:
    """One row of metrics for a question, its search hits and (optionally) its Answer; `retrieved`: the hits its
    citations may name (the search hits when not given)."""
    gold = q.get("gold_titles") or []
    titles = [h.title for h in hits]
    ranks = [i for i, t in enumerate(distinct(titles), 1) if title_key(t) in {title_key(g) for g in gold}]
    row = {
        "id": q.get("id", ""),
        "type": q["type"],
        "recall@5": recall_at(titles, gold, 5),
        "recall@10": recall_at(titles, gold, 10),
        "mrr": mrr(titles, gold),
        "gold_ranks": ranks,
    }
    if answer is not None:
        cited = [title_key(c.title) for c in answer.citations]
        wanted = {title_key(g) for g in gold}
        row.update(
            {
                "refused": answer.refused,
                "opening": answer.opening,
                "opening_hit": None if answer.refused else keyword_hit(answer.opening, q.get("answer_keywords") or []),
                "evidence_only": None if answer.refused else not answer.opening,
                "gold_first": bool(cited) and cited[0] in wanted if q["type"] in ("lookup", "fact") else None,
                "gold_share": len(wanted & set(cited)) / len(wanted) if q["type"] in ("multi", "overview") else None,
                "precision": len(wanted & set(cited)) / len(set(cited))
                if q["type"] in ("multi", "overview") and cited
                else None,
                "papers": len(set(cited)) if q["type"] in ("multi", "overview") else None,
                "key_points": key_points_made(q.get("key_points") or [], answer) if q.get("key_points") else None,
                "kind": answer.kind,
                "generated": answer.generated,
                "keyword_hit": keyword_hit(answer.text, q.get("answer_keywords") or []),
                "citations_valid": None
                if answer.refused
                else citations_valid(answer.text, answer.citations, {h.paper_id for h in retrieved or hits}),
                "gold_cited": gold_cited(answer.citations, gold) if q["type"] in ("lookup", "fact") else None,
                "dropped": len(answer.dropped),  # generated sentences the verifier removed
                "notices": answer.notices,
                "timings": answer.timings,
            }
        )
    return row


def key_points_made(points: list[dict], answer) -> float:
    """Share of an overview question's key points the answer makes, by a keyword heuristic: the point's paper is
    cited and its quote holds at least KEY_POINT_WORDS of the point's content words (stemmed)."""
    from rag.evidence import content_terms

    quotes = {title_key(c.title): " ".join(c.quotes) for c in answer.citations}
    made = 0
    for point in points:
        quote = quotes.get(title_key(point.get("title", "")))
        words = content_terms(point["point"])
        if quote and words and len(words & content_terms(quote)) >= KEY_POINT_WORDS * len(words):
            made += 1
    return made / len(points)


def summarize(rows: list[dict]) -> dict:
    """Averages of the metric rows of one group of questions."""
    out = {"n": len(rows)}
    for name in (
        "recall@5",
        "recall@10",
        "mrr",
        "opening_hit",
        "keyword_hit",
        "evidence_only",
        "citations_valid",
        "gold_cited",
        "gold_first",
        "gold_share",
        "precision",
        "papers",
        "key_points",
        "refused",
    ):
        values = [r.get(name) for r in rows]
        if any(v is not None for v in values):
            out[name] = mean(values)
    return out


def latency(samples: dict[str, list[float]]) -> dict:
    return {stage: {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95)} for stage, v in samples.items()}


def evaluate(
    assistant,
    file: str | Path,
    mode: str | None = None,
    limit: int | None = None,
    answers: bool = True,
    progress: bool = True,
) -> dict:
    """Search (k=10) and, when `answers`, ask every question; metrics per type, latency, per-question rows."""
    from tqdm import tqdm

    questions = load_questions(file, limit)
    settings = getattr(assistant, "settings", None)
    mode = mode or getattr(settings, "search_mode", "hybrid")
    if questions:
        assistant.search(questions[0]["question"], k=SEARCH_K, mode=mode)  # warm-up: loads the models and index
    samples: dict[str, list[float]] = {stage: [] for stage in LATENCY_STAGES}
    rows, backend = [], "none (search only)"
    for q in tqdm(questions, desc="Evaluating", unit="question", disable=not progress, file=sys.stderr):
        t = time.perf_counter()
        hits = assistant.search(q["question"], k=SEARCH_K, mode=mode)
        samples["search"].append(time.perf_counter() - t)
        answer = assistant.ask(q["question"], mode=mode) if answers else None
        if answer is not None:
            backend = answer.backend
            for stage in ("first_token", "first_text", "total"):
                if stage in answer.timings:
                    samples[stage].append(answer.timings[stage])
        # an overview cites from its OVERVIEW_CANDIDATES papers, not only from the top SEARCH_K scored here
        wide = answer is not None and answer.kind != "fact"
        retrieved = assistant.search(q["question"], k=OVERVIEW_CANDIDATES, mode=mode) if wide else hits
        rows.append({**score_question(q, hits, answer, retrieved), "question": q["question"]})

    by_type = {t: summarize([r for r in rows if r["type"] == t]) for t in TYPES if any(r["type"] == t for r in rows)}
    answerable = [r for r in rows if r["type"] != "unanswerable"]
    generated = {k: sum((r.get("generated") or {}).get(k, 0) for r in rows) for k in ("kept", "dropped", "repeated")}
    labelled = {}
    folder = Path(file).parent
    for claims in sorted(folder.glob("claims-*.jsonl")):
        rows_c = [json.loads(line) for line in claims.open(encoding="utf-8") if line.strip()]
        labelled[claims.name] = {k: v for k, v in verifier_figures(rows_c).items() if k != "errors"}
    followups = followup_figures(folder / "followups.jsonl") if (folder / "followups.jsonl").exists() else None
    return {
        "file": str(file),
        "questions": len(rows),
        "mode": mode,
        "k": SEARCH_K,
        "answers": answers,
        "backend": backend,
        "by_type": by_type,
        "answerable": summarize(answerable),
        "latency": latency({k: v for k, v in samples.items() if v}),
        "generated": generated if answers else None,
        "verifier": labelled,
        "followups": followups,
        "missing_gold": missing_gold(assistant, questions),
        "rows": rows,
    }


def missing_gold(assistant, questions: list[dict]) -> list[str]:
    """Gold titles that are not in the index at all (a question set for another corpus), when the index is known."""
    titled = getattr(assistant, "papers_titled", None)
    if titled is None:
        return []
    gold = sorted({t for q in questions for t in q.get("gold_titles") or []})
    indexed = {title_key(p.title) for p in titled(gold)}
    return [t for t in gold if title_key(t) not in indexed]


# --- output ---------------------------------------------------------------------------------------------------------


def fmt(value, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:.0%}" if percent else f"{value:.3f}"


def format_markdown(report: dict) -> str:
    """Tables for a terminal or a README: retrieval, answers (when asked), latency, then the misses."""
    groups = [*report["by_type"].items()]
    if report["answerable"]["n"]:
        groups.append(("all answerable", report["answerable"]))
    lines = [
        f"Questions: {report['questions']} from {report['file']}; search mode {report['mode']}, "
        f"k={report['k']}, paper level.",
        "",
    ]
    lines += ["| type | n | Recall@5 | Recall@10 | MRR |", "|---|---:|---:|---:|---:|"]
    for name, s in groups:
        if name != "unanswerable":
            lines.append(
                f"| {name} | {s['n']} | {fmt(s.get('recall@5'))} | {fmt(s.get('recall@10'))} | {fmt(s.get('mrr'))} |"
            )
    if report["answers"]:
        lines += [
            "",
            f"Answers ({report['backend']}). Opening: the expected fact (every keyword group) in the answer's opening "
            "sentence; anywhere: in the whole answer with its quoted references; evidence-only: no sentence before "
            "the references; gold first: the gold paper is [1]; gold share: of a multi or overview question's gold "
            "papers, the share cited; precision: of the papers cited, the share in the gold list; papers: cited per "
            "answer; key points: of an overview question's key points, the share whose paper is cited with a quote "
            "holding 30% of the point's words; refused: wanted on unanswerable, a false refusal elsewhere.",
            "",
        ]
        lines += [
            "| type | n | opening | anywhere | evidence-only | citations valid | gold cited | gold first | "
            "gold share | precision | papers | key points | refused |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in groups:
            lines.append(
                f"| {name} | {s['n']} | {fmt(s.get('opening_hit'), True)} | {fmt(s.get('keyword_hit'), True)} | "
                f"{fmt(s.get('evidence_only'), True)} | {fmt(s.get('citations_valid'), True)} | "
                f"{fmt(s.get('gold_cited'), True)} | {fmt(s.get('gold_first'), True)} | "
                f"{fmt(s.get('gold_share'), True)} | {fmt(s.get('precision'), True)} | "
                f"{'–' if s.get('papers') is None else format(s['papers'], '.1f')} | "
                f"{fmt(s.get('key_points'), True)} | {fmt(s.get('refused'), True)} |"
            )
        g = report.get("generated") or {}
        lines += [
            "",
            f"Generated sentences: {g.get('kept', 0)} kept, {g.get('dropped', 0)} dropped by the verifier, "
            f"{g.get('repeated', 0)} left out as repeating the opening.",
        ]
    for name, v in (report.get("verifier") or {}).items():
        lines.append(f"Verifier on {name}: {v['summary']}.")
    if report.get("followups"):
        f = report["followups"]
        lines.append(f"Follow-up detection: {fmt(f['accuracy'], True)} of {f['turns']} labelled turns.")
    lines += ["", "| latency (s) | n | p50 | p95 |", "|---|---:|---:|---:|"]
    names = {
        "search": "search (k=10)",
        "first_token": "first LLM token",
        "first_text": "first text shown",
        "total": "whole answer",
    }
    for stage, s in report["latency"].items():
        lines.append(f"| {names.get(stage, stage)} | {s['n']} | {s['p50']:.3f} | {s['p95']:.3f} |")
    misses = [miss_line(r) for r in report["rows"]]
    misses = [m for m in misses if m]
    if misses:
        lines += ["", "Misses:"] + [f"- {m}" for m in misses]
    if report.get("missing_gold"):
        lines += [
            "",
            f"Warning: {len(report['missing_gold'])} gold titles are not in the index, e.g. "
            f"{report['missing_gold'][0]!r}.",
        ]
    return "\n".join(lines)


def miss_line(row: dict) -> str:
    """What went wrong for one question, or '' when nothing did."""
    problems = []
    if row.get("recall@10") is not None and row["recall@10"] < 1:
        problems.append(f"recall@10 {row['recall@10']:.2f}")
    if row["type"] == "unanswerable" and row.get("refused") is False:
        problems.append("answered (should refuse)")
    if row["type"] != "unanswerable" and row.get("refused"):
        problems.append("refused")
    elif row.get("keyword_hit") is False:
        problems.append("keywords missing")
    elif row.get("opening_hit") is False:
        problems.append("fact not in the opening")
    if row.get("citations_valid") is False:
        problems.append("invalid citation")
    if row.get("gold_cited") is False and not row.get("refused"):
        problems.append("gold paper not cited")
    return f"{row['id']} ({row['type']}): {', '.join(problems)}" if problems else ""
