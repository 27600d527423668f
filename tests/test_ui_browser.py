"""End to end: the real app (bundled corpus, embedding model and LLM) in headless Chromium, and its API.

One app per module (as `rag serve` serves it, without keys), on a copy of the session's bundled index plus two papers
with markup in their titles.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from rag.assistant import Assistant
from rag.server import build_app
from rag.settings import Settings
from tests.live import PROXY, QUESTION, running

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).parents[1] / "docs"
XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_PAPERS = [
    {
        "title": XSS_IMG,
        "abstract": "Zebra finches learn their songs from adult tutors during a sensitive period. We "
        "recorded the syllable sequences of 41 juvenile zebra finches and modelled how tutoring shapes them.",
    },
    {
        "title": XSS_SCRIPT,
        "abstract": "Axolotl limb regeneration relies on a blastema of dedifferentiated cells. We "
        "map axolotl blastema cell states across twelve regeneration stages with single-cell sequencing.",
    },
]
UPLOAD_PAPER = {
    "title": "Quokka Photon Sorting for Marsupial Vision Benchmarks",
    "abstract": "We introduce quokka "
    "photon sorting, a method that bins photons by wavelength for marsupial vision benchmarks, and show "
    "that it improves retinal model fits on three datasets.",
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def app(bundled_index, tmp_path_factory):
    """(url, assistant) of the real app on a private copy of the bundled index, with the XSS papers added."""
    index_dir = tmp_path_factory.mktemp("ui") / "index"
    shutil.copytree(bundled_index, index_dir)
    assistant = Assistant(Settings(index_dir=index_dir))
    assistant.add_files([write_jsonl(index_dir.parent / "xss.jsonl", XSS_PAPERS)])
    started = time.perf_counter()
    warm = assistant.ask(QUESTION)  # loads the LLM: the browser timing below is then the steady state
    print(
        f"\ncold start (server side): {time.perf_counter() - started:.1f} s for a whole answer, first text at "
        f"{warm.timings.get('first_text', 0):.1f} s"
    )
    with running(build_app(assistant)) as url:  # what `rag serve` serves: the API beside it, its Host and origin checks
        yield f"{url}/", assistant


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, app):
    """A fresh session on the app; `page.dialogs` collects any alert() that fires."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(app[0], wait_until="domcontentloaded")
    page.wait_for_selector("#question textarea", timeout=60_000)
    yield page
    context.close()


def ask(page, question: str, timeout: float = 180_000) -> float:
    """Type a question, press Enter, wait for its answer and source cards; returns seconds to the first text."""
    turns = page.locator("#sources .rag-turn").count()
    answers = page.locator(".rag-answer").count()
    page.fill("#question textarea", question)
    started = time.perf_counter()
    page.press("#question textarea", "Enter")
    page.wait_for_function("n => document.querySelectorAll('.rag-answer').length > n", arg=answers, timeout=timeout)
    first_text = time.perf_counter() - started
    page.wait_for_function(
        "n => document.querySelectorAll('#sources .rag-turn').length > n", arg=turns, timeout=timeout
    )
    return first_text


def test_answer_streams_with_citations_and_source_card(page, capsys, tmp_path):
    first_text = ask(page, QUESTION)
    with capsys.disabled():  # printed in every run, not asserted: timings depend on the machine's load
        print(f"\nfirst answer text in the browser {first_text:.1f} s after pressing Enter (models loaded)")
    answer = page.locator(".rag-answer").last
    assert "88%" in answer.inner_text()
    links = answer.locator("a.rag-cite")
    assert links.count() >= 1
    card = page.locator("#sources .rag-card", has=page.locator(f"a:text-is('{PROXY}')"))
    assert card.count() == 1 and "88%" in card.locator("mark").first.inner_text()
    # the README's screenshot is refreshed only when asked: UPDATE_DOCS=1 make test
    shot = DOCS / "ui-answer.png" if os.environ.get("UPDATE_DOCS") == "1" else tmp_path / "ui-answer.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    # each [n] links to an anchor inside a source card, and following it highlights that card
    target = links.first.get_attribute("href")
    assert page.locator(f"#sources .rag-card {target}").count() == 1
    links.first.click()
    page.wait_for_function("h => location.hash === h", arg=target)
    assert page.locator(".rag-card:has(.rag-anchor:target)").count() == 1
    with page.expect_download() as download:
        page.get_by_role("button", name="Export (Markdown)").click()
    exported = Path(download.value.path()).read_text(encoding="utf-8")
    assert exported.startswith("# abstract-rag conversation") and QUESTION in exported and PROXY in exported


