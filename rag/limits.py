"""What one question may cost: its text is checked before any work is done for it, the same way for the CLI, the UI,
the HTTP API and library users.

A shared server answers everyone from one process, so a question is refused (one line, `QuestionError`) when it is
longer than RAG_MAX_QUESTION_CHARS, asks more than RAG_MAX_QUESTION_PARTS things at once (each part is embedded and
scored against every evidence sentence), or is not valid Unicode text (undecodable bytes on the command line, a lone
surrogate in JSON): such text fails deep inside the tokenizer otherwise. Measured before these limits: a 1 MB
question took the server to 24 GB and the kernel killed it; see README "Security".
"""

from __future__ import annotations

from rag.conversation import user_turns
from rag.evidence import question_parts
from rag.settings import Settings


class QuestionError(ValueError):
    """A question or query refused before any work; str() is one line for the user. `code` names the reason for
    API clients: question_too_long, too_many_parts or invalid_text."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def check_text(text: str, what: str, max_chars: int) -> None:
    """Refuse text longer than max_chars or holding a surrogate (not encodable as UTF-8)."""
    if len(text) > max_chars:
        raise QuestionError(
            f"{what} is {len(text):,} characters long: at most {max_chars:,} (RAG_MAX_QUESTION_CHARS)",
            "question_too_long",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        char = ord(text[e.start])
        if 0xDC80 <= char <= 0xDCFF:  # a byte that was not UTF-8, as Python decodes command-line arguments
            problem = f"byte 0x{char - 0xDC00:02x} is not UTF-8"
        else:
            problem = f"character {e.start + 1} is a lone surrogate (U+{char:04X})"
        raise QuestionError(f"{what} is not valid text: {problem}", "invalid_text") from None


def check_question(question: str, history: list | None, settings: Settings) -> None:
    """Refuse a question (and the earlier user turns a follow-up may be searched with) that the server will not work
    on; the parts are counted only once the length is known to be bounded."""
    limit = settings.max_question_chars
    check_text(question, "the question", limit)
    for text in user_turns(history):
        check_text(text, "an earlier question of the conversation", limit)
    parts = len(question_parts(" ".join(question.split())))
    if parts > settings.max_question_parts:
        raise QuestionError(
            f"the question asks {parts} things at once: at most {settings.max_question_parts} "
            "(RAG_MAX_QUESTION_PARTS); ask them separately",
            "too_many_parts",
        )
