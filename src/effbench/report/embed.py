"""Files carried inside the page: images as data: URIs, so the page shows them with nothing
beside it, and links relative to the page for the files a reader may want to open."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

MIME = {".png": "image/png", ".svg": "image/svg+xml", ".csv": "text/csv", ".json": "application/json",
        ".md": "text/markdown", ".tex": "application/x-tex"}
IMAGE_SUFFIXES = (".png", ".svg")


def data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def relative_link(target: Path, page: Path) -> str:
    """``target`` as a link relative to the page's folder (POSIX separators)."""
    return Path(os.path.relpath(target.resolve(), page.resolve().parent)).as_posix()


def file_link(target: Path, page: Path, label: str | None = None) -> str:
    """A link to an existing file, relative to the page; the bare name, unlinked, when absent."""
    text = html.escape(label or target.name)
    if not target.is_file():
        return f'<span class="absent" title="not found when the page was built">{text} (absent)</span>'
    return f'<a href="{html.escape(relative_link(target, page))}">{text}</a>'


def figure(png: Path | None, svg: Path | None, alt: str, page: Path) -> str:
    """An image embedded from its PNG (or, without one, its SVG), with the SVG offered as a
    download from the page itself and links to both files beside the page."""
    shown = png if png is not None and png.is_file() else svg if svg is not None and svg.is_file() else None
    if shown is None:
        names = ", ".join(p.name for p in (png, svg) if p is not None)
        return f'<p class="absent">Image missing when the page was built: {html.escape(names)}.</p>'
    parts = [f'<img src="{data_uri(shown)}" alt="{html.escape(alt)}">']
    links = []
    if svg is not None and svg.is_file():
        links.append(f'<a href="{data_uri(svg)}" download="{html.escape(svg.name)}">SVG (from this page)</a>')
    links += [file_link(p, page) for p in (png, svg) if p is not None]
    parts.append('<span class="files">' + " · ".join(links) + "</span>")
    return "\n".join(parts)
