"""Adapt a meta-trained policy to one task and export it as one self-contained ONNX file.

    bmaml-export runs/cheetah --task '{"direction": -1.0}' --adapt-steps 1 --out cheetah_back.onnx

or from Python::

    from bmaml_robot.export import adapt_for_task, adapt_run, export_onnx
    policy, params = adapt_for_task("runs/cheetah", {"direction": -1.0}, adapt_steps=1)
    adaptation = adapt_run("runs/cheetah", {"direction": -1.0}, adapt_steps=1)  # + returns, metadata
    export_onnx(adaptation.policy, adaptation.params, "cheetah_back.onnx", adaptation.metadata())

The run's meta-policy and config come from ``policy.pt`` (or ``checkpoint.pt`` of a run in
progress; ``bmaml_robot.run.RunDir.load``). Adaptation is training's own inner loop
(``meta.adapt_to_tasks``: ``MetaLearner`` on episodes sampled by ``MetaSampler``),
run for one task: step ``i`` samples episodes with the parameters adapted ``i`` times, then
adapts once more. Recurrent weights that training never adapts (``frozen``/``outer``
recurrence) stay as they are. ``adapt_steps=0`` exports the meta-policy itself. The reset and
action noise of step ``i`` is seeded from ``bmaml-eval``'s streams (``evaluation_seed(seed,
1 + i)``), which training never uses.

The ONNX graph (contract: ``bmaml_robot_deploy.metadata``) is the policy's own ``step`` with
the adapted parameters baked in as constants::

    obs  [batch, obs_dim]           -> action [batch, act_dim]   (Gaussian mean, mapped to the robot)
    h_in [layers, batch, hidden]    -> h_out  [layers, batch, hidden]   (rnn, gru, lstm)
    c_in [layers, batch, hidden]    -> c_out  [layers, batch, hidden]   (lstm)

all float32, ``batch`` dynamic. The action is the robot's: the policy's mean, clipped to its
normalised space and mapped onto the robot's bounds (``envs/action_map.py``), inside the graph.
``metadata_props`` describe robot, task, dimensions, bounds,
control timestep, policy kind, the training horizon and where the file came from: the run's
name, its resolved training config, the package version and git commit (``PolicyMetadata``).

A task outside the family's training distribution (``TaskFamily.in_distribution``; e.g.
``{"direction": 0.5}`` on HalfCheetahDir) is exported, with a ``TaskDistributionWarning``.

RL^2 runs (``algorithm: rl2``, robot families) adapt in their activations, so they are exported
as they are, without a gradient step (``adapt_steps`` 0)::

    export = rl2_export("runs/hcvel-rl2", {"velocity": 1.5})   # + the return per episode of trials
    export_onnx(export.policy, None, "hcvel.onnx", export.metadata())

The task is the simulator's (``bmaml.task``, what ``--link sim`` runs): the policy has to discover
it. The graph takes RL^2's inputs besides the observation (``bmaml_robot_deploy.metadata``)::

    obs [batch, obs_dim], prev_action [batch, act_dim], prev_reward [batch, 1],
    episode_start [batch, 1], h_in (, c_in) [layers, batch, hidden] -> action, h_out (, c_out)

``prev_action`` is the previous action normalised (the policy's own divided by ``action_scale``
and clipped to [-1, 1]: the robot's action mapped back from its bounds), as ``rl2/sampler.py``
feeds it; the action goes through the same ``ActionMap`` as MAML's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import math
import shlex
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bmaml_robot.checkpoint import write_bytes_atomic
from bmaml_robot.config import TrainConfig
from bmaml_robot.envs.action_map import ActionMap
from bmaml_robot.envs.discrete import DISCRETE_FAMILIES
from bmaml_robot.envs.families import TaskFamily, get_family
from bmaml_robot.factory import build_learner
from bmaml_robot.meta import MetaLearner, adapt_to_tasks
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.policies import Policy, State
from bmaml_robot.provenance import provenance
from bmaml_robot.rl2 import RL2Policy
from bmaml_robot.rl2.sampler import TrialSampler
from bmaml_robot.run import LoadedRun, load_run
from bmaml_robot.seeds import MAX_SEED, evaluation_seed
from bmaml_robot.torch_threads import one_torch_thread
from bmaml_robot_deploy.checks import check_float, check_int
from bmaml_robot_deploy.metadata import (
    EPISODE_START_INPUT,
    NO_RECURRENCE,
    OBS_INPUT,
    PREV_ACTION_INPUT,
    PREV_REWARD_INPUT,
    RL2_FORMAT_VERSION,
    RL2_INPUT_DOCS,
    PolicyMetadata,
)

#: ONNX opset of exported files: the lowest the exporter emits, so older onnxruntime builds on
#: robot computers can load them.
OPSET_VERSION = 18

#: Largest difference between onnxruntime and torch accepted by the check made at export time.
EXPORT_TOLERANCE = 1e-5

#: Batch size of the example inputs traced at export (not 1: torch.export specialises size-1 dims).
_EXAMPLE_BATCH = 3

#: The ``bmaml-control`` command ``bmaml-export`` suggests runs one episode paced at the file's
#: control rate when that takes at most this many seconds, unpaced (``--no-realtime``) otherwise.
SUGGESTED_REALTIME_LIMIT_S = 10.0

#: ``bmaml-control``'s default ``--steps``: the suggested command's episode ends by then at the latest.
_CONTROL_DEFAULT_STEPS = 1000

#: Trials an RL^2 export samples on its task for the returns it reports (``--episodes``' default).
RL2_REPORT_TRIALS = 4


class TaskDistributionWarning(UserWarning):
    """The task is outside the family's training distribution: the meta-policy never saw such a
    task, and adaptation may not reach it."""


# ----------------------------------------------------------------------------- the task
def check_task(family: TaskFamily, task: Any, *, where: str = "task") -> dict[str, Any]:
    """``task`` checked against ``family`` (ValueError/TypeError naming ``where`` otherwise), in
    canonical form (``TaskFamily.canonical``): floats, ``goal`` as a list ``[x, y]``, every
    element of a physics family's fields."""
    family.encode(task, where)
    return family.canonical(task)


