"""Parsers: every format, good and bad input, duplicate merging. No models needed."""

from __future__ import annotations

import json

import pytest

from rag.corpus import CorpusError, corpus_files, paper_id, paper_url, parse_file
from rag.incoming import Incoming
from rag.index import BUNDLED_DIR

ABSTRACT = (
    "We study how small language models can be tuned with very little data and report that a simple recipe "
    "reaches 88% of the quality of full fine-tuning on five benchmarks."
)


def merge(papers):
    """One paper per normalized title, in memory: the papers and the notes (Incoming.merge)."""
    with Incoming() as incoming:
        for paper in papers:
            incoming.add(paper)
        notes = incoming.merge()
        return [p for part in incoming.papers() for p in part], notes


OK = json.dumps({"title": "A good record", "abstract": ABSTRACT}) + "\n"


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_bundled_scrapes_parse_to_737_entries_and_693_papers():
    files = corpus_files([BUNDLED_DIR])
    assert len(files) == 4
    papers = [p for f in files for p in parse_file(f)]
    assert len(papers) == 737
    assert not any(p.title.startswith("Subscribe") for p in papers)
    merged, notes = merge(papers)
    assert len(merged) == 693
    assert len(notes) == 1 and "Fine-Tuning or Retrieval?" in notes[0]
    kept = next(p for p in merged if p.title.startswith("Fine-Tuning or Retrieval?"))
    assert "unsupervised fine-tuning" in kept.abstract  # the longer of the two abstracts
    assert len(kept.sources) == 2
    assert max(len(p.sources) for p in merged) >= 2


def test_scrape_with_chrome_lines_and_glued_subscribe(tmp_path):
    text = (
        "Get trending papers in your email inbox!\n\nSubscribeFirst Title\n" + ABSTRACT + "\nnew\nMar 12\n"
        "byAK and the research community\nSecond Title\n\n" + ABSTRACT + " Second.\n"
    )
    papers = parse_file(write(tmp_path, "page.txt", text))
    assert [p.title for p in papers] == ["First Title", "Second Title"]
    assert papers[0].line == 3 and papers[0].source == "page.txt"
    assert papers[0].url.startswith("https://arxiv.org/search/?")


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("Title one\n" + ABSTRACT + "\nTitle two\nTitle three\n" + ABSTRACT + "\n", 3, "has no abstract"),
        ("Title one\n" + ABSTRACT + "\nDangling title\n", 3, "has no abstract (end of file)"),
        ("", None, "file is empty"),
        ("\n\n  \n", None, "file is empty"),
    ],
)
def test_scrape_errors_name_file_line_and_problem(tmp_path, text, line, problem):
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(CorpusError) as err:
        parse_file(path)
    assert err.value.line == line
    assert problem in str(err.value)
    assert str(err.value).startswith(str(path))
    assert "\n" not in str(err.value)


