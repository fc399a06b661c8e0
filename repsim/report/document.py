"""The report as a list of blocks (headings, paragraphs, lists, tables, figures), rendered both
as Markdown and as one self-contained HTML page (figures embedded as base64 PNG).

Every heading gets an anchor: its GitHub-style slug (lower case, punctuation dropped, spaces
as hyphens, ``-1``, ``-2`` ... after repeats), the ``id`` of the heading in HTML and the anchor
Markdown renderers (GitHub, GitLab, most others) give it. Both renderings open, after the title,
with a table of contents linking every heading below the title."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field


@dataclass
class Doc:
    blocks: list = field(default_factory=list)

    def h(self, level, text):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def items(self, items):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, headers, rows):
        self.blocks.append(("table", list(headers), [list(r) for r in rows]))

    def figure(self, stem, alt, cap, links=None):
        """A figure: ``stem``.png, its alt text and caption; ``links``, (label, file name) pairs
        listed after the caption in Markdown (default: the PDF)."""
        self.blocks.append(("fig", stem, alt, cap, list(links) if links is not None else [("PDF", f"{stem}.pdf")]))


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, Markdown marks and punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: Doc) -> list[str]:
    """Each heading's anchor, in order, made unique the way GitHub does (``-1``, ``-2`` ...)."""
    seen, out = {}, []
    for b in doc.blocks:
        if b[0] == "h":
            base = slug(b[2]) or "section"
            name, n = base, seen.get(base, 0)
            while name in seen:
                n += 1
                name = f"{base}-{n}"
            seen[base] = n
            seen.setdefault(name, 0)
            out.append(name)
    return out


def _contents(doc: Doc) -> list[tuple[int, str, str]]:
    """(depth, text, anchor) of every heading after the first title, for the table of contents."""
    heads = [(b[1], b[2]) for b in doc.blocks if b[0] == "h"]
    entries = list(zip(heads, anchors(doc)))
    if entries and entries[0][0][0] == 1:
        entries = entries[1:]
    top = min((level for (level, _), _ in entries), default=2)
    return [(level - top, text, a) for (level, text), a in entries]


def _toc_position(doc: Doc) -> int:
    """The table of contents goes right after the title (or first, without one)."""
    return 1 if doc.blocks and doc.blocks[0][0] == "h" and doc.blocks[0][1] == 1 else 0


def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers, rows) -> str:
    """A GitHub-flavoured markdown table (cells escaped so that '|' cannot split them)."""
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _md_link_text(text: str) -> str:
    return text.replace("[", "\\[").replace("]", "\\]")


def render_markdown(doc: Doc, fig_rel: str) -> str:
    out = []
    toc = _contents(doc)
    at = _toc_position(doc)
    for i, b in enumerate(doc.blocks):
        if i == at and toc:
            out.append("**Contents**")
            out.append("\n".join(f"{'  ' * depth}- [{_md_link_text(text)}](#{a})" for depth, text, a in toc))
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {x}" for x in b[1]))
        elif b[0] == "table":
            out.append(markdown_table(b[1], b[2]))
        elif b[0] == "fig":
            _, stem, alt, cap, links = b
            files = ", ".join(f"[{label}]({fig_rel}/{name})" for label, name in links)
            out.append(f"![{alt}]({fig_rel}/{stem}.png)\n\n*{cap}*" + (f" ({files})" if files else ""))
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    return t


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.92em}
th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:left;vertical-align:top}
th{background:#eef1f5}tr:nth-child(even) td{background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:0.88em;color:#444;margin-top:0.3em}code{background:#f3f3f3;padding:0 0.2em}
h1{border-bottom:2px solid #ccc}h2{border-bottom:1px solid #ddd;margin-top:1.8em}
nav.toc{background:#f7f8fa;border:1px solid #e2e4e8;padding:0.5em 1em;margin:1em 0;font-size:0.95em}
nav.toc ul{margin:0.2em 0;padding-left:1.3em}nav.toc p{margin:0.2em 0}
h1 a.anchor,h2 a.anchor,h3 a.anchor,h4 a.anchor{color:#bbb;text-decoration:none;font-weight:normal;
margin-left:0.3em;visibility:hidden}h1:hover a.anchor,h2:hover a.anchor,h3:hover a.anchor,
h4:hover a.anchor{visibility:visible}"""


def _toc_html(toc) -> str:
    out, depth = ["<nav class=\"toc\" aria-label=\"Contents\"><p><strong>Contents</strong></p><ul>"], 0
    for i, (d, text, a) in enumerate(toc):
        if i:
            if d > depth:
                out.append("<ul>" * (d - depth))
            else:
                out.append("</li>" + "</ul></li>" * (depth - d))
        depth = d
        out.append(f"<li><a href=\"#{a}\">{_inline_html(text)}</a>")
    out.append("</li>" + "</ul></li>" * depth + "</ul></nav>")
    return "".join(out)


def render_html(doc: Doc, title: str, pngs: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    toc, ids = _contents(doc), iter(anchors(doc))
    at = _toc_position(doc)
    for i, b in enumerate(doc.blocks):
        if i == at and toc:
            out.append(_toc_html(toc))
        if b[0] == "h":
            a = next(ids)
            out.append(f"<h{b[1]} id=\"{a}\">{_inline_html(b[2])}<a class=\"anchor\" href=\"#{a}\" "
                       f"aria-label=\"link to this section\">#</a></h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{_inline_html(b[1])}</p>")
        elif b[0] == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b[1]) + "</ul>")
        elif b[0] == "table":
            headers, rows = b[1], b[2]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline_html(str(h))}</th>" for h in headers)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</tbody></table>")
        elif b[0] == "fig":
            _, stem, alt, cap, _ = b
            data = base64.b64encode(pngs[stem]).decode("ascii")
            out.append(f"<figure id=\"figure-{html.escape(stem)}\"><img alt=\"{html.escape(alt)}\" "
                       f"src=\"data:image/png;base64,{data}\"><figcaption>{_inline_html(cap)}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
