"""Overview answers (rag/overview.py) for open and "which papers" questions: the relevant papers, grouped, one line
each with the paper's short name, its [n] and its key sentence quoted; the kind and the groups in --json and the API."""

from __future__ import annotations

import re

import pytest

from rag import Assistant
from rag.answer import display
from rag.overview import asked_names, expansions, question_kind, short_name, standalone
from rag.roles import wanted_roles
from rag.settings import Settings
from tests.fakes import ScriptedLLM, SynthesisLLM, tokens
from tests.live import PROXY, client, keyed, running

LONG_VIDEO = "What approaches generate long videos with diffusion models without tuning them?"
LONG_VIDEO_PAPERS = {
    "Tuning-Free Multi-Event Long Video Generation via Synchronized Coupled Sampling",
    "Tuning-Free Long Video Generation via Global-Local Collaborative Diffusion",
}


@pytest.mark.parametrize(
    "question, kind",
    [
        ("What are the main ways to cut the number of denoising steps in diffusion models?", "overview"),
        ("How are researchers adding controllability to music generation models?", "overview"),
        ("What selection strategies have been proposed for in-context demonstrations?", "overview"),
        ("What inference-time strategies let a video diffusion model make longer videos?", "overview"),
        ("What techniques does SnapFusion use to run on phones?", "fact"),
        ("Which papers study weak-to-strong generalization?", "papers"),
        ("virtual try-on papers", "papers"),
        ("How many denoising steps does SnapFusion need?", "fact"),
        ("In the paper on proxy-tuning, how do they steer the large model?", "fact"),
        ("Which paper models instruction tuning as a token-level MDP?", "fact"),
        ("For QA under a low budget, which extra dataset works best?", "fact"),
        ("Does instruction tuning improve zero-shot performance on unseen tasks?", "overview"),
        ("Can LLMs learn to use tools by themselves?", "overview"),
        ("Does SnapFusion use distillation?", "fact"),
        ("Is there an approach that lets a black-box LLM cooperate with a small fine-tuned model?", "fact"),
        ("Are there papers applying machine learning to weather forecasting?", "fact"),
        ("What are the known problems with RLHF?", "overview"),
        ("What alternatives to PPO are used for aligning language models?", "overview"),
    ],
)
def test_question_kinds(question, kind):
    assert question_kind(question) == kind


def test_short_names():
    assert short_name("FreeNoise: Tuning-Free Longer Video Diffusion Via Noise Rescheduling") == "FreeNoise"
    assert short_name("Tuning Language Models by Proxy") == "Tuning Language Models by Proxy"
    assert short_name("Scaling Laws for LoRA Adapters in Practice Today") == "Scaling Laws for LoRA Adapters in …"
    synced = "Tuning-Free Multi-Event Long Video Generation via Synchronized Coupled Sampling"
    sentence = (
        "To tackle such an issue, we propose Synchronized Coupled Sampling (SynCoS), a novel inference framework."
    )
    assert short_name(synced, sentence) == "SynCoS"
    assert (
        short_name("Consistency Noise Injection for Long Video", "we propose a mechanism, dubbed CoNo, that") == "CoNo"
    )
    assert short_name("Supercharged One-step Diffusion", "This paper presents SNOOPI, a novel framework") == "SNOOPI"
    assert (
        short_name("Model Breadcrumbs Scale Merging", "We use LoRA (LoRA) adapters.")
        == "Model Breadcrumbs Scale Merging"
    )
    assert short_name("No Training, No Problem: Rethinking Classifier-Free Guidance") == "No Training, No Problem"
    focus = "Focused Large Language Models are Stable Many-Shot Learners"  # six words would cut off "Many-Shot"
    assert short_name(focus, "we propose a training-free method FocusICL, which conducts filtering") == "FocusICL"
    assert short_name("Some Title About Things", "We propose a new model that is better.") == "Some Title About Things"
    assert short_name("LoRA vs Full Fine-tuning: An Illusion of Equivalence") == "LoRA vs Full Fine-tuning"  # not LoRA


