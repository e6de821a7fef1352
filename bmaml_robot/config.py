"""Training configuration: a frozen dataclass with a docstring per field, loaded from YAML.

Unknown keys and values of the wrong type or range are errors that name the key, what was
expected and what came, raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import logging
import reprlib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bmaml_robot.envs.families import FAMILIES
from bmaml_robot_deploy.checks import check_choice, check_float, check_int

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a meta-training run (defaults: the MAML benchmark settings).

    ``algorithm`` picks the meta-learner: ``maml`` (MAML-TRPO: the keys from ``episodes_per_task``
    to ``ls_backtrack`` and the ``eval_*`` keys) or ``rl2`` (RL^2 with PPO: ``episodes_per_trial``
    and the ``ppo_*`` keys; ``num_tasks`` trials per iteration, one per task). The other keys are
    shared; each algorithm ignores the other's."""

    algorithm: str = "maml"
    """Meta-learner: ``maml`` (adapts by gradient steps) or ``rl2`` (adapts in its activations)."""
    family: str = "HalfCheetahDir"
    """Task family (see ``bmaml_robot.FAMILIES``; with rl2 also the discrete tasks, ``DISCRETE_FAMILIES``)."""
    policy: str = "mlp"
    """Policy kind: ``mlp`` (classic MAML), ``rnn`` (tanh), ``gru`` or ``lstm`` (rl2: a recurrent one)."""
    recurrence: str = "frozen"
    """Recurrent weights: ``frozen`` (never change), ``outer`` (meta-trained, never adapted; maml only),
    ``all``; ignored by mlp."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the MLP policy."""
    hidden_size: int = 100
    """Hidden state size of recurrent policies."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian policy (in the normalised action space; |value| <= 10)."""
    action_scale: float | None = None
    """The policy acts in [-action_scale, action_scale], mapped onto the robot's bounds; null: the family's
    (10 MuJoCo, 0.1 Navigation2D)."""
    num_tasks: int = 40
    """Tasks per meta-batch (meta_batch_size in the MAML papers)."""
    episodes_per_task: int = 20
    """Episodes sampled per task and adaptation step (fast_batch_size)."""
    horizon: int = 100
    """Steps per episode (the environments' time limit)."""
    adapt_steps: int = 1
    """Inner (adaptation) gradient steps (each samples fresh episodes with the parameters adapted so far)."""
    fast_lr: float = 0.1
    """Inner-loop (adaptation) step size."""
    first_order: bool = False
    """First-order MAML: do not differentiate through the inner step."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda (1: Monte-Carlo returns with the linear baseline)."""
    max_kl: float = 1e-2
    """TRPO trust region: largest mean KL of an outer step."""
    cg_iters: int = 10
    """Conjugate-gradient iterations for the TRPO direction."""
    cg_damping: float = 1e-5
    """Damping added to the KL Hessian in conjugate gradient."""
    hvp_subsample: float = 1.0
    """Share of each task's episodes in CG's KL-Hessian products (subsampled curvature; 1: all; gradient,
    line search: all)."""
    ls_max_steps: int = 15
    """Backtracking line-search trials."""
    ls_backtrack: float = 0.8
    """Step shrink factor per line-search trial."""
    num_iterations: int = 500
    """Meta-iterations to run (one meta-batch of tasks and one outer update each)."""
    num_threads: int = 2
    """Threads stepping the robots (results do not depend on it)."""
    sampler: str = "local"
    """Where episodes are sampled: ``local`` (this process) or ``ray`` (Ray actors; same results)."""
    ray_address: str = ""
    """Ray sampler: cluster to sample on (``auto``, ``HOST:PORT``, ``ray://HOST:10001``); empty: start Ray here."""
    workers: int = 2
    """Ray sampler: actors, each sampling a fixed slice of the tasks (at most num_tasks)."""
    threads_per_worker: int = 1
    """Ray sampler: threads stepping each worker's robots (and CPUs it reserves)."""
    seed: int = 0
    """Seed of everything: tasks, resets, action noise, initial parameters."""
    checkpoint_every: int = 1
    """Write a checkpoint every this many meta-iterations (and always at the end)."""
    eval_every: int = 0
    """Held-out evaluation every this many meta-iterations (bmaml-eval's tasks and noise), logged with the
    metrics; 0: never. RL^2: ``eval_episodes`` trials per task, the return of each episode of the trial."""
    eval_adapt_steps: int = 1
    """Evaluation during training: adaptation steps (returns after 0..eval_adapt_steps steps)."""
    eval_tasks: int = 20
    """Evaluation during training: held-out tasks."""
    eval_episodes: int = 10
    """Evaluation during training: episodes per task and adaptation step."""
    episodes_per_trial: int = 2
    """rl2: episodes of one task per trial, the policy's state carried across them."""
    learning_rate: float = 1e-3
    """rl2: Adam's step size."""
    ppo_epochs: int = 5
    """rl2: PPO passes over each iteration's trials."""
    ppo_minibatches: int = 4
    """rl2: minibatches (of whole trials) per PPO pass."""
    ppo_clip: float = 0.2
    """rl2: PPO's ratio clip epsilon."""
    value_coef: float = 0.5
    """rl2: weight of the value loss."""
    entropy_coef: float = 0.01
    """rl2: weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """rl2: gradient-norm clip of each PPO step."""
    ppo_target_kl: float = 0.0
    """rl2: 0, or stop an update's PPO steps once the policy is 1.5 x this (approximate KL) from the sampling one."""

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    def replace(self, **overrides: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **overrides})

    def resolved(self) -> TrainConfig:
        """This config with ``action_scale`` set (the family's default when it is None): what a
        run records in its files, so that it keeps its convention whatever the defaults become."""
        if self.action_scale is not None:
            return self
        from bmaml_robot.envs.action_map import default_action_scale

        return self.replace(action_scale=default_action_scale(self.family))


