"""The metadata an exported policy file carries: key names, types, parsing and checks.

This module is the single definition of the ONNX file contract shared by ``bmaml-export`` (which
writes it with :meth:`PolicyMetadata.to_props`) and the deploy runtime (which reads it with
:meth:`PolicyMetadata.from_onnx`). It needs nothing but the standard library (onnxruntime only
to read a file's metadata from a path).

Graph contract (``bmaml.format_version`` ``"1"``: MAML files, the only format before RL^2):

- inputs: ``obs`` float32 ``[batch, obs_dim]``; recurrent kinds also ``h_in`` float32
  ``[layers, batch, hidden]``; ``lstm`` also ``c_in`` (same shape);
- outputs: ``action`` float32 ``[batch, act_dim]``, in the robot's units (the Gaussian mean,
  clipped to the policy's normalised space ``[-action_scale, action_scale]`` and mapped onto the
  action bounds); recurrent kinds ``h_out`` (and ``c_out``) ``[layers, batch, hidden]``;
- the batch dimension is dynamic.

RL^2 files (``bmaml.algorithm`` ``"rl2"``, ``bmaml.format_version`` ``"2"``, so that a runtime
that reads only format ``"1"`` refuses them instead of running them without their inputs): a
recurrent policy (rnn, gru, lstm) that adapts in its activations, so it needs, besides ``obs`` and
before the state inputs, in this order (:data:`RL2_INPUTS`, all float32):

- ``prev_action`` ``[batch, act_dim]``: the action sent at the previous step, normalised:
  ``clip((a - (low + high) / 2) / ((high - low) / 2), -1, 1)`` with the file's action bounds
  (the policy's own action divided by ``action_scale``, clipped); zeros at a trial's first step;
- ``prev_reward`` ``[batch, 1]``: the reward of the previous step (the one that led to ``obs``);
  0 at a trial's first step;
- ``episode_start`` ``[batch, 1]``: 1.0 when ``obs`` is the first of an episode (the trial's
  first included), else 0.0.

The state is carried across episode boundaries and set to zeros only at a trial's start (a trial
is ``bmaml.episodes_per_trial`` episodes in training). ``bmaml.input_names`` lists the inputs.

``metadata_props`` (every value a string; JSON where structured):

=========================  ===========================================================
key                        value
=========================  ===========================================================
``bmaml.format_version``   ``"1"`` (MAML files) or ``"2"`` (RL^2 files)
``bmaml.robot``            robot, e.g. ``"HalfCheetah"``
``bmaml.family``           task family, e.g. ``"HalfCheetahDir"``
``bmaml.task``             JSON object, e.g. ``{"direction": -1.0}``
``bmaml.obs_dim``          integer
``bmaml.act_dim``          integer
``bmaml.action_low``       JSON list of ``act_dim`` numbers
``bmaml.action_high``      JSON list of ``act_dim`` numbers
``bmaml.control_dt``       seconds per control step, e.g. ``"0.05"``; in
                           [:data:`MIN_CONTROL_DT`, :data:`MAX_CONTROL_DT`] = [1e-6, 3600]
                           (a control rate between 1 MHz and one step an hour)
``bmaml.policy_kind``      ``mlp``, ``rnn``, ``gru`` or ``lstm``
``bmaml.recurrence``       ``frozen``, ``outer`` or ``all``; ``none`` for ``mlp``
``bmaml.hidden_shape``     JSON ``[layers, hidden]``; ``[]`` for ``mlp``
``bmaml.adapt_steps``      integer >= 0 (0: the meta-policy itself)
``bmaml.package_version``  version of bmaml-robot that exported the file
``bmaml.source_run``       the name of the run directory the policy came from, e.g.
                           ``"halfcheetah-dir-seed0"`` (files of the first exporter hold an
                           absolute path)
``bmaml.action_scale``     optional: the policy's normalised action scale (provenance; the
                           ``action`` output is already in the robot's units). Files
                           exported before the action convention lack it.
``bmaml.horizon``          optional: the training episode length in steps (integer >= 1),
                           the simulated robot's default time limit
``bmaml.git_commit``       optional: the commit of the bmaml-robot checkout that exported
                           the file (hex); absent when exported from an installed package
``bmaml.provenance``       optional: JSON object, where the file came from: package version,
                           ``git_commit``, ``git_dirty`` (uncommitted changes to tracked
                           files), versions of python, torch, mujoco, numpy
``bmaml.train_config``     optional: JSON object, the run's resolved training config
                           (``TrainConfig.to_dict()``; for an mlp without ``recurrence``,
                           which only recurrent policies have)
``bmaml.physics``          optional: JSON object, the task's physics as the simulator sets it:
                           absolute model values by column label, e.g.
                           ``{"actuator_gear[fshin]": 0.0, ...}`` or ``{"density": 40.0, ...}``
                           (families that change the body or medium; absent for the others)
``bmaml.algorithm``        RL^2 files: ``"rl2"``; absent (or ``"maml"``): a MAML file
``bmaml.episodes_per_trial``  RL^2 files: integer >= 1, the episodes of a training trial
                           (the state was carried across them); absent from MAML files
``bmaml.input_names``      RL^2 files: JSON list of the graph's input names, in order, e.g.
                           ``["obs", "prev_action", "prev_reward", "episode_start", "h_in"]``
                           (must be those the contract implies)
=========================  ===========================================================

Optional keys are absent from files exported before they existed; such files load with the
field ``None``. Files without ``bmaml.algorithm`` (every file before RL^2) are MAML files, and
MAML files are written without the RL^2 keys (:data:`RL2_KEYS`). Keys not listed here are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from bmaml_robot_deploy.checks import check_choice, check_float, check_int

#: Version of the file contract of MAML files (every file before RL^2).
FORMAT_VERSION = "1"
#: Version of RL^2 files: the contract with ``bmaml.algorithm`` and RL^2's inputs.
RL2_FORMAT_VERSION = "2"
#: Every version this runtime reads.
FORMAT_VERSIONS: tuple[str, ...] = (FORMAT_VERSION, RL2_FORMAT_VERSION)

#: Bounds of ``control_dt`` in seconds: a control rate above 1 MHz or below one step an hour is
#: not a robot controller but a corrupt file (1e-320 or 1e11 would pass a mere ``> 0``).
MIN_CONTROL_DT = 1e-6
MAX_CONTROL_DT = 3600.0

#: Prefix of every metadata key.
PREFIX = "bmaml."

KEY_FORMAT_VERSION = "bmaml.format_version"
KEY_ROBOT = "bmaml.robot"
KEY_FAMILY = "bmaml.family"
KEY_TASK = "bmaml.task"
KEY_OBS_DIM = "bmaml.obs_dim"
KEY_ACT_DIM = "bmaml.act_dim"
KEY_ACTION_LOW = "bmaml.action_low"
KEY_ACTION_HIGH = "bmaml.action_high"
KEY_CONTROL_DT = "bmaml.control_dt"
KEY_POLICY_KIND = "bmaml.policy_kind"
KEY_RECURRENCE = "bmaml.recurrence"
KEY_HIDDEN_SHAPE = "bmaml.hidden_shape"
KEY_ADAPT_STEPS = "bmaml.adapt_steps"
KEY_PACKAGE_VERSION = "bmaml.package_version"
KEY_SOURCE_RUN = "bmaml.source_run"
KEY_ACTION_SCALE = "bmaml.action_scale"
KEY_HORIZON = "bmaml.horizon"
KEY_GIT_COMMIT = "bmaml.git_commit"
KEY_PROVENANCE = "bmaml.provenance"
KEY_TRAIN_CONFIG = "bmaml.train_config"
KEY_PHYSICS = "bmaml.physics"
KEY_ALGORITHM = "bmaml.algorithm"
KEY_EPISODES_PER_TRIAL = "bmaml.episodes_per_trial"
KEY_INPUT_NAMES = "bmaml.input_names"

#: Every key a file must have, in the order they are written.
REQUIRED_KEYS: tuple[str, ...] = (
    KEY_FORMAT_VERSION,
    KEY_ROBOT,
    KEY_FAMILY,
    KEY_TASK,
    KEY_OBS_DIM,
    KEY_ACT_DIM,
    KEY_ACTION_LOW,
    KEY_ACTION_HIGH,
    KEY_CONTROL_DT,
    KEY_POLICY_KIND,
    KEY_RECURRENCE,
    KEY_HIDDEN_SHAPE,
    KEY_ADAPT_STEPS,
    KEY_PACKAGE_VERSION,
    KEY_SOURCE_RUN,
)

#: Keys a file may have (older files lack them), in the order they are written.
OPTIONAL_KEYS: tuple[str, ...] = (
    KEY_ACTION_SCALE, KEY_HORIZON, KEY_GIT_COMMIT, KEY_PROVENANCE, KEY_TRAIN_CONFIG, KEY_PHYSICS,
)

#: Keys of RL^2 files (written after the others; MAML files are written without them).
RL2_KEYS: tuple[str, ...] = (KEY_ALGORITHM, KEY_EPISODES_PER_TRIAL, KEY_INPUT_NAMES)

#: Graph input and output names.
OBS_INPUT = "obs"
H_INPUT = "h_in"
C_INPUT = "c_in"
ACTION_OUTPUT = "action"
H_OUTPUT = "h_out"
C_OUTPUT = "c_out"
#: RL^2's inputs between ``obs`` and the state (module docstring).
PREV_ACTION_INPUT = "prev_action"
PREV_REWARD_INPUT = "prev_reward"
EPISODE_START_INPUT = "episode_start"
RL2_INPUTS: tuple[str, ...] = (PREV_ACTION_INPUT, PREV_REWARD_INPUT, EPISODE_START_INPUT)
#: What each RL^2 input holds (the graph's input doc strings say the same).
RL2_INPUT_DOCS: dict[str, str] = {
    PREV_ACTION_INPUT: "[batch, act_dim] the previous action, normalised: clip((a - (low + high) / 2) / "
    "((high - low) / 2), -1, 1) with the file's action bounds; zeros at a trial's first step",
    PREV_REWARD_INPUT: "[batch, 1] the reward of the previous step (the one that led to obs); 0 at a trial's "
    "first step",
    EPISODE_START_INPUT: "[batch, 1] 1.0 when obs is the first of an episode (the trial's first included), else 0.0",
}

#: ``bmaml.algorithm``: MAML (adapted by gradient steps before export) or RL^2 (adapts in its
#: activations while it runs).
ALGORITHMS: tuple[str, ...] = ("maml", "rl2")

POLICY_KINDS: tuple[str, ...] = ("mlp", "rnn", "gru", "lstm")
RECURRENT_KINDS: tuple[str, ...] = ("rnn", "gru", "lstm")
RECURRENCE_MODES: tuple[str, ...] = ("frozen", "outer", "all")
NO_RECURRENCE = "none"


@dataclasses.dataclass(frozen=True)
class PolicyMetadata:
    """What an exported policy file says about itself (see the module docstring for the keys).

    Construct it directly (export) or with :meth:`from_onnx` / :meth:`from_props` (deploy); the
    constructor checks every field and raises ``ValueError`` naming the field.
    """

    robot: str
    """Robot the policy drives, e.g. ``"HalfCheetah"``."""
    family: str
    """Task family, e.g. ``"HalfCheetahDir"``."""
    task: dict[str, Any]
    """The task the policy was adapted to, e.g. ``{"direction": -1.0}`` (JSON-serialisable)."""
    obs_dim: int
    """Observation size."""
    act_dim: int
    """Action size."""
    action_low: tuple[float, ...]
    """Lower action bounds, ``[act_dim]``."""
    action_high: tuple[float, ...]
    """Upper action bounds, ``[act_dim]``."""
    control_dt: float
    """Seconds per control step (the loop runs at ``1 / control_dt`` Hz), in
    [:data:`MIN_CONTROL_DT`, :data:`MAX_CONTROL_DT`]."""
    policy_kind: str
    """``mlp``, ``rnn``, ``gru`` or ``lstm``."""
    recurrence: str
    """``frozen``, ``outer`` or ``all`` for recurrent kinds, ``none`` for ``mlp``."""
    hidden_shape: tuple[int, ...]
    """``(layers, hidden)`` for recurrent kinds, ``()`` for ``mlp``."""
    adapt_steps: int
    """Adaptation steps taken before export (0: the meta-policy)."""
    package_version: str
    """Version of bmaml-robot that exported the file."""
    source_run: str
    """The name of the run directory the policy came from (e.g. ``"halfcheetah-dir-seed0"``)."""
    format_version: str = FORMAT_VERSION
    """Version of the file contract; this runtime reads ``"1"``."""
    action_scale: float | None = None
    """Half-width of the policy's normalised action space, mapped onto the bounds inside the graph
    (None: a file exported before the action convention, whose policy acted in the robot's units)."""
    horizon: int | None = None
    """Episode length (steps) the policy was trained on; the simulated robot's default time limit
    (None: an older file)."""
    git_commit: str | None = None
    """Commit of the bmaml-robot checkout that exported the file (None: exported from an installed
    package, or an older file)."""
    provenance: dict[str, Any] | None = None
    """Where the file came from (``bmaml_robot.provenance.provenance()``): package version, git
    commit and dirty flag, library versions (None: an older file)."""
    train_config: dict[str, Any] | None = None
    """The run's resolved training config (None: an older file)."""
    physics: dict[str, float] | None = None
    """The task's physics, absolute model values by column label (``bmaml_robot``'s
    ``PhysicsLayout.labels``), for families that change the body or medium; None otherwise."""
    algorithm: str = "maml"
    """``maml`` (every file before RL^2) or ``rl2`` (a recurrent policy fed its previous action,
    previous reward and an episode-start flag; ``format_version`` ``"2"``)."""
    episodes_per_trial: int | None = None
    """RL^2: the episodes of a training trial, the state carried across them; None for MAML."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("robot", "family", "policy_kind", "recurrence", "package_version", "source_run", "format_version"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: expected a string, got {getattr(self, name)!r}")
        for name in ("robot", "family"):
            if not getattr(self, name):
                raise ValueError(f"{name}: expected a non-empty string, got ''")
        if self.format_version not in FORMAT_VERSIONS:
            raise ValueError(
                f"format_version: this runtime reads formats {list(FORMAT_VERSIONS)}, got {self.format_version!r} "
                "(export the policy with a matching bmaml-robot, or upgrade bmaml-robot-deploy)"
            )
        if not isinstance(self.task, Mapping) or not all(isinstance(k, str) for k in self.task):
            raise ValueError(f"task: expected a dict with string keys, got {self.task!r}")
        try:
            task = json.loads(json.dumps(dict(self.task), allow_nan=False))
        except (TypeError, ValueError) as error:
            raise ValueError(f"task: expected JSON-serialisable finite values, got {self.task!r} ({error})") from None
        set_(self, "task", task)
        for name in ("obs_dim", "act_dim"):
            set_(self, name, check_int(getattr(self, name), name, minimum=1))
        set_(self, "adapt_steps", check_int(self.adapt_steps, "adapt_steps", minimum=0))
        for name in ("action_low", "action_high"):
            set_(self, name, _floats(getattr(self, name), name, self.act_dim))
        bad = [i for i, (lo, hi) in enumerate(zip(self.action_low, self.action_high)) if not lo <= hi]
        if bad:
            raise ValueError(f"action_low/action_high: expected low <= high everywhere, not at indices {bad}")
        check_float(self.control_dt, "control_dt")  # a finite number first, then in range
        set_(self, "control_dt", check_float(self.control_dt, "control_dt", low=MIN_CONTROL_DT, high=MAX_CONTROL_DT,
                                             what="seconds"))
        if self.action_scale is not None:
            check_float(self.action_scale, "action_scale")
            scale = check_float(self.action_scale, "action_scale", low=0, low_open=True, what="a number")
            set_(self, "action_scale", scale)
        if self.horizon is not None:
            set_(self, "horizon", check_int(self.horizon, "horizon", minimum=1))
        if self.git_commit is not None:
            commit = self.git_commit
            if not isinstance(commit, str) or not 7 <= len(commit) <= 64 or any(c not in _HEX for c in commit):
                raise ValueError(f"git_commit: expected a commit hash (7 to 64 hex digits), got {commit!r}")
        for name in ("provenance", "train_config"):
            if getattr(self, name) is not None:
                set_(self, name, _json_object(getattr(self, name), name))
        if self.physics is not None:
            physics = _json_object(self.physics, "physics")
            not_numbers = {k: v for k, v in physics.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
            if not_numbers:
                raise ValueError(f"physics: expected numbers by label, got {not_numbers!r}")
            set_(self, "physics", {k: float(v) for k, v in physics.items()})
        check_choice(self.policy_kind, "policy_kind", POLICY_KINDS)
        if not isinstance(self.hidden_shape, (list, tuple)):
            raise ValueError(f"hidden_shape: expected a list [layers, hidden] or [], got {self.hidden_shape!r}")
        if self.policy_kind == "mlp":
            if self.recurrence != NO_RECURRENCE:
                raise ValueError(f"recurrence: an mlp policy has recurrence 'none', got {self.recurrence!r}")
            if len(self.hidden_shape) != 0:
                raise ValueError(f"hidden_shape: an mlp policy has hidden_shape [], got {list(self.hidden_shape)!r}")
            set_(self, "hidden_shape", ())
        else:
            if self.recurrence not in RECURRENCE_MODES:
                raise ValueError(
                    f"recurrence: a {self.policy_kind} policy has one of {list(RECURRENCE_MODES)}, "
                    f"got {self.recurrence!r}"
                )
            if len(self.hidden_shape) != 2:
                raise ValueError(
                    f"hidden_shape: a {self.policy_kind} policy has [layers, hidden], got {list(self.hidden_shape)!r}"
                )
            set_(self, "hidden_shape", tuple(check_int(v, "hidden_shape", minimum=1) for v in self.hidden_shape))
        check_choice(self.algorithm, "algorithm", ALGORITHMS)
        if self.algorithm == "rl2":
            if self.format_version != RL2_FORMAT_VERSION:
                raise ValueError(
                    f"format_version: an RL^2 file is format {RL2_FORMAT_VERSION!r} (a runtime reading only format "
                    f"{FORMAT_VERSION!r} would run it without its inputs), got {self.format_version!r}"
                )
            if self.policy_kind not in RECURRENT_KINDS:
                raise ValueError(
                    f"policy_kind: an RL^2 policy is recurrent, one of {list(RECURRENT_KINDS)}, "
                    f"got {self.policy_kind!r}"
                )
            if self.episodes_per_trial is None:
                raise ValueError("episodes_per_trial: an RL^2 file says how many episodes a trial has, got None")
            set_(self, "episodes_per_trial", check_int(self.episodes_per_trial, "episodes_per_trial", minimum=1))
            if self.adapt_steps != 0:
                raise ValueError(
                    f"adapt_steps: an RL^2 policy adapts in its activations, not by gradient steps (0), "
                    f"got {self.adapt_steps}"
                )
        elif self.format_version == RL2_FORMAT_VERSION:
            raise ValueError(
                f"algorithm: a format {RL2_FORMAT_VERSION!r} file is an RL^2 file (algorithm 'rl2'), got "
                f"{self.algorithm!r}"
            )
        elif self.episodes_per_trial is not None:
            raise ValueError(
                f"episodes_per_trial: only RL^2 files have trials (algorithm 'rl2'), got {self.episodes_per_trial!r} "
                "for a MAML file"
            )

    # -- derived -------------------------------------------------------------------------------

    @property
    def recurrent(self) -> bool:
        """True for rnn, gru and lstm policies (the graph carries a hidden state)."""
        return self.policy_kind in RECURRENT_KINDS

    @property
    def state_names(self) -> tuple[tuple[str, str], ...]:
        """The recurrent state's (input, output) name pairs: ``()`` for mlp, ``(("h_in", "h_out"),)``
        for rnn/gru, plus ``("c_in", "c_out")`` for lstm."""
        if not self.recurrent:
            return ()
        if self.policy_kind == "lstm":
            return ((H_INPUT, H_OUTPUT), (C_INPUT, C_OUTPUT))
        return ((H_INPUT, H_OUTPUT),)

    @property
    def rl2(self) -> bool:
        """True for an RL^2 file (``algorithm == "rl2"``): ``act`` needs the reward."""
        return self.algorithm == "rl2"

    @property
    def input_names(self) -> tuple[str, ...]:
        """The graph's input names, in order: ``obs``, RL^2's inputs (:data:`RL2_INPUTS`, RL^2
        files only), then the state inputs."""
        return (OBS_INPUT,) + (RL2_INPUTS if self.rl2 else ()) + tuple(i for i, _ in self.state_names)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The graph's output names, in order: ``action`` then the state outputs."""
        return (ACTION_OUTPUT,) + tuple(o for _, o in self.state_names)

    @property
    def control_rate_hz(self) -> float:
        """``1 / control_dt``."""
        return 1.0 / self.control_dt

    # -- serialisation -------------------------------------------------------------------------

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` to write, every value a string, keys in :data:`REQUIRED_KEYS`
        order, then the optional ones that are set (``onnx.helper.set_model_props(model, meta.to_props())``)."""
        optional = {
            KEY_ACTION_SCALE: None if self.action_scale is None else repr(self.action_scale),
            KEY_HORIZON: None if self.horizon is None else str(self.horizon),
            KEY_GIT_COMMIT: self.git_commit,
            KEY_PROVENANCE: None if self.provenance is None else json.dumps(self.provenance, sort_keys=True),
            KEY_TRAIN_CONFIG: None if self.train_config is None else json.dumps(self.train_config, sort_keys=True),
            KEY_PHYSICS: None if self.physics is None else json.dumps(self.physics),  # the model's order
        }
        if self.rl2:  # MAML files stay as they were: without these keys
            optional[KEY_ALGORITHM] = self.algorithm
            optional[KEY_EPISODES_PER_TRIAL] = str(self.episodes_per_trial)
            optional[KEY_INPUT_NAMES] = json.dumps(list(self.input_names))
        return {
            KEY_FORMAT_VERSION: self.format_version,
            KEY_ROBOT: self.robot,
            KEY_FAMILY: self.family,
            KEY_TASK: json.dumps(self.task, sort_keys=True),
            KEY_OBS_DIM: str(self.obs_dim),
            KEY_ACT_DIM: str(self.act_dim),
            KEY_ACTION_LOW: json.dumps(list(self.action_low)),
            KEY_ACTION_HIGH: json.dumps(list(self.action_high)),
            KEY_CONTROL_DT: repr(self.control_dt),
            KEY_POLICY_KIND: self.policy_kind,
            KEY_RECURRENCE: self.recurrence,
            KEY_HIDDEN_SHAPE: json.dumps(list(self.hidden_shape)),
            KEY_ADAPT_STEPS: str(self.adapt_steps),
            KEY_PACKAGE_VERSION: self.package_version,
            KEY_SOURCE_RUN: self.source_run,
            **{key: value for key, value in optional.items() if value is not None},
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str = "metadata") -> PolicyMetadata:
        """Parse ``metadata_props`` (a str -> str mapping; other keys are ignored).

        ``source`` (e.g. the file name) starts every error message. Raises ``ValueError`` naming
        all missing keys at once, or the key whose value is malformed.
        """
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ValueError(f"{source}: not a bmaml policy file or an incomplete one: missing metadata keys {missing}")
        if props[KEY_FORMAT_VERSION] not in FORMAT_VERSIONS:
            raise ValueError(
                f"{source}: metadata {KEY_FORMAT_VERSION} is {props[KEY_FORMAT_VERSION]!r}; this runtime reads "
                f"formats {list(FORMAT_VERSIONS)} (upgrade bmaml-robot-deploy or re-export the policy)"
            )

        def parse(key: str, kind: str) -> Any:
            text = props[key]
            if not isinstance(text, str):
                raise ValueError(f"{source}: metadata {key}: expected a string value, got {text!r}")
            try:
                if kind == "int":
                    return int(text)
                if kind == "float":
                    return float(text)
                if kind == "json":
                    return json.loads(text)
                return text
            except ValueError:
                raise ValueError(f"{source}: metadata {key}: expected {kind}, got {text!r}") from None

        fields = {
            "format_version": parse(KEY_FORMAT_VERSION, "str"),
            "robot": parse(KEY_ROBOT, "str"),
            "family": parse(KEY_FAMILY, "str"),
            "task": parse(KEY_TASK, "json"),
            "obs_dim": parse(KEY_OBS_DIM, "int"),
            "act_dim": parse(KEY_ACT_DIM, "int"),
            "action_low": parse(KEY_ACTION_LOW, "json"),
            "action_high": parse(KEY_ACTION_HIGH, "json"),
            "control_dt": parse(KEY_CONTROL_DT, "float"),
            "policy_kind": parse(KEY_POLICY_KIND, "str"),
            "recurrence": parse(KEY_RECURRENCE, "str"),
            "hidden_shape": parse(KEY_HIDDEN_SHAPE, "json"),
            "adapt_steps": parse(KEY_ADAPT_STEPS, "int"),
            "package_version": parse(KEY_PACKAGE_VERSION, "str"),
            "source_run": parse(KEY_SOURCE_RUN, "str"),
        }
        for key, kind in (
            (KEY_ACTION_SCALE, "float"),
            (KEY_HORIZON, "int"),
            (KEY_GIT_COMMIT, "str"),
            (KEY_PROVENANCE, "json"),
            (KEY_TRAIN_CONFIG, "json"),
            (KEY_PHYSICS, "json"),
            (KEY_ALGORITHM, "str"),
            (KEY_EPISODES_PER_TRIAL, "int"),
        ):
            if key in props:
                fields[key[len(PREFIX) :]] = parse(key, kind)
        try:
            metadata = cls(**fields)
        except ValueError as error:
            field = str(error).split(":", 1)[0]
            key = PREFIX + field if PREFIX + field in (*REQUIRED_KEYS, *OPTIONAL_KEYS, *RL2_KEYS) else field
            raise ValueError(f"{source}: metadata {key}{str(error)[len(field) :]}") from None
        if KEY_INPUT_NAMES in props:  # what the file says its inputs are must be what the contract says
            names = parse(KEY_INPUT_NAMES, "json")
            if names != list(metadata.input_names):
                raise ValueError(
                    f"{source}: metadata {KEY_INPUT_NAMES}: expected {list(metadata.input_names)} (a "
                    f"{metadata.algorithm} {metadata.policy_kind} policy), got {names!r}"
                )
        return metadata

    @classmethod
    def from_onnx(cls, model_or_path: Any) -> PolicyMetadata:
        """Read the metadata of an exported policy.

        ``model_or_path``: a path (str or ``os.PathLike``), an ``onnxruntime.InferenceSession``, or
        an ``onnx.ModelProto`` (anything with ``metadata_props``). Raises ``ValueError`` naming the
        file and the problem: missing file, not an ONNX model, missing or malformed keys.
        """
        if isinstance(model_or_path, (str, os.PathLike)):
            path = os.fspath(model_or_path)
            return cls.from_props(read_props(path), source=path)
        if hasattr(model_or_path, "get_modelmeta"):
            props = dict(model_or_path.get_modelmeta().custom_metadata_map)
            return cls.from_props(props, source="session")
        if hasattr(model_or_path, "metadata_props"):
            props = {entry.key: entry.value for entry in model_or_path.metadata_props}
            return cls.from_props(props, source="model")
        raise TypeError(
            "model_or_path: expected a path, an onnxruntime.InferenceSession or an onnx.ModelProto, "
            f"got {type(model_or_path).__name__}"
        )


def read_props(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path`` (read with onnxruntime).

    Raises ``ValueError`` naming the file when it is missing or not a readable ONNX model.
    """
    session = load_session(path)
    return dict(session.get_modelmeta().custom_metadata_map)


def load_session(path: str | os.PathLike[str], options: Any = None) -> Any:
    """An ``onnxruntime.InferenceSession`` (CPU) for ``path``; ``ValueError`` naming the file when
    it does not exist, is not a file, or onnxruntime cannot load it (corrupt, not ONNX)."""
    import onnxruntime

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such policy file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: expected an ONNX policy file, got a directory or special file")
    try:
        return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a loadable ONNX model ({first_line})") from None


_HEX = frozenset("0123456789abcdefABCDEF")


def _json_object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{name}: expected a JSON object (a dict with string keys), got {value!r}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected JSON-serialisable finite values, got {value!r} ({error})") from None


def _floats(values: Any, name: str, length: int) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name}: expected a list of {length} finite numbers, got {values!r}")
    if len(values) != length:
        raise ValueError(f"{name}: expected {length} numbers (act_dim), got {len(values)}")
    return tuple(check_float(v, name) for v in values)