def test_a_group_is_not_named_for_what_the_question_asked_in_other_letters():
    from rag.evidence import Evidence
    from rag.overview import group_name

    def ev(title, quote):
        return Evidence(0, title, title, "u", quote, 0.5, 1)

    members = [
        ev("Safe RLHF: Safe Reinforcement Learning from Human Feedback", "We decouple reward and cost models."),
        ev("RLHF Workflow: From Reward Modeling to Online RLHF", "We present an online reward workflow."),
    ]
    chosen = members + [ev("Nash Learning", "We learn a preference model.")]
    question = "What are the limitations of reinforcement learning from human feedback?"
    assert "rlhf" not in group_name(members, chosen, question).lower()  # was "Reward rlhf"
    assert "rlhf" in group_name(members, chosen, "What are the limits of alignment methods?").lower()
    tuned = [ev("Fine-Tuning Enhances Circuits", "Fine-tuning helps."), ev("When Fine-Tuning Fails", "It fails.")]
    assert group_name(tuned, tuned + chosen, "Does fine-tuning add capabilities?") == ""  # was "Fine-tuning"
    said = [ev("Scaling Laws", "Results surpass GPT-3 here."), ev("Data Pruning", "Our model surpasses GPT-3.")]
    assert (
        group_name(said, said + chosen, "Which papers study scale?") == ""
    )  # words of no title: was "Surpasses gpt-3"


def test_an_overview_line_never_refers_to_a_sentence_it_does_not_show():
    cut = "Utilizing this feature, we propose EREN (Edit models by REading Notes) to improve LLM editing."
    assert standalone(cut) == "… we propose EREN (Edit models by REading Notes) to improve LLM editing."
    assert standalone("To tackle such an issue, we propose SynCoS, a novel inference framework.") == (
        "… we propose SynCoS, a novel inference framework."
    )
    assert standalone("Specifically, We first utilize AI tools to decompose the response.") == (
        "… we first utilize AI tools to decompose the response."
    )
    then = "Then, by leveraging the time-step information, we propose time-step guidance (TSG), an extension of CFG."
    assert standalone(then) == "… we propose time-step guidance (TSG), an extension of CFG."
    snoopi = "This paper presents SNOOPI, a framework designed to address these limitations by enhancing the guidance."
    assert standalone(snoopi) == snoopi
    for whole in ("In this paper, we propose FreeNoise for longer videos.", "Methods such as LoRA cut memory use."):
        assert standalone(whole) == whole
    mechanistic = (
        "We perform an extensive analysis of the effects of fine-tuning in these settings, and show that: (i) "
        "fine-tuning rarely alters the underlying model capabilities; (ii) a minimal transformation, which we call a "
        "'wrapper', is typically learned on top of the underlying model capabilities; and (iii) further fine-tuning "
        "leads to 'revival' of the capability, i.e., the model begins reusing these capability after a few steps."
    )
    assert standalone(mechanistic).startswith(
        "… show that: (i) fine-tuning rarely alters"
    )  # "these" further on: its own
    dependents = (
        "This method halves the cost.",
        "(ii) a sampler that needs four steps.",
        "Moreover, it works.",
        "This creates large, yet noisy, question-passage relevance pairs that are domain specific.",
        "Extensive experiments have shown the effectiveness of the above strategies on long videos.",
        "We then propose to guide video diffusion models with these layouts by adjusting the attention maps.",
        "We measure the practical utility of this approach by fine-tuning pre-trained models.",
    )
    for dependent in dependents:
        assert standalone(dependent) == ""