def _validate(c: TrainConfig) -> None:
    from bmaml_robot.policies import POLICY_KINDS, RECURRENCE_MODES

    def at_least(key: str, low: float, inclusive: bool = True) -> None:
        # The float bounds are written as given (">= 0.0", as quoted in tests), not as check_float writes them.
        v = getattr(c, key)
        if not (v >= low if inclusive else v > low):
            raise ValueError(f"{key}: expected a value {'>=' if inclusive else '>'} {low}, got {v!r}")

    from bmaml_robot.envs.discrete import DISCRETE_FAMILIES

    check_choice(c.algorithm, "algorithm", ALGORITHMS)
    rl2 = c.algorithm == "rl2"
    check_choice(c.family, "family", sorted(FAMILIES) + (sorted(DISCRETE_FAMILIES) if rl2 else []))
    if rl2 and c.policy == "mlp":
        raise ValueError(f"policy: algorithm rl2 adapts in a recurrent state, so it needs one of "
                         f"{[kind for kind in POLICY_KINDS if kind != 'mlp']} (e.g. --policy gru), got 'mlp'")
    check_choice(c.policy, "policy", POLICY_KINDS)
    check_choice(c.recurrence, "recurrence", [mode for mode in RECURRENCE_MODES if mode != "outer"]
                 if rl2 else RECURRENCE_MODES)
    if not c.hidden_sizes or any(h < 1 for h in c.hidden_sizes):
        raise ValueError(f"hidden_sizes: expected a non-empty list of integers >= 1, got {list(c.hidden_sizes)}")
    for key in (
        "hidden_size",
        "num_tasks",
        "episodes_per_task",
        "horizon",
        "adapt_steps",
        "cg_iters",
        "ls_max_steps",
        "num_iterations",
        "num_threads",
        "checkpoint_every",
        "workers",
        "threads_per_worker",
        "eval_adapt_steps",
        "eval_tasks",
        "eval_episodes",
        "episodes_per_trial",
        "ppo_epochs",
        "ppo_minibatches",
    ):
        check_int(getattr(c, key), key, minimum=1, what="a value")
    check_int(c.eval_every, "eval_every", minimum=0, what="a value")
    check_choice(c.sampler, "sampler", ("local", "ray"))
    if c.sampler == "ray" and c.workers > c.num_tasks:
        raise ValueError(
            f"workers: expected at most num_tasks={c.num_tasks} Ray workers (one task each at least), got {c.workers}"
        )
    check_int(c.seed, "seed", minimum=0, below=2**64)
    if c.action_scale is not None:
        check_float(c.action_scale, "action_scale", low=0, low_open=True, note=" (or null: the family's default)")
    for key in (
        "init_log_std",
        "fast_lr",
        "max_kl",
        "cg_damping",
        "hvp_subsample",
        "gamma",
        "gae_lambda",
        "ls_backtrack",
        "learning_rate",
        "ppo_clip",
        "value_coef",
        "entropy_coef",
        "max_grad_norm",
        "ppo_target_kl",
    ):
        check_float(getattr(c, key), key)
    for key in ("learning_rate", "ppo_clip", "max_grad_norm"):
        check_float(getattr(c, key), key, low=0, low_open=True, what="a value")
    for key in ("value_coef", "entropy_coef", "ppo_target_kl"):
        check_float(getattr(c, key), key, low=0, what="a value")
    at_least("fast_lr", 0.0)
    # exp(+-10) is already 2e4 or 5e-5 times the action scale; beyond, the Gaussian overflows
    # or collapses and every log-probability is inf or NaN.
    check_float(c.init_log_std, "init_log_std", low=-MAX_ABS_INIT_LOG_STD, high=MAX_ABS_INIT_LOG_STD, what="a value")
    at_least("max_kl", 0.0, inclusive=False)
    at_least("cg_damping", 0.0)
    for key in ("gamma", "gae_lambda"):
        check_float(getattr(c, key), key, low=0, high=1, what="a value")
    check_float(c.hvp_subsample, "hvp_subsample", low=0, high=1, low_open=True, what="a value")
    check_float(c.ls_backtrack, "ls_backtrack", low=0, high=1, low_open=True, high_open=True, what="a value")


