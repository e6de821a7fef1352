"""Plot meta-training learning curves (return before/after adaptation) from run directories.

    python docs/plot_learning_curves.py OUT.png RUN_DIR[=LABEL] ...

Needs matplotlib (not a dependency of the package). A proper comparison tool with statistics
across seeds is `bmaml-compare` (planned).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smooth(x: np.ndarray, window: int = 10) -> np.ndarray:
    kernel = np.ones(window) / window
    return np.convolve(np.pad(x, (window // 2, window - 1 - window // 2), mode="edge"), kernel, mode="valid")


def main(out: str, runs: list[str]) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for spec in runs:
        path, _, label = spec.partition("=")
        metrics = [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]
        it = np.array([m["iteration"] for m in metrics])
        for key, style in (("return_before", "--"), ("return_after", "-")):
            y = np.array([m[key] for m in metrics])
            (line,) = ax.plot(it, smooth(y), style, label=f"{label or path} {key.split('_')[1]} adaptation")
            ax.plot(it, y, style, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean return per episode")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
