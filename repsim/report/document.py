"""The report as a list of blocks (headings, paragraphs, lists, tables, figures), rendered both
as Markdown and as one self-contained HTML page (figures embedded as base64 PNG)."""

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

    def figure(self, stem, alt, cap):
        self.blocks.append(("fig", stem, alt, cap))


def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers, rows) -> str:
    """A GitHub-flavoured markdown table (cells escaped so that '|' cannot split them)."""
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(doc: Doc, fig_rel: str) -> str:
    out = []
    for b in doc.blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {x}" for x in b[1]))
        elif b[0] == "table":
            out.append(markdown_table(b[1], b[2]))
        elif b[0] == "fig":
            _, stem, alt, cap = b
            out.append(f"![{alt}]({fig_rel}/{stem}.png)\n\n*{cap}* "
                       f"([PDF]({fig_rel}/{stem}.pdf))")
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
h1{border-bottom:2px solid #ccc}h2{border-bottom:1px solid #ddd;margin-top:1.8em}"""


def render_html(doc: Doc, title: str, pngs: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for b in doc.blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{_inline_html(b[2])}</h{b[1]}>")
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
            _, stem, alt, cap = b
            data = base64.b64encode(pngs[stem]).decode("ascii")
            out.append(f"<figure><img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{data}\">"
                       f"<figcaption>{_inline_html(cap)}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
