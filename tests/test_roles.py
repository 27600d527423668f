"""The sentence-role model (rag/roles.py) and wanted_roles.

`tests/data/csabstruct-test-sample.jsonl`: the first four CSAbstruct test abstracts (Apache-2.0, see
/work/shared/benchmarks/csabstruct) of at most 8 sentences that open with a background sentence and hold a result
sentence, both labelled with annotator agreement >= 0.8 (chosen by those labels, not by the model's output), with
their sentences' vectors from the bundled int8 embedder (rounded to 3 decimals; `test_stored_vectors_are_the_embedders`
checks them against the embedder).
"""

from __future__ import annotations

import importlib.resources
import json

import numpy as np
import pytest

from rag import roles
from rag.roles import DEFAULT_WANTED, ROLES, role_probabilities, sentence_roles, wanted_roles
from tests.conftest import DATA

SAMPLE = [json.loads(line) for line in (DATA / "csabstruct-test-sample.jsonl").open(encoding="utf-8")]
CLEAR = 0.8  # annotator agreement of a "clear" sentence


def clear_sentences(role: str) -> list[tuple[str, str]]:
    """(gold, predicted) for every sentence of the sample labelled `role` with agreement >= CLEAR."""
    out = []
    for abstract in SAMPLE:
        predicted = sentence_roles(abstract["vectors"])
        out += [
            (gold, p)
            for gold, conf, p in zip(abstract["labels"], abstract["confs"], predicted)
            if gold == role and conf >= CLEAR
        ]
    return out


def test_weights_ship_inside_the_package_and_are_small():
    shipped = importlib.resources.files("rag") / "data" / "roles.npz"
    assert shipped.is_file()
    assert shipped.stat().st_size < 100_000  # tens of KB: a few thousand float32 weights
    model = roles.role_model()
    assert model["sentence_w"].shape == (384 + 3, len(ROLES))
    assert model["context_w"].shape == (5 * (2 + 2 * roles.CONTEXT) + 3, len(ROLES))
    assert tuple(model["roles"]) == ROLES
    assert "MiniLM" in roles.model_embedder()


def test_clear_result_sentences_are_labelled_result():
    pairs = clear_sentences("result")
    assert len(pairs) >= 4
    assert all(p == "result" for _, p in pairs), pairs


def test_clear_background_openings_are_labelled_background():
    predicted = [sentence_roles(a["vectors"])[0] for a in SAMPLE]
    assert predicted == ["background"] * len(SAMPLE)


def test_one_role_per_sentence_in_order():
    abstract = SAMPLE[0]
    got = sentence_roles(abstract["vectors"])
    assert len(got) == len(abstract["sentences"])
    assert set(got) <= set(ROLES)
    probabilities = role_probabilities(np.asarray(abstract["vectors"], dtype=np.float32))
    assert probabilities.shape == (len(abstract["sentences"]), len(ROLES))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # the roles depend on the order: the same sentences reversed are not labelled as the reverse
    assert sentence_roles(abstract["vectors"][::-1]) != got[::-1]


def test_edge_cases():
    assert sentence_roles([]) == []
    assert len(sentence_roles([SAMPLE[0]["vectors"][0]])) == 1  # a one-sentence abstract
    with pytest.raises(ValueError, match="384"):
        sentence_roles([[0.1] * 768])


def test_shifted_moves_rows_with_zeros_past_the_ends():
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert roles.shifted(rows, 1).tolist() == [[0, 0], [0, 1], [2, 3]]
    assert roles.shifted(rows, -2).tolist() == [[4, 5], [0, 0], [0, 0]]
    assert roles.shifted(rows, 5).tolist() == [[0, 0]] * 3


@pytest.mark.parametrize(
    "question, first, also",
    [
        ("How does LoRA reduce the number of trainable parameters?", "method", ("objective",)),
        ("How well does the model do on GLUE compared with BERT?", "result", ()),
        ("By how much does FewGen beat few-shot methods?", "result", ()),
        ("How many training examples did TL-Training use?", "result", ("method",)),
        ("Which papers study weak-to-strong generalization?", "objective", ("method",)),
        ("What are the open questions in retrieval-augmented generation?", "objective", ("method",)),
        ("Why is long video generation hard?", "background", ()),
        ("What are the limitations of existing tool-use benchmarks?", "background", ("result",)),
        ("What are the limitations of reinforcement learning from human feedback?", "background", ("result",)),
        ("What are the weaknesses of LLM-as-a-judge evaluation?", "background", ("result",)),
        ("What evidence is there that chain-of-thought helps small models?", "result", ("objective",)),
        ("What do studies show about safety training being undone?", "result", ("objective",)),
        ("What is evidence retrieval in fact checking?", "objective", ("method",)),  # about evidence: not asked for
        ("How does the model find evidence for a claim?", "method", ("objective",)),
    ],
)
def test_wanted_roles(question, first, also):
    wanted = wanted_roles(question)
    assert wanted[0] == first
    assert set(also) <= set(wanted)
    assert set(wanted) <= set(ROLES)


def test_background_is_wanted_only_when_asked():
    for question in (
        "How does LoRA reduce the number of trainable parameters?",
        "How many tasks was RoboFuME tested on?",
        "Which papers use diffusion models for video?",
        "Tell me about mixture-of-experts routing.",
    ):
        assert "background" not in wanted_roles(question), question
    assert wanted_roles("Tell me about mixture-of-experts routing.") == DEFAULT_WANTED


@pytest.mark.slow
def test_stored_vectors_are_the_embedders():
    """The fixture's vectors are what the bundled embedder gives these sentences, and give the same roles."""
    from rag.models import load_embedder

    embedder = load_embedder("bundled")
    for abstract in SAMPLE:
        fresh = np.asarray(embedder.encode(abstract["sentences"]), dtype=np.float32)
        stored = np.asarray(abstract["vectors"], dtype=np.float32)
        cosines = (fresh * stored).sum(1) / np.linalg.norm(stored, axis=1)
        # int8 activations are scaled per batch, so a sentence's vector moves a little with its batch (README)
        assert cosines.min() > 0.98
        assert sentence_roles(fresh) == sentence_roles(stored)
