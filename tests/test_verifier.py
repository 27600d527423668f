"""The verifier on labelled sentences: the reader-graded dev sentences and the adversarial perturbations.

Each file is run whole and its figures printed: the share of bad sentences dropped (a MISCITED one may instead be
re-cited to the evidence that states it) and the share of supported sentences kept.
"""

from __future__ import annotations

import json

import pytest

from rag.citations import check_sentence
from rag.evaluate import verifier_figures
from rag.evidence import Evidence
from tests.conftest import DATA

FILES = {
    "dev": DATA / "claims-dev.jsonl",
    "adversarial": DATA / "claims-adversarial.jsonl",
    "synthesis": DATA / "claims-synthesis-dev.jsonl",  # capable-model sentences (issue 18)
}
# (bad dropped, supported kept) each file must reach: issue 18's targets
TARGETS = {"dev": (0.95, 0.85), "adversarial": (0.95, 0.85), "synthesis": (0.95, 0.90)}


def load(path):
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


@pytest.mark.parametrize("name", FILES)
def test_labelled_sentences(name, capsys):
    rows = load(FILES[name])
    figures = verifier_figures(rows)
    with capsys.disabled():
        print(f"\nverifier on {FILES[name].name}: {figures['summary']}")
        for line in figures["errors"]:
            print("  wrong:", line)
    dropped, kept = TARGETS[name]
    assert figures["bad_dropped"] >= dropped
    assert figures["supported_kept"] >= kept


def evidence(*quotes, titles=None):
    titles = titles or [f"Paper {i}" for i in range(1, len(quotes) + 1)]
    return [Evidence(i, f"p{i}", t, "u", q, 0.9, i) for i, (q, t) in enumerate(zip(quotes, titles), 1)]


SNAP = evidence(
    "SnapFusion beats Stable Diffusion v1.5 with 50 steps using only 8 denoising steps.",
    "LoRA reduces the number of trainable parameters by 10,000 times.",
    titles=["SnapFusion: Text-to-Image Diffusion Model on Mobile Devices", "LoRA: Low-Rank Adaptation"],
)
QUESTION = "How many denoising steps does SnapFusion need to beat Stable Diffusion v1.5 with 50 steps?"


@pytest.mark.parametrize(
    "sentence, kept",
    [
        ("SnapFusion needs only 8 denoising steps to beat Stable Diffusion v1.5 [1].", True),
        ("SnapFusion needs eight denoising steps to beat Stable Diffusion v1.5 [1].", True),
        ("SnapFusion needs 1 denoising step to beat Stable Diffusion v1.5 [1].", False),  # "1" is inside "v1.5"
        ("SnapFusion needs 80 denoising steps [1].", False),
        ("SnapFusion needs 8% denoising steps [1].", False),
        ("SnapFusion beats Stable Diffusion v1.5 with 8 steps using only 50 denoising steps [1].", False),  # swapped
        ("SnapFusion uses 8 denoising steps and beats Stable Diffusion v1.5 with 50 steps [1].", True),
        ("LoRA reduces the number of trainable parameters by 10,000 times [2].", True),
        ("LoRA increases the number of trainable parameters by 10,000 times [2].", False),
        ("LoRA does not reduce the number of trainable parameters [2].", False),
        ("QLoRA reduces the number of trainable parameters by 10,000 times [2].", False),
        ("SnapFusion reduces the number of trainable parameters by 10,000 times [1].", False),
        ("SnapFusion: Text-to-Image Diffusion Model on Mobile Devices [1].", False),  # a bare title
        ("SnapFusion needs denoising steps to beat Stable Diffusion [1].", False),  # the question restated
        ("Question: how many steps does SnapFusion need [1]?", False),
        ("Based on the context, SnapFusion beats Stable Diffusion v1.5 using only 8 denoising steps [1].", True),
    ],
)
def test_perturbations_of_a_supported_sentence(sentence, kept):
    checked = check_sentence(sentence, SNAP, QUESTION)
    assert bool(checked.text) == kept, checked.reason


def test_splice_is_kept_only_when_it_cites_both_and_each_clause_is_stated():
    both = "SnapFusion beats Stable Diffusion v1.5 with only 8 denoising steps, and LoRA reduces trainable parameters"
    assert check_sentence(both + " by 10,000 times [1][2].", SNAP).cited == [1, 2]
    assert check_sentence(both + " by 10,000 times [1].", SNAP).text == ""
    assert check_sentence(both + " by 100 times [1][2].", SNAP).text == ""


def test_miscited_sentence_is_recited_and_uncited_one_attributed():
    checked = check_sentence("LoRA reduces the number of trainable parameters by 10,000 times [1].", SNAP)
    assert checked.cited == [2] and checked.reason == "recited"
    assert check_sentence("LoRA reduces trainable parameters by 10,000 times.", SNAP).cited == [2]


@pytest.mark.parametrize("marker", ["[1-2-3]", "[0]", "[99]", "[]", "[1,]", "[n]", "[2-1]", "[1][1]"])
def test_odd_markers_never_raise(marker):
    checked = check_sentence(f"LoRA reduces the number of trainable parameters by 10,000 times {marker}.", SNAP)
    assert checked.cited == [2]
    assert checked.text == "LoRA reduces the number of trainable parameters by 10,000 times [2]."
