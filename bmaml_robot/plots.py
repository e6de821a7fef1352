"""Plot helpers shared by ``bmaml-eval``, ``bmaml-compare`` and ``bmaml-render``.

Figures are ``matplotlib.figure.Figure`` objects drawn on the Agg canvas directly, without
``pyplot``: no global backend is changed, nothing needs a display, and figures are freed as soon
as they are dropped. PNGs are written atomically (``checkpoint.write_bytes_atomic``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
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
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def color(index: int) -> str:
    return COLORS[index % len(COLORS)]
