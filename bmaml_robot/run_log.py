"""What a run writes as it goes besides its checkpoints: TensorBoard scalars and its provenance.

- ``RUN/tensorboard/``: TensorBoard event files (``tensorboard --logdir runs``), one scalar per
  metric and meta-iteration: ``returns/*`` (before and after adaptation, gain), ``eval/*``
  (held-out returns after k adaptation steps, with ``eval_every``), ``trpo/*`` (the TRPO figures),
  ``time/*`` and ``env_steps/*``. Written with ``torch.utils.tensorboard`` when the
  ``tensorboard`` package is installed (``pip install "bmaml-robot[tensorboard]"``); without it
  the run says so once and writes ``metrics.jsonl`` only, which holds the same numbers. A resumed
  run purges the steps it recomputes, so the curves never double back.
- ``RUN/provenance.json``: one entry per start or resume of the run (when, from which iteration,
  package version, git commit, library versions), so a run continued across code changes says so.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any

from bmaml_robot.checkpoint import write_text_atomic
from bmaml_robot.provenance import provenance

TENSORBOARD_DIR = "tensorboard"
PROVENANCE = "provenance.json"

#: metrics.jsonl key -> TensorBoard tag.
SCALARS = {
    "return_before": "returns/before_adaptation",
    "return_after": "returns/after_adaptation",
    "loss_before": "trpo/loss_before",
    "loss_after": "trpo/loss_after",
    "kl_before": "trpo/kl_before",
    "kl_after": "trpo/kl_after",
    "ls_steps": "trpo/line_search_steps",
    "step_accepted": "trpo/step_accepted",
    "step_fraction": "trpo/step_fraction",
    "grad_norm": "trpo/grad_norm",
    "step_norm": "trpo/step_norm",
    "time_s": "time/iteration_s",
    "sample_time_s": "time/sample_s",
    "env_steps": "env_steps/iteration",
}

logger = logging.getLogger("bmaml_robot")


class TensorBoardLog:
    """TensorBoard scalars of a run's metrics (a no-op, said once, without ``tensorboard``)."""

    def __init__(self, run_dir: Path, start_iteration: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("TensorBoard event files are not written: install the tensorboard package "
                           "(pip install \"bmaml-robot[tensorboard]\"); metrics.jsonl holds the same numbers")
            self.writer = None
            return
        # purge_step: events at or past it (from a run killed after its last checkpoint) are dropped.
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=start_iteration)

    def write(self, record: dict[str, Any], env_steps_total: int) -> None:
        """One meta-iteration's metrics (a metrics.jsonl record) at step ``record["iteration"]``."""
        if self.writer is None:
            return
        step = int(record["iteration"])
        for key, tag in SCALARS.items():
            if key in record:
                self.writer.add_scalar(tag, float(record[key]), step)
        self.writer.add_scalar("returns/gain", float(record["return_after"] - record["return_before"]), step)
        self.writer.add_scalar("env_steps/total", env_steps_total, step)
        for key, value in record.items():
            if key.startswith("eval_"):
                self.writer.add_scalar(f"eval/{key.removeprefix('eval_')}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_provenance(run_dir: Path) -> list[dict[str, Any]]:
    """The sessions ``RUN/provenance.json`` records (``[]`` without one); ValueError naming the file
    when it is damaged."""
    path = Path(run_dir) / PROVENANCE
    if not path.is_file():
        return []
    try:
        sessions = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path}: not the JSON list bmaml-train writes; the file is damaged") from None
    if not isinstance(sessions, list):
        raise ValueError(f"{path}: expected a JSON list of sessions, got {type(sessions).__name__}")
    return sessions


def record_provenance(run_dir: Path, start_iteration: int) -> None:
    """Append this start (or resume) of the run to ``RUN/provenance.json`` (atomically)."""
    path = Path(run_dir) / PROVENANCE
    sessions = read_provenance(run_dir)
    sessions.append({
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "start_iteration": start_iteration,
        **provenance(),
    })
    write_text_atomic(path, json.dumps(sessions, indent=1) + "\n")
