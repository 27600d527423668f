"""Corpus files -> `Paper`s: one parser per format, strict validation (duplicates are merged by rag/incoming.py).

Formats, chosen by file extension:
- `.txt`: the "trending papers" page scrape (chrome lines, then alternating title / abstract lines);
- `.json` / `.jsonl`: records with `title`, `abstract` and optional `id`, `url`, `authors`, `year`, `categories`;
  the arXiv metadata snapshot (JSON lines with `id`, `authors`, `categories`, `update_date`) is this format too;
- `.csv`: the same columns;
- `.bib`: BibTeX entries that have an `abstract` field (entries without one are skipped and counted).

A malformed file raises `CorpusError` naming file, line and problem; nothing of that file is used.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_LINE_CHARS = 100_000  # a title or abstract longer than this is not an abstract
MAX_TITLE_CHARS = 400
MIN_ABSTRACT_CHARS = 80
MAX_JSON_DEPTH = 20  # a record is an object holding lists of names at most: deeper nesting is not a corpus
TEXT_FIELDS = ("title", "abstract", "id", "url", "year", "update_date")
SUFFIXES = {".txt": "scrape", ".json": "json", ".jsonl": "json", ".csv": "csv", ".bib": "bibtex"}
ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z\-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$")


class CorpusError(ValueError):
    """A corpus file that cannot be used. `str()` is one line: `file:line: problem`."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}")


@dataclass
class Paper:
    id: str
    title: str
    abstract: str
    url: str
    source: str
    line: int
    authors: str = ""
    year: str = ""
    categories: str = ""
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def normalize(text: str) -> str:
    """Whitespace folded, for display and hashing."""
    return " ".join(text.split())