def task_physics(family: TaskFamily, task: Mapping[str, Any]) -> dict[str, float] | None:
    """The task's physics as the simulator sets it, absolute values by column label (the
    ``bmaml.physics`` metadata), or None for a family that changes only the reward."""
    layout = family.layout
    if layout is None:
        return None
    return {label: float(v) for label, v in zip(layout.labels, layout.encode(task))}


def out_of_distribution(family: TaskFamily, task: Mapping[str, Any]) -> str | None:
    """None when ``task`` (checked, canonical) is in ``family``'s training distribution, else a
    sentence saying it is not, naming the distribution."""
    if family.in_distribution(task):
        return None
    return (f"task {json.dumps(dict(task))} is outside {family.name}'s training distribution "
            f"({family.task_distribution}): the meta-policy was never trained on such a task, and "
            "adaptation may not reach it")


def config_for_file(config: TrainConfig) -> dict[str, Any]:
    """The run's resolved training config as written to an exported file (``bmaml.train_config``):
    ``TrainConfig.to_dict()`` of the resolved config, without ``recurrence`` for an mlp (a field
    only recurrent policies use; the file's ``bmaml.recurrence`` is ``none`` then)."""
    resolved = config.resolved().to_dict()
    if resolved["policy"] == "mlp":
        del resolved["recurrence"]
    return resolved


# ----------------------------------------------------------------------------- adaptation
@dataclasses.dataclass
class Adaptation:
    """A meta-policy adapted to one task, with what is needed to describe it."""

    run: LoadedRun
    policy: Policy
    """The meta-policy (module parameters are never changed by adaptation)."""
    params: dict[str, Tensor]
    """The adapted parameters, every name, ``{name: Tensor [1, *shape]}`` (detached)."""
    task: dict[str, Any]
    """The task, canonical form."""
    adapt_steps: int
    fast_lr: float
    episodes: int
    """Episodes sampled per step."""
    returns: list[float]
    """Mean undiscounted return of the episodes sampled with the parameters after ``i`` steps,
    ``i = 0 .. adapt_steps`` (one entry when ``adapt_steps == 0``)."""
    family: TaskFamily
    control_dt: float
    """Seconds per control step (the env's ``dt``)."""
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    action_scale: float
    """The run's normalised action scale (``envs/action_map.py``)."""

    def metadata(self) -> PolicyMetadata:
        """The ``PolicyMetadata`` of an ONNX file exported from this adaptation: what the policy
        is, and where it came from (the run directory's name, its resolved config and training
        horizon, ``provenance()``: package version, git commit, library versions)."""
        policy = self.policy
        return _file_metadata(self, policy.kind, policy.recurrence or NO_RECURRENCE, tuple(policy.hidden_shape),
                              adapt_steps=self.adapt_steps)


def _file_metadata(export: Adaptation | RL2Export, policy_kind: str, recurrence: str, hidden_shape: tuple[int, ...],
                   **extra: Any) -> PolicyMetadata:
    """The ``PolicyMetadata`` both kinds of export share (the robot, the task, the action bounds,
    where the policy came from), plus ``extra`` fields."""
    origin = provenance()
    return PolicyMetadata(
        robot=export.family.robot,
        family=export.family.name,
        task=export.task,
        obs_dim=export.policy.obs_dim,
        act_dim=export.policy.act_dim,
        action_low=export.action_low,
        action_high=export.action_high,
        control_dt=export.control_dt,
        policy_kind=policy_kind,
        recurrence=recurrence,
        hidden_shape=hidden_shape,
        package_version=origin["package_version"],
        source_run=Path(export.run.run_dir).resolve().name,
        action_scale=export.action_scale,
        horizon=export.run.config.horizon,
        git_commit=origin["git_commit"],
        provenance=origin,
        train_config=config_for_file(export.run.config),
        physics=task_physics(export.family, export.task),
        **extra,
    )


