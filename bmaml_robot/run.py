"""A run directory: its files, the config it recorded, its metrics, its policy at its iteration.

Every command reads and writes runs through ``RunDir``: ``bmaml-train`` (create, resume, append
metrics, checkpoints, the final policy), ``bmaml-eval``, ``bmaml-render``, ``bmaml-export`` and
``bmaml-compare`` (``load``). A run directory holds::

    config.yaml       the resolved config (written at every start and resume)
    metrics.jsonl     one line per meta-iteration, appended before the checkpoint that covers it
    checkpoint.pt     {"config", "policy", "next_iteration", "env_steps"[, "learner"]}, atomic, every few
                      iterations ("learner": RL^2's optimiser state, for an exact resume)
    policy.pt         {"config", "policy", "iterations"}: the final meta-policy (atomic)
    provenance.json   package/library versions per start and resume (``run_log.py``)
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bmaml_robot.checkpoint import append_jsonl, load_checkpoint, read_jsonl, save_checkpoint, write_text_atomic
from bmaml_robot.config import TrainConfig, dump_config, read_yaml, run_config
from bmaml_robot.factory import build_policy, robot_dims
from bmaml_robot.policies import Policy
from bmaml_robot.rl2 import RL2Policy
from bmaml_robot_deploy.checks import check_int

CHECKPOINT = "checkpoint.pt"
FINAL_POLICY = "policy.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
#: Config keys a resumed run may change: they decide how long it runs and where it samples,
#: never what it computes.
RESUME_MAY_CHANGE = frozenset(
    {
        "num_iterations",
        "num_threads",
        "sampler",
        "ray_address",
        "workers",
        "threads_per_worker",
        "eval_every",
        "eval_adapt_steps",
        "eval_tasks",
        "eval_episodes",
    }
)
#: Keys of a checkpoint.
_CHECKPOINT_KEYS = ("config", "policy", "next_iteration", "env_steps")
#: ``LoadedRun.source`` of a run's policy at initialisation.
INITIAL = "initialisation"


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A run's meta-policy and the config it was trained with."""

    run_dir: Path
    config: TrainConfig
    policy: Policy | RL2Policy
    source: str
    """The file the policy came from: ``policy.pt`` or ``checkpoint.pt``; ``initialisation`` for
    the run's policy before meta-training (``RunDir.load(initial=True)``)."""
    iterations: int
    """Meta-iterations behind this policy."""

    def maml_policy(self, command: str) -> Policy:
        """The policy of a MAML run; ValueError naming ``command`` for an RL^2 run (which adapts
        in its activations: nothing to adapt by gradient steps)."""
        if isinstance(self.policy, RL2Policy):
            raise ValueError(f"{command}: {self.run_dir} is an RL^2 run (algorithm rl2); {command} works on MAML "
                             f"runs (evaluate RL^2 runs with bmaml-eval)")
        return self.policy


