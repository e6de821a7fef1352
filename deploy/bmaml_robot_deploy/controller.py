"""The real-time controller: one exported policy file under onnxruntime, with its hidden state.

``Controller(path).act(obs)`` maps one observation ``[obs_dim]`` (or a batch
``[batch_size, obs_dim]``) to the deterministic action, keeping the recurrent state between calls.
Every call reuses buffers allocated once: observations are copied into a float32 input buffer
that onnxruntime reads in place and actions and next states are written by onnxruntime into
output buffers (``IOBinding`` over fixed pointers; measured faster than ``session.run``, which
allocates its outputs on every call). The recurrent state lives in two buffers that swap roles
(input, output) on every accepted step, so it is never copied, and a step can be rejected
by simply not swapping.

Safety: an observation with NaN or infinity gives the safe action and leaves the state as it
was (counted in ``nonfinite_count``); a non-finite action or next state from the network is
replaced the same way (``nonfinite_action_count``); every action returned is inside the
action bounds of the file.

Not thread-safe: one controller per control thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bmaml_robot_deploy.metadata import ACTION_OUTPUT, OBS_INPUT, PolicyMetadata, load_session

#: onnxruntime's name for a float32 tensor type.
_FLOAT_TENSOR = "tensor(float)"


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
        batch_size: number of robots controlled at once; ``act`` then takes ``[batch_size, obs_dim]``.
            With 1 (default) it takes ``[obs_dim]`` (or ``[1, obs_dim]``).

    Raises:
        ValueError: naming the file and the problem: missing file, not an ONNX model, missing or
            malformed metadata keys, a file for another robot or family, graph inputs/outputs
            that do not match the metadata; or naming the bad argument.

    Attributes:
        metadata: the file's :class:`PolicyMetadata`.
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
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
        check_graph_io(self._session, meta, self.path, self.batch_size)

        self.obs_dim = meta.obs_dim
        self.act_dim = meta.act_dim
        self.control_dt = meta.control_dt
        self.action_low = np.asarray(meta.action_low, np.float32)
        self.action_high = np.asarray(meta.action_high, np.float32)
        self.safe_action = self._check_safe_action(safe_action)
        self.safe_action.flags.writeable = False
        self.steps = 0
        self.nonfinite_count = 0
        self.nonfinite_action_count = 0

        B = self.batch_size
        self._obs = np.zeros((B, self.obs_dim), np.float32)
        self._obs_row = self._obs[0]
        self._action = np.zeros((B, self.act_dim), np.float32)
        self._action_row = self._action[0]
        self._zeros_obs = np.zeros(self.obs_dim, np.float32)
        self._zeros_act = np.zeros(self.act_dim, np.float32)
        # Recurrent state: buffers[k][j] is state part j (h, then c) in buffer k; the binding k
        # reads buffers[k] and writes buffers[1 - k]; self._current says which holds the state.
        state_shape = (meta.hidden_shape[0], B, meta.hidden_shape[1]) if meta.recurrent else ()
        self._state_buffers = [
            [np.zeros(state_shape, np.float32) for _ in meta.state_names] for _ in range(2 if meta.recurrent else 1)
        ]
        self._zeros_state = np.zeros(int(np.prod(state_shape)) if meta.recurrent else 0, np.float32)
        self._state_flat = [[part.reshape(-1) for part in buffers] for buffers in self._state_buffers]
        self._bindings = []
        for k in range(len(self._state_buffers)):
            binding = self._session.io_binding()
            _bind(binding, "input", OBS_INPUT, self._obs)
            _bind(binding, "output", ACTION_OUTPUT, self._action)
            for j, (name_in, name_out) in enumerate(meta.state_names):
                _bind(binding, "input", name_in, self._state_buffers[k][j])
                _bind(binding, "output", name_out, self._state_buffers[1 - k][j])
            self._bindings.append(binding)
        self._current = 0
        self._single_shape = (self.obs_dim,)
        self._batch_shape = (B, self.obs_dim)
        self._warm_up()

    # -- public ----------------------------------------------------------------------------------

    def act(self, obs: np.ndarray | Sequence[float], out: np.ndarray | None = None) -> np.ndarray:
        """The action for ``obs`` and advance the hidden state.

        Args:
            obs: ``[obs_dim]`` (batch_size 1) or ``[batch_size, obs_dim]``, any real dtype
                (converted to float32).
            out: optional float32 array of the result's shape to write the action into (no
                allocation at all); default a new array.

        Returns:
            float32 ``[act_dim]`` or ``[batch_size, act_dim]`` (as ``obs``), inside the bounds.
            Rows whose observation is not finite get ``safe_action`` and keep their state.

        Raises:
            ValueError, TypeError: naming ``obs`` (wrong shape, not a real-number array) or ``out``.
        """
        if type(obs) is not np.ndarray:
            obs = np.asarray(obs)
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
        self.steps += 1
        if self.batch_size == 1:
            self._act_one()
            if out is None:
                return self._action_row.copy() if single else self._action.copy()
            out_view = self._check_out(out, (self.act_dim,) if single else (1, self.act_dim))
            out_view[...] = self._action_row if single else self._action
            return out
        self._act_batch()
        if out is None:
            return self._action.copy()
        self._check_out(out, (self.batch_size, self.act_dim))[...] = self._action
        return out

    def reset(self, rows: int | Sequence[int] | np.ndarray | None = None) -> None:
        """Zero the hidden state (a new episode): of every robot, or only of ``rows`` (indices into
        the batch, for robots whose episode ended). No-op for an mlp policy. Counters are kept."""
        if not self._recurrent:
            return
        if rows is None:
            for part in self._state_buffers[self._current]:
                part.fill(0.0)
            return
        index = np.asarray(rows)
        if index.dtype.kind not in "iu" or index.ndim > 1 or (index.size and not (
            index.min() >= -self.batch_size and index.max() < self.batch_size
        )):
            raise ValueError(f"rows: expected batch indices in [0, {self.batch_size}), got {rows!r}")
        for part in self._state_buffers[self._current]:
            part[:, index, :] = 0.0

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        """A copy of the hidden state: ``()`` for mlp, ``(h,)`` or ``(h, c)`` each float32
        ``[layers, batch_size, hidden]``."""
        return tuple(part.copy() for part in self._state_buffers[self._current]) if self._recurrent else ()

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"Controller({self.path!r}: {m.policy_kind} policy for {m.family} task {m.task}, obs {m.obs_dim}, "
            f"act {m.act_dim}, {m.control_rate_hz:g} Hz, batch_size {self.batch_size})"
        )

    # -- internals -------------------------------------------------------------------------------

    def _act_one(self) -> None:
        """One robot: the observation is in ``self._obs``; leaves the action in ``self._action``."""
        if self._obs_row.dot(self._zeros_obs) != 0.0:  # 0 * x is 0 unless x is NaN or infinite
            self.nonfinite_count += 1
            self._action_row[...] = self.safe_action
            return
        k = self._current
        self._session.run_with_iobinding(self._bindings[k])
        action = self._action_row
        ok = action.dot(self._zeros_act) == 0.0
        if ok and self._recurrent:
            for flat in self._state_flat[1 - k]:
                if flat.dot(self._zeros_state) != 0.0:
                    ok = False
        if not ok:
            self.nonfinite_action_count += 1
            action[...] = self.safe_action
            return  # the state stays in buffer k: not advanced
        np.minimum(action, self.action_high, out=action)
        np.maximum(action, self.action_low, out=action)
        if self._recurrent:
            self._current = 1 - k

    def _act_batch(self) -> None:
        """``batch_size`` robots: rows with non-finite observations or outputs get the safe action
        and keep their state; the others advance."""
        bad_obs = ~np.isfinite(self._obs).all(axis=1)
        if bad_obs.any():
            self.nonfinite_count += int(bad_obs.sum())
            self._obs[bad_obs] = 0.0  # run the network on something harmless; these rows are discarded
        k = self._current
        self._session.run_with_iobinding(self._bindings[k])
        bad_out = ~np.isfinite(self._action).all(axis=1)
        if self._recurrent:
            for part in self._state_buffers[1 - k]:
                bad_out |= ~np.isfinite(part).all(axis=(0, 2))
        bad_out &= ~bad_obs
        self.nonfinite_action_count += int(bad_out.sum())
        bad = bad_obs | bad_out
        np.minimum(self._action, self.action_high, out=self._action)
        np.maximum(self._action, self.action_low, out=self._action)
        if bad.any():
            self._action[bad] = self.safe_action
            if self._recurrent:
                for old, new in zip(self._state_buffers[k], self._state_buffers[1 - k]):
                    new[:, bad, :] = old[:, bad, :]
        if self._recurrent:
            self._current = 1 - k

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
        """Run the network a few times on zeros (first runs allocate), then restore a fresh state."""
        for _ in range(3):
            for binding in self._bindings:
                self._session.run_with_iobinding(binding)
        for buffers in self._state_buffers:
            for part in buffers:
                part.fill(0.0)
        self._action.fill(0.0)
        self._current = 0


def _bind(binding: Any, direction: str, name: str, array: np.ndarray) -> None:
    """Bind ``array`` (C-contiguous float32, kept alive by the controller) by pointer."""
    assert array.flags.c_contiguous and array.dtype == np.float32
    bind = binding.bind_input if direction == "input" else binding.bind_output
    bind(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)


def check_graph_io(session: Any, meta: PolicyMetadata, source: str, batch_size: int = 1) -> None:
    """Check that the graph's inputs and outputs are exactly those of the contract for ``meta``:
    names, float32, ``obs [batch, obs_dim]``, ``action [batch, act_dim]``, states
    ``[layers, batch, hidden]`` (a fixed batch dimension must equal ``batch_size``).

    Raises ``ValueError`` starting with ``source`` and naming the input or output.
    """
    layers_hidden = meta.hidden_shape
    expected_inputs = {meta.input_names[0]: ("batch", meta.obs_dim)}
    expected_outputs = {meta.output_names[0]: ("batch", meta.act_dim)}
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
                raise ValueError(f"{source}: graph {what} {arg.name!r}: expected rank {len(dims)} {list(dims)}, got {shape}")
            for dim, want in zip(shape, dims):
                if not isinstance(dim, int):
                    continue  # symbolic or unknown: checked by onnxruntime when it runs
                if (want == "batch" and dim != batch_size) or (want != "batch" and dim != want):
                    wanted = [batch_size if d == "batch" else d for d in dims]
                    raise ValueError(
                        f"{source}: graph {what} {arg.name!r}: shape {shape} does not match the metadata "
                        f"(expected {[str(d) for d in dims]}, i.e. {wanted} for batch_size {batch_size})"
                    )
