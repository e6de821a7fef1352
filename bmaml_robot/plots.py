"""Plot helpers shared by ``bmaml-eval``, ``bmaml-compare`` and ``bmaml-render``.

Figures are ``matplotlib.figure.Figure`` objects drawn on the Agg canvas directly, without
``pyplot``: no global backend is changed, nothing needs a display, and figures are freed as soon
as they are dropped. PNGs are written atomically (``checkpoint.write_bytes_atomic``).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bmaml_robot.checkpoint import write_bytes_atomic

#: Line colours, one per variant, in order (matplotlib's tab10).
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")


def new_figure(width: float = 7.0, height: float = 4.5, dpi: int = 100) -> Figure:
    """A figure of ``width`` x ``height`` inches with an Agg canvas attached."""
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")  # titles never overlap
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``figure`` to ``path`` as a PNG, atomically; returns the path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(path)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def figure_rgb(figure: Figure) -> np.ndarray:
    """The figure as an image, uint8 ``[height, width, 3]``."""
    canvas = cast(FigureCanvasAgg, figure.canvas)  # as new_figure attaches (Figure types it as the base canvas)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def mean_band(axes: Axes, curves: np.ndarray, colour: str, label: str) -> tuple[float, float]:
    """Mean of ``curves`` [seeds, iterations] with its 95% t band over seeds, and every seed as a
    thin line. The y-range follows the seeds' curves, not the band: with 2 seeds the band uses
    t(1) = 12.7 and would flatten everything else (it is clipped at the frame instead). Returns
    the (low, high) of the curves for ``set_y_range``."""
    x = np.arange(curves.shape[1])
    mean = curves.mean(axis=0)
    if curves.shape[0] >= 2:
        axes.plot(x, curves.T, color=colour, linewidth=0.6, alpha=0.35)
    axes.plot(x, mean, color=colour, linewidth=1.6, label=label)
    if curves.shape[0] >= 2:
        from scipy import stats as scipy_stats

        half = scipy_stats.t.ppf(0.975, curves.shape[0] - 1) * curves.std(axis=0, ddof=1) / math.sqrt(curves.shape[0])
        axes.fill_between(x, mean - half, mean + half, color=colour, alpha=0.2, linewidth=0)
    return float(curves.min()), float(curves.max())


def set_y_range(axes: Axes, ranges: list[tuple[float, float]]) -> None:
    """The y-limits of ``axes``: every (low, high) of ``ranges`` with a 5% margin."""
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    margin = 0.05 * (high - low) if high > low else 1.0
    axes.set_ylim(low - margin, high + margin)