def adapt_run(
    run: str | Path | LoadedRun,
    task: Mapping[str, Any],
    adapt_steps: int,
    *,
    episodes: int | None = None,
    fast_lr: float | None = None,
    seed: int = 0,
    num_threads: int | None = None,
) -> Adaptation:
    """Adapt a run's meta-policy to ``task`` with ``adapt_steps`` inner steps, as training does.

    Args:
        run: the run directory (or a ``LoadedRun``).
        task: a task of the run's family, e.g. ``{"direction": -1.0}``.
        adapt_steps: inner steps K >= 0 (0: the meta-policy itself; one batch of episodes is
            still sampled, for the return it reaches).
        episodes: episodes per step (default: the run's ``episodes_per_task``), of the run's
            ``horizon``.
        fast_lr: inner step size (default: the run's).
        seed: fixes reset and action noise of every step's episodes.
        num_threads: threads stepping the robots (default: the run's; results do not depend on it).

    Returns:
        ``Adaptation``: adapted parameters ``{name: [1, *shape]}`` and the mean return after
        each step (K + 1 batches of episodes are sampled: after the last step too).

    Warns:
        TaskDistributionWarning: ``task`` is outside the family's training distribution.
    """
    loaded = load_run(run)
    if isinstance(loaded.policy, RL2Policy):
        raise ValueError(
            f"adapt_run: {loaded.run_dir} is an RL^2 run (algorithm rl2), which adapts in its activations, not "
            "by gradient steps: export it with rl2_export() and export_onnx() (bmaml-export without --adapt-steps)"
        )
    config = loaded.config
    family = get_family(config.family)
    canonical = check_task(family, task)
    adapt_steps = check_int(adapt_steps, "adapt_steps", minimum=0)
    episodes = check_int(config.episodes_per_task if episodes is None else episodes, "episodes", minimum=1)
    fast_lr = check_float(config.fast_lr if fast_lr is None else fast_lr, "fast_lr", low=0)
    seed = check_int(seed, "seed", minimum=0, below=MAX_SEED)
    num_threads = check_int(config.num_threads if num_threads is None else num_threads, "num_threads", minimum=1)
    outside = out_of_distribution(family, canonical)
    if outside is not None:
        warnings.warn(outside, TaskDistributionWarning, stacklevel=2)

    sampler = MetaSampler(config.family, 1, episodes, config.horizon, num_threads=num_threads,
                          action_scale=config.action_scale)
    # One torch thread, as in training (float results independent of the machine; faster on
    # small problems); restored on return.
    with one_torch_thread():
        try:
            env = sampler.env
            policy = loaded.maml_policy("bmaml-export")
            learner = build_learner(config.replace(fast_lr=fast_lr, num_threads=num_threads), policy)
            assert isinstance(learner, MetaLearner)  # a run's Policy (not RL^2's) gets MAML's learner
            sampler.set_tasks([canonical])
            # Training's inner loop for one task, on bmaml-eval's noise streams (disjoint from training's).
            loop = adapt_to_tasks(learner, sampler, adapt_steps, lambda step: evaluation_seed(seed, 1 + step))
            returns = [float(r) for r in loop.episode_returns().mean(axis=(1, 2))]
            params = loop.params
            if params is None:
                with torch.no_grad():
                    params = policy.batched_params(1)
            adapted = {name: value.detach().clone() for name, value in params.items()}
            low, high = sampler.action_map.low, sampler.action_map.high
            control_dt = float(env.dt)
        finally:
            sampler.close()
    return Adaptation(
        run=loaded, policy=policy, params=adapted, task=canonical, adapt_steps=adapt_steps, fast_lr=fast_lr,
        episodes=episodes, returns=returns, family=family, control_dt=control_dt,
        action_low=tuple(float(v) for v in low), action_high=tuple(float(v) for v in high),
        action_scale=sampler.action_map.scale,
    )


def adapt_for_task(
    run_dir: str | Path,
    task: Mapping[str, Any],
    adapt_steps: int,
    *,
    episodes: int | None = None,
    fast_lr: float | None = None,
    seed: int = 0,
    num_threads: int | None = None,
) -> tuple[Policy, dict[str, Tensor]]:
    """``(policy, params)``: the run's meta-policy and its parameters adapted to ``task``,
    ``{name: Tensor [1, *shape]}`` (every name; use them as ``policy.step(obs, state, params)``
    with ``obs [1, B, obs_dim]``). See ``adapt_run`` for the arguments."""
    adaptation = adapt_run(
        run_dir, task, adapt_steps, episodes=episodes, fast_lr=fast_lr, seed=seed, num_threads=num_threads
    )
    return adaptation.policy, adaptation.params