def test_an_open_question_gets_the_relevant_papers_each_with_its_sentence_quoted(fixture_index):
    answer = Assistant(Settings(index_dir=fixture_index, llm_backend="none")).ask(LONG_VIDEO)
    assert answer.kind == "papers" and not answer.refused  # "what approaches": the papers that take one
    cited = {c.n: c for c in answer.citations}
    assert LONG_VIDEO_PAPERS <= {c.title for c in cited.values()} and PROXY not in {c.title for c in cited.values()}
    lines = answer.prose.splitlines()
    assert re.match(r"\d+ indexed papers address this", lines[0]) and lines[0] == answer.opening
    quoted = [line for line in lines if line.startswith("- ")]
    assert len(quoted) == len(cited) == sum(len(s.papers) for s in answer.sections)
    for line in quoted:  # "- Name [n]: “sentence”": the sentence is the cited paper's, as shown in its abstract
        name, n, sentence = re.fullmatch(r"- (.+) \[(\d+)\]: “(.+)”", line).groups()
        paper = cited[int(n)]
        # whole, or without a lead-in clause that refers to a sentence not shown ("… we propose ...")
        assert name == short_name(paper.title, paper.quotes[0])
        assert any(display(q).lower().endswith(sentence.removeprefix("… ").lower()) for q in paper.quotes)
    assert [n for s in answer.sections for n in s.papers] == sorted(cited)
    data = answer.to_dict()
    assert data["kind"] == "papers" and data["sections"][0]["papers"]


def test_the_api_returns_the_kind_and_the_groups(fixture_index):
    assistant = Assistant(keyed(fixture_index, llm_backend="none"))
    from rag.server import build_app

    with running(build_app(assistant, ui=False)) as url:
        response = client(url).chat.completions.create(
            model="abstract-rag", messages=[{"role": "user", "content": LONG_VIDEO}]
        )
    extra = response.model_extra
    assert extra["kind"] == "papers" and extra["sections"]
    numbers = [n for section in extra["sections"] for n in section["papers"]]
    assert numbers == [r["n"] for r in extra["references"]]


def test_the_ui_and_the_export_show_the_groups(fixture_index):
    from ui import render

    answer = Assistant(Settings(index_dir=fixture_index, llm_backend="none")).ask(LONG_VIDEO)
    named = [s.name for s in answer.sections if s.name]
    html = render.answer_html(0, answer.prose, answer)
    exported = render.export_markdown([answer], "today")
    for name in named:
        assert f'<div class="rag-section">{render.esc(name)}</div>' in html and f"**{name}:**" in exported
    assert html.count('class="rag-cite"') >= 2 * len(answer.citations)  # each line's [n] and the refs line


def test_a_capable_model_writes_each_groups_sentence_and_its_false_ones_are_dropped(fixture_index):
    llm = SynthesisLLM(prompts=[])
    answer = Assistant(Settings(index_dir=fixture_index, answer_style="synthesis"), llm=llm).ask(LONG_VIDEO)
    assert answer.kind == "papers" and "Group: " in llm.prompts[0] and "For each group" in llm.prompts[0]
    paraphrase = "".join(llm.script).split(" [1].")[0]  # of [1]'s key sentence; then it flipped, and spliced with [2]
    assert answer.generated["kept"] >= 1 and any(" not " in false for false in answer.dropped)  # the flipped finding
    assert paraphrase in answer.prose and answer.prose.index(paraphrase) < answer.prose.index(" [1]: “")
    for false in answer.dropped:
        assert false not in answer.text
    assert answer.prose.count("\n- ") == len(answer.citations)  # every paper's quoted line is still there


def test_the_bundled_model_is_not_asked_for_an_overview(fixture_index):
    llm = ScriptedLLM(script=tokens("Long videos are made by noise rescheduling [1]."), prompts=[])
    answer = Assistant(Settings(index_dir=fixture_index, answer_style="extractive"), llm=llm).ask(LONG_VIDEO)
    assert llm.prompts == [] and "noise rescheduling [1]" not in answer.prose and answer.generated == {}


