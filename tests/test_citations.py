"""Citation parsing and verification, evidence scoring and refusal rules, follow-up resolution: pure logic."""

from __future__ import annotations

import pytest

from rag.citations import StreamVerifier, check_sentence, parse_markers, text_units
from rag.conversation import resolve
from rag.evidence import Evidence, asked_kind, content_words, refusal_reason, select, topic_words, unanswered_parts
from rag.sentences import split_sentences

EVIDENCE = [
    Evidence(
        1,
        "p1",
        "Tuning Language Models by Proxy",
        "u1",
        "Proxy-tuning closes 88% of the gap between Llama2-70B and its truly-tuned chat version.",
        0.9,
        1,
    ),
    Evidence(
        2,
        "p2",
        "LoRA: Low-Rank Adaptation",
        "u2",
        "LoRA reduces the number of trainable parameters by 10,000 times.",
        0.7,
        2,
    ),
]


@pytest.mark.parametrize(
    "text, numbers",
    [
        ("a [1] b", [1]),
        ("a [1][3]", [1, 3]),
        ("a [1, 2]", [1, 2]),
        ("a [1-3]", [1, 2, 3]),
        ("a [2–4] and [1; 5]", [2, 3, 4, 1, 5]),
        ("no markers [x] or [] here", []),
    ],
)
def test_parse_markers(text, numbers):
    assert parse_markers(text) == numbers


def test_supported_sentence_keeps_its_valid_citation_and_loses_invalid_ones():
    checked = check_sentence("Proxy-tuning closes 88% of the gap to the chat version [1][7].", EVIDENCE)
    assert checked.text == "Proxy-tuning closes 88% of the gap to the chat version [1]."
    assert checked.cited == [1]


def test_uncited_sentence_is_attributed_to_the_evidence_that_supports_it():
    checked = check_sentence("LoRA reduces trainable parameters by 10,000 times.", EVIDENCE)
    assert checked.text.endswith("[2].") and checked.cited == [2]


def test_wrongly_cited_sentence_is_moved_to_the_right_evidence():
    checked = check_sentence("LoRA reduces trainable parameters by 10,000 times [1].", EVIDENCE)
    assert checked.cited == [2]


@pytest.mark.parametrize(
    "sentence",
    [
        "Proxy-tuning closes 95% of the gap [1].",  # a number the evidence does not state
        "Diffusion models generate high quality videos of cats [2].",  # nothing supports it
        "The answer is: 1.5",  # filler
    ],
)
def test_unsupported_sentences_are_dropped(sentence):
    checked = check_sentence(sentence, EVIDENCE)
    assert checked.text == "" and checked.dropped == sentence


def test_stream_verifier_emits_verified_sentences_as_they_complete():
    verifier = StreamVerifier(EVIDENCE)
    out = []
    for piece in [
        "Proxy-tuning closes 88% of the gap",
        " [1].",
        " Cats are",
        " great pets.",
        " LoRA reduces",
        " trainable parameters by 10,000 times",
    ]:
        out += verifier.feed(piece)
    assert out == ["Proxy-tuning closes 88% of the gap [1]."]
    out += verifier.finish()
    assert out[-1] == "LoRA reduces trainable parameters by 10,000 times [2]."
    assert [d.dropped for d in verifier.dropped] == ["Cats are great pets."]


def test_text_units_handles_markers_after_the_full_stop_and_bullets():
    assert text_units("It works.[1] Next [2].\n- a bullet point") == ["It works [1].", "Next [2].", "a bullet point"]


def test_split_sentences_keeps_abbreviations_and_decimals():
    text = "We use e.g. LoRA as in Hu et al. 2021. Accuracy rises 3.5% (Fig. 2). Done!"
    assert split_sentences(text) == ["We use e.g. LoRA as in Hu et al. 2021.", "Accuracy rises 3.5% (Fig. 2).", "Done!"]


def test_select_caps_per_paper_and_total_and_numbers_papers_from_one():
    scored = [Evidence(0, f"p{i % 3}", "T", "u", f"s{i}", 1 - i / 20, 1) for i in range(12)]
    chosen = select(scored, per_paper=2, limit=5, threshold=0.6)
    assert [(e.paper_id, e.n) for e in chosen] == [("p0", 1), ("p1", 2), ("p2", 3), ("p0", 1), ("p1", 2)]
    assert max(sum(e.paper_id == p for e in chosen) for p in ("p0", "p1", "p2")) == 2
    assert select(scored, 2, 5, threshold=2.0) == []


def test_select_drops_papers_far_below_the_best():
    scored = [Evidence(0, "a", "T", "u", "s", 0.9, 1), Evidence(0, "b", "T", "u", "s", 0.8, 2)]
    scored.append(Evidence(0, "c", "T", "u", "s", 0.5, 3))
    assert [e.paper_id for e in select(scored, 3, 5, threshold=0.3, floor=0.8)] == ["a", "b"]


def test_refusal_rules():
    vocabulary = {"proxi", "tune", "gap", "llama", "close", "chat", "model", "much", "help", "paper", "wrote"}
    good = [EVIDENCE[0]]
    assert refusal_reason("How much of the gap does proxy tuning close?", good, vocabulary, 0.35, 0.15) is None
    assert "close enough" in refusal_reason("Anything?", [], vocabulary, 0.35, 0.15)
    weak = [Evidence(1, "p", "T", "u", "q", 0.2, 1)]
    assert "close enough" in refusal_reason("How much of the gap?", weak, vocabulary, 0.35, 0.15)
    middling = [Evidence(1, "p", "T", "u", "q", 0.5, 1)]
    absent = refusal_reason("Does proxy tuning help homomorphic encryption?", middling, vocabulary, 0.35, 0.15)
    assert "never mention 'homomorphic', 'encryption'" in absent
    # a strong match answers even when some words of the question are new to the corpus
    assert refusal_reason("Does proxy tuning help homomorphic encryption?", good, vocabulary, 0.35, 0.15) is None
    assert "authors" in refusal_reason("Who wrote the proxy tuning paper?", good, vocabulary, 0.35, 0.15)
    with_names = [Evidence(1, "p", "T", "u", "Authors: Alisa Liu, Noah Smith.", 0.9, 1)]
    assert refusal_reason("Who wrote the proxy tuning paper?", with_names, vocabulary, 0.35, 0.15) is None