# ----------------------------------------------------------------------------- RL^2
def check_rl2_family(family: str) -> None:
    """ValueError naming ``family`` when it is one of the discrete tasks (bandits, two-step):
    their actions are indices, not a robot's, and the deploy runtime drives robots."""
    if family in DISCRETE_FAMILIES:
        raise ValueError(
            f"family: {family} is a discrete task (the PFC paper's bandits and two-step task: actions are "
            f"indices, not a robot's), and the deploy runtime drives robots: RL^2 runs of robot families "
            f"(e.g. HalfCheetahVel, Navigation2D) are exported, not {family}'s"
        )


@dataclasses.dataclass
class RL2Export:
    """An RL^2 run's policy ready for export, with the returns it reaches on the task (it adapts in
    its activations: nothing is changed before export)."""

    run: LoadedRun
    policy: RL2Policy
    task: dict[str, Any]
    """The task, canonical form: the simulator's (the policy has to discover it)."""
    trials: int
    """Trials sampled on the task for ``returns``."""
    returns: list[float]
    """Mean undiscounted return of episode ``e = 0 .. episodes_per_trial - 1`` of the trials
    (stochastic actions, as in training): the policy's adaptation curve on the task."""
    family: TaskFamily
    control_dt: float
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    action_scale: float
    episodes_per_trial: int

    @property
    def adapt_steps(self) -> int:
        """0: an RL^2 policy is exported without a gradient step."""
        return 0

    def metadata(self) -> PolicyMetadata:
        """The ``PolicyMetadata`` of the ONNX file (``bmaml.algorithm`` rl2, format 2,
        ``bmaml.episodes_per_trial``, the input names; the rest as ``Adaptation.metadata``)."""
        policy = self.policy
        return _file_metadata(self, policy.kind, policy.recurrence, tuple(policy.core.hidden_shape), adapt_steps=0,
                              format_version=RL2_FORMAT_VERSION, algorithm="rl2",
                              episodes_per_trial=self.episodes_per_trial)


def rl2_export(
    run: str | Path | LoadedRun,
    task: Mapping[str, Any],
    *,
    trials: int | None = None,
    seed: int = 0,
    num_threads: int | None = None,
) -> RL2Export:
    """An RL^2 run's policy for export on ``task`` (robot families only), and the return per
    episode of ``trials`` trials on it (default ``RL2_REPORT_TRIALS``; ``episodes_per_trial``
    episodes of the run's ``horizon``, sampled as training samples, on ``bmaml-eval``'s noise
    stream ``evaluation_seed(seed, 1)``).

    Raises:
        ValueError: not an RL^2 run, a discrete family, a task that is not the family's.

    Warns:
        TaskDistributionWarning: ``task`` is outside the family's training distribution.
    """
    loaded = load_run(run)
    config = loaded.config
    policy = loaded.policy
    if not isinstance(policy, RL2Policy):
        raise ValueError(f"rl2_export: {loaded.run_dir} is a MAML run (algorithm maml): adapt it with adapt_run()")
    check_rl2_family(config.family)
    family = get_family(config.family)
    canonical = check_task(family, task)
    trials = check_int(RL2_REPORT_TRIALS if trials is None else trials, "trials", minimum=1)
    seed = check_int(seed, "seed", minimum=0, below=MAX_SEED)
    num_threads = check_int(config.num_threads if num_threads is None else num_threads, "num_threads", minimum=1)
    outside = out_of_distribution(family, canonical)
    if outside is not None:
        warnings.warn(outside, TaskDistributionWarning, stacklevel=2)
    episodes_per_trial = config.episodes_per_trial
    sampler = TrialSampler(config.family, trials, episodes_per_trial, config.horizon, num_threads=num_threads,
                           action_scale=config.action_scale)
    try:
        sampler.set_tasks([canonical] * trials)
        sampled = sampler.sample(policy, evaluation_seed(seed, 1))
        returns = [float(r) for r in sampled.episode_returns(episodes_per_trial).double().mean(dim=1)]
        action_map = sampler.action_map
        assert action_map is not None  # a robot family's sampler has one
        control_dt = float(sampler.env.dt)
    finally:
        sampler.close()
    return RL2Export(
        run=loaded, policy=policy, task=canonical, trials=trials, returns=returns, family=family,
        control_dt=control_dt, action_low=tuple(float(v) for v in action_map.low),
        action_high=tuple(float(v) for v in action_map.high), action_scale=action_map.scale,
        episodes_per_trial=episodes_per_trial,
    )


