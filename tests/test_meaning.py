"""The verifier's meaning checks on capable-model style sentences (made up here, not taken from the labelled files),
coreference in a stream, and the optional judge pass with a fake model."""

from __future__ import annotations

import time

import pytest

from rag.citations import StreamVerifier, Verifier, judge, judge_reliable, parse_verdict
from rag.evidence import Evidence


def evidence(*quotes, titles=None):
    titles = titles or [f"Paper {i}" for i in range(1, len(quotes) + 1)]
    return [Evidence(i, f"p{i}", t, "u", q, 0.9, i) for i, (q, t) in enumerate(zip(quotes, titles), 1)]


KV = evidence(
    "KVPress reduces the memory of the key-value cache by up to 40% with almost no loss in accuracy on long-context "
    "benchmarks.",
    "On five retrieval tasks, KVPress outperforms StreamingLLM and H2O by 3.1 and 5.2 points, respectively.",
    "In low-memory settings, the compressed model answers questions about 2 times faster.",
    titles=[
        "KVPress: Compressing the KV Cache",
        "KVPress: Compressing the KV Cache",
        "KVPress: Compressing the KV Cache",
    ],
)


@pytest.mark.parametrize(
    "sentence, kept",
    [
        ("KVPress cuts key-value cache memory by up to 40% with almost no accuracy loss [1].", True),
        ("KVPress cuts key-value cache memory by 40% with almost no accuracy loss [1].", False),  # hedge dropped
        ("KVPress cuts key-value cache memory by over 40% [1].", False),  # bound changed
        ("KVPress reduces the memory of the key-value cache by up to 40% on all benchmarks [1].", False),  # scope
        ("KVPress reduces the key-value cache memory by up to 40% with no loss in accuracy [1].", False),  # hedge
        ("KVPress outperforms H2O by 5.2 points on five retrieval tasks [2].", True),
        ("KVPress outperforms StreamingLLM by 5.2 points on five retrieval tasks [2].", False),  # respectively
        ("Because it compresses the cache, KVPress answers questions about 2 times faster [3].", False),  # cause
        ("In low-memory settings, the compressed model answers questions about 2 times faster [3].", True),
        ("The compressed model answers questions about 2 times faster than the full model [3].", False),  # comparison
        ("KVPress is the first method to compress the key-value cache by up to 40% [1].", False),  # first
        ("KVPress does not reduce the memory of the key-value cache [1].", False),  # negation
    ],
)
def test_meaning_of_a_paraphrase(sentence, kept):
    checked = Verifier(KV).check(sentence)
    assert bool(checked.text) == kept, checked.reason


def test_two_quotes_of_one_paper_combine_but_a_number_keeps_what_it_counts():
    ev = evidence(
        "The suite has two parts: human ratings along several quality dimensions, and ten robustness checks.",
        "We release the suite as a benchmark for referenceless caption metrics.",
        titles=["CapSuite: A Benchmark", "CapSuite: A Benchmark"],
    )
    ev[1] = Evidence(1, "p1", "CapSuite: A Benchmark", "u", ev[1].quote, 0.9, 2)
    v = Verifier(ev)
    assert v.check("CapSuite is a benchmark for referenceless caption metrics with ten robustness checks [1].").text
    assert not v.check("Its human ratings span ten quality dimensions [1].").text  # ten counts the checks


def test_relative_is_not_absolute_and_a_range_end_is_not_an_average():
    ev = evidence("It beats the baseline by 6% absolute and by 2.1% to 7.4% on the held-out tasks.")
    assert Verifier(ev).check("It beats the baseline by 6% absolute [1].").text
    assert not Verifier(ev).check("It beats the baseline by 6% relative [1].").text
    assert not Verifier(ev).check("It beats the baseline by an average of 7.4% on the held-out tasks [1].").text
    assert Verifier(ev).check("It beats the baseline by up to 7.4% on the held-out tasks [1].").text


TWO = evidence(
    "We propose LayerMix, which ensembles a pre-trained model with a small task-specific model at every layer.",
    "GraftNet improves robustness to distribution shift on six vision benchmarks.",
    titles=["LayerMix: Layer-wise Ensembles", "GraftNet: Grafting for Robustness"],
)


