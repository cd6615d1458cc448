"""Files carried inside the page: images as data: URIs, so the page shows them with nothing
beside it, and links relative to the page for the files a reader may want to open."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

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


def hover_overlay(points: Any) -> str:
    """An SVG laid over the plot image: one transparent circle per point at its pixel position in
    the PNG, whose ``<title>`` (the cell, its figures with their intervals, on the front or not) is
    the hover text; the viewBox is the PNG's size, so the overlay scales with the image. ``points``:
    the plot's manifest entry's ``points`` (effbench.aggregate.plotpoints.save_points)."""
    try:
        w, h = float(points["width"]), float(points["height"])
        pts = [(float(p["px"]), float(p["py"]), str(p["text"])) for p in points["points"]]
    except (ValueError, KeyError, TypeError):
        return ""  # no or unreadable points: the plot without hover, as an older manifest has it
    circles = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="11"><title>{html.escape(t)}</title></circle>'
                      for x, y, t in pts)
    return (f'<svg class="hover" viewBox="0 0 {w:g} {h:g}" preserveAspectRatio="none" '
            f'xmlns="http://www.w3.org/2000/svg">{circles}</svg>')


def figure(png: Path | None, svg: Path | None, alt: str, page: Path, points: Any = None) -> str:
    """An image embedded from its PNG (or, without one, its SVG), with the SVG offered as a
    download from the page itself and links to both files beside the page; over a PNG whose
    plotting code saved its points, the hover overlay (:func:`hover_overlay`)."""
    shown = png if png is not None and png.is_file() else svg if svg is not None and svg.is_file() else None
    if shown is None:
        names = ", ".join(p.name for p in (png, svg) if p is not None)
        return f'<p class="absent">Image missing when the page was built: {html.escape(names)}.</p>'
    overlay = hover_overlay(points) if shown is png and points else ""
    img = f'<img src="{data_uri(shown)}" alt="{html.escape(alt)}">'
    parts = [f'<div class="plot">{img}{overlay}</div>' if overlay else img]
    links = []
    if svg is not None and svg.is_file():
        links.append(f'<a href="{data_uri(svg)}" download="{html.escape(svg.name)}">SVG (from this page)</a>')
    links += [file_link(p, page) for p in (png, svg) if p is not None]
    parts.append('<span class="files">' + " · ".join(links) + "</span>")
    return "\n".join(parts)