class ExportedRL2Policy(torch.nn.Module):
    """The deterministic controller of an RL^2 policy, as exported: its input
    ``[obs | prev_action | prev_reward | episode_start]`` (``rl2/policy.py``) through its own
    ``step``, the Gaussian mean mapped onto the robot's bounds by ``action_map``.

    ``forward(obs [B, obs_dim], prev_action [B, act_dim], prev_reward [B, 1], episode_start [B, 1],
    h_in [1, B, H], c_in [1, B, H])`` (``c_in`` for lstm) -> ``(action, h_out[, c_out])``.
    """

    def __init__(self, policy: RL2Policy, action_map: ActionMap) -> None:
        super().__init__()
        self.policy = copy.deepcopy(policy)
        for value in self.policy.parameters():
            value.requires_grad_(False)
        self.policy.eval()
        self.action_map = action_map

    def forward(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, episode_start: Tensor,
                h_in: Tensor, c_in: Tensor | None = None) -> Any:
        inputs = torch.cat([obs, prev_action, prev_reward, episode_start], dim=-1)
        state: State
        if self.policy.kind == "lstm":
            assert c_in is not None  # an input of the LSTM's graph
            state = (h_in[0], c_in[0])  # [layers = 1, B, H] -> [B, H]
        else:
            state = h_in[0]
        mean, _, next_state = self.policy.step(inputs, state)
        action = self.action_map.to_robot(mean)
        if self.policy.kind == "lstm":
            assert isinstance(next_state, tuple)  # (h, c)
            return action, next_state[0].unsqueeze(0), next_state[1].unsqueeze(0)
        assert isinstance(next_state, Tensor)  # h
        return action, next_state.unsqueeze(0)


def _check_rl2_export_args(policy: RL2Policy, params: Mapping[str, Tensor] | None, metadata: PolicyMetadata) -> None:
    if params is not None:
        raise ValueError("params: an RL^2 policy is exported with its own parameters (it adapts in its activations): "
                         "give None")
    if not isinstance(metadata, PolicyMetadata):
        raise TypeError(f"metadata: expected a bmaml_robot_deploy.PolicyMetadata, got {type(metadata).__name__}")
    if policy.discrete:
        raise ValueError("policy: a discrete (categorical) RL^2 policy acts on indices, not a robot: robot families "
                         "only")
    if not metadata.rl2:
        raise ValueError(f"metadata.algorithm: expected 'rl2' for an RL^2 policy, got {metadata.algorithm!r} "
                         "(RL2Export.metadata() sets it)")
    expected = {
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "policy_kind": policy.kind,
        "recurrence": policy.recurrence,
        "hidden_shape": tuple(policy.core.hidden_shape),
    }
    for field, want in expected.items():
        if getattr(metadata, field) != want:
            raise ValueError(f"metadata.{field}: expected {want!r} (the policy's), got {getattr(metadata, field)!r}")


# ----------------------------------------------------------------------------- ONNX export
class ExportedPolicy(torch.nn.Module):
    """The deterministic controller of one task, as exported: the policy's own ``step`` with
    fixed parameters, its Gaussian mean mapped onto the robot's action bounds by ``action_map``.

    ``forward(obs [B, obs_dim], h_in [1, B, H], c_in [1, B, H])``; the state inputs exist only
    for recurrent kinds (``c_in`` for lstm). Returns ``action [B, act_dim]`` (mlp) or
    ``(action, h_out[, c_out])`` with states ``[1, B, H]``.
    """

    def __init__(self, policy: Policy, params: Mapping[str, Tensor], action_map: ActionMap) -> None:
        super().__init__()
        # A copy of the policy whose own (shared) parameters are the task's: step(params=None)
        # then runs them with plain matmuls, the cheapest graph.
        self.policy = copy.deepcopy(policy)
        with torch.no_grad():
            for name, value in self.policy.named_parameters():
                value.copy_(params[name][0])
                value.requires_grad_(False)
        self.policy.eval()
        self.action_map = action_map

    def forward(self, obs: Tensor, h_in: Tensor | None = None, c_in: Tensor | None = None) -> Any:
        kind = self.policy.kind
        state: State
        if kind == "mlp":
            state = None
        elif kind == "lstm":
            assert h_in is not None and c_in is not None  # inputs of the LSTM's graph
            state = (h_in[0], c_in[0])  # [layers = 1, B, H] -> [B, H]
        else:
            assert h_in is not None  # an input of the recurrent graphs
            state = h_in[0]
        mean, _, next_state = self.policy.step(obs, state)
        action = self.action_map.to_robot(mean)
        if kind == "mlp":
            return action
        if kind == "lstm":
            assert isinstance(next_state, tuple)  # (h, c)
            return action, next_state[0].unsqueeze(0), next_state[1].unsqueeze(0)
        assert isinstance(next_state, Tensor)  # h
        return action, next_state.unsqueeze(0)