def test_markup_in_titles_is_shown_as_text(page):
    # evidence only (no LLM) keeps this quick; it also exercises the settings
    page.locator("#settings").get_by_text("Settings").click()
    page.get_by_label("LLM backend").click()
    page.get_by_role("option", name="none").click()
    page.wait_for_selector("#notice .rag-ok", timeout=30_000)
    ask(page, "How many juvenile zebra finches were recorded to study how song tutoring shapes syllables?")
    ask(page, "Which stages of axolotl blastema regeneration were mapped with single-cell sequencing?")
    assert XSS_SCRIPT in page.locator("#sources details[open]").inner_text()  # the newest answer's cards
    assert XSS_IMG in page.locator("#sources").text_content()  # the first answer's, folded
    assert XSS_IMG in page.locator(".rag-answer").first.inner_text()
    assert XSS_SCRIPT in page.locator(".rag-answer").last.inner_text()

    page.get_by_role("tab", name="Search").click()
    page.fill("#query textarea", "zebra finches axolotl blastema")
    page.press("#query textarea", "Enter")
    page.wait_for_selector("#results .rag-card", timeout=60_000)
    results = page.locator("#results").inner_text()
    assert XSS_IMG in results and XSS_SCRIPT in results
    assert page.locator("#results img, #sources img, .rag-answer img").count() == 0  # the markup stayed text
    assert page.dialogs == []


def test_uploaded_file_becomes_searchable(page, tmp_path):
    page.get_by_role("tab", name="Library").click()
    page.locator("#upload input[type=file]").set_input_files(
        str(write_jsonl(tmp_path / "quokka.jsonl", [UPLOAD_PAPER]))
    )
    page.wait_for_selector("#upload-msg .rag-ok", timeout=120_000)
    assert "Added quokka.jsonl: 1 new papers" in page.locator("#upload-msg").inner_text()
    page.get_by_role("tab", name="Search").click()
    page.fill("#query textarea", "quokka photon sorting")
    page.press("#query textarea", "Enter")
    page.wait_for_selector("#results .rag-card", timeout=60_000)
    assert page.locator("#results .rag-card").first.inner_text().count(UPLOAD_PAPER["title"]) == 1


def test_rejected_upload_shows_one_line(page, tmp_path, app):
    before = app[1].status()["papers"]
    page.get_by_role("tab", name="Library").click()
    page.locator("#upload input[type=file]").set_input_files(
        str(write_jsonl(tmp_path / "broken.jsonl", [{"title": "No abstract"}]))
    )
    page.wait_for_selector("#upload-msg .rag-error", timeout=60_000)
    assert page.locator("#upload-msg").inner_text().startswith("Rejected: broken.jsonl:1:")
    assert app[1].status()["papers"] == before


def test_api_with_gradio_client(app):
    from gradio_client import Client

    client = Client(app[0], verbose=False)
    hits = client.predict("proxy-tuning Llama2-70B truly-tuned chat model", 3, "hybrid", api_name="/search")
    assert len(hits) == 3 and hits[0]["title"] == PROXY
    # two users at once: both queued, each gets the answer to their own question
    other = "How many juvenile zebra finches were recorded?"
    jobs = [client.submit(q, 0, "", api_name="/ask") for q in (QUESTION, other)]
    answers = [job.result(timeout=300) for job in jobs]
    assert [a["question"] for a in answers] == [QUESTION, other]
    assert not answers[0]["refused"] and PROXY in [c["title"] for c in answers[0]["citations"]]
    assert XSS_IMG in [c["title"] for c in answers[1]["citations"]] and "[1]" in answers[1]["text"]