def test_each_part_of_a_question_is_answered_or_said_missing():
    vocabulary = {"proxi", "tune", "gap", "close", "much", "gpu", "train", "releas", "run", "fast", "phone"}
    parts = ["How much of the gap does proxy tuning close", "which GPUs was it trained on"]
    evidence = [Evidence(1, "p", "T", "u", "Proxy-tuning closes 88% of the gap.", 0.8, 1)]
    evidence[0].part_scores = [0.8, 0.4]
    assert "hardware" in unanswered_parts(parts, evidence, vocabulary, 0.35)[1]  # no sentence names a GPU
    assert list(unanswered_parts(parts, evidence, vocabulary, 0.35)) == [1]
    evidence[0].part_scores = [0.8, 0.2]  # and nothing comes close to it
    assert "close enough" in unanswered_parts(parts, evidence, vocabulary, 0.35)[1]
    evidence[0].quote = "Proxy-tuning closes 88% of the gap on one A100 GPU."
    evidence[0].part_scores = [0.8, 0.5]
    assert unanswered_parts(parts, evidence, vocabulary, 0.35) == {}
    # one word of a short part the corpus never uses does not make it missing; all of them do
    words = ["How much of the gap does proxy tuning close", "how fast does it run on a smartwatch"]
    assert unanswered_parts(words, evidence, vocabulary, 0.35) == {}
    alien = ["How much of the gap does proxy tuning close", "what about zorblax quuxification"]
    assert "never mention" in unanswered_parts(alien, evidence, vocabulary, 0.35)[1]
    assert unanswered_parts(parts[:1], evidence, vocabulary, 0.35) == {}  # one part: the question's refusal decides


def test_asked_kind_and_topic_words():
    assert asked_kind("In which year was Prefix-Tuning published?") == "year"
    assert asked_kind("What GPU hardware was used to train it?") == "hardware"
    assert asked_kind("How much money did it cost to train Yi?") == "money"
    assert asked_kind("Which zero-cost proxies work best?") is None
    words, unknown = topic_words("Camera-trap species detection with proxies", {"proxi", "detect"})
    assert words == ["camera", "trap", "species", "detection", "proxies"]
    assert unknown == ["camera", "trap", "species"]
    # a two-letter acronym is a topic too: a corpus that never says "KV" cannot answer about the KV cache
    words, unknown = topic_words("Which papers reduce the memory of the KV cache?", {"reduc", "memori", "cach"})
    assert words == ["reduce", "memory", "cache", "kv"] and unknown == ["kv"]
    middling = [Evidence(1, "p", "T", "u", "QFT reduces the model state memory to 21%.", 0.5, 1)]
    reason = refusal_reason(
        "Which papers reduce the memory of the KV cache?", middling, {"reduc", "memori", "cach"}, 0.35, 0.15
    )
    assert "never mention 'KV'" in reason
    from rag.evidence import unknown_name

    assert unknown_name("KV", {"cach"}) and not unknown_name("GPUs", {"gpu"})
    # split as BM25 splits ("SVCT2", not "SVCT"); a stopword ("NO", nitric oxide) or a number says nothing
    assert not unknown_name("SVCT2", {"svct2"}) and not unknown_name("T6SS", {"t6ss"})
    assert not unknown_name("NO", set()) and not unknown_name("GPT-4", {"gpt"})


def test_followups_are_searched_with_the_previous_question():
    history = [{"role": "user", "content": "What is proxy-tuning?"}, {"role": "assistant", "content": "..."}]
    assert (
        resolve("and how does it compare to LoRA?", history) == "What is proxy-tuning? and how does it compare to LoRA?"
    )
    assert resolve("Which papers study many-shot in-context learning with long-context models?", history) == (
        "Which papers study many-shot in-context learning with long-context models?"
    )
    assert resolve("and how does it compare to LoRA?", None) == "and how does it compare to LoRA?"
    assert resolve("what about LoRA?", [("What is proxy-tuning?", "...")]) == "What is proxy-tuning? what about LoRA?"


def test_followup_detection_on_labelled_turns_and_standalone_dev_questions():
    from rag.conversation import is_followup
    from rag.evaluate import followup_figures, load_questions
    from tests.conftest import DATA, DEV_SET

    figures = followup_figures(DATA / "followups.jsonl")
    assert figures["turns"] >= 20 and figures["accuracy"] >= 0.95, figures["wrong"]
    assert not [q["id"] for q in load_questions(DEV_SET) if is_followup(q["question"])]  # all 60 stand alone


def test_unicode_words_sentences_and_topic_words():
    text = "Schrödinger bridges map images. Ébauche models are new. Модели работают. 数据很好。"
    assert split_sentences(text) == [
        "Schrödinger bridges map images.",
        "Ébauche models are new.",
        "Модели работают. 数据很好。",
    ]
    assert "schrödinger" in content_words("The Schrödinger bridge")
    words, unknown = topic_words("Schrödinger bridge models", {"schrödinger", "bridg", "model"})
    assert words == ["schrödinger", "bridge", "models"] and unknown == []