def _check_export_args(
    policy: Policy, params: Mapping[str, Tensor] | None, metadata: PolicyMetadata
) -> dict[str, Tensor]:
    if not isinstance(policy, Policy):
        raise TypeError(f"policy: expected a bmaml_robot Policy, got {type(policy).__name__}")
    if not isinstance(metadata, PolicyMetadata):
        raise TypeError(f"metadata: expected a bmaml_robot_deploy.PolicyMetadata, got {type(metadata).__name__}")
    own = dict(policy.named_parameters())
    if params is None:
        params = {name: value.detach().unsqueeze(0) for name, value in own.items()}
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected None or a dict {{name: Tensor [1, *shape]}}, got {type(params).__name__}")
    missing, extra = sorted(set(own) - set(params)), sorted(set(params) - set(own))
    if missing or extra:
        raise ValueError(f"params: expected exactly the names {sorted(own)}, got missing {missing} and unknown {extra}")
    for name, p in own.items():
        value = params[name]
        if not isinstance(value, Tensor) or tuple(value.shape) != (1, *p.shape):
            got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"params[{name!r}]: expected shape {[1, *p.shape]} (one task; take a task's slice "
                f"v[k:k+1] of a multi-task dict), got {got}"
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"params[{name!r}]: expected finite values, got NaN or inf")
    expected = {
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "policy_kind": policy.kind,
        "recurrence": policy.recurrence or NO_RECURRENCE,
        "hidden_shape": tuple(policy.hidden_shape),
    }
    for field, want in expected.items():
        if getattr(metadata, field) != want:
            raise ValueError(f"metadata.{field}: expected {want!r} (the policy's), got {getattr(metadata, field)!r}")
    return {name: params[name].detach().to(torch.float32) for name in own}


