"""Toy policy files for tests, benchmarks and bridge bring-up (needs ``onnx``: ``pip install onnx``).

``toy_policy(kind, ...)`` builds, with ``onnx.helper``, an ONNX file that follows the exported
policy contract of :mod:`bmaml_robot_deploy.metadata` exactly (input ``obs``, ``h_in``/``c_in``;
outputs ``action``, ``h_out``/``c_out``; the ``bmaml.*`` metadata) from random weights, together
with a numpy reference of the same network. It lets the runtime be tested without PyTorch and
without a training run, and lets firmware authors bring up a robot bridge (``bmaml-control``
with a dummy policy) before a real policy exists.

Weights use the parameter names and layouts of ``bmaml_robot.policies`` (PyTorch's
``nn.Linear``/``nn.{RNN,GRU,LSTM}Cell`` layouts): mlp ``hidden.{i}.weight [h_i, h_{i-1}]``,
``hidden.{i}.bias``, ``mean.weight [act_dim, h_last]``, ``mean.bias``; recurrent
``cell.weight_ih [G*H, obs_dim]``, ``cell.bias_ih [G*H]``, ``cell.weight_hh [G*H, H]``,
``cell.bias_hh [G*H]``, ``mean.weight [act_dim, H]``, ``mean.bias``, gates in PyTorch's order.
So ``toy_policy(..., weights=policy.state_dict())`` (tensors converted with ``.numpy()``) gives
the ONNX twin of a torch policy. The recurrent cells use ONNX's ``RNN``/``GRU``/``LSTM`` ops.

``toy_policy(kind, rl2=True)`` makes an RL^2 file (a recurrent kind): the graph also takes
``prev_action``, ``prev_reward`` and ``episode_start`` and concatenates them after ``obs`` into
the cell's input (``cell.weight_ih [G*H, obs_dim + act_dim + 2]``), as ``bmaml_robot.rl2``'s
policy does; its metadata says ``algorithm: rl2``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bmaml_robot_deploy.metadata import (
    ACTION_OUTPUT,
    C_INPUT,
    C_OUTPUT,
    EPISODE_START_INPUT,
    H_INPUT,
    H_OUTPUT,
    OBS_INPUT,
    PREV_ACTION_INPUT,
    PREV_REWARD_INPUT,
    RL2_FORMAT_VERSION,
    PolicyMetadata,
)

#: Opset and IR version of the toy files (read by onnxruntime >= 1.14).
OPSET = 17
IR_VERSION = 8

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# Row blocks of PyTorch's gate order, in ONNX's gate order: GRU torch (r, z, n) -> ONNX (z, r, h);
# LSTM torch (i, f, g, o) -> ONNX (i, o, f, c).
_TORCH_TO_ONNX_GATES = {"rnn": (0,), "gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclasses.dataclass
class ReferencePolicy:
    """Numpy float64 reference of a toy policy: ``step(obs [B, obs_dim], state)`` ->
    ``(action [B, act_dim], next_state)``; state ``[layers=1, B, H]`` arrays (``(h, c)`` for lstm).
    An RL^2 toy's ``obs`` is the whole input ``[obs | prev_action | prev_reward | episode_start]``
    (:meth:`rl2_input` builds it)."""

    kind: str
    weights: dict[str, np.ndarray]
    action_low: np.ndarray
    action_high: np.ndarray
    rl2: bool = False

    def rl2_input(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray,
                  episode_start: np.ndarray) -> np.ndarray:
        """``[B, obs_dim + act_dim + 2]``: the RL^2 input rows (``prev_reward``, ``episode_start`` ``[B]``)."""
        columns = [np.asarray(obs, np.float64), np.asarray(prev_action, np.float64),
                   np.asarray(prev_reward, np.float64).reshape(-1, 1),
                   np.asarray(episode_start, np.float64).reshape(-1, 1)]
        return np.concatenate(columns, axis=1)

    def normalise(self, action: np.ndarray) -> np.ndarray:
        """An action in robot units as RL^2's previous-action input: ``clip((a - mid) / half, -1, 1)``."""
        mid, half = (self.action_low + self.action_high) / 2, (self.action_high - self.action_low) / 2
        return np.clip((np.asarray(action, np.float64) - mid) / half, -1.0, 1.0)

    def initial_state(self, batch: int) -> tuple[np.ndarray, ...]:
        """Zero state: ``()`` for mlp, ``(h,)`` or ``(h, c)``, each ``[1, batch, H]``."""
        if self.kind == "mlp":
            return ()
        hidden = self.weights["cell.weight_hh"].shape[1]
        count = 2 if self.kind == "lstm" else 1
        return tuple(np.zeros((1, batch, hidden)) for _ in range(count))

    def step(self, obs: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        w = {k: v.astype(np.float64) for k, v in self.weights.items()}
        x = np.asarray(obs, np.float64)
        next_state: tuple[np.ndarray, ...]
        if self.kind == "mlp":
            i = 0
            while f"hidden.{i}.weight" in w:
                x = np.tanh(x @ w[f"hidden.{i}.weight"].T + w[f"hidden.{i}.bias"])
                i += 1
            features, next_state = x, ()
        else:
            h_prev = state[0][0]
            H = h_prev.shape[-1]
            xg = x @ w["cell.weight_ih"].T + w["cell.bias_ih"]
            hg = h_prev @ w["cell.weight_hh"].T + w["cell.bias_hh"]
            if self.kind == "rnn":
                h = np.tanh(xg + hg)
                next_state = (h[None],)
            elif self.kind == "gru":
                r = _sigmoid(xg[:, :H] + hg[:, :H])
                z = _sigmoid(xg[:, H : 2 * H] + hg[:, H : 2 * H])
                n = np.tanh(xg[:, 2 * H :] + r * hg[:, 2 * H :])
                h = (1 - z) * n + z * h_prev
                next_state = (h[None],)
            else:
                g = xg + hg
                i_, f_, g_, o_ = (g[:, k * H : (k + 1) * H] for k in range(4))
                c = _sigmoid(f_) * state[1][0] + _sigmoid(i_) * np.tanh(g_)
                h = _sigmoid(o_) * np.tanh(c)
                next_state = (h[None], c[None])
            features = h
        mean = features @ w["mean.weight"].T + w["mean.bias"]
        return np.clip(mean, self.action_low, self.action_high), next_state


def random_weights(
    kind: str,
    obs_dim: int,
    act_dim: int,
    *,
    hidden_sizes: Sequence[int] = (64, 64),
    hidden_size: int = 100,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random float32 weights (uniform, Xavier-like scale, small random biases) in the layouts of
    the module docstring."""
    rng = np.random.default_rng(seed)

    def uniform(shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    weights: dict[str, np.ndarray] = {}
    if kind == "mlp":
        sizes = (obs_dim, *hidden_sizes)
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            weights[f"hidden.{i}.weight"] = uniform((n_out, n_in), n_in, n_out)
            weights[f"hidden.{i}.bias"] = uniform((n_out,), n_in, n_out) * 0.1
        last = sizes[-1]
    else:
        rows = _GATES[kind] * hidden_size
        weights["cell.weight_ih"] = uniform((rows, obs_dim), obs_dim, hidden_size)
        weights["cell.bias_ih"] = uniform((rows,), obs_dim, hidden_size) * 0.1
        weights["cell.weight_hh"] = uniform((rows, hidden_size), hidden_size, hidden_size)
        weights["cell.bias_hh"] = uniform((rows,), hidden_size, hidden_size) * 0.1
        last = hidden_size
    weights["mean.weight"] = uniform((act_dim, last), last, act_dim)
    weights["mean.bias"] = uniform((act_dim,), last, act_dim) * 0.1
    return weights


def toy_metadata(kind: str, obs_dim: int, act_dim: int, hidden_size: int = 100, **overrides: Any) -> PolicyMetadata:
    """Metadata of a toy policy: HalfCheetahDir, task ``{"direction": 1.0}``, bounds [-1, 1],
    ``control_dt`` 0.05; ``overrides`` replace any field (``algorithm="rl2"``: also format 2,
    recurrence ``all`` and 2 episodes per trial unless given)."""
    if overrides.get("algorithm") == "rl2":
        overrides = {"format_version": RL2_FORMAT_VERSION, "recurrence": "all", "episodes_per_trial": 2, **overrides}
    fields: dict[str, Any] = dict(
        robot="HalfCheetah",
        family="HalfCheetahDir",
        task={"direction": 1.0},
        obs_dim=obs_dim,
        act_dim=act_dim,
        action_low=[-1.0] * act_dim,
        action_high=[1.0] * act_dim,
        control_dt=0.05,
        policy_kind=kind,
        recurrence="none" if kind == "mlp" else "frozen",
        hidden_shape=[] if kind == "mlp" else [1, hidden_size],
        adapt_steps=0,
        package_version="toy",
        source_run="toy",
    )
    fields.update(overrides)
    return PolicyMetadata(**fields)


def toy_policy(
    kind: str = "mlp",
    obs_dim: int = 17,
    act_dim: int = 6,
    *,
    hidden_sizes: Sequence[int] = (64, 64),
    hidden_size: int = 100,
    seed: int = 0,
    weights: Mapping[str, Any] | None = None,
    metadata: PolicyMetadata | None = None,
    props: Mapping[str, str] | None = None,
    rl2: bool = False,
) -> tuple[Any, ReferencePolicy]:
    """An ONNX ``ModelProto`` of a toy policy and its numpy reference.

    Args:
        kind: ``mlp``, ``rnn``, ``gru`` or ``lstm`` (rnn, gru or lstm with ``rl2``).
        obs_dim, act_dim: sizes (ignored where ``weights`` are given: read from them).
        hidden_sizes: mlp layer sizes; hidden_size: recurrent state size.
        seed: seed of :func:`random_weights` when ``weights`` is None.
        weights: parameters by name (module docstring), numpy arrays or anything ``np.asarray`` takes.
        metadata: written as ``metadata_props`` (default :func:`toy_metadata`).
        props: written *instead* of ``metadata.to_props()`` when given (to make broken files).
        rl2: an RL^2 policy (module docstring); ``weights`` then have the cell input
            ``obs_dim + act_dim + 2``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if kind not in ("mlp", *_GATES):
        raise ValueError(f"kind: expected one of ['mlp', 'rnn', 'gru', 'lstm'], got {kind!r}")
    if rl2 and kind == "mlp":
        raise ValueError("kind: an RL^2 policy is recurrent (rnn, gru or lstm), got 'mlp'")
    extra = act_dim + 2 if rl2 else 0  # RL^2's inputs after obs
    if weights is None:
        weights = random_weights(kind, obs_dim + extra, act_dim, hidden_sizes=hidden_sizes, hidden_size=hidden_size,
                                 seed=seed)
    w = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in weights.items()}
    act_dim = w["mean.weight"].shape[0]
    if kind == "mlp":
        obs_dim = w["hidden.0.weight"].shape[1]
    else:
        obs_dim = w["cell.weight_ih"].shape[1] - (act_dim + 2 if rl2 else 0)
        hidden_size = w["cell.weight_hh"].shape[1]
    if metadata is None:
        metadata = toy_metadata(kind, obs_dim, act_dim, hidden_size, **({"algorithm": "rl2"} if rl2 else {}))
    low = np.asarray(metadata.action_low, np.float32)
    high = np.asarray(metadata.action_high, np.float32)

    initializers = [numpy_helper.from_array(low, "action_low"), numpy_helper.from_array(high, "action_high")]
    nodes = []
    inputs = [helper.make_tensor_value_info(OBS_INPUT, TensorProto.FLOAT, ["batch", obs_dim])]
    outputs = [helper.make_tensor_value_info(ACTION_OUTPUT, TensorProto.FLOAT, ["batch", act_dim])]

    def constant(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    if kind == "mlp":
        x = OBS_INPUT
        i = 0
        while f"hidden.{i}.weight" in w:
            nodes.append(
                helper.make_node(
                    "Gemm",
                    [x, constant(f"W{i}", w[f"hidden.{i}.weight"]), constant(f"b{i}", w[f"hidden.{i}.bias"])],
                    [f"z{i}"],
                    transB=1,
                )
            )
            nodes.append(helper.make_node("Tanh", [f"z{i}"], [f"a{i}"]))
            x = f"a{i}"
            i += 1
        features = x
    else:
        H = hidden_size
        blocks = _TORCH_TO_ONNX_GATES[kind]

        def reorder(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a[g * H : (g + 1) * H] for g in blocks], axis=0)

        state_shape: list[str | int] = [1, "batch", H]
        x = OBS_INPUT
        if rl2:
            inputs.append(helper.make_tensor_value_info(PREV_ACTION_INPUT, TensorProto.FLOAT, ["batch", act_dim]))
            inputs.append(helper.make_tensor_value_info(PREV_REWARD_INPUT, TensorProto.FLOAT, ["batch", 1]))
            inputs.append(helper.make_tensor_value_info(EPISODE_START_INPUT, TensorProto.FLOAT, ["batch", 1]))
            nodes.append(helper.make_node(
                "Concat", [OBS_INPUT, PREV_ACTION_INPUT, PREV_REWARD_INPUT, EPISODE_START_INPUT], ["x_rl2"], axis=1
            ))
            x = "x_rl2"
        inputs.append(helper.make_tensor_value_info(H_INPUT, TensorProto.FLOAT, state_shape))
        outputs.append(helper.make_tensor_value_info(H_OUTPUT, TensorProto.FLOAT, state_shape))
        nodes.append(helper.make_node("Unsqueeze", [x, constant("axis0", np.array([0], np.int64))], ["x_seq"]))
        op_inputs = [
            "x_seq",
            constant("W", reorder(w["cell.weight_ih"])[None]),
            constant("R", reorder(w["cell.weight_hh"])[None]),
            constant("B", np.concatenate([reorder(w["cell.bias_ih"]), reorder(w["cell.bias_hh"])])[None]),
            "",  # sequence_lens
            H_INPUT,
        ]
        op_outputs = ["", H_OUTPUT]
        attributes: dict[str, Any] = {"hidden_size": H}
        if kind == "gru":
            attributes["linear_before_reset"] = 1  # PyTorch's GRU
        if kind == "lstm":
            inputs.append(helper.make_tensor_value_info(C_INPUT, TensorProto.FLOAT, state_shape))
            outputs.append(helper.make_tensor_value_info(C_OUTPUT, TensorProto.FLOAT, state_shape))
            op_inputs.append(C_INPUT)
            op_outputs.append(C_OUTPUT)
        nodes.append(helper.make_node(kind.upper(), op_inputs, op_outputs, **attributes))
        nodes.append(helper.make_node("Squeeze", [H_OUTPUT, "axis0"], ["features"]))
        features = "features"
    nodes.append(
        helper.make_node(
            "Gemm",
            [features, constant("Wmean", w["mean.weight"]), constant("bmean", w["mean.bias"])],
            ["mean"],
            transB=1,
        )
    )
    nodes.append(helper.make_node("Max", ["mean", "action_low"], ["mean_low"]))
    nodes.append(helper.make_node("Min", ["mean_low", "action_high"], [ACTION_OUTPUT]))
    graph = helper.make_graph(nodes, f"toy_{kind}_policy", inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bmaml_robot_deploy.testing"
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, dict(metadata.to_props() if props is None else props))
    onnx.checker.check_model(model)
    reference = ReferencePolicy(
        kind, {k: v.copy() for k, v in w.items()}, low.astype(np.float64), high.astype(np.float64), rl2=rl2
    )
    return model, reference


def save_model(model: Any, path: str | os.PathLike[str]) -> str:
    """Write ``model`` (a ``ModelProto``) to ``path`` as one file; returns the path as a string."""
    path = os.fspath(path)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def write_toy_policy(path: str | os.PathLike[str], kind: str = "mlp", **kwargs: Any) -> tuple[str, ReferencePolicy]:
    """:func:`toy_policy` saved to ``path``; returns ``(path, reference)``."""
    model, reference = toy_policy(kind, **kwargs)
    return save_model(model, path), reference