def test_it_refers_to_the_paper_the_previous_sentence_cited():
    stream = StreamVerifier(TWO)
    kept = stream.feed("LayerMix ensembles a pre-trained model with a small task-specific model at every layer [1]. ")
    kept += stream.feed("It improves robustness to distribution shift on six vision benchmarks [2]. Done")
    assert len(kept) == 1 and stream.dropped[-1].reason.startswith("coreference")
    # the same sentence after GraftNet was named is kept
    stream = StreamVerifier(TWO)
    text = "GraftNet targets distribution shift in vision [2]. It improves robustness on six vision benchmarks [2]."
    assert len(stream.feed(text) + stream.finish()) == 2


def test_a_two_paper_sentence_needs_a_source_for_each_clause():
    ok = "LayerMix ensembles a pre-trained model with a small model at every layer, and GraftNet improves robustness"
    assert Verifier(TWO).check(ok + " to distribution shift [1][2].").cited == [1, 2]
    assert (
        not Verifier(TWO)
        .check("LayerMix improves robustness to distribution shift on six vision benchmarks [1][2].")
        .text
    )


# --- the judge ------------------------------------------------------------------------------------------------------

QUOTES = [KV[0]]
SENTENCE = "KVPress cuts key-value cache memory by up to 40% [1]."


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ('YES: "KVPress reduces the memory of the key-value cache by up to 40%"', True),
        ("yes - KVPress reduces the memory of the key-value cache", True),
        ("NO: the quote does not say which benchmarks", False),
        ("No.", False),
        ('YES: "KVPress halves the latency of decoding on every GPU"', None),  # relies on words no quote holds
        ("YES", None),  # no quote given: a small model's bare yes is no verdict
        ("The sentence is mostly right.", None),
        ("", None),
    ],
)
def test_judge_reply_parsing(reply, verdict):
    assert parse_verdict(reply, QUOTES) is verdict


def test_judge_asks_with_the_quotes_and_degrades_on_failure_or_deadline():
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        return 'YES: "KVPress reduces the memory of the key-value cache by up to 40%"'

    assert judge(SENTENCE, QUOTES, ask) is True
    assert "up to 40%" in prompts[0] and "KVPress cuts key-value cache memory" in prompts[0] and "[1]" in prompts[0]

    def broken(prompt):
        raise ConnectionError("model gone")

    def slow(prompt):
        time.sleep(2)
        return "NO: not stated"

    assert judge(SENTENCE, QUOTES, broken) is None
    assert judge(SENTENCE, QUOTES, slow, deadline=time.monotonic() + 0.05) is None
    assert judge(SENTENCE, QUOTES, slow, deadline=time.monotonic() - 1) is None


def test_judge_reliable_needs_both_controls_right():
    def capable(prompt):
        sentence = prompt.split("Sentence:")[1]
        return "NO: 80 is not stated" if "80" in sentence else 'YES: "Our method needs only 8 denoising steps"'

    assert judge_reliable(capable)
    assert not judge_reliable(lambda prompt: "YES: Our method needs only 8 denoising steps")  # says yes to all
    assert not judge_reliable(lambda prompt: "I think so")


def test_stream_drops_what_the_judge_rejects_and_keeps_what_it_cannot_judge():
    said_no = StreamVerifier(KV, judge=lambda checked: False)
    assert said_no.feed(SENTENCE + " ") + said_no.finish() == [] and said_no.dropped[0].reason == "judge"
    no_verdict = StreamVerifier(KV, judge=lambda checked: None)
    assert no_verdict.feed(SENTENCE + " ") + no_verdict.finish() == [
        "KVPress cuts key-value cache memory by up to 40% [1]."
    ]


def test_a_sentence_opening_with_a_quoted_title_keeps_its_quotation_marks():
    ev = evidence("We show that LayerMix ensembles a pre-trained model with a small model at every layer.",
                  titles=["LayerMix: Layer-wise Ensembles of Views"])  # fmt: skip
    checked = Verifier(ev).check(
        "'LayerMix: Layer-wise Ensembles of Views' ensembles a pre-trained model with a small model at every layer [1]."
    )
    assert checked.text.startswith("'LayerMix: Layer-wise Ensembles of Views' ensembles")
    whole = Verifier(ev).check('"LayerMix ensembles a pre-trained model with a small model at every layer." [1]')
    assert whole.text.startswith("LayerMix ensembles")
