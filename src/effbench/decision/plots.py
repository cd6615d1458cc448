"""Figures of the decision outputs: panels side by side, saved as PNG and SVG under
``plots/decision/`` with stable bytes (fixed SVG hash salt, no dates), as the aggregation's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..aggregate.pareto import point_label  # noqa: F401 - the plots' point labels ([F] as the tables)
from ..atomic import atomic_path

PLOT_DIR = "plots/decision"


def new_figure(panels: int) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "effbench"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(panels, 1), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, max(panels, 1), i + 1) for i in range(max(panels, 1))]
    return fig, axes


def save(fig: Any, name: str, out: Path) -> dict[str, str]:
    """Write ``<out>/plots/decision/<name>.{png,svg}``; return those paths relative to ``out``."""
    rel = {ext: f"{PLOT_DIR}/{name}.{ext}" for ext in ("png", "svg")}
    with atomic_path(Path(out) / rel["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    with atomic_path(Path(out) / rel["svg"]) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})
    return rel


def slug(*parts: str) -> str:
    """A file-name-safe name from parts (cell names may hold '/', '.', '-')."""
    text = "_".join(parts)
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)
