"""The real-time controller: one exported policy file under onnxruntime, with its hidden state.

``Controller(path).act(obs)`` maps one observation ``[obs_dim]`` (or a batch
``[batch_size, obs_dim]``) to the deterministic action, keeping the recurrent state between calls.
Every call reuses buffers allocated once: observations are copied into a float32 input buffer
that onnxruntime reads in place and actions and next states are written by onnxruntime into
output buffers (``IOBinding`` over fixed pointers; measured faster than ``session.run``, which
allocates its outputs on every call: 4.6 vs 7.7 us for an MLP [64, 64], 9.3 vs 14.3 us for a
GRU-100). The recurrent state lives in two buffers that swap roles (input, output) on every
accepted step, so it is never copied, and a step is rejected by simply not swapping.

Safety: an observation with NaN or infinity gives the safe action and leaves the state as it
was (counted in ``nonfinite_count``); a non-finite action or next state from the network is
replaced the same way (``nonfinite_action_count``); every action returned is inside the
action bounds of the file. (A float64 observation beyond float32's range, e.g. 1e300, is
non-finite once converted; numpy warns about that cast once.)

RL^2 files (``metadata.rl2``: a recurrent policy that adapts in its activations) also take, at
every step, the reward of the previous step and whether ``obs`` starts an episode:
``act(obs, reward=r, episode_start=flag)``. The controller feeds the graph the previous action
itself (the last action it returned, normalised with the file's action bounds), the reward and
the start flag, and carries the state across episodes; ``reset()`` starts a new *trial* (zero
state, zero previous action and reward, the next step flagged as an episode's start). At a
trial's first step the previous action and reward are zeros whatever ``reward`` says, as in
training. A non-finite reward is treated as a non-finite observation (safe action, state kept,
counted in ``nonfinite_count``); a step not taken this way keeps a pending episode start for the
next step taken, and the next previous action is the safe action that was returned.

MAML files ignore ``reward`` (their policy does not read it: one loop can drive both kinds), and
``episode_start=True`` zeroes the state of those rows before acting (a MAML episode starts from
the zero state: the same as ``reset()`` first).

Not thread-safe: one controller per control thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bmaml_robot_deploy.checks import check_float, check_int
from bmaml_robot_deploy.metadata import (
    ACTION_OUTPUT,
    EPISODE_START_INPUT,
    OBS_INPUT,
    PREV_ACTION_INPUT,
    PREV_REWARD_INPUT,
    PolicyMetadata,
    load_session,
)

# Module-level names for the hot path (a global lookup instead of an attribute lookup on np).
_isfinite, _count_nonzero, _minimum, _maximum = np.isfinite, np.count_nonzero, np.minimum, np.maximum
_subtract, _multiply, _isfinite_scalar = np.subtract, np.multiply, math.isfinite

#: onnxruntime's name for a float32 tensor type.
_FLOAT_TENSOR = "tensor(float)"

#: Largest ``batch_size``: the buffers are allocated up front (a GRU-100 at 65536 robots holds
#: ~60 MB); beyond it is a typo, not a fleet (10**12 would be a MemoryError).
MAX_BATCH_SIZE = 65536


def session_options() -> Any:
    """onnxruntime ``SessionOptions`` chosen for latency of tiny models: one thread, sequential
    execution, no spinning (an idle controller leaves the CPU to the robot's other processes),
    all graph optimisations."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only; problems become our ValueErrors
    return options


class Controller:
    """An exported policy ready to run in a control loop.

    Args:
        path: the ONNX file written by ``bmaml-export``.
        safe_action: the action sent when the observation (or the network's output) is not
            finite, ``[act_dim]``; default zeros. Clipped to the action bounds.
        expected_robot: if given, the file must be for this robot (e.g. ``"HalfCheetah"``).
        expected_family: if given, the file must be for this task family (e.g. ``"HalfCheetahDir"``).
        batch_size: number of robots controlled at once, in [1, :data:`MAX_BATCH_SIZE`]; ``act``
            then takes ``[batch_size, obs_dim]``. With 1 (default) it takes ``[obs_dim]`` (or
            ``[1, obs_dim]``).

    Raises:
        ValueError: naming the file and the problem: missing file, not an ONNX model, missing or
            malformed metadata keys, a file for another robot or family, graph inputs/outputs
            that do not match the metadata (declared shapes, and a trial run on inputs of the
            metadata's shapes, for graphs whose dimensions are symbolic); or naming the bad
            argument.

    Attributes:
        metadata: the file's :class:`PolicyMetadata`.
        rl2: an RL^2 file (``act`` needs ``reward=``; ``reset()`` starts a trial).
        obs_dim, act_dim, control_dt: from the metadata.
        action_low, action_high: float32 ``[act_dim]`` bounds.
        safe_action: float32 ``[act_dim]``, inside the bounds.
        steps: ``act`` calls.
        nonfinite_count: observations (rows) rejected because they were not finite.
        nonfinite_action_count: network outputs (rows) replaced because they were not finite.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        safe_action: Sequence[float] | np.ndarray | None = None,
        expected_robot: str | None = None,
        expected_family: str | None = None,
        batch_size: int = 1,
    ) -> None:
        batch_size = check_int(batch_size, "batch_size", minimum=1, maximum=MAX_BATCH_SIZE, type_error=TypeError)
        self.path = os.fspath(path)
        self._session = load_session(self.path, session_options())
        props = dict(self._session.get_modelmeta().custom_metadata_map)
        self.metadata = meta = PolicyMetadata.from_props(props, source=self.path)
        if expected_robot is not None and meta.robot != expected_robot:
            raise ValueError(f"{self.path}: this policy is for robot {meta.robot!r}, expected {expected_robot!r}")
        if expected_family is not None and meta.family != expected_family:
            raise ValueError(
                f"{self.path}: this policy is for task family {meta.family!r}, expected {expected_family!r}"
            )
        self.batch_size = int(batch_size)
        self._recurrent = meta.recurrent
        self.rl2 = meta.rl2
        check_graph_io(self._session, meta, self.path, self.batch_size)

        self.obs_dim = meta.obs_dim
        self.act_dim = meta.act_dim
        self.control_dt = meta.control_dt
        self.action_low = np.asarray(meta.action_low, np.float32)
        self.action_high = np.asarray(meta.action_high, np.float32)
        self.safe_action = self._check_safe_action(safe_action)
        self.safe_action.flags.writeable = False
        self._safe_batch = np.broadcast_to(self.safe_action, (1, self.act_dim))
        self.steps = 0
        self.nonfinite_count = 0
        self.nonfinite_action_count = 0

        B = self.batch_size
        self._obs = np.zeros((B, self.obs_dim), np.float32)
        self._obs_row = self._obs[0]
        self._obs_finite = np.zeros((B, self.obs_dim), bool)
        self._obs_finite_row = self._obs_finite[0]
        # Outputs: each block is one contiguous float32 buffer holding the action [B, act_dim]
        # then the state parts (h, then c for lstm) [layers, B, hidden], so that one isfinite
        # call checks all outputs. Recurrent policies have two blocks: binding k reads the state
        # of block k and writes action and next state into block 1 - k; self._current says which
        # block holds the current state (and the last action).
        state_shape = (meta.hidden_shape[0], B, meta.hidden_shape[1]) if meta.recurrent else (0,)
        action_size, state_size = B * self.act_dim, int(np.prod(state_shape))
        block_size = action_size + state_size * len(meta.state_names)
        self._blocks = [np.zeros(block_size, np.float32) for _ in range(2 if meta.recurrent else 1)]
        self._block_finite = np.zeros(block_size, bool)
        self._actions = [block[:action_size].reshape(B, self.act_dim) for block in self._blocks]
        self._states = [
            [block[action_size + j * state_size : action_size + (j + 1) * state_size].reshape(state_shape)
             for j in range(len(meta.state_names))]
            for block in self._blocks
        ]
        # RL^2's inputs besides obs (bound, as obs, by pointer): the previous action (normalised),
        # the previous reward and the episode-start flag; per row, whether the next step taken is
        # a trial's first (previous action and reward zeros, start 1) or an episode's first.
        self._prev_action = np.zeros((B, self.act_dim), np.float32)
        self._prev_reward = np.zeros((B, 1), np.float32)
        self._episode_start = np.zeros((B, 1), np.float32)
        self._prev_reward_rows = self._prev_reward[:, 0]
        self._episode_start_rows = self._episode_start[:, 0]
        self._trial_pending = np.ones(B, bool)
        self._episode_pending = np.zeros(B, bool)
        low64, high64 = np.asarray(meta.action_low, np.float64), np.asarray(meta.action_high, np.float64)
        # normalised = clip((a - mid) * inv_half, -1, 1); a zero-width bound normalises to 0.
        self._action_mid = ((low64 + high64) / 2).astype(np.float32)
        half = (high64 - low64) / 2
        self._action_inv_half = np.divide(1.0, half, out=np.zeros_like(half), where=half > 0).astype(np.float32)
        self._bindings = []
        for k in range(len(self._blocks)):
            writes = 1 - k if meta.recurrent else k
            binding = self._session.io_binding()
            _bind(binding, "input", OBS_INPUT, self._obs)
            if self.rl2:
                _bind(binding, "input", PREV_ACTION_INPUT, self._prev_action)
                _bind(binding, "input", PREV_REWARD_INPUT, self._prev_reward)
                _bind(binding, "input", EPISODE_START_INPUT, self._episode_start)
            _bind(binding, "output", ACTION_OUTPUT, self._actions[writes])
            for j, (name_in, name_out) in enumerate(meta.state_names):
                _bind(binding, "input", name_in, self._states[k][j])
                _bind(binding, "output", name_out, self._states[writes][j])
            self._bindings.append(binding)
        self._current = 0
        self._single_shape = (self.obs_dim,)
        self._batch_shape = (B, self.obs_dim)
        self._warm_up()

    # -- public ----------------------------------------------------------------------------------

    def act(
        self,
        obs: np.ndarray | Sequence[float],
        out: np.ndarray | None = None,
        *,
        reward: Any = None,
        episode_start: Any = False,
    ) -> np.ndarray:
        """The action for ``obs`` and advance the hidden state.

        Args:
            obs: ``[obs_dim]`` (batch_size 1) or ``[batch_size, obs_dim]``, any real dtype
                (converted to float32).
            out: optional float32 array of the result's shape to write the action into (no
                allocation at all); default a new array.
            reward: RL^2 files (required): the reward of the step that led to ``obs``, a number,
                or per row ``[batch_size]`` (a number applies to every row); ignored at a trial's
                first step (0 then, as in training). MAML files: ignored.
            episode_start: ``obs`` is the first observation of an episode: a bool, or per row
                ``[batch_size]`` bools. RL^2: the flag fed to the policy (the state is kept);
                MAML: the state of those rows is zeroed before acting.

        Returns:
            float32 ``[act_dim]`` or ``[batch_size, act_dim]`` (as ``obs``), inside the bounds.
            Rows whose observation (or, RL^2, reward) is not finite get ``safe_action`` and keep
            their state.

        Raises:
            ValueError, TypeError: naming ``obs`` (wrong shape, not a real-number array),
                ``reward`` (missing for an RL^2 file, wrong shape or kind), ``episode_start`` or ``out``.
        """
        if type(obs) is not np.ndarray:
            try:
                obs = np.asarray(obs)
            except (TypeError, ValueError):
                raise TypeError(f"obs: expected an array of {self.obs_dim} numbers, got {type(obs).__name__}") from None
        kind = obs.dtype.kind
        if kind != "f" and kind not in "iu":
            raise TypeError(f"obs: expected real numbers (float or integer dtype), got dtype {obs.dtype}")
        shape = obs.shape
        if shape == self._single_shape and self.batch_size == 1:
            single = True
            self._obs_row[...] = obs
        elif shape == self._batch_shape:
            single = False
            self._obs[...] = obs
        else:
            expected = f"[{self.obs_dim}]" if self.batch_size == 1 else ""
            expected += (" or " if expected else "") + f"[{self.batch_size}, {self.obs_dim}]"
            raise ValueError(f"obs: expected shape {expected}, got {list(shape)}")
        if self.rl2:
            rewards, starts = self._check_rl2_inputs(reward, episode_start)
            self.steps += 1
            action = self._act_rl2(rewards, starts)
        else:
            if episode_start is not False:  # a MAML episode starts from the zero state
                starts = self._check_starts(episode_start)
                if starts.all():
                    self.reset()
                elif starts.any():
                    self.reset(np.flatnonzero(starts))
            self.steps += 1
            action = self._act_one() if self.batch_size == 1 else self._act_batch()  # [B, act_dim]
        result = action[0] if single else action
        if out is None:
            return result.copy()
        self._check_out(out, result.shape)[...] = result
        return out

    def reset(self, rows: int | Sequence[int] | np.ndarray | None = None) -> None:
        """Zero the hidden state (MAML: a new episode; RL^2: a new trial, whose next step gets
        zeros for the previous action and reward and the episode-start flag): of every robot, or
        only of ``rows`` (indices into the batch, for robots whose episode ended; negative ones
        count from the end). An mlp policy has no state, but ``rows`` is checked all the same (a
        bad index is a bug in the caller, whatever the policy). Counters are kept.

        Raises:
            ValueError: naming ``rows``, when it is not an integer or a 1-D list of integers in
                ``[-batch_size, batch_size)``.
        """
        index = None if rows is None else self._check_rows(rows)
        if self.rl2:
            where = slice(None) if index is None else index
            self._trial_pending[where] = True
            self._episode_pending[where] = False
            self._prev_action[where] = 0.0
        if not self._recurrent:
            return
        for part in self._states[self._current]:
            if index is None:
                part.fill(0.0)
            else:
                part[:, index, :] = 0.0

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        """A copy of the hidden state: ``()`` for mlp, ``(h,)`` or ``(h, c)`` each float32
        ``[layers, batch_size, hidden]``."""
        return tuple(part.copy() for part in self._states[self._current]) if self._recurrent else ()

    @property
    def needs_reward(self) -> bool:
        """True for an RL^2 file: ``act`` needs ``reward=`` (and a robot that reports rewards)."""
        return self.rl2

    @property
    def previous_action(self) -> np.ndarray | None:
        """RL^2: a copy of the ``prev_action`` input the next step will get, float32
        ``[batch_size, act_dim]`` (zeros at a trial's start); None for MAML files."""
        return self._prev_action.copy() if self.rl2 else None

    def __repr__(self) -> str:
        m = self.metadata
        if self.rl2:
            return (
                f"Controller({self.path!r}: RL^2 {m.policy_kind} policy for {m.family} (simulator's task {m.task}), "
                f"trials of {m.episodes_per_trial} episodes, obs {m.obs_dim}, act {m.act_dim}, "
                f"{m.control_rate_hz:g} Hz, batch_size {self.batch_size})"
            )
        return (
            f"Controller({self.path!r}: {m.policy_kind} policy for {m.family} task {m.task}, obs {m.obs_dim}, "
            f"act {m.act_dim}, {m.control_rate_hz:g} Hz, batch_size {self.batch_size})"
        )

    # -- internals -------------------------------------------------------------------------------

    def _act_one(self) -> np.ndarray:
        """One robot, observation in ``self._obs``: the action ``[1, act_dim]`` (a buffer)."""
        # count_nonzero: ~0.2 us where ndarray.all() takes ~1.8 us (its Python-level wrapper).
        if _count_nonzero(_isfinite(self._obs_row, out=self._obs_finite_row)) != self.obs_dim:
            self.nonfinite_count += 1
            return self._safe_batch
        action = self._run_one()
        return self._safe_batch if action is None else action

    def _run_one(self) -> np.ndarray | None:
        """One robot: run the graph on the bound inputs; the action ``[1, act_dim]`` (a buffer),
        clipped to the bounds, and the state advanced; None (counted, the state not advanced)
        when an output is not finite."""
        k = self._current
        self._session.run_with_iobinding(self._bindings[k])
        written = 1 - k if self._recurrent else k
        block = self._blocks[written]
        if _count_nonzero(_isfinite(block, out=self._block_finite)) != block.size:
            self.nonfinite_action_count += 1
            return None  # the state stays in block k: not advanced
        action = self._actions[written]
        _maximum(_minimum(action, self.action_high, out=action), self.action_low, out=action)
        self._current = written
        return action

    def _run_rows(self, bad_obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` robots: run the graph on the bound inputs; rows with a bad input
        (``bad_obs``, bool ``[B]``) or a non-finite output get the safe action and keep their
        state. Returns the actions ``[B, act_dim]`` (a buffer, clipped) and the rows not advanced."""
        k = self._current
        self._session.run_with_iobinding(self._bindings[k])
        written = 1 - k if self._recurrent else k
        action = self._actions[written]
        bad_out = ~np.isfinite(action).all(axis=1)
        for part in self._states[written]:
            bad_out |= ~np.isfinite(part).all(axis=(0, 2))
        bad_out &= ~bad_obs
        self.nonfinite_action_count += int(bad_out.sum())
        bad = bad_obs | bad_out
        np.minimum(action, self.action_high, out=action)
        np.maximum(action, self.action_low, out=action)
        if bad.any():
            action[bad] = self.safe_action
            for old, new in zip(self._states[k], self._states[written]):
                new[:, bad, :] = old[:, bad, :]
        self._current = written
        return action, bad

    def _act_batch(self) -> np.ndarray:
        """``batch_size`` robots: rows with non-finite observations or outputs get the safe action
        and keep their state; the others advance. Returns the actions ``[B, act_dim]`` (a buffer)."""
        bad_obs = ~np.isfinite(self._obs, out=self._obs_finite).all(axis=1)
        if bad_obs.any():
            self.nonfinite_count += int(bad_obs.sum())
            self._obs[bad_obs] = 0.0  # run the network on something harmless; these rows are discarded
        return self._run_rows(bad_obs)[0]

    def _act_rl2(self, rewards: Any, starts: Any) -> np.ndarray:
        """RL^2, every batch size: observations in ``self._obs``, ``rewards`` (a float, or float64
        ``[B]``) and ``starts`` (a bool, or bool ``[B]``). Rows with a non-finite observation,
        reward or output get the safe action and keep their state (and a pending episode start);
        the previous action of the next step is the action returned (zeros while a trial's first
        step is pending). Returns the actions ``[B, act_dim]`` (a buffer)."""
        if self.batch_size == 1:  # scalars: the hot path of one robot
            if (
                _count_nonzero(_isfinite(self._obs_row, out=self._obs_finite_row)) != self.obs_dim
                or not _isfinite_scalar(rewards)
            ):
                self.nonfinite_count += 1
                return self._rl2_rejected(starts)
            trial = bool(self._trial_pending[0])
            self._prev_reward_rows[0] = 0.0 if trial else rewards
            self._episode_start_rows[0] = 1.0 if (trial or starts or self._episode_pending[0]) else 0.0
            action = self._run_one()
            if action is None:
                return self._rl2_rejected(starts)
            self._trial_pending[0] = self._episode_pending[0] = False
            self._remember(action)
            return action

        bad_obs = ~np.isfinite(self._obs, out=self._obs_finite).all(axis=1) | ~np.isfinite(rewards)
        if bad_obs.any():
            self.nonfinite_count += int(bad_obs.sum())
            self._obs[bad_obs] = 0.0  # run the network on something harmless; these rows are discarded
        pending = self._trial_pending
        np.copyto(self._prev_reward_rows, np.where(pending | bad_obs, 0.0, rewards))
        np.copyto(self._episode_start_rows, pending | self._episode_pending | starts)
        action, bad = self._run_rows(bad_obs)
        self._episode_pending = (self._episode_pending | starts) & bad
        self._trial_pending &= bad
        self._remember(action)
        return action

    def _rl2_rejected(self, start: bool) -> np.ndarray:
        """One robot's step not taken (non-finite input or output): the safe action, which the
        next step sees as its previous action; an episode start waits for the next step taken."""
        if start:
            self._episode_pending[0] = True
        self._remember(self._safe_batch)
        return self._safe_batch

    def _remember(self, action: np.ndarray) -> None:
        """The ``prev_action`` input of the next step: ``action`` ``[B, act_dim]`` (robot units)
        normalised, zeros for rows whose trial has not started. Every action returned is inside
        the bounds, so its normalised value is in [-1, 1] (to a float32 rounding): the contract's
        clip needs no work here (two ufuncs fewer, ~2 us of the hot path)."""
        pa = self._prev_action
        _subtract(action, self._action_mid, out=pa)
        _multiply(pa, self._action_inv_half, out=pa)
        if self.batch_size == 1:
            if self._trial_pending[0]:
                pa.fill(0.0)
        elif self._trial_pending.any():
            pa[self._trial_pending] = 0.0

    def _check_rl2_inputs(self, reward: Any, episode_start: Any) -> tuple[Any, Any]:
        """``(rewards, starts)`` for ``_act_rl2``: a float and a bool (batch_size 1), or float64
        and bool arrays ``[B]``."""
        B = self.batch_size
        if reward is None:
            raise ValueError(
                "reward: this is an RL^2 policy, which reads the reward of the step that led to obs: "
                "act(obs, reward=r, episode_start=...) (0 at a trial's first step)"
            )
        if B == 1 and type(reward) is float:  # the hot path
            rewards: Any = reward
        else:
            rewards = self._check_reward(reward)
        if B == 1 and type(episode_start) is bool:
            starts: Any = episode_start
        else:
            starts = self._check_starts(episode_start)
            if B == 1:
                starts = bool(starts[0])
        return rewards, starts

    def _check_reward(self, reward: Any) -> Any:
        B = self.batch_size
        expected = "a number" + (f" or {B} numbers (one per row)" if B > 1 else "")
        if isinstance(reward, (int, float, np.integer, np.floating)) and not isinstance(reward, (bool, np.bool_)):
            value = check_float(reward, "reward", finite=False, type_error=TypeError)  # NaN: rejected per row
            return value if B == 1 else np.full(B, value)
        try:
            array = np.asarray(reward)
        except (TypeError, ValueError):
            raise TypeError(f"reward: expected {expected}, got {type(reward).__name__}") from None
        if array.dtype.kind not in "fiu":
            raise TypeError(f"reward: expected {expected}, got dtype {array.dtype}")
        if array.size != B or array.ndim > 1 + (B == 1):
            raise ValueError(f"reward: expected {expected}, got shape {list(array.shape)}")
        values = array.reshape(B).astype(np.float64)
        return float(values[0]) if B == 1 else values

    def _check_starts(self, episode_start: Any) -> np.ndarray:
        """``episode_start`` as bool ``[B]``: a bool for every row, or one per row (bools, or 0/1)."""
        B = self.batch_size
        expected = "a bool" + (f" or {B} bools (one per row)" if B > 1 else "")
        if isinstance(episode_start, (bool, np.bool_)):
            return np.full(B, bool(episode_start))
        try:
            array = np.asarray(episode_start)
        except (TypeError, ValueError):
            raise TypeError(f"episode_start: expected {expected}, got {type(episode_start).__name__}") from None
        if array.dtype.kind == "b":
            flags = array
        elif array.dtype.kind in "iu" and np.isin(array, (0, 1)).all():
            flags = array.astype(bool)
        else:
            raise TypeError(f"episode_start: expected {expected}, got {episode_start!r}")
        if flags.size != B or flags.ndim > 1 or (flags.ndim == 0 and B > 1):
            raise ValueError(f"episode_start: expected {expected}, got shape {list(flags.shape)}")
        return flags.reshape(B)

    def _check_rows(self, rows: Any) -> np.ndarray:
        expected = f"rows: expected batch indices in [0, {self.batch_size}) (or from -{self.batch_size})"
        try:
            index = np.asarray(rows)
        except (TypeError, ValueError):  # ragged lists
            raise ValueError(f"{expected}, got {rows!r}") from None
        if index.dtype.kind not in "iu" or index.ndim > 1:  # bool masks are not indices here
            raise ValueError(f"{expected}, got {rows!r}")
        if index.size and not (index.min() >= -self.batch_size and index.max() < self.batch_size):
            bad = index[(index < -self.batch_size) | (index >= self.batch_size)]
            raise ValueError(f"{expected}, got {rows!r} ({bad.tolist()} out of range)")
        return index

    def _check_safe_action(self, safe_action: Any) -> np.ndarray:
        if safe_action is None:
            value = np.zeros(self.act_dim, np.float32)
        else:
            try:
                value = np.array(safe_action, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"safe_action: expected {self.act_dim} finite numbers, got {safe_action!r}") from None
            if value.shape != (self.act_dim,) or not np.all(np.isfinite(value)):
                raise ValueError(f"safe_action: expected {self.act_dim} finite numbers, got {safe_action!r}")
            value = value.astype(np.float32)
        return np.clip(value, self.action_low, self.action_high)

    def _check_out(self, out: Any, shape: tuple[int, ...]) -> np.ndarray:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
            got = f"{out.dtype} {list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ValueError(f"out: expected a float32 array of shape {list(shape)}, got {got}")
        return out

    def _warm_up(self) -> None:
        """Run the network a few times on zeros (first runs allocate), then restore a fresh state.

        The first run is also the last check of the file: a graph whose dimensions are symbolic
        passes :func:`check_graph_io` whatever the metadata says, and only running it on inputs
        of the metadata's shapes shows that its weights expect other sizes."""
        import onnxruntime

        quiet = onnxruntime.RunOptions()
        quiet.log_severity_level = 4  # a failure becomes our ValueError; do not also log it
        try:
            for binding in self._bindings:
                self._session.run_with_iobinding(binding, quiet)
        except Exception as error:  # onnxruntime raises its own Fail/RuntimeException/... types
            message = str(error).strip()
            first_line = message.splitlines()[0] if message else type(error).__name__
            shapes = [f"{self.metadata.input_names[0]} {list(self._obs.shape)}"]
            if self.rl2:
                shapes += [
                    f"{name} {list(array.shape)}"
                    for name, array in zip(
                        (PREV_ACTION_INPUT, PREV_REWARD_INPUT, EPISODE_START_INPUT),
                        (self._prev_action, self._prev_reward, self._episode_start),
                    )
                ]
            shapes += [
                f"{name} {list(part.shape)}" for (name, _), part in zip(self.metadata.state_names, self._states[0])
            ]
            raise ValueError(
                f"{self.path}: the graph does not run on inputs of the shapes its metadata implies "
                f"({', '.join(shapes)}; obs_dim {self.obs_dim}, act_dim {self.act_dim}, hidden_shape "
                f"{list(self.metadata.hidden_shape)}): the metadata does not match the graph "
                f"(onnxruntime: {first_line})"
            ) from None
        for _ in range(3):
            for binding in self._bindings:
                self._session.run_with_iobinding(binding)
        for block in self._blocks:
            block.fill(0.0)
        self._current = 0
        self.reset()  # RL^2: a trial starts with the next step


def _bind(binding: Any, direction: str, name: str, array: np.ndarray) -> None:
    """Bind ``array`` (C-contiguous float32, kept alive by the controller) by pointer."""
    assert array.flags.c_contiguous and array.dtype == np.float32
    bind = binding.bind_input if direction == "input" else binding.bind_output
    bind(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)


def check_graph_io(session: Any, meta: PolicyMetadata, source: str, batch_size: int = 1) -> None:
    """Check that the graph's inputs and outputs are exactly those of the contract for ``meta``:
    names, float32, ``obs [batch, obs_dim]``, RL^2's ``prev_action [batch, act_dim]``,
    ``prev_reward`` and ``episode_start [batch, 1]``, ``action [batch, act_dim]``, states
    ``[layers, batch, hidden]`` (a fixed batch dimension must equal ``batch_size``).

    Raises ``ValueError`` starting with ``source`` and naming the input or output.
    """
    layers_hidden = meta.hidden_shape
    # name -> dims, each an int or "batch"
    expected_inputs: dict[str, tuple[int | str, ...]] = {meta.input_names[0]: ("batch", meta.obs_dim)}
    if meta.rl2:
        expected_inputs[PREV_ACTION_INPUT] = ("batch", meta.act_dim)
        expected_inputs[PREV_REWARD_INPUT] = ("batch", 1)
        expected_inputs[EPISODE_START_INPUT] = ("batch", 1)
    expected_outputs: dict[str, tuple[int | str, ...]] = {meta.output_names[0]: ("batch", meta.act_dim)}
    for name_in, name_out in meta.state_names:
        expected_inputs[name_in] = (layers_hidden[0], "batch", layers_hidden[1])
        expected_outputs[name_out] = (layers_hidden[0], "batch", layers_hidden[1])
    for what, args, expected in (
        ("input", session.get_inputs(), expected_inputs),
        ("output", session.get_outputs(), expected_outputs),
    ):
        names = [a.name for a in args]
        missing = [n for n in expected if n not in names]
        unexpected = [n for n in names if n not in expected]
        if missing or unexpected:
            raise ValueError(
                f"{source}: graph {what}s {names} do not match the metadata "
                f"({meta.policy_kind} policy: expected {list(expected)}; missing {missing}, unexpected {unexpected})"
            )
        for arg in args:
            dims = expected[arg.name]
            shape = list(arg.shape) if arg.shape is not None else None
            if arg.type != _FLOAT_TENSOR:
                raise ValueError(f"{source}: graph {what} {arg.name!r}: expected type {_FLOAT_TENSOR}, got {arg.type}")
            if shape is None or len(shape) != len(dims):
                raise ValueError(
                    f"{source}: graph {what} {arg.name!r}: expected rank {len(dims)} {list(dims)}, got {shape}"
                )
            for dim, want in zip(shape, dims):
                if not isinstance(dim, int):
                    continue  # symbolic or unknown: checked by onnxruntime when it runs
                if (want == "batch" and dim != batch_size) or (want != "batch" and dim != want):
                    wanted = [batch_size if d == "batch" else d for d in dims]
                    raise ValueError(
                        f"{source}: graph {what} {arg.name!r}: shape {shape} does not match the metadata "
                        f"(expected {[str(d) for d in dims]}, i.e. {wanted} for batch_size {batch_size})"
                    )
