"""The Markdown our own files use, as HTML: headings, paragraphs, lists, pipe tables, fenced code,
code spans, bold, italics, links and images. Escape first: every character of the source is
text unless one of these constructs claims it, so raw HTML in a Markdown file shows as text and
never becomes markup. Two exceptions: a bare anchor line, ``<a id="name"></a>`` (the summary page
writes them), becomes an anchor, and ``<br>`` (line breaks inside table cells) stays a line break.

Links and images go through the caller's :class:`Resolver`: it decides what a target becomes in
the page (a data: URI, a link relative to the page, an anchor, or nothing), so the page links
only to what exists. Driver environment: standard library only.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Resolve a link target to an href (None: not linkable, the text stays) and an image source to
# the HTML of the image (alt text given).
LinkResolver = Callable[[str], str | None]
ImageResolver = Callable[[str, str], str]


@dataclass
class Resolver:
    link: LinkResolver = lambda target: None
    image: ImageResolver = lambda src, alt: f"<em>[image: {html.escape(alt or src)}]</em>"
    anchor_prefix: str = ""  # heading and anchor ids get this prefix (one page, many documents)
    heading_offset: int = 0  # '#' becomes <h(1 + offset)>
    anchors: set[str] = field(default_factory=set)  # ids this document defined (filled while rendering)


_INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"
    r"|\[(?P<text>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|(?<![\w*\\])\*(?=\S)(?P<em>.+?)(?<=\S)\*(?![\w*])"
    r"|\\(?P<escaped>[\\`*_{}\[\]()#+\-.!|<>])"
    r"|(?P<br><br\s*/?>)"
)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ANCHOR = re.compile(r'^<a id="([\w.-]+)"></a>$')
_LIST = re.compile(r"^(\s*)([-*+]|\d+[.)])\s+(.*)$")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def slug(text: str) -> str:
    """A heading's id: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def inline(text: str, r: Resolver) -> str:
    """One line of inline Markdown as HTML (text escaped)."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        pos = m.end()
        g = m.groupdict()
        if g["code"] is not None:
            out.append(f"<code>{html.escape(g['code'])}</code>")
        elif g["src"] is not None:
            out.append(r.image(g["src"], g["alt"]))
        elif g["href"] is not None:
            label = inline(g["text"], r)
            href = _anchor_href(g["href"], r) if g["href"].startswith("#") else r.link(g["href"])
            out.append(f'<a href="{html.escape(href)}">{label}</a>' if href else label)
        elif g["bold"] is not None:
            out.append(f"<strong>{inline(g['bold'], r)}</strong>")
        elif g["em"] is not None:
            out.append(f"<em>{inline(g['em'], r)}</em>")
        elif g["escaped"] is not None:
            out.append(html.escape(g["escaped"]))
        else:  # a line break inside a table cell, the one tag kept
            out.append("<br>")
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _anchor_href(href: str, r: Resolver) -> str:
    return "#" + r.anchor_prefix + href[1:]


def split_row(line: str) -> list[str]:
    """A pipe-table row's cells (``\\|`` is a pipe inside a cell)."""
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s[:-1] if s.endswith("|") and not s.endswith("\\|") else s
    return [c.strip() for c in re.split(r"(?<!\\)\|", s)]


def _table(lines: list[str], r: Resolver) -> str:
    header, rule, body = split_row(lines[0]), split_row(lines[1]), [split_row(x) for x in lines[2:]]
    align = ["right" if c.endswith(":") and not c.startswith(":") else "center" if c.startswith(":") and c.endswith(":")
             else "" for c in rule]

    def cells(row: list[str], tag: str) -> str:
        out = []
        for i, c in enumerate(row):
            a = align[i] if i < len(align) else ""
            style = f' style="text-align:{a}"' if a else ""
            out.append(f"<{tag}{style}>{inline(c, r)}</{tag}>")
        return "".join(out)

    rows = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in body)
    return (f'<div class="scroll"><table class="md"><thead><tr>{cells(header, "th")}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _list(lines: list[str], r: Resolver) -> str:
    ordered = not lines[0].lstrip().startswith(("-", "*", "+"))
    items: list[str] = []
    for line in lines:
        m = _LIST.match(line)
        if m:
            items.append(m.group(3))
        else:  # a continuation line of the item above
            items[-1] += " " + line.strip()
    tag = "ol" if ordered else "ul"
    return f"<{tag}>" + "".join(f"<li>{inline(i, r)}</li>" for i in items) + f"</{tag}>"


def _heading(m: re.Match[str], r: Resolver) -> str:
    level = min(len(m.group(1)) + r.heading_offset, 6)
    ident = r.anchor_prefix + slug(m.group(2))
    base, n = ident, 2
    while ident in r.anchors:
        ident, n = f"{base}-{n}", n + 1
    r.anchors.add(ident)
    return f'<h{level} id="{ident}">{inline(m.group(2), r)}</h{level}>'


def to_html(text: str, r: Resolver | None = None) -> str:
    """A Markdown document as an HTML fragment."""
    r = r or Resolver()
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        if stripped.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
            continue
        if m := _HEADING.match(stripped):
            out.append(_heading(m, r))
            i += 1
            continue
        if m := _ANCHOR.match(stripped):
            r.anchors.add(r.anchor_prefix + m.group(1))
            out.append(f'<a id="{r.anchor_prefix}{m.group(1)}"></a>')
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1].strip()):
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            out.append(_table(lines[i:j], r))
            i = j
            continue
        if _LIST.match(line):
            j = i + 1
            while j < len(lines) and lines[j].strip() and (_LIST.match(lines[j]) or lines[j].startswith((" ", "\t"))):
                j += 1
            out.append(_list(lines[i:j], r))
            i = j
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() and not _starts_block(lines, j):
            j += 1
        out.append("<p>" + inline(" ".join(x.strip() for x in lines[i:j]), r) + "</p>")
        i = j
    return "\n".join(out)


def _starts_block(lines: list[str], j: int) -> bool:
    s = lines[j].strip()
    return bool(_HEADING.match(s) or _LIST.match(lines[j]) or s.startswith("```")
                or (s.startswith("|") and j + 1 < len(lines) and _TABLE_RULE.match(lines[j + 1].strip())))