@pytest.mark.slow
def test_the_limitations_of_a_method_are_answered_with_sentences_that_state_them(bundled_index):
    """Not with each paper's premise ("RLHF has emerged as the main paradigm ...") or its own method."""
    answer = Assistant(Settings(index_dir=bundled_index, llm_backend="none")).ask(
        "What are the limitations of reinforcement learning from human feedback?"
    )
    lines = {c.title: line for c in answer.citations for line in answer.prose.split("\n") if f"[{c.n}]: “" in line}
    assert "inherent limitation of current reward models" in lines["Nash Learning from Human Feedback"]
    assert "unstable" in lines["Direct Preference Optimization: Your Language Model is Secretly a Reward Model"]


@pytest.mark.slow
def test_a_yes_no_question_over_the_literature_is_answered_with_each_papers_finding(bundled_index):
    """ "Does X improve Y?" asks what papers found: several papers, each line the sentence stating its finding (FLAN's
    "We show that ...", which the role model calls background), not one quote or a benchmark win."""
    answer = Assistant(Settings(index_dir=bundled_index, llm_backend="none")).ask(
        "Does instruction tuning improve zero-shot performance on unseen tasks?"
    )
    assert answer.kind == "overview" and len(answer.citations) >= 3
    lines = {c.title: line for c in answer.citations for line in answer.prose.split("\n") if f"[{c.n}]: “" in line}
    flan = lines["Finetuned Language Models Are Zero-Shot Learners"]
    assert "We show that instruction tuning" in flan and "improves zero-shot performance on unseen tasks" in flan


def test_the_names_a_question_asks_about_and_what_they_stand_for():
    assert asked_names("What are the limitations of DPO?") == ["DPO"]
    assert asked_names("Which papers evaluate GPT-4 on math?") == ["GPT-4"]
    assert asked_names("Do VLMs hallucinate less than LLMs?") == []  # plurals: kinds of model
    assert asked_names("Which papers improve LLM-based re-ranking?") == []  # a field
    assert asked_names("What are the ways to cut steps (better ODE solvers, distillation)?") == []  # examples
    assert expansions("DPO", ["which we call Direct Preference Optimization (DPO), is stable"]) == {
        "direct preference optimization"
    }
    assert expansions("MoE", ["a sparse Mixture-of-Experts (MoE) layer"]) == {"mixture-of-experts"}
    assert expansions("ICL", ["in-context learning (ICL) with many demonstrations"]) == {"in-context learning"}
    assert expansions("LoRA", ["Low-Rank Adaptation (LoRA) freezes the weights"]) == {"low-rank adaptation"}
    assert expansions("RL", ["a policy (RL) is"]) == set()  # the words before do not spell it


@pytest.mark.slow
def test_an_overview_of_a_named_method_keeps_only_papers_that_mention_it(bundled_index):
    """Before, "What are the limitations of DPO?" listed a data-selection paper's line about instruction-tuning data
    and a multimodal distribution-shift paper, neither saying DPO; no abstract here states a limitation of DPO."""
    assistant = Assistant(Settings(index_dir=bundled_index, llm_backend="none"))
    answer = assistant.ask("Which papers train models with DPO?")
    lines = [line for line in answer.prose.split("\n") if line.startswith("- ")]
    assert len(lines) >= 3 and all("DPO" in line or "direct preference optimization" in line.lower() for line in lines)
    limits = assistant.ask("What are the limitations of DPO?")
    assert limits.refused and "states such a limitation" in limits.prose
    refused = assistant.ask("What techniques reduce the memory of the KV cache?")  # the corpus never says "KV"
    assert refused.refused and "never mention 'KV'" in refused.prose


def test_a_line_is_what_the_paper_does_or_finds_not_a_side_remark():
    from rag.evidence import Evidence
    from rag.overview import key_sentences

    def ev(quote, score, role):
        return Evidence(0, "p", "Fine-tuning LLMs for domain adaptation", "u", quote, score, 1, role=role)

    finding = ev(
        "We find that model merging leads to new functionalities that neither parent model had.", 0.71, "result"
    )
    remark = ev(
        "Experiments with different model architectures are presented, where similar behaviors are observed.",
        0.57,
        "method",
    )
    question = "Which papers study model merging?"
    assert key_sentences([finding, remark], wanted_roles(question), question)["p"] is finding  # was the remark
