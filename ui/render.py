"""HTML and Markdown for the UI. Every title, abstract, snippet, question and answer goes through `esc` here:
the chat and the panels show text, never markup from a corpus or a user."""

import html
import re
from urllib.parse import urlparse

from rag.answer import Answer, display

CITE = re.compile(r"\[(\d+)\]")

STYLE = """
<style>
/* Gradio's bundled Source Sans Pro SemiBold draws 'A' and 'B' as small capitals: bold text uses its Bold file */
@font-face { font-family: "Source Sans Pro"; font-weight: 600; font-style: normal;
  src: url("static/fonts/SourceSansPro/SourceSansPro-Bold.woff2") format("woff2"); }
@font-face { font-family: "Source Sans Pro"; font-weight: 700; font-style: normal;
  src: url("static/fonts/SourceSansPro/SourceSansPro-Bold.woff2") format("woff2"); }
.rag-answer .rag-cite { font-weight: 600; text-decoration: none; }
.rag-label { display: inline-block; font-size: 0.8em; font-weight: 700; text-transform: uppercase;
  letter-spacing: .04em; padding: 1px 8px; margin-bottom: 6px; border-radius: 999px; }
.rag-refused { border-left: 4px solid #d97706; padding-left: 10px; }
.rag-refused .rag-label { background: #fef3c7; color: #92400e; }
.rag-notice { color: #b45309; font-size: 0.9em; margin-top: 6px; }
.rag-refs { font-size: 0.85em; margin-top: 8px; opacity: 0.85; }
.rag-section { font-weight: 700; margin: 8px 0 2px; }
.rag-dropped { font-size: 0.85em; opacity: 0.75; margin-top: 6px; }
.rag-wait { opacity: .65; font-style: italic; }
.rag-line { min-height: 1.4em; font-size: 0.92em; }
.rag-line.rag-error { color: #b91c1c; }
.rag-line.rag-ok { color: #15803d; }
.rag-line.rag-warn { color: #b45309; }
.rag-status { font-size: 0.88em; opacity: .8; }
.rag-panel { max-height: 78vh; overflow-y: auto; padding-right: 4px; }
.rag-panel h3 { font-size: 1em; margin: 4px 0 8px; }
.rag-turn > summary { cursor: pointer; font-weight: 600; margin: 6px 0; }
.rag-card { border: 1px solid var(--border-color-primary, #e5e7eb); border-radius: 8px; padding: 10px 12px;
  margin: 0 0 10px; background: var(--block-background-fill, #fff); scroll-margin-top: 8px; }
.rag-card:has(.rag-anchor:target) { border-color: var(--color-accent, #f97316);
  box-shadow: 0 0 0 2px var(--color-accent-soft, #fed7aa); }
.rag-anchor { display: block; position: relative; top: -8px; }
.rag-card-title { font-weight: 600; line-height: 1.35; }
.rag-card-title a { text-decoration: none; }
.rag-card-title a:hover { text-decoration: underline; }
.rag-nums { color: var(--color-accent, #f97316); margin-right: 4px; }
.rag-meta { font-size: 0.8em; opacity: .7; margin: 2px 0 6px; }
.rag-abstract { font-size: 0.88em; line-height: 1.5; margin: 0; }
.rag-abstract mark { background: #fde68a; color: #1f2937; padding: 0 2px; border-radius: 3px; }
.rag-abstract mark sup { font-weight: 700; margin-left: 2px; }
.rag-closest { border-left: 4px solid #d97706; }
.rag-muted { opacity: .7; font-size: 0.9em; }
</style>
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def safe_url(url: str) -> str:
    """The url if it is http(s), else '' (no javascript: or data: links from a corpus file)."""
    return url if urlparse(url.strip()).scheme in ("http", "https") else ""


def title_link(title: str, url: str) -> str:
    url = safe_url(url)
    if not url:
        return esc(title)
    return f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer">{esc(title)}</a>'


def anchor(turn: int, n: int) -> str:
    """The id of the source card that [n] of answer number `turn` links to."""
    return f"src-{turn}-{n}"


def line(text: str, kind: str = "") -> str:
    """A one-line notice for gr.HTML (kind: '', 'error' or 'ok')."""
    return f'<div class="rag-line rag-{kind or "info"}">{esc(text)}</div>'


# --- chat ----------------------------------------------------------------------------------------------------


def user_html(question: str) -> str:
    return esc(question).replace("\n", "<br>")


def answer_html(turn: int, text: str, answer: Answer | None = None) -> str:
    """One assistant message: the prose escaped, each [n] a link to its source card; a refusal labelled.

    While streaming (`answer` None) every [n] is linked: the pieces are already verified citations.
    """
    if not text and answer is None:
        return '<span class="rag-wait">Searching the abstracts…</span>'
    valid = {ev.n for ev in answer.evidence} if answer is not None else None

    def cite(m: re.Match) -> str:
        n = int(m[1])
        if valid is not None and n not in valid:
            return m[0]
        return f'<a class="rag-cite" href="#{anchor(turn, n)}">[{n}]</a>'

    body = CITE.sub(cite, esc(text))  # the cards show the references with their quotes
    for section in answer.sections if answer is not None else []:  # an overview's group names stand out
        if section.name:
            body = body.replace(f"\n\n{esc(section.name)}:\n", f'\n<div class="rag-section">{esc(section.name)}</div>')
    body = body.replace("\n", "<br>")
    if answer is not None and answer.citations:
        links = " · ".join(
            f'<a class="rag-cite" href="#{anchor(turn, c.n)}">[{c.n}]</a> {esc(c.title)}' for c in answer.citations
        )
        body += f'<div class="rag-refs">{links}</div>'
    notices = "".join(f'<div class="rag-notice">⚠ {esc(n)}</div>' for n in (answer.notices if answer else []))
    if answer is not None and answer.dropped:  # what the model wrote that the evidence does not state: folded
        items = "".join(f"<li>{esc(d)}</li>" for d in answer.dropped)
        notices += (
            f'<details class="rag-dropped"><summary>{len(answer.dropped)} generated sentence(s) left out: the '
            f"evidence does not state them</summary><ul>{items}</ul></details>"
        )
    if answer is not None and answer.refused:
        return (
            f'<div class="rag-answer rag-refused"><span class="rag-label">Not in the indexed papers</span>'
            f"<div>{body}</div>{notices}</div>"
        )
    return f'<div class="rag-answer">{body}{notices}</div>'


def chat_messages(turns: list[Answer], question: str | None = None, partial: str = "") -> list[dict]:
    """Chatbot messages for the finished turns, plus the question being answered and its text so far."""
    out = []
    for t, a in enumerate(turns):
        out += [
            {"role": "user", "content": user_html(a.question)},
            {"role": "assistant", "content": answer_html(t, a.prose, a)},
        ]
    if question is not None:
        out += [
            {"role": "user", "content": user_html(question)},
            {"role": "assistant", "content": answer_html(len(turns), partial)},
        ]
    return out


# --- source cards --------------------------------------------------------------------------------------------


def highlight(abstract: str, marks: list[tuple[int, str, float]]) -> str:
    """The abstract escaped, each evidence sentence (n, quote, score) in a <mark>; quotes not in it (e.g. an
    'Authors: ...' line) follow it. The quotes are found in the abstract's own text; each piece is then shown with
    its LaTeX written out (`display`: "54.37\\%" -> "54.37%"), as the answer shows its quotes."""
    spans, extra = [], []
    for n, quote, score in marks:
        i = abstract.find(quote) if quote else -1
        if i >= 0 and all(i >= e or i + len(quote) <= s for s, e, _, _ in spans):
            spans.append((i, i + len(quote), n, score))
        else:
            extra.append((n, quote, score))
    out, pos = [], 0
    for s, e, n, score in sorted(spans):
        out.append(esc(display(abstract[pos:s])))
        out.append(
            f'<mark title="evidence [{n}], score {score:.2f}">{esc(display(abstract[s:e]))}<sup>[{n}]</sup></mark>'
        )
        pos = e
    out.append(esc(display(abstract[pos:])))
    for n, quote, score in extra:
        out.append(f'<br><mark title="evidence [{n}], score {score:.2f}">{esc(display(quote))}<sup>[{n}]</sup></mark>')
    return "".join(out)


def cited_cards(turn: int, answer: Answer, papers: dict) -> str:
    """One card per cited paper, in [n] order: title link, score, abstract with the quoted sentences highlighted.
    The card holds the anchor its [n] links to."""
    cards = []
    for c in answer.citations:
        evs = [ev for ev in answer.evidence if ev.n == c.n]
        paper = papers.get(c.paper_id)
        meta = [f"score {max((ev.score for ev in evs), default=0):.2f}"]
        if evs:
            meta.append(f"search rank {evs[0].rank}")
        if paper and paper.source:
            meta.append(esc(paper.source))
        marks = [(c.n, ev.quote, ev.score) for ev in evs]
        cards.append(
            f'<div class="rag-card" data-paper="{esc(c.paper_id)}">'
            f'<span class="rag-anchor" id="{anchor(turn, c.n)}"></span>'
            f'<div class="rag-card-title"><span class="rag-nums">[{c.n}]</span>'
            f"{title_link(c.title, c.url)}</div>"
            f'<div class="rag-meta">{" · ".join(meta)}</div>'
            f'<p class="rag-abstract">{highlight(paper.abstract if paper else "", marks)}</p></div>'
        )
    return "".join(cards)


def hit_cards(hits: list, numbered: bool = True, cls: str = "rag-card") -> str:
    """Cards for search hits: rank, title link, score, source and snippet."""
    cards = []
    for h in hits:
        rank = f'<span class="rag-nums">{h.rank}.</span>' if numbered else ""
        cards.append(
            f'<div class="{cls}" data-paper="{esc(h.paper_id)}">'
            f'<div class="rag-card-title">{rank}{title_link(h.title, h.url)}</div>'
            f'<div class="rag-meta">score {h.score:.4f} · {esc(h.source)}</div>'
            f'<p class="rag-abstract">{esc(display(h.snippet))}</p></div>'
        )
    return "".join(cards)


def turn_sources(turn: int, answer: Answer, papers: dict) -> str:
    if answer.refused:
        head = '<p class="rag-muted">Closest papers: they do not answer the question.</p>'
        return head + hit_cards(answer.closest, numbered=False, cls="rag-card rag-closest")
    if answer.evidence:
        return cited_cards(turn, answer, papers)
    return '<p class="rag-muted">No sources for this question.</p>'


def sources_html(turns: list[Answer], papers: dict) -> str:
    """The sources panel: the newest answer's cards open on top, earlier answers' below, folded."""
    if not turns:
        return (
            '<div class="rag-panel"><h3>Sources</h3><p class="rag-muted">The papers an answer cites appear here, '
            "with the evidence sentences highlighted in their abstracts.</p></div>"
        )
    parts = []
    for t in reversed(range(len(turns))):
        a = turns[t]
        opened = " open" if t == len(turns) - 1 else ""
        parts.append(
            f'<details class="rag-turn"{opened}><summary>Q{t + 1}: {esc(a.question)}</summary>'
            f"{turn_sources(t, a, papers)}</details>"
        )
    return '<div class="rag-panel"><h3>Sources</h3>' + "".join(parts) + "</div>"


def search_html(query: str, hits: list) -> str:
    if not query.strip():
        return '<p class="rag-muted">Type a query to rank the indexed papers.</p>'
    if not hits:
        return f'<p class="rag-muted">No paper matches {esc(query)}.</p>'
    return f'<div class="rag-muted">{len(hits)} papers for “{esc(query)}”</div>' + hit_cards(hits)


def status_line(status: dict) -> str:
    return (
        f'<div class="rag-status">Index: {status["papers"]} papers · {status["chunks"]} chunks · embeddings '
        f"{esc(status['embed_model'])} · LLM: {esc(status['llm'])}</div>"
    )


# --- export --------------------------------------------------------------------------------------------------


def md_text(text: str) -> str:
    """Text for a Markdown line: brackets and angle brackets escaped so a title stays a title."""
    return re.sub(r"([\\\[\]<>*_`])", r"\\\1", text)


def export_markdown(turns: list[Answer], when: str) -> str:
    """The conversation as Markdown: each question, its answer, notices, and its references."""
    lines = ["# abstract-rag conversation", "", f"Exported {when}.", ""]
    for t, a in enumerate(turns, 1):
        lines += [f"## {t}. {md_text(a.question)}", ""]
        headers = {f"{s.name}:" for s in a.sections if s.name}  # an overview's groups: bold, the lines a list
        prose = [f"**{md_text(x)}**" if x in headers else md_text(x) for x in a.prose.splitlines()]
        lines += ["  \n".join(prose).replace("  \n  \n", "\n\n") or "_(no answer)_", ""]
        lines += [f"> Notice: {md_text(n)}" for n in a.notices] + ([""] if a.notices else [])
        if a.refused and a.closest:
            lines += ["Closest papers (they do not answer the question):", ""]
            lines += [f"- [{md_text(h.title)}](<{safe_url(h.url)}>)" for h in a.closest] + [""]
        if a.citations:
            lines += ["References:", ""]
            for c in a.citations:
                lines.append(f"{c.n}. [{md_text(c.title)}](<{safe_url(c.url)}>)")
                lines += [f"   > {md_text(q)}" for q in c.quotes]
            lines.append("")
    return "\n".join(lines)
