"""The figures of a comparison: ``curves.png`` (before / after adaptation per meta-iteration),
``gain.png`` (after - before) and ``final.png`` (every seed's final value and the variant means).

Matplotlib (through ``bmaml_robot.plots``) is imported when a figure is drawn, not with the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bmaml_robot.compare.analysis import METRIC_NAMES, Comparison, smooth


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _curves(c: Comparison, metric: str) -> list[tuple[str, np.ndarray]]:
    """Per variant: its legend label and its smoothed curves of ``metric`` (``return_before``,
    ``return_after`` or ``gain``), float64 [seeds, its common length]."""
    out = []
    for variant in c.variants:
        n = variant.common_length
        if metric == "gain":
            curves = np.stack([r.return_after[:n] - r.return_before[:n] for r in variant.runs])
        else:
            curves = np.stack([getattr(r, metric)[:n] for r in variant.runs])
        out.append((f"{variant.label} ({_seeds(len(variant.runs))})", smooth(curves, c.smooth_window)))
    return out


def plot_curves(c: Comparison, path: Path) -> Path:
    """Return before and after adaptation per meta-iteration: mean over seeds, 95% t band."""
    from bmaml_robot.plots import color, mean_band, new_figure, save_png, set_y_range

    figure = new_figure(12.0, 4.5)
    axes_before, axes_after = figure.subplots(1, 2, sharey=True)
    ranges = []
    for index, (before, after) in enumerate(zip(_curves(c, "return_before"), _curves(c, "return_after"))):
        for axes, (label, curves) in ((axes_before, before), (axes_after, after)):
            ranges.append(mean_band(axes, curves, color(index), label))
    set_y_range(axes_before, ranges)
    rl2 = all(run.config.algorithm == "rl2" for variant in c.variants for run in variant.runs)
    titles = ("first episode of the trial", "last episode") if rl2 else ("before adaptation", "after adaptation")
    for axes, title in zip((axes_before, axes_after), titles):
        _decorate(axes, c, title)
    axes_before.set_ylabel("mean return per episode (meta-batch)")
    axes_after.legend(fontsize=8, loc="best")
    figure.suptitle(_figure_title(c), fontsize=10)
    return save_png(figure, path)


def plot_gain(c: Comparison, path: Path) -> Path:
    """Adaptation gain (after - before) per meta-iteration."""
    from bmaml_robot.plots import color, mean_band, new_figure, save_png, set_y_range

    figure = new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    ranges = [mean_band(axes, curves, color(index), label) for index, (label, curves) in enumerate(_curves(c, "gain"))]
    set_y_range(axes, ranges + [(0.0, 0.0)])
    axes.axhline(0.0, color="k", linewidth=0.8)
    _decorate(axes, c, "adaptation gain (after - before)")
    axes.set_ylabel("return after - return before")
    axes.legend(fontsize=8, loc="best")
    figure.suptitle(_figure_title(c), fontsize=10)
    return save_png(figure, path)


def plot_final(c: Comparison, path: Path) -> Path:
    """Final window: every seed (dots) and the variant mean with its 95% CI, per metric."""
    from bmaml_robot.plots import new_figure, save_png

    figure = new_figure(12.0, 4.2)
    panels = figure.subplots(1, 3)
    for axes, metric in zip(panels, ("return_before", "return_after", "gain")):
        _final_panel(axes, c, metric)
    panels[0].set_ylabel(f"mean over iterations {c.window[0]}-{c.window[1] - 1}")
    figure.suptitle(f"{c.family}: final performance per seed (dots) and mean with 95% CI over seeds (squares)",
                    fontsize=10)
    return save_png(figure, path)


def _final_panel(axes: Any, c: Comparison, metric: str) -> None:
    """One metric's final values: per variant its seeds (dots) and mean with 95% CI (square)."""
    from bmaml_robot.plots import color

    for index, summary in enumerate(c.summaries):
        values = summary.final[metric]
        jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
        axes.scatter(index + jitter, values, color=color(index), s=18, alpha=0.7, zorder=3)
        ci = summary.ci[metric]
        if ci.n >= 2:
            axes.errorbar(index + 0.3, ci.mean, yerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="s",
                          color=color(index), capsize=4, markersize=6)
        else:
            axes.plot(index + 0.3, ci.mean, "s", color=color(index))
    axes.set_xticks(range(len(c.summaries)))
    axes.set_xticklabels([s.label for s in c.summaries], rotation=20, fontsize=8)
    axes.set_title(METRIC_NAMES[metric], fontsize=9)
    axes.grid(alpha=0.3, axis="y")
    if metric == "gain":
        axes.axhline(0.0, color="k", linewidth=0.8)


def _decorate(axes: Any, c: Comparison, title: str) -> None:
    """Final window (grey), common length (dashed), labels and grid."""
    axes.axvspan(c.window[0] - 0.5, c.window[1] - 0.5, color="0.85", alpha=0.6, linewidth=0, zorder=0)
    axes.axvline(c.length - 0.5, color="0.4", linestyle="--", linewidth=0.8)
    if c.env_step_grid is not None:  # point k: after (k + 1) x grid[0] environment steps
        axes.set_xlabel(f"environment steps (point k: (k + 1) x {c.env_step_grid[0]:,.0f})")
    else:
        axes.set_xlabel("meta-iteration")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)


def _figure_title(c: Comparison) -> str:
    smoothing = (f"trailing mean over {c.smooth_window} iterations" if c.smooth_window > 1 else "not smoothed")
    return (f"{c.family}: mean over seeds (thick), seeds (thin), 95% t band ({smoothing})\ngrey: final window "
            f"{c.window[0]}-{c.window[1] - 1}, dashed: common length {c.length}")


FIGURES = {"curves.png": plot_curves, "gain.png": plot_gain, "final.png": plot_final}
"""File name -> the function that draws it (in the order they are written)."""