MAX_ABS_INIT_LOG_STD = 10.0
#: The meta-learners ``algorithm`` names.
ALGORITHMS: tuple[str, ...] = ("maml", "rl2")

FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
#: Keys added after runs were already being made, with the value that reproduces what a run made
#: before the key existed computed (``action_scale`` is the robot's own bound: see ``run_config``).
ADDED_LATER: dict[str, Any] = {
    "hvp_subsample": 1.0,
    "sampler": "local",
    "ray_address": "",
    "workers": 2,
    "threads_per_worker": 1,
    "eval_every": 0,
    "eval_adapt_steps": 1,
    "eval_tasks": 20,
    "eval_episodes": 10,
    # RL^2 (issue 15): every run before it was MAML.
    "algorithm": "maml",
    "episodes_per_trial": 2,
    "learning_rate": 1e-3,
    "ppo_epochs": 5,
    "ppo_minibatches": 4,
    "ppo_clip": 0.2,
    "value_coef": 0.5,
    "entropy_coef": 0.01,
    "max_grad_norm": 0.5,
    "ppo_target_kl": 0.0,
}
#: Keys by their old names: configs, runs and ``--set`` overrides written with them still load.
RENAMED: dict[str, str] = {
    "num_steps": "adapt_steps",
    "num_batches": "num_iterations",
    "eval_steps": "eval_adapt_steps",
}


def current_keys(values: Mapping[Any, Any], source: str) -> dict[Any, Any]:
    """``values`` with old key names (``RENAMED``) under their current ones; ValueError naming
    ``source`` when a key is given under both names."""
    out = dict(values)
    for old, new in RENAMED.items():
        if old in out:
            if new in out:
                raise ValueError(f"{source}: {old!r} is the old name of {new!r}; give one of them, not both")
            out[new] = out.pop(old)
    return out


_HINTS = typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any) -> Any:
    """Check (and gently convert: YAML/CLI ints for floats, lists for tuples) one value."""
    hint = _HINTS[key]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif hint in (float, float | None):
        if value is None and hint is not float:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint == tuple[int, ...]:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
            except (yaml.YAMLError, ValueError, RecursionError) as error:
                raise ValueError(
                    f"{key}: expected a list of integers, got {reprlib.repr(value)} ({_first_line(error)})"
                ) from None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]  # `--set hidden_sizes=64`: one hidden layer
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
    expected = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        float | None: "a number or null",
        str: "a string",
    }.get(hint, "a list of integers")
    raise ValueError(f"{key}: expected {expected}, got {reprlib.repr(value)}")