def title_key(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", title.lower()).strip()


def paper_id(title: str, abstract: str) -> str:
    digest = hashlib.sha1(f"{title_key(title)}\n{normalize(abstract).lower()}".encode()).hexdigest()
    return digest[:16]


def paper_url(title: str, url: str = "", arxiv_id: str = "") -> str:
    """The given url, else the arXiv abstract page, else a title search, so every citation is clickable."""
    if url and url.startswith(("http://", "https://")):
        return url
    if arxiv_id and ARXIV_ID.match(arxiv_id.strip()):
        return f"https://arxiv.org/abs/{arxiv_id.strip()}"
    return "https://arxiv.org/search/?" + urllib.parse.urlencode({"query": title, "searchtype": "title"})


def json_kind(value) -> str:
    return "a JSON object" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__


def check_fields(path: Path, line: int, rec: dict) -> None:
    """Refuse a record whose text fields are JSON objects or lists (a title must be text, not {"en": ...})."""
    for key in TEXT_FIELDS:
        value = rec.get(key)
        if value is not None and not isinstance(value, (str, int, float)):
            raise CorpusError(path, line, f"{key!r} is {json_kind(value)}, not text")
    for key in ("authors", "categories"):
        value = rec.get(key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            names = item if isinstance(item, list) and key == "authors" else [item]  # ["Last", "First"] pairs
            if any(n is not None and not isinstance(n, (str, int, float)) for n in names):
                raise CorpusError(path, line, f"{key!r} holds {json_kind(value)} nested too deeply, not names")


def make_paper(path: Path, line: int, rec: dict) -> Paper:
    """Build a Paper from a record; raises CorpusError for a missing or implausible title/abstract."""
    check_fields(path, line, rec)
    title = normalize(str(rec.get("title") or ""))
    abstract = normalize(str(rec.get("abstract") or ""))
    if not title:
        raise CorpusError(path, line, "record has no title")
    if not abstract:
        raise CorpusError(path, line, f"record {title[:60]!r} has no abstract")
    if len(title) > MAX_TITLE_CHARS:
        raise CorpusError(path, line, f"title is {len(title):,} characters (at most {MAX_TITLE_CHARS})")
    if len(abstract) > MAX_LINE_CHARS:
        raise CorpusError(path, line, f"abstract is {len(abstract):,} characters (at most {MAX_LINE_CHARS:,})")
    authors = rec.get("authors") or ""
    if isinstance(authors, list):
        authors = ", ".join(a if isinstance(a, str) else " ".join(map(str, a)) for a in authors)
    categories = rec.get("categories") or ""
    if isinstance(categories, list):
        categories = " ".join(map(str, categories))
    year = str(rec.get("year") or "")
    if not year and rec.get("update_date"):
        year = str(rec["update_date"])[:4]
    ident = str(rec.get("id") or "")
    return Paper(
        id=paper_id(title, abstract),
        title=title,
        abstract=abstract,
        url=paper_url(title, str(rec.get("url") or ""), ident),
        source=path.name,
        line=line,
        authors=normalize(str(authors)),
        year=year,
        categories=normalize(str(categories)),
    )


def check_file(path: Path) -> int:
    """The file's size, refusing what cannot be read or is empty with one clear line."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CorpusError(path, None, f"cannot read: {e.strerror or e}") from None
    if size == 0:
        raise CorpusError(path, None, "file is empty")
    return size


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text with its newline) of a UTF-8 text file, read as a stream: any size, constant memory."""
    check_file(path)
    blank = True
    with path.open("rb") as f:
        if b"\x00" in f.read(8192):
            raise CorpusError(path, None, "binary file (NUL bytes), not a text corpus")
        f.seek(0)
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(path, number, f"not UTF-8 text (byte 0x{raw[e.start]:02x} in this line)") from None
            if len(text) > MAX_LINE_CHARS:
                raise CorpusError(
                    path, number, f"line is {len(text.rstrip()):,} characters (at most {MAX_LINE_CHARS:,})"
                )
            blank = blank and not text.strip()
            yield number, text
    if blank:
        raise CorpusError(path, None, "file is empty")


def read_text(path: Path) -> str:
    """Whole-file text for the formats that need it (a JSON array, BibTeX), at most MAX_FILE_BYTES."""
    size = check_file(path)
    if size > MAX_FILE_BYTES:
        raise CorpusError(
            path, None, f"file is {size / 2**20:.0f} MB (at most {MAX_FILE_BYTES // 2**20} MB; use JSON lines or CSV)"
        )
    return "".join(text for _, text in read_lines(path))


# --- page scrape -----------------------------------------------------------------------------------------------

CHROME_LINES = {
    "get trending papers in your email inbox once a day!",
    "get trending papers in your email inbox!",
    "subscribe",
    "new",
    "byak and the research community",
}
DATE_LINE = re.compile(r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* \d{1,2}(, \d{4})?$")


def parse_scrape(path: Path) -> list[Paper]:
    lines = []
    for number, raw in read_lines(path):
        text = raw.strip()
        if not text or text.lower() in CHROME_LINES or DATE_LINE.match(text):
            continue
        if text.startswith("Subscribe") and len(text) > len("Subscribe") and not lines:
            text = text[len("Subscribe") :].strip()  # the page glues the button label to the first title
        lines.append((number, text))
    if not lines:
        raise CorpusError(path, None, "no papers found (only page chrome)")
    papers = []
    i = 0
    while i < len(lines):
        t_line, title = lines[i]
        if i + 1 >= len(lines):
            raise CorpusError(path, t_line, f"title {title[:60]!r} has no abstract (end of file)")
        a_line, abstract = lines[i + 1]
        if len(title) > MAX_TITLE_CHARS:
            raise CorpusError(path, t_line, "expected a title, found a long line (abstract without title?)")
        if len(abstract) < MIN_ABSTRACT_CHARS:
            raise CorpusError(path, t_line, f"title {title[:60]!r} has no abstract (next line is a title)")
        papers.append(make_paper(path, t_line, {"title": title, "abstract": abstract}))
        i += 2
    return papers


# --- JSON / JSONL ----------------------------------------------------------------------------------------------


def parse_json(path: Path) -> Iterator[Paper]:
    """A JSON array (read whole, at most MAX_FILE_BYTES) or JSON lines (streamed, a paper at a time: any size, e.g.
    the arXiv metadata snapshot)."""
    head = ""
    for _, text in read_lines(path):
        head = text.strip()
        if head:
            break
    found = 0
    if head.startswith("["):
        text = read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(path, e.lineno, f"invalid JSON: {e.msg}") from None
        except RecursionError:  # Python's parser gives up around depth 1000; records are 3 deep
            raise CorpusError(path, too_deep_line(text), f"JSON nested more than {MAX_JSON_DEPTH} deep") from None
        # line numbers of array items are not kept by json; report the item's position instead
        for number, rec in enumerate(data, 1):
            found += 1
            yield json_paper(path, number, rec, "item")
    else:
        for number, line in read_lines(path):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(path, number, f"invalid JSON line: {e.msg}") from None
            except RecursionError:
                raise CorpusError(path, number, f"JSON nested more than {MAX_JSON_DEPTH} deep") from None
            found += 1
            yield json_paper(path, number, rec, "line")
    if not found:
        raise CorpusError(path, None, "no records found")


def too_deep_line(text: str) -> int | None:
    """The line where JSON nesting first passes MAX_JSON_DEPTH (brackets inside strings not counted)."""
    depth, in_string, escaped, line = 0, False, False, 1
    for ch in text:
        if ch == "\n":
            line += 1
        elif in_string:
            in_string = escaped or ch != '"'
            escaped = not escaped and ch == "\\"
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return line
        elif ch in "]}":
            depth -= 1
    return None


def json_paper(path: Path, number: int, rec, where: str) -> Paper:
    if not isinstance(rec, dict):
        raise CorpusError(path, number, f"{where} {number} is not a JSON object")
    for key in ("title", "abstract"):
        if key not in rec:
            raise CorpusError(path, number, f"{where} {number} has no {key!r} field")
    return make_paper(path, number, rec)


# --- CSV -------------------------------------------------------------------------------------------------------


def parse_csv(path: Path) -> Iterator[Paper]:
    """CSV with a header, streamed a paper at a time (any size)."""
    reader = csv.DictReader(text for _, text in read_lines(path))
    try:
        columns = {c.strip().lower() for c in reader.fieldnames or []}
    except csv.Error as e:
        raise CorpusError(path, reader.line_num, f"invalid CSV: {e}") from None
    missing = {"title", "abstract"} - columns
    if missing:
        raise CorpusError(path, 1, f"header has no {' or '.join(sorted(missing))} column")
    found = 0
    try:
        for row in reader:
            rec = {(k or "").strip().lower(): v for k, v in row.items()}
            found += 1
            yield make_paper(path, reader.line_num, rec)
    except csv.Error as e:
        raise CorpusError(path, reader.line_num, f"invalid CSV: {e}") from None
    if not found:
        raise CorpusError(path, None, "no records found")


# --- BibTeX ----------------------------------------------------------------------------------------------------


def _bib_concatenate(value: str, strings: dict[str, str]) -> str:
    """A raw (unenclosed) BibTeX value: `macro # "text" # {text} # 2021` -> the joined text."""
    parts, depth, quoted, current = [], 0, False, ""
    for ch in value:
        if ch == "#" and depth == 0 and not quoted:
            parts.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == '"' and depth == 0:
            quoted = not quoted
        current += ch
    parts.append(current)
    out = []
    for part in (p.strip() for p in parts):
        if len(part) >= 2 and part[0] + part[-1] in ('""', "{}"):
            out.append(part[1:-1])
        else:
            out.append(strings.get(part.lower(), part))
    return "".join(out)


def _bib_middlewares():
    """bibtexparser v2 parse stack: @string macros and `#` concatenation resolved, enclosing removed, LaTeX decoded
    to Unicode (a bare % is text in an abstract, not a LaTeX comment)."""
    from bibtexparser import middlewares as mw
    from bibtexparser.library import Library

    class ResolveStrings(mw.LibraryMiddleware):
        """bibtexparser's ResolveStringReferencesMiddleware resolves a lone macro only, not `a # b`."""

        def transform(self, library: Library) -> Library:
            strings = {}
            for key, s in library.strings_dict.items():  # a macro may use earlier ones
                strings[key.lower()] = _bib_concatenate(s.value, strings) if "#" in s.value else s.value.strip('{}"')
            for entry in library.entries:
                for f in entry.fields:
                    if isinstance(f.value, str):
                        f.value = _bib_concatenate(f.value, strings)  # also removes the enclosing {} or ""
            return library

    class KeepPercent(mw.BlockMiddleware):
        def transform_entry(self, entry, library):
            for f in entry.fields:
                if isinstance(f.value, str):
                    f.value = re.sub(r"(?<!\\)%", r"\\%", f.value)
            return entry

    return [
        ResolveStrings(),
        KeepPercent(),
        mw.LatexDecodingMiddleware(),
    ]


def bib_name(name: str) -> str:
    """ "Last, First" -> "First Last" (BibTeX's two name forms, one way of showing them)."""
    last, _, first = name.partition(",")
    return f"{first.strip()} {last.strip()}" if first.strip() else name.strip()


def parse_bibtex(path: Path) -> list[Paper]:
    """BibTeX through bibtexparser v2; entries without an abstract are skipped and counted."""
    import logging

    import bibtexparser

    text = read_text(path)
    logger = logging.getLogger("bibtexparser")
    level, logger.level = logger.level, logging.CRITICAL  # a broken entry becomes our one-line error instead
    try:
        library = bibtexparser.parse_string(text, parse_stack=_bib_middlewares())
    finally:
        logger.setLevel(level)
    if library.failed_blocks:
        block = library.failed_blocks[0]
        why = getattr(getattr(block, "error", None), "abort_reason", "") or "syntax error"
        raise CorpusError(path, block.start_line + 1, f"malformed entry: {why}")
    papers, skipped = [], 0
    for entry in library.entries:
        fields = {f.key.lower(): normalize(str(f.value)) for f in entry.fields}
        if not fields.get("abstract"):
            skipped += 1
            continue
        fields["authors"] = ", ".join(bib_name(a) for a in fields.pop("author", "").split(" and ") if a.strip())
        arxiv = fields.get("eprint", "") if fields.get("archiveprefix", "").lower() == "arxiv" else ""
        rec = {**fields, "id": arxiv, "url": fields.get("url", "")}
        papers.append(make_paper(path, entry.start_line + 1, rec))
    if not papers:
        why = f" ({skipped} entries without an abstract field)" if skipped else ""
        raise CorpusError(path, None, f"no BibTeX entries with an abstract{why}")
    return papers


PARSERS = {"scrape": parse_scrape, "json": parse_json, "csv": parse_csv, "bibtex": parse_bibtex}


def read_papers(path: str | Path) -> Iterator[Paper]:
    """The papers of one corpus file by its extension, as they are parsed (JSON lines and CSV a paper at a time);
    raises CorpusError, possibly after some papers."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise CorpusError(path, None, f"unsupported file type {path.suffix!r} (use {', '.join(SUFFIXES)})")
    yield from PARSERS[kind](path)


def parse_file(path: str | Path) -> list[Paper]:
    """Every paper of one corpus file; raises CorpusError."""
    return list(read_papers(path))


def corpus_files(paths: list[str | Path]) -> list[Path]:
    """Files named, and supported files inside folders named, in a stable order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise CorpusError(p, None, "no such file or folder")
    return out