class RunDir:
    """The files of one run (module docstring) and every check that they belong together."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / CONFIG
        self.metrics_path = self.path / METRICS
        self.checkpoint_path = self.path / CHECKPOINT
        self.final_path = self.path / FINAL_POLICY
        self._recorded: tuple[TrainConfig | None, dict[str, Any] | None] | None = None

    # -- what the run recorded -------------------------------------------------------------
    def recorded(self) -> tuple[TrainConfig | None, dict[str, Any] | None]:
        """The config the run recorded and its checkpoint (read once): the checkpoint's config, or
        config.yaml's for a run killed before its first checkpoint (checkpoint None); (None, None)
        when neither exists. ValueError naming the file when it is not what bmaml-train writes.

        Read once per ``RunDir`` object (``bmaml-train --resume`` reads its base config, checks
        and resumes from one read); a new object sees later writes."""
        if self._recorded is None:
            if self.checkpoint_path.is_file():
                state = load_checkpoint(self.checkpoint_path)
                self._recorded = (_config_of(state, self.checkpoint_path), state)
            elif self.config_path.is_file():
                self._recorded = (run_config(read_yaml(self.config_path), source=str(self.config_path)), None)
            else:
                self._recorded = (None, None)
        return self._recorded

    def metrics(self, next_iteration: int) -> list[dict[str, Any]]:
        """The metrics of iterations ``0 .. next_iteration - 1`` from metrics.jsonl.

        Metrics are appended before the checkpoint that covers them, so after a kill the file may
        hold more iterations than the checkpoint (they are dropped and recomputed, identically)
        and a torn last line; anything else (a damaged line, a gap, fewer iterations than the
        checkpoint) is a ValueError naming the file and the line."""
        path = self.metrics_path
        records = read_jsonl(path)
        for line, record in enumerate(records[:next_iteration], start=1):
            if record.get("iteration") != line - 1:
                raise ValueError(
                    f"{path}, line {line}: expected iteration {line - 1}, got {record.get('iteration')!r}; "
                    "the file is damaged (lines lost or out of order)"
                )
        if len(records) < next_iteration:
            raise ValueError(
                f"{path}: holds iterations 0..{len(records) - 1} but {CHECKPOINT} is at iteration "
                f"{next_iteration}: lines were lost"
            )
        return records[:next_iteration]

    # -- starting and resuming -------------------------------------------------------------
    def prepare(self, config: TrainConfig, resume: bool) -> tuple[TrainConfig, dict[str, Any] | None]:
        """Check that this directory can take this run (ValueError naming what is wrong, before
        any work starts): a directory that can be written; a new run never lands on another run's
        files; a resumed run's recorded config, checkpoint and metrics agree with each other and
        with ``config`` (only the keys of ``RESUME_MAY_CHANGE`` may change).

        Returns the config to run, resolved (an ``action_scale`` left to the default is the
        resumed run's own, else the family's), and the checkpoint to resume from, or None to start
        at iteration 0 (a new run, or a resumed one killed before its first checkpoint)."""
        from bmaml_robot.run_log import read_provenance

        if resume and not self.path.is_dir():
            raise ValueError(f"resume: no run directory {self.path}")
        self._check_writable()
        state = None
        if resume:
            saved, state = self.recorded()
            if saved is not None:
                if config.action_scale is None:
                    config = config.replace(action_scale=saved.action_scale)
                changed = {k for k, v in config.to_dict().items() if saved.to_dict()[k] != v} - RESUME_MAY_CHANGE
                if changed:
                    raise ValueError(
                        f"resume: the run was started with other values of {sorted(changed)}; "
                        f"only {', '.join(sorted(RESUME_MAY_CHANGE))} may change"
                    )
            if state is not None:
                check_checkpoint(state, self.checkpoint_path, config)
                self.metrics(state["next_iteration"])
            read_provenance(self.path)  # a damaged one is a usage error now, not after the sampler is built
        elif any(p.exists() for p in (self.checkpoint_path, self.metrics_path, self.config_path)):
            raise ValueError(
                f"out: {self.path} already holds a run; pass resume=True (--resume) or choose another directory"
            )
        return config.resolved(), state

    def _check_writable(self) -> None:
        """ValueError when the directory cannot hold a run: a file, under a file, or not writable."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out: {self.path} is a file, not a run directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as error:
            raise ValueError(f"out: cannot write to {self.path} ({error.strerror or error})") from None

    def start(self, config: TrainConfig, metrics: list[dict[str, Any]]) -> None:
        """Begin (or continue) writing: stray temporary files of a killed atomic write removed,
        config.yaml written, metrics.jsonl rewritten to exactly ``metrics`` (lines past the
        checkpoint, from a kill between the two writes, are recomputed identically)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stray in self.path.glob(".*.tmp"):
            stray.unlink()
        dump_config(config, self.config_path)
        write_text_atomic(self.metrics_path, "".join(json.dumps(m) + "\n" for m in metrics))

    # -- writing -------------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def save_checkpoint(
        self, config: TrainConfig, policy: torch.nn.Module, next_iteration: int, env_steps: int,
        learner: dict[str, Any] | None = None,
    ) -> None:
        """checkpoint.pt; ``learner``: the learner's own state where it has one (RL^2's optimiser)."""
        state = {
            "config": config.to_dict(),
            "policy": policy.state_dict(),
            "next_iteration": next_iteration,
            "env_steps": env_steps,
        }
        if learner is not None:
            state["learner"] = learner
        save_checkpoint(self.checkpoint_path, state)

    def save_final(self, config: TrainConfig, policy: torch.nn.Module, iterations: int) -> None:
        """policy.pt: the meta-policy after ``iterations`` meta-iterations."""
        save_checkpoint(
            self.final_path, {"config": config.to_dict(), "policy": policy.state_dict(), "iterations": iterations}
        )

    # -- reading the policy ----------------------------------------------------------------
    def load(self, *, initial: bool = False) -> LoadedRun:
        """The run's meta-policy from the file that is furthest along: ``policy.pt`` (a finished
        run), or ``checkpoint.pt`` when it is missing or further along (a run in progress, or a
        finished run being extended with ``--resume``). ValueError naming the directory and what
        is missing.

        ``initial``: the run's policy as meta-training started it (its config's architecture and
        seed, 0 iterations): the baseline a meta-trained policy must beat."""
        if not self.path.is_dir():
            raise ValueError(f"run_dir: expected a run directory, got {str(self.path)!r} (no such directory)")
        if not self.final_path.is_file() and not self.checkpoint_path.is_file():
            present = sorted(p.name for p in self.path.iterdir())
            raise ValueError(
                f"run_dir: {self.path} has no {FINAL_POLICY} or {CHECKPOINT} (it holds {present}); "
                f"a run killed before its first checkpoint has no policy to evaluate yet"
            )
        candidates = []  # (iterations, preference, file, state): the furthest along wins, policy.pt on ties
        if self.final_path.is_file():
            final = load_checkpoint(self.final_path)
            candidates.append((self._final_iterations(final), 1, self.final_path, final))
        if self.checkpoint_path.is_file():
            latest = load_checkpoint(self.checkpoint_path)
            _config_of(latest, self.checkpoint_path)
            candidates.append((int(latest.get("next_iteration", 0)), 0, self.checkpoint_path, latest))
            if len(candidates) == 2 and "iterations" not in candidates[0][3]:
                # policy.pt of a run made before it stored its count: the run's last checkpoint
                # holds the same policy and the true count (num_iterations is what the last command asked for).
                candidates[0] = (candidates[1][0], *candidates[0][1:])
        iterations, _, path, state = max(candidates, key=lambda c: (c[0], c[1]))
        config = _config_of(state, path)
        if "policy" not in state:
            raise ValueError(f"{path}: expected a dict with 'config' and 'policy', got keys {sorted(state)}")
        policy = build_policy(config, *robot_dims(config.family))
        if initial:
            return LoadedRun(self.path, config, policy.eval(), INITIAL, 0)
        try:
            policy.load_state_dict(state["policy"])
        except RuntimeError as error:
            raise ValueError(f"{path}: its policy does not match its config ({error})") from error
        policy.eval()
        return LoadedRun(self.path, config, policy, path.name, iterations)

    def _final_iterations(self, state: Any) -> int:
        config = _config_of(state, self.final_path)
        count = state.get("iterations", config.num_iterations)
        return check_int(count, f"{self.final_path}: iterations", minimum=0)


def load_run(run_dir: str | Path | LoadedRun, *, initial: bool = False) -> LoadedRun:
    """``RunDir(run_dir).load(initial=initial)``; a ``LoadedRun`` is returned as it is."""
    return run_dir if isinstance(run_dir, LoadedRun) else RunDir(run_dir).load(initial=initial)


def _config_of(state: Any, path: Path) -> TrainConfig:
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"{path}: expected a dict with 'config' and 'policy' (written by bmaml-train)")
    return run_config(state["config"], source=str(path))


def check_checkpoint(state: dict[str, Any], path: Path, config: TrainConfig) -> None:
    """ValueError naming ``path`` and the key when the checkpoint cannot be what bmaml-train wrote:
    missing keys, a counter that is not a non-negative integer, parameters whose names or shapes
    are not those of ``config``'s policy."""
    required = _CHECKPOINT_KEYS + (("learner",) if config.algorithm == "rl2" else ())
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (a checkpoint holds {list(required)})")
    for key in ("next_iteration", "env_steps"):
        check_int(state[key], f"{path}: {key}", minimum=0)
    params = state["policy"]
    if not isinstance(params, Mapping) or not all(isinstance(v, torch.Tensor) for v in params.values()):
        raise ValueError(f"{path}: policy: expected a state dict of tensors, got {type(params).__name__}")
    expected = {
        name: tuple(p.shape) for name, p in build_policy(config, *robot_dims(config.family)).state_dict().items()
    }
    got = {name: tuple(v.shape) for name, v in params.items()}
    if got != expected:
        wrong = sorted(set(expected) ^ set(got)) or [n for n in expected if expected[n] != got[n]]
        raise ValueError(
            f"{path}: policy: its parameters do not match the config's {config.policy} policy (differing: {wrong[:4]})"
        )
