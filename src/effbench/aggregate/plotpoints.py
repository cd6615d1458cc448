"""What the plots share so a reader can query them and nothing hides a point:

- :func:`place_labels`: point labels placed where they overlap no other label and no other point
  (the first free of a few offsets around the point; the least crowded when none is free), so
  close points (pissa / rslora) stay readable;
- :func:`legend_outside`: the legend right of the axes, never over a point (it hid lora);
- :func:`point_text`: a point's hover text: its cell, each figure with its 95 % interval;
- :func:`save_points`: each point's pixel position in the saved PNG and its hover text, for the
  plot's manifest entry (``points``); the report lays a hover layer over the image from it.

Call :func:`save_points` after the PNG is written: the positions are those of the saved layout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .frame import is_missing
from .tables import format_value

# (dx, dy) in points and the horizontal alignment: right-above first, as the plots always had it.
OFFSETS = ((5, 4, "left"), (5, -11, "left"), (-5, 4, "right"), (-5, -11, "right"), (5, 13, "left"),
           (-5, 13, "right"), (5, -20, "left"), (-5, -20, "right"), (0, 22, "center"), (0, -29, "center"))


def legend_outside(ax: Any, fontsize: int = 8) -> None:
    """The legend right of the axes (constrained layout makes room): it can never cover a point."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def place_labels(fig: Any, ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str],
                 fontsize: int = 8) -> list[Any]:
    """Annotate each point with its label at the first offset that overlaps no label placed so far
    and no other point; the annotations, in order."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()  # the layout first: extents are measured in it
    renderer = fig.canvas.get_renderer()
    pix = ax.transData.transform(list(zip(xs, ys))) if len(xs) else []
    marks = [Bbox.from_extents(px - 5, py - 5, px + 5, py + 5) for px, py in pix]
    placed: list[Any] = []
    out = []
    for i, (x, y, lab) in enumerate(zip(xs, ys, labels)):
        best: tuple[float, Any, Any] | None = None
        for dx, dy, ha in OFFSETS:
            a = ax.annotate(lab, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize, ha=ha)
            bb = a.get_window_extent(renderer)
            score = (10 * sum(bb.overlaps(o) for o in placed)
                     + 3 * sum(bb.overlaps(m) for j, m in enumerate(marks) if j != i)
                     + 5 * (not fig.bbox.contains(bb.x0, bb.y0) or not fig.bbox.contains(bb.x1, bb.y1)))
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, a, bb)
            else:
                a.remove()
            if score == 0:
                break
        assert best is not None
        placed.append(best[2])
        out.append(best[1])
    return out


def figure_text(header: str, r: Mapping[str, Any], col: str, fmt: str = "sig4") -> str:
    """``header: value [low, high]`` (the 95 % interval where the row has one)."""
    v = r.get(col)
    if is_missing(v):
        return f"{header}: n/a"
    lo, hi = r.get(col + "__ci_low"), r.get(col + "__ci_high")
    iv = "" if is_missing(lo) or is_missing(hi) else f" [{format_value(lo, fmt)}, {format_value(hi, fmt)}] (95 %)"
    return f"{header}: {format_value(v, fmt)}{iv}" + ("" if iv else " (no interval)")


def point_text(label: str, r: Mapping[str, Any], axes: Sequence[tuple[str, str, str]], front: bool | None = None
               ) -> str:
    """The hover text of a point: its label, then ``(header, column, format)`` of each axis."""
    lines = [label] + [figure_text(h, r, c, f) for h, c, f in axes]
    if front is not None:
        lines.append("on the Pareto front" if front else "not on the Pareto front")
    return "\n".join(lines)


def save_points(fig: Any, ax: Any, dpi: float, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                fronts: Sequence[bool] | None = None) -> dict[str, Any]:
    """The PNG's size and each point's pixel position (origin top left, as in the image) with its
    hover text: the manifest entry's ``points``. Call after ``savefig(png, dpi=dpi)``."""
    scale = dpi / fig.dpi  # the transforms are at the figure's own dpi, the PNG at ``dpi``
    width, height = fig.bbox.width * scale, fig.bbox.height * scale
    pix = ax.transData.transform(list(zip(xs, ys))) if len(xs) else []
    points = [{"px": round(float(px) * scale, 1), "py": round(height - float(py) * scale, 1), "text": t,
               **({"front": bool(fronts[i])} if fronts is not None else {})}
              for i, ((px, py), t) in enumerate(zip(pix, texts))]
    return {"width": round(width), "height": round(height), "points": points}