def test_binary_undecodable_and_huge_line_are_refused(tmp_path):
    with pytest.raises(CorpusError, match="binary file"):
        parse_file(write(tmp_path, "a.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "wb"))
    with pytest.raises(CorpusError, match=r"bad.txt:2: not UTF-8 text \(byte 0xff"):
        parse_file(write(tmp_path, "bad.txt", b"Title\n\xff\xfe abstract\n", "wb"))
    huge = tmp_path / "huge.txt"
    huge.write_text("A" * (50 * 1024 * 1024))  # a 50 MB single line
    with pytest.raises(CorpusError, match=r"huge.txt:1: line is 52,428,800 characters"):
        parse_file(huge)


def test_json_array_jsonl_and_arxiv_snapshot(tmp_path):
    records = [{"title": "Array Paper", "abstract": ABSTRACT, "url": "https://example.org/p", "authors": ["A. B"]}]
    papers = parse_file(write(tmp_path, "a.json", json.dumps(records)))
    assert papers[0].url == "https://example.org/p" and papers[0].authors == "A. B"
    arxiv = {
        "id": "2101.00190",
        "title": "Prefix-Tuning:\n  Optimizing",
        "abstract": "  " + ABSTRACT + "\n",
        "authors": "Xiang Lisa Li, Percy Liang",
        "categories": "cs.CL",
        "update_date": "2021-01-01",
    }
    papers = parse_file(write(tmp_path, "snap.jsonl", json.dumps(arxiv) + "\n\n"))
    p = papers[0]
    assert p.title == "Prefix-Tuning: Optimizing" and p.abstract == ABSTRACT
    assert p.url == "https://arxiv.org/abs/2101.00190" and p.year == "2021" and p.categories == "cs.CL"


@pytest.mark.parametrize(
    "name, text, match",
    [
        (
            "m.jsonl",
            json.dumps({"title": "T", "abstract": ABSTRACT}) + "\n" + json.dumps({"title": "No abs"}),
            r"m.jsonl:2: line 2 has no 'abstract' field",
        ),
        ("m.jsonl", '{"title": "T", "abstract": "x"\n', r"m.jsonl:1: invalid JSON line"),
        ("m.json", json.dumps([{"title": "T", "abstract": ""}]), r"m.json:1: record 'T' has no abstract"),
        ("m.json", json.dumps([1, 2]), r"item 1 is not a JSON object"),
        ("m.csv", "title,summary\nT,x\n", r"m.csv:1: header has no abstract column"),
        ("m.bib", "@article{k, title={T}}\n", r"no BibTeX entries with an abstract \(1 entries"),
        ("m.bib", "@article{k, title={T}, abstract={unbalanced\n", r"m.bib:1: malformed entry"),
        ("m.pdf", "whatever", r"unsupported file type '.pdf'"),
        # nesting: once a 500 naming no file (RecursionError), or a title shown as "{'en': ...}"
        ("m.jsonl", OK + '{"title": "T", "abstract": ' + "[" * 5000 + "]" * 5000 + "}\n", r"m.jsonl:2: JSON nested"),
        ("m.json", "[\n" + OK + "," + "[" * 5000 + "]" * 5000 + "\n]", r"m.json:3: JSON nested more than 20 deep"),
        ("m.jsonl", OK + json.dumps({"title": {"en": "T"}, "abstract": ABSTRACT}), r"m.jsonl:2: 'title' is a JSON obj"),
        ("m.jsonl", json.dumps({"title": "T", "abstract": [ABSTRACT]}), r"m.jsonl:1: 'abstract' is a list, not text"),
        ("m.jsonl", json.dumps({"title": "T", "abstract": ABSTRACT, "authors": [{"name": "A"}]}), r":1: 'authors'"),
    ],
)
def test_structured_format_errors(tmp_path, name, text, match):
    with pytest.raises(CorpusError, match=match):
        parse_file(write(tmp_path, name, text))


def test_csv_and_bibtex(tmp_path):
    csv_text = 'title,abstract,id\n"A, with comma","' + ABSTRACT + '",2310.01234\n'
    papers = parse_file(write(tmp_path, "p.csv", csv_text))
    assert papers[0].title == "A, with comma" and papers[0].url == "https://arxiv.org/abs/2310.01234"
    bib = (
        "@comment{ignored}\n@article{key1,\n  title = {{LoRA}: Low-Rank Adaptation},\n  author = {Hu, Edward},\n"
        "  year = 2021,\n  eprint = {2106.09685}, archivePrefix = {arXiv},\n  abstract = {" + ABSTRACT + "}\n}\n"
        '@inproceedings{key2, title = "No abstract here"}\n'
    )
    papers = parse_file(write(tmp_path, "refs.bib", bib))
    assert len(papers) == 1
    assert papers[0].title == "LoRA: Low-Rank Adaptation" and papers[0].year == "2021"
    assert papers[0].url == "https://arxiv.org/abs/2106.09685" and papers[0].line == 2


def test_ids_are_stable_and_content_based():
    assert paper_id("A  Title", ABSTRACT) == paper_id("a title", " " + ABSTRACT)
    assert paper_id("A Title", ABSTRACT) != paper_id("A Title", ABSTRACT + " More.")
    assert paper_url("T", arxiv_id="not an id").startswith("https://arxiv.org/search/")


def test_merge_same_title_same_abstract_keeps_all_sources(tmp_path):
    a = parse_file(write(tmp_path, "a.jsonl", json.dumps({"title": "Same", "abstract": ABSTRACT})))
    b = parse_file(write(tmp_path, "b.jsonl", json.dumps({"title": "same", "abstract": ABSTRACT})))
    merged, notes = merge(a + b)
    assert len(merged) == 1 and merged[0].sources == ["a.jsonl:1", "b.jsonl:1"] and not notes


def test_env_example_documents_every_setting():
    from pathlib import Path

    from rag.settings import Settings

    text = (Path(__file__).parents[1] / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        assert f"RAG_{name.upper()}=" in text, name
        assert field.description and field.description in text, name


def test_bibtex_macros_concatenation_latex_and_authors(tmp_path):
    bib = (
        '@string{intro = "We study how small language models can be tuned"}\n'
        "@article{key1,\n  title = {Sch{\\\"o}dinger Bridges for {LoRA} {\\'E}t{\\'e}},\n"
        '  author = {M{\\"u}ller, Anna and Bo Li},\n'
        '  abstract = intro # " with very little data; a simple recipe reaches 88% of full fine-tuning" # {.}\n}\n'
    )
    p = parse_file(write(tmp_path, "refs.bib", bib))[0]
    assert p.title == "Schödinger Bridges for LoRA Été"
    assert p.abstract == (
        "We study how small language models can be tuned with very little data; "
        "a simple recipe reaches 88% of full fine-tuning."
    )
    assert p.authors == "Anna Müller, Bo Li"


def test_jsonl_and_csv_stream_past_the_whole_file_cap(tmp_path, monkeypatch):
    import rag.corpus

    monkeypatch.setattr(rag.corpus, "MAX_FILE_BYTES", 1000)  # JSON lines and CSV are streamed: no cap applies
    rows = [{"title": f"Paper {i}", "abstract": ABSTRACT} for i in range(20)]
    assert len(parse_file(write(tmp_path, "big.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))) == 20
    csv_text = "title,abstract\n" + "".join(f'Paper {i},"{ABSTRACT}"\n' for i in range(20))
    assert len(parse_file(write(tmp_path, "big.csv", csv_text))) == 20
    with pytest.raises(CorpusError, match=r"big.json: file is 0 MB \(at most 0 MB; use JSON lines or CSV\)"):
        parse_file(write(tmp_path, "big.json", json.dumps(rows)))


def test_jsonl_and_csv_papers_come_one_at_a_time(tmp_path):
    """A paper is handed on as soon as it is parsed (an index build never holds a whole file), so a broken last line
    is only met at the end."""
    from rag.corpus import read_papers

    good = json.dumps({"title": "First", "abstract": ABSTRACT})
    papers = read_papers(write(tmp_path, "a.jsonl", good + "\n{not json\n"))
    assert next(papers).title == "First"
    with pytest.raises(CorpusError, match="a.jsonl:2: invalid JSON line"):
        next(papers)
    papers = read_papers(write(tmp_path, "a.csv", f'title,abstract\nFirst,"{ABSTRACT}"\nSecond,\n'))
    assert next(papers).title == "First"
    with pytest.raises(CorpusError, match="a.csv:3: record 'Second' has no abstract"):
        next(papers)