def from_dict(values: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """A validated config from a mapping; unknown keys are errors that list the valid ones."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
    not_names = [key for key in values if not isinstance(key, str)]
    if not_names:
        raise ValueError(f"{source}: expected config keys (strings), got {not_names[0]!r}")
    values = current_keys(values, source)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; valid keys are {sorted(FIELDS)}")
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})


def run_config(values: Mapping[str, Any], source: str) -> TrainConfig:
    """The config a run recorded (its checkpoint's or its config.yaml), resolved.

    Every key must be there: a run's config filled in with today's defaults would silently be
    another run (ValueError naming the file and the missing keys). The exceptions are the keys
    added after runs were made (``ADDED_LATER``), which take the value that reproduces what such a
    run computed, and ``action_scale``: a run made before the action convention
    (``envs/action_map.py``) has none, its policy acted in the robot's own units, so it keeps that
    convention (the robot's bound: 1 for the MuJoCo robots, 0.1 for Navigation2D), with a note in
    the log.
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError(
            f"{source}: expected the config bmaml-train recorded (a mapping of every key), "
            f"got {'an empty file' if not values else type(values).__name__}"
        )
    values = current_keys(values, source)
    missing = sorted(set(FIELDS) - set(values) - set(ADDED_LATER) - {"action_scale"})
    if missing:
        raise ValueError(
            f"{source}: incomplete run config, missing keys {missing} (a run's config is never "
            "filled in with defaults: that would be another run)"
        )
    values = {**{k: v for k, v in ADDED_LATER.items() if k not in values}, **values}
    if "action_scale" not in values:
        family = values.get("family", FIELDS["family"].default)
        if family in FAMILIES:
            from bmaml_robot.envs.action_map import legacy_action_scale

            scale = legacy_action_scale(family)
            logging.getLogger("bmaml_robot").warning(
                "%s: no action_scale (a run made before the action convention): its policy acts in the "
                "robot's own units, action_scale %g",
                source,
                scale,
            )
            values = {**values, "action_scale": scale}
    return from_dict(values, source=source).resolved()


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (``bmaml-train --config NAME``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str) -> TrainConfig:
    """A shipped config by name (e.g. ``halfcheetah-dir``) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"config: expected a YAML file or one of {shipped_configs()}, got {name_or_path!r}")
    elif not path.is_file():
        raise ValueError(f"config: no such file {str(path)!r}")
    return from_dict(read_yaml(path), source=str(path))


def read_yaml(path: Path) -> Any:
    """The content of a YAML file (``{}`` when it is empty); ValueError naming it if it is not
    readable UTF-8 YAML."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ValueError(f"config: {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        raise ValueError(f"config: {path} is not valid YAML ({_first_line(error)})") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` (value in YAML syntax) -> (key, value), checked against the config's fields."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ValueError(f"--set: expected KEY=VALUE, got {text!r}")
    key = RENAMED.get(key, key)
    if key not in FIELDS:
        raise ValueError(f"--set: unknown key {key!r}; valid keys are {sorted(FIELDS)}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # ValueError: an int past Python's digit limit
        raise ValueError(
            f"--set {key}: {raw[:40]!r}{'...' if len(raw) > 40 else ''} is not a valid YAML value "
            f"({_first_line(error)})"
        ) from None
    return key, _coerce(key, value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def dump_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML, with each field's meaning as a comment, atomically (a
    kill or a full disk leaves the old file or the new one, never part of one)."""
    from bmaml_robot.checkpoint import write_text_atomic

    lines = []
    for key, value in config.to_dict().items():
        doc = FIELD_DOCS.get(key, "")
        lines.append(
            f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            + (f"  # {doc}" if doc else "")
        )
    write_text_atomic(path, "\n".join(lines) + "\n")


def _field_docs() -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


FIELD_DOCS = _field_docs()
