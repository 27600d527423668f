"""Follow-up questions: which earlier turn a question leans on, and the query retrieval should use for it.

llama-index's CondenseQuestionChatEngine asks the LLM to rewrite the follow-up; the bundled 135M model cannot do
that reliably (it rewrites into unrelated text), so the rewrite here is rule-based: a question that refers back
("it", "they", "this method", "and how does it compare…") or is too short to stand alone is searched together
with the previous question. A better LLM is not needed for this to work.
"""

from __future__ import annotations

import re

from rag.evidence import content_terms

REFERS_BACK = re.compile(
    r"^(and|but|also|so|what about|how about|then|compared?)\b|\b(it|its|they|them|their|this|that|these|those|"
    r"the same|the (paper|method|model|approach|authors?))\b|\b(compare|comparison|versus|vs\.?)\b",
    re.I,
)
STANDALONE_TERMS = 6


def user_turns(history: list | None) -> list[str]:
    """The user's questions from a history of {"role", "content"} dicts or (user, assistant) pairs."""
    out = []
    for turn in history or []:
        if isinstance(turn, dict):
            if turn.get("role") == "user" and isinstance(turn.get("content"), str):
                out.append(turn["content"])
        elif isinstance(turn, (list, tuple)) and turn and isinstance(turn[0], str):
            out.append(turn[0])
    return out


def is_followup(question: str) -> bool:
    return bool(REFERS_BACK.search(question)) or len(content_terms(question)) < STANDALONE_TERMS // 2


def resolve(question: str, history: list | None) -> str:
    """The text to search for: the question, prefixed by the previous question when this one is a follow-up."""
    previous = user_turns(history)
    if previous and is_followup(question):
        return f"{previous[-1]} {question}"
    return question
