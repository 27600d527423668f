"""Follow-up questions: which earlier turn a question leans on, and the query retrieval should use for it.

llama-index's CondenseQuestionChatEngine asks the LLM to rewrite the follow-up; the bundled 135M model cannot do
that reliably (it rewrites into unrelated text), so the decision here is rule-based, and a question is a follow-up
only when it cannot stand alone:
- it opens like a continuation ("and ...", "what about ...", "compared to ...", "why?", "tell me more");
- its subject is a pronoun or a reference back ("does it", "what did they", "this method", "the same authors",
  "which of them"), or it has too few words of its own to name a topic.
Words like "that", "this" or "their" inside a question that names its own topic ("Which papers show that models
fine-tuned on their own outputs ...") do not make it a follow-up. Measured on tests/data/followups.jsonl.
A follow-up is searched together with the previous question.
"""

from __future__ import annotations

import re

from rag.evidence import content_terms

CONTINUES = re.compile(
    r"^\s*(and|but|also|so|then|what about|how about|what else|compared( to| with)?|versus|vs\.?|why|how come|"
    r"tell me more|more on|go on|elaborate|any others?|others?)\b",
    re.I,
)
REFERS_BACK = re.compile(
    r"\b(it|its|it's|they|them|their|theirs|those|these)\b(?! (?:own|kind|type)\b)"
    r"|\b(this|that|these|those|the same|the above|the former|the latter|said)\s+(paper|papers|method|methods|model|"
    r"models|approach|approaches|work|works|framework|technique|study|studies|authors?|benchmarks?|results?|one|ones)\b"
    r"|\b(the (paper|authors|method|approach|model|framework)('s)?)\b|\b(of|among) (them|these|those)\b",
    re.I,
)
# Words that name no topic: a question made only of these and references leans on the previous turn.
GENERIC = set(
    content_terms(
        "compare comparison compared versus difference different better worse main idea limitation limitations "
        "result results evaluate evaluated evaluation benchmark benchmarks perform performance work method methods "
        "approach model models paper papers author authors code release released data dataset datasets find found "
        "finding findings tested test test tasks task recent most fraction keep improve improved improvement "
        "search rely relies iterations use uses many much large fast run phone smaller bigger also study studies "
        "tell more detail details explain why how what which when where who"
    )
)
OWN_TOPIC = 3  # content words of its own (not generic) that make a question stand alone despite a reference back


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
    """True when the question leans on an earlier turn (see the module docstring for the rules)."""
    own = content_terms(question) - GENERIC
    if CONTINUES.search(question) or len(own) < 2:
        return True
    return bool(REFERS_BACK.search(question)) and len(own) < OWN_TOPIC


def resolve(question: str, history: list | None) -> str:
    """The text to search for: the question, prefixed by the previous question when this one is a follow-up."""
    previous = user_turns(history)
    if previous and is_followup(question):
        return f"{previous[-1]} {question}"
    return question
