"""rag.evaluate: the metric functions on hand-made cases, and evaluate() end to end against a fake assistant."""

from __future__ import annotations

import json

import pytest

from rag.answer import Answer, AnswerStream, Citation
from rag.evaluate import (
    citations_valid,
    evaluate,
    format_markdown,
    gold_cited,
    keyword_hit,
    load_questions,
    mrr,
    percentile,
    recall_at,
)
from rag.evidence import Evidence
from rag.search import Hit


def test_recall_counts_each_paper_once():
    ranked = ["A", "a", "B", "C", "D", "E", "F"]  # "a" is the same paper as "A" (title_key)
    assert recall_at(ranked, ["B", "F"], 5) == 0.5  # B is 2nd distinct paper, F the 6th
    assert recall_at(ranked, ["B", "F"], 10) == 1.0
    assert recall_at(ranked, ["Z"], 10) == 0.0
    assert recall_at(ranked, [], 10) is None


def test_recall_matches_titles_loosely():
    assert recall_at(["LEVI: Generalizable Fine-tuning"], ["levi generalizable fine tuning"], 1) == 1.0


def test_mrr():
    assert mrr(["A", "B", "C"], ["A"]) == 1.0
    assert mrr(["A", "A", "B", "C"], ["C", "B"]) == 0.5  # the duplicate A does not push B down
    assert mrr(["A", "B"], ["Z"]) == 0.0
    assert mrr(["A"], []) is None


def test_keyword_hit_needs_every_group():
    groups = [["3 hours", "three hours"], ["five", "5"]]
    assert keyword_hit("It needed Three Hours on 5 tasks", groups) is True
    assert keyword_hit("It needed three hours", groups) is False
    assert keyword_hit("anything", []) is None


def test_citations_valid():
    cites = [Citation(1, "p1", "A", "", []), Citation(2, "p2", "B", "", [])]
    assert citations_valid("X holds [1]. Y too [1, 2].", cites, {"p1", "p2"})
    assert citations_valid("No markers at all.", cites, set())
    assert not citations_valid("X [3].", cites, {"p1", "p2"})  # no citation 3
    assert not citations_valid("X [1-2].", cites, {"p1"})  # p2 was not retrieved


def test_gold_cited():
    cites = [Citation(1, "p1", "Paper A", "", [])]
    assert gold_cited(cites, ["paper a"]) is True
    assert gold_cited(cites, ["Paper B"]) is False
    assert gold_cited([], []) is None


def test_percentile():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([1, 2], 100) == 2


def test_load_questions_rejects_unknown_type(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "x", "type": "trivia", "question": "?"}\n')
    with pytest.raises(ValueError, match="q.jsonl:1"):
        load_questions(path)


# --- evaluate() end to end ------------------------------------------------------------------------------------------

PAPERS = {"p1": "Paper One", "p2": "Paper Two", "p3": "Paper Three"}
QUESTIONS = [
    {
        "id": "q1",
        "type": "lookup",
        "question": "which paper does one?",
        "gold_titles": ["Paper One"],
        "answer_keywords": [["One"]],
    },
    {
        "id": "q2",
        "type": "fact",
        "question": "how many in two?",
        "gold_titles": ["Paper Two"],
        "answer_keywords": [["42"], ["layers", "blocks"]],
    },
    {"id": "q3", "type": "unanswerable", "question": "who funded it?", "gold_titles": [], "answer_keywords": []},
]


def cite(n: int, pid: str) -> Evidence:
    """The evidence an answer cites as [n]: one sentence of paper `pid`."""
    return Evidence(n, pid, PAPERS.get(pid, "?"), "", "a quote", 0.5, n)


class FakeAssistant:
    """Canned search results and answers: q1 is found first and answered well; q2's gold paper is ranked 2nd and
    its answer misses a keyword and cites a paper that was never retrieved; q3 is refused."""

    def __init__(self):
        self.asked = []

    def search(self, query, k=None, mode=None):
        order = ["p1", "p2"] if "two" in query else ["p1", "p3"]
        return [Hit(i, pid, PAPERS[pid], f"https://x/{pid}", 1.0 / i, "", "test") for i, pid in enumerate(order, 1)]

    def stream(self, question, history=None, k=None, mode=None):
        def pieces():
            answer = self.ask(question, mode=mode)
            yield answer.prose
            return answer

        return AnswerStream(pieces())

    def ask(self, question, history=None, k=None, mode=None):
        self.asked.append((question, mode))
        timings = {"search": 0.01, "evidence": 0.02, "first_text": 0.5, "total": 1.0}
        if "one" in question:
            return Answer(
                question,
                "Paper One does it [1].",
                False,
                [cite(1, "p1")],
                timings={**timings, "first_token": 0.3},
                backend="fake",
                opening="Paper One does it [1].",
            )
        if "two" in question:
            return Answer(
                question,
                "It has 42 parts [1][2].",
                False,
                [cite(1, "p1"), cite(2, "p9")],
                timings=timings,
                backend="fake",
                opening="It has 42 parts [1][2].",
            )
        return Answer(question, "I could not find this in the indexed papers.", True, timings=timings, backend="fake")


@pytest.fixture
def questions_file(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS) + "\n")
    return path


def test_evaluate_end_to_end(questions_file):
    fake = FakeAssistant()
    report = evaluate(fake, questions_file, mode="bm25", progress=False)
    assert report["questions"] == 3 and report["mode"] == "bm25" and report["backend"] == "fake"
    assert [m for _, m in fake.asked] == ["bm25"] * 3
    lookup, fact, unanswerable = (report["by_type"][t] for t in ("lookup", "fact", "unanswerable"))
    assert lookup == {
        "n": 1,
        "recall@5": 1.0,
        "recall@10": 1.0,
        "mrr": 1.0,
        "opening_hit": 1.0,
        "keyword_hit": 1.0,
        "evidence_only": 0.0,
        "citations_valid": 1.0,
        "gold_cited": 1.0,
        "gold_first": 1.0,
        "refused": 0.0,
    }
    assert fact["mrr"] == 0.5 and fact["keyword_hit"] == 0.0 and fact["citations_valid"] == 0.0
    assert fact["gold_cited"] == 0.0
    assert unanswerable["refused"] == 1.0 and "recall@5" not in unanswerable
    assert report["answerable"]["mrr"] == 0.75 and report["answerable"]["refused"] == 0.0
    latency = report["latency"]
    assert latency["search"]["n"] == 3 and latency["first_token"]["n"] == 1 and latency["total"]["p50"] == 1.0
    json.dumps(report)  # the CLI prints it as JSON

    text = format_markdown(report)
    assert "| lookup | 1 | 1.000 | 1.000 | 1.000 |" in text
    assert "| unanswerable | 1 | – | – | – | – | – | – | – | – | – | – | 100% |" in text
    assert "q2 (fact): keywords missing, invalid citation, gold paper not cited" in text


def test_evaluate_search_only_with_limit(questions_file):
    fake = FakeAssistant()
    report = evaluate(fake, questions_file, limit=2, answers=False, progress=False)
    assert report["questions"] == 2 and fake.asked == []
    assert set(report["latency"]) == {"search"}
    assert "keyword_hit" not in report["by_type"]["fact"]
    assert "Answers" not in format_markdown(report)