def _action_map(metadata: PolicyMetadata) -> ActionMap:
    """The map the graph ends in: ``metadata.action_scale`` onto ``metadata``'s bounds."""
    if metadata.action_scale is None:
        raise ValueError(
            "metadata.action_scale: expected the scale of the policy's normalised actions "
            "(Adaptation.metadata() sets the run's), got None"
        )
    return ActionMap(metadata.action_scale, np.array(metadata.action_low), np.array(metadata.action_high))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (deprecation and naming warnings, 'torchvision is not
    installed'); errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _example_inputs(metadata: PolicyMetadata, batch: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Named float32 inputs of the graph for ``batch`` environments (random, finite; RL^2's
    previous actions in [-1, 1], start flags 0 or 1)."""
    inputs = {OBS_INPUT: torch.randn(batch, metadata.obs_dim, generator=generator)}
    if metadata.rl2:
        inputs[PREV_ACTION_INPUT] = torch.rand(batch, metadata.act_dim, generator=generator) * 2 - 1
        inputs[PREV_REWARD_INPUT] = torch.randn(batch, 1, generator=generator)
        inputs[EPISODE_START_INPUT] = (torch.rand(batch, 1, generator=generator) < 0.5).to(torch.float32)
    for input_name, _ in metadata.state_names:
        inputs[input_name] = torch.randn(metadata.hidden_shape[0], batch, metadata.hidden_shape[1], generator=generator)
    return inputs


def export_onnx(
    policy: Policy | RL2Policy,
    params: Mapping[str, Tensor] | None,
    path: str | Path,
    metadata: PolicyMetadata,
) -> Path:
    """Write the deterministic controller of ``policy`` with ``params`` to ``path`` (ONNX).

    Args:
        policy: the (meta-)policy whose ``step`` is exported, or an RL^2 run's ``RL2Policy``
            (``rl2_export``: its graph takes RL^2's inputs too, module docstring).
        params: one task's parameters ``{name: Tensor [1, *shape]}`` (every name), e.g. from
            ``adapt_for_task``; None for the policy's own (always None for an ``RL2Policy``).
        path: the ``.onnx`` file, written atomically (a kill leaves the old file or the new one).
        metadata: what the file says about itself (written to ``metadata_props``); its
            dimensions, kind, recurrence and hidden shape must be the policy's.

    The graph is exported with ``torch.onnx.export(dynamo=True)`` (opset ``OPSET_VERSION``,
    dynamic batch, weights inside the file), then checked under onnxruntime against torch on
    random inputs (to ``EXPORT_TOLERANCE``) before it is written. Returns ``path``.
    """
    import onnx
    import onnxruntime

    module: torch.nn.Module
    if isinstance(policy, RL2Policy):
        _check_rl2_export_args(policy, params, metadata)
        module = ExportedRL2Policy(policy, _action_map(metadata)).eval()
    else:
        task_params = _check_export_args(policy, params, metadata)
        module = ExportedPolicy(policy, task_params, _action_map(metadata)).eval()
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path: expected a file name, got the directory {path}")
    example = _example_inputs(metadata, _EXAMPLE_BATCH, torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch")
    dynamic_shapes = {OBS_INPUT: {0: batch}}
    if metadata.rl2:
        for input_name in (PREV_ACTION_INPUT, PREV_REWARD_INPUT, EPISODE_START_INPUT):
            dynamic_shapes[input_name] = {0: batch}
    for input_name, _ in metadata.state_names:
        dynamic_shapes[input_name] = {1: batch}  # [layers, batch, hidden]
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module,
                tuple(example.values()),
                dynamo=True,
                external_data=False,
                opset_version=OPSET_VERSION,
                input_names=list(metadata.input_names),
                output_names=list(metadata.output_names),
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
    except Exception as error:
        raise RuntimeError(f"export_onnx: torch.onnx.export failed for the {policy.kind} policy: {error}") from error
    assert program is not None  # dynamo=True returns the program (None: the old exporter)
    model = program.model_proto
    onnx.helper.set_model_props(model, metadata.to_props())
    if metadata.rl2:
        model.doc_string = (
            f"bmaml-robot RL^2 {metadata.policy_kind} policy for {metadata.family} (it adapts in its activations: "
            f"feed prev_action, prev_reward, episode_start; the state carried across the "
            f"{metadata.episodes_per_trial} episodes of a trial), exported on task {json.dumps(metadata.task)}"
        )
        for value in model.graph.input:  # each of RL^2's inputs says what it holds
            if value.name in RL2_INPUT_DOCS:
                value.doc_string = RL2_INPUT_DOCS[value.name]
    else:
        model.doc_string = (
            f"bmaml-robot {metadata.policy_kind} policy for {metadata.family} task {json.dumps(metadata.task)}, "
            f"adapted {metadata.adapt_steps} step(s)"
        )
    onnx.checker.check_model(model)
    data = model.SerializeToString()

    # The file must compute what torch computes, at two batch sizes, before it replaces anything.
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for check_batch in (1, 5):
        inputs = _example_inputs(metadata, check_batch, generator)
        with torch.no_grad():
            expected = module(*inputs.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(list(metadata.output_names), {k: v.numpy() for k, v in inputs.items()})
        for name, want, have in zip(metadata.output_names, expected, got):
            difference = float(np.max(np.abs(want.numpy() - have))) if have.shape == tuple(want.shape) else math.inf
            if not difference <= EXPORT_TOLERANCE:
                raise RuntimeError(
                    f"export_onnx: the exported graph differs from torch on {name!r} at batch {check_batch} "
                    f"(max |difference| {difference:.3g} > {EXPORT_TOLERANCE}); nothing was written"
                )
    write_bytes_atomic(path, data)  # (with the mode a plain open() would give)
    return path


# ----------------------------------------------------------------------------- command line
def suggested_control_command(path: str | Path, metadata: PolicyMetadata) -> tuple[list[str], str]:
    """``(argv, description)``: a ``bmaml-control`` command that runs the file's policy in the
    simulator for one episode (of the file's training horizon; an RL^2 file: one trial of
    ``episodes_per_trial`` episodes) and ends within seconds: paced at the file's control rate
    when that lasts at most ``SUGGESTED_REALTIME_LIMIT_S`` seconds, ``--no-realtime`` otherwise
    (Navigation2D's 1 Hz)."""
    horizon = metadata.horizon or _CONTROL_DEFAULT_STEPS
    if metadata.rl2:  # one trial, as in training: episodes_per_trial episodes, the state carried
        episodes = metadata.episodes_per_trial or 1
        steps = episodes * horizon
        argv = ["bmaml-control", str(path), "--link", "sim", "--episodes", str(episodes)]
        if steps > _CONTROL_DEFAULT_STEPS:
            argv += ["--steps", str(steps)]
        what = f"one trial of {episodes} {horizon}-step episodes"
        seconds = steps * metadata.control_dt
        if seconds <= SUGGESTED_REALTIME_LIMIT_S:
            return argv, f"{what}, {seconds:.3g} s at {metadata.control_rate_hz:g} Hz"
        argv.append("--no-realtime")
        return argv, f"{what}, unpaced: {seconds:.3g} s in real time at the file's {metadata.control_rate_hz:g} Hz"
    steps = min(horizon, _CONTROL_DEFAULT_STEPS)  # bmaml-control's --steps bounds a longer episode
    seconds = steps * metadata.control_dt
    argv = ["bmaml-control", str(path), "--link", "sim", "--episodes", "1"]
    what = f"one {steps}-step episode" if steps == horizon else f"the first {steps} steps of a {horizon}-step episode"
    if seconds <= SUGGESTED_REALTIME_LIMIT_S:
        description = f"{what}, {seconds:.3g} s at {metadata.control_rate_hz:g} Hz"
    else:
        argv.append("--no-realtime")
        description = f"{what}, unpaced: {seconds:.3g} s in real time at the file's {metadata.control_rate_hz:g} Hz"
    return argv, description


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1024:.1f} KiB" if num_bytes < 1024**2 else f"{num_bytes / 1024**2:.1f} MiB"


def command(args: argparse.Namespace, task: dict[str, Any], parser: argparse.ArgumentParser) -> int:
    """``bmaml-export`` after its arguments were parsed (``bmaml_robot.cli.export_main``): check the
    run and the task against it (usage errors), adapt (MAML) or sample trials (RL^2), export, say
    what was written."""
    try:
        loaded = load_run(args.run_dir)
        if isinstance(loaded.policy, RL2Policy):
            _check_rl2_command(args, loaded)
        elif args.adapt_steps is None:
            raise ValueError("--adapt-steps: required for a MAML run (inner adaptation steps; 0 exports the "
                             "meta-policy)")
        family = get_family(loaded.config.family)
        check_task(family, task, where="--task")
    except (ValueError, TypeError) as error:  # everything checked before any work starts
        parser.error(str(error))
    if isinstance(loaded.policy, RL2Policy):
        return _rl2_command(args, task, loaded, family)

    outside = out_of_distribution(family, check_task(family, task))
    if outside is not None:
        print(f"bmaml-export: warning: {outside}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():  # said just above
        warnings.simplefilter("ignore", TaskDistributionWarning)
        adaptation = adapt_run(
            loaded,
            task,
            args.adapt_steps,
            episodes=args.episodes,
            fast_lr=args.fast_lr,
            seed=args.seed,
            num_threads=args.num_threads,
        )
    metadata = adaptation.metadata()
    path = export_onnx(adaptation.policy, adaptation.params, args.out, metadata)
    config = loaded.config
    kind = config.policy + (f" ({config.recurrence} recurrence)" if config.policy != "mlp" else "")
    print(
        f"bmaml-export: {path} ({_size(path.stat().st_size)}): {kind} policy of "
        f"{Path(loaded.run_dir) / loaded.source}, "
        f"{metadata.family} task {json.dumps(metadata.task)}"
    )
    returns = adaptation.returns
    if adaptation.adapt_steps == 0:
        print(f"  meta-policy (no adaptation): return {returns[0]:.2f} on {adaptation.episodes} episodes")
    else:
        print(
            f"  {adaptation.adapt_steps} adaptation step(s), fast_lr {adaptation.fast_lr:g}, "
            f"{adaptation.episodes} episodes per step: return {returns[0]:.2f} before adaptation, "
            f"{returns[-1]:.2f} after ({returns[-1] - returns[0]:+.2f})"
        )
    _print_file_and_command(path, metadata)
    return 0


def _print_file_and_command(path: Path, metadata: PolicyMetadata) -> None:
    """What every export prints last: the graph's inputs and outputs, and the command that runs it."""
    print(
        f"  inputs {list(metadata.input_names)}, outputs {list(metadata.output_names)}, control rate "
        f"{metadata.control_rate_hz:g} Hz, training horizon {metadata.horizon} steps"
    )
    argv, description = suggested_control_command(path, metadata)
    print(f"  try it in the simulator ({description}):\n    {shlex.join(argv)}")


def _check_rl2_command(args: argparse.Namespace, loaded: LoadedRun) -> None:
    """The usage errors of an RL^2 run: a discrete family, an adaptation step, an inner step size."""
    try:
        check_rl2_family(loaded.config.family)
    except ValueError as error:
        raise ValueError(f"{loaded.run_dir}: {error}") from None
    if args.adapt_steps not in (None, 0):
        raise ValueError(
            f"--adapt-steps: {loaded.run_dir} is an RL^2 run, which adapts in its activations while it runs, not "
            f"by gradient steps: give 0 or leave it out, got {args.adapt_steps}"
        )
    if args.fast_lr is not None:
        raise ValueError(f"--fast-lr: {loaded.run_dir} is an RL^2 run: it has no inner step (leave --fast-lr out)")


def _rl2_command(args: argparse.Namespace, task: dict[str, Any], loaded: LoadedRun, family: TaskFamily) -> int:
    """``bmaml-export`` of an RL^2 run (checked): sample trials on the task, export, say what was written."""
    outside = out_of_distribution(family, check_task(family, task))
    if outside is not None:
        print(f"bmaml-export: warning: {outside}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():  # said just above
        warnings.simplefilter("ignore", TaskDistributionWarning)
        export = rl2_export(loaded, task, trials=args.episodes, seed=args.seed, num_threads=args.num_threads)
    metadata = export.metadata()
    path = export_onnx(export.policy, None, args.out, metadata)
    config = loaded.config
    returns = export.returns
    print(
        f"bmaml-export: {path} ({_size(path.stat().st_size)}): RL^2 {config.policy} policy ({config.recurrence} "
        f"recurrence) of {Path(loaded.run_dir) / loaded.source}, {metadata.family}, simulator's task "
        f"{json.dumps(metadata.task)} (the policy discovers it)"
    )
    print(
        f"  adapts in its activations (no gradient step): {export.trials} trial(s) of {export.episodes_per_trial} "
        f"episodes on the task, return per episode [{', '.join(f'{r:.2f}' for r in returns)}] "
        f"(last - first {returns[-1] - returns[0]:+.2f})"
    )
    _print_file_and_command(path, metadata)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``bmaml-export`` (``bmaml_robot.cli.export_main``: arguments are checked before torch is imported)."""
    from bmaml_robot.cli import export_main

    return export_main(None if argv is None else list(argv))  # (argparse makes the same list)


if __name__ == "__main__":
    sys.exit(main())
