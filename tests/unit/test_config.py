"""TrainConfig: YAML loading, validation, overrides, the resolved config a run writes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bmaml_robot.config import (
    FIELDS,
    TrainConfig,
    dump_config,
    from_dict,
    load_config,
    parse_override,
    shipped_configs,
)
from bmaml_robot.envs.families import FAMILIES

FAMILY_OF_CONFIG = {  # every shipped benchmark family has a config
    "halfcheetah-dir": "HalfCheetahDir", "halfcheetah-vel": "HalfCheetahVel",
    "ant-dir": "AntDir", "ant-vel": "AntVel", "ant-goal": "AntGoal",
    "swimmer-dir": "SwimmerDir", "swimmer-vel": "SwimmerVel",
    "2d-navigation": "Navigation2D", "demo": "Navigation2D",
    "hopper-params": "HopperParams", "walker2d-params": "Walker2dParams", "halfcheetah-crippled": "HalfCheetahCrippled",
    "ant-crippled": "AntCrippled", "halfcheetah-mass": "HalfCheetahMass", "swimmer-fluid": "SwimmerFluid",
}


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- shipped configs
def test_every_family_has_a_shipped_config() -> None:
    assert set(shipped_configs()) >= set(FAMILY_OF_CONFIG)
    assert set(FAMILIES) <= {load_config(name).family for name in shipped_configs()}


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_config_loads_and_round_trips(name: str, tmp_path: Path) -> None:
    config = load_config(name)
    assert isinstance(config, TrainConfig)
    if name in FAMILY_OF_CONFIG:
        assert config.family == FAMILY_OF_CONFIG[name]
    path = tmp_path / "config.yaml"
    dump_config(config, path)
    assert load_config(str(path)) == config


def test_benchmark_configs_use_the_maml_settings() -> None:
    for name in ("halfcheetah-dir", "halfcheetah-vel", "ant-dir", "ant-vel", "ant-goal"):
        c = load_config(name)
        assert (c.num_tasks, c.episodes_per_task, c.horizon, c.fast_lr, c.first_order) == (40, 20, 100, 0.1, False), name
        assert (c.max_kl, c.gamma, c.gae_lambda, c.adapt_steps) == (1e-2, 0.99, 1.0, 1), name
    defaults = TrainConfig()
    assert (defaults.policy, defaults.hidden_sizes, defaults.init_log_std) == ("mlp", (64, 64), 0.0)


def test_load_by_path_and_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "family: AntGoal\nnum_tasks: 3\n")
    assert load_config(str(path)) == TrainConfig(family="AntGoal", num_tasks=3)
    assert load_config(path) == TrainConfig(family="AntGoal", num_tasks=3)  # a Path works too
    assert load_config("ant-goal").family == "AntGoal"
    assert load_config(str(write(tmp_path, "", "empty.yaml"))) == TrainConfig()


@pytest.mark.parametrize("name", ["no-such-config", "halfcheetah"])
def test_unknown_config_name_lists_the_shipped_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"config: expected a YAML file or one of \[.*'halfcheetah-dir'.*\], got") as info:
        load_config(name)
    assert repr(name) in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config: no such file"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match=r"not valid YAML"):
        load_config(str(write(tmp_path, "family: [unclosed\n")))
    with pytest.raises(ValueError, match=r"expected a mapping of config keys, got list"):
        load_config(str(write(tmp_path, "- task\n- policy\n")))


# ----------------------------------------------------------------------------- unknown keys
def test_unknown_yaml_key_is_an_error_listing_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "family: AntDir\nmeta_batch_size: 40\nnum_task: 3\n")
    with pytest.raises(ValueError) as info:
        load_config(str(path))
    message = str(info.value)
    assert str(path) in message
    assert "unknown keys ['meta_batch_size', 'num_task']" in message
    for key in FIELDS:
        assert repr(key) in message, key


def test_unknown_override_key_is_an_error_listing_valid_keys() -> None:
    with pytest.raises(ValueError) as info:
        parse_override("num_task=3")
    message = str(info.value)
    assert "--set: unknown key 'num_task'" in message
    assert all(repr(key) in message for key in FIELDS)


@pytest.mark.parametrize("text", ["num_tasks", "=3", ""])
def test_override_without_key_or_value_separator(text: str) -> None:
    with pytest.raises(ValueError, match=r"--set: expected KEY=VALUE"):
        parse_override(text)


def test_from_dict_rejects_unknown_keys_and_non_mappings() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['lr'\]; valid keys are \["):
        from_dict({"lr": 0.1})
    with pytest.raises(ValueError, match=r"expected a mapping"):
        from_dict(["task"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- bad values
BAD_VALUES = [
    # key, YAML value, words the message must hold (expected ... got ...)
    ("num_tasks", "-1", r"num_tasks: expected a value >= 1, got -1"),
    ("num_tasks", "0", r"num_tasks: expected a value >= 1, got 0"),
    ("episodes_per_task", "2.5", r"episodes_per_task: expected an integer, got 2.5"),
    ("horizon", "abc", r"horizon: expected an integer, got 'abc'"),
    ("horizon", "true", r"horizon: expected an integer, got True"),
    ("num_iterations", "[1, 2]", r"num_iterations: expected an integer, got \[1, 2\]"),
    ("num_threads", "0", r"num_threads: expected a value >= 1, got 0"),
    ("seed", "-3", r"seed: expected an integer in \[0, 2\*\*64\), got -3"),
    ("fast_lr", "-0.1", r"fast_lr: expected a value >= 0.0, got -0.1"),
    ("fast_lr", "fast", r"fast_lr: expected a number, got 'fast'"),
    ("max_kl", "0", r"max_kl: expected a value > 0.0, got 0.0"),
    ("gamma", "1.5", r"gamma: expected a value in \[0, 1\], got 1.5"),
    ("gae_lambda", "-0.5", r"gae_lambda: expected a value in \[0, 1\], got -0.5"),
    ("ls_backtrack", "1.0", r"ls_backtrack: expected a value in \(0, 1\), got 1.0"),
    ("cg_damping", "-1e-3", r"cg_damping: expected a value >= 0.0, got -0.001"),
    ("hvp_subsample", "0", r"hvp_subsample: expected a value in \(0, 1\], got 0.0"),
    ("hvp_subsample", "1.5", r"hvp_subsample: expected a value in \(0, 1\], got 1.5"),
    ("first_order", "maybe", r"first_order: expected true or false, got 'maybe'"),
    ("first_order", "1", r"first_order: expected true or false, got 1"),
    ("policy", "transformer", r"policy: expected one of \['mlp', 'rnn', 'gru', 'lstm'\], got 'transformer'"),
    ("recurrence", "sometimes", r"recurrence: expected one of \['frozen', 'outer', 'all'\], got 'sometimes'"),
    ("family", "HalfCheetahJump", r"family: expected one of \[.*'HalfCheetahDir'.*\], got 'HalfCheetahJump'"),
    ("family", "3", r"family: expected a string, got 3"),
    ("hidden_sizes", "[64, 0]", r"hidden_sizes: expected a non-empty list of integers >= 1, got \[64, 0\]"),
    ("hidden_sizes", "[]", r"hidden_sizes: expected a non-empty list of integers >= 1, got \[\]"),
    ("hidden_sizes", "[64, 1.5]", r"hidden_sizes: expected a list of integers, got \[64, 1.5\]"),
    ("hidden_size", "-5", r"hidden_size: expected a value >= 1, got -5"),
    ("checkpoint_every", "0", r"checkpoint_every: expected a value >= 1, got 0"),
    ("fast_lr", ".nan", r"fast_lr: expected a finite number, got nan"),
    ("sampler", "cluster", r"sampler: expected one of \['local', 'ray'\], got 'cluster'"),
    ("workers", "0", r"workers: expected a value >= 1, got 0"),
    ("threads_per_worker", "-1", r"threads_per_worker: expected a value >= 1, got -1"),
    ("ray_address", "6379", r"ray_address: expected a string, got 6379"),
]


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_bad_yaml_value_names_key_expected_and_got(key: str, value: str, message: str, tmp_path: Path) -> None:
    path = write(tmp_path, f"family: Navigation2D\n{key}: {value}\n")
    with pytest.raises(ValueError, match=message):
        load_config(str(path))


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_bad_override_value_names_key_expected_and_got(key: str, value: str, message: str) -> None:
    # --set KEY=VALUE goes through the same checks (coercion in parse_override, ranges in replace).
    with pytest.raises(ValueError, match=message):
        key_, coerced = parse_override(f"{key}={value}")
        TrainConfig(family="Navigation2D").replace(**{key_: coerced})


def test_constructor_validates_too() -> None:
    with pytest.raises(ValueError, match=r"num_tasks: expected a value >= 1, got 0"):
        TrainConfig(num_tasks=0)
    with pytest.raises(ValueError, match=r"policy: expected one of"):
        TrainConfig(policy="MLP")


def test_ray_sampler_needs_a_task_per_worker() -> None:
    with pytest.raises(ValueError, match=r"workers: expected at most num_tasks=3 Ray workers .*, got 4"):
        TrainConfig(num_tasks=3, sampler="ray", workers=4)
    assert TrainConfig(num_tasks=3, sampler="ray", workers=3).workers == 3
    assert TrainConfig(num_tasks=3, workers=4).sampler == "local"  # only the Ray sampler uses workers


def test_config_is_frozen() -> None:
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_tasks = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------- coercion
@pytest.mark.parametrize(
    "text, key, value",
    [
        ("num_tasks=7", "num_tasks", 7),
        ("num-tasks=7", "num_tasks", 7),  # CLI spelling of the key
        ("fast_lr=1", "fast_lr", 1.0),  # an int for a float
        ("fast_lr=1e-3", "fast_lr", 1e-3),  # YAML 1.1 reads this as a string; still a number
        ("max_kl=0.02", "max_kl", 0.02),
        ("first_order=true", "first_order", True),
        ("first_order=False", "first_order", False),
        ("hidden_sizes=[32, 16]", "hidden_sizes", (32, 16)),
        ("hidden_sizes=32,16", "hidden_sizes", (32, 16)),
        ("policy=gru", "policy", "gru"),
        ("family=AntVel", "family", "AntVel"),
        (" seed = 12", "seed", 12),
        ("sampler=ray", "sampler", "ray"),
        ("ray-address=10.0.0.1:6379", "ray_address", "10.0.0.1:6379"),
        ("ray_address=", "ray_address", ""),
        ("threads-per-worker=3", "threads_per_worker", 3),
    ],
)
def test_override_coerces_types(text: str, key: str, value: object) -> None:
    k, v = parse_override(text)
    assert (k, v) == (key, value)
    assert type(v) is type(value)
    config = TrainConfig().replace(**{k: v})
    assert getattr(config, key) == value and type(getattr(config, key)) is type(value)


def test_yaml_values_are_coerced_to_field_types(tmp_path: Path) -> None:
    path = write(tmp_path, "fast_lr: 1\nmax_kl: 1e-3\nhidden_sizes: [16]\nnum_tasks: '5'\nfirst_order: true\n")
    config = load_config(str(path))
    assert config.fast_lr == 1.0 and type(config.fast_lr) is float
    assert config.max_kl == 1e-3 and type(config.max_kl) is float
    assert config.hidden_sizes == (16,) and isinstance(config.hidden_sizes, tuple)
    assert config.num_tasks == 5 and type(config.num_tasks) is int
    assert config.first_order is True


def test_replace_returns_a_new_validated_config() -> None:
    base = TrainConfig(family="Navigation2D")
    new = base.replace(num_tasks=3, policy="lstm")
    assert (new.num_tasks, new.policy, new.family) == (3, "lstm", "Navigation2D")
    assert base.num_tasks == 40
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\]"):
        base.replace(bogus=1)


# ----------------------------------------------------------------------------- the resolved config
def test_dump_config_is_commented_yaml_that_reloads_identically(tmp_path: Path) -> None:
    config = TrainConfig(family="AntGoal", policy="lstm", recurrence="outer", hidden_sizes=(8, 4), fast_lr=0.05,
                         max_kl=1e-3, cg_damping=1e-5, first_order=True, seed=2**40)
    path = tmp_path / "config.yaml"
    dump_config(config, path)
    text = path.read_text()
    assert load_config(str(path)) == config
    # Every key is present, with its docstring as a comment.
    keys = [re.match(r"(\w+):", line).group(1) for line in text.splitlines()]
    assert keys == list(FIELDS)
    assert "# Policy kind" in text


# ----------------------------------------------------------------------------- values that only fail later
@pytest.mark.parametrize("key", ["init_log_std", "fast_lr", "max_kl", "cg_damping"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_rejected(key: str, value: str, tmp_path: Path) -> None:
    # A NaN/inf step size, trust region or initial std passes a ">= 0" check (or none) and only
    # shows up as NaN metrics after the run started.
    path = write(tmp_path, f"{key}: {value}\n")
    if key != "init_log_std" and value == "-.inf":
        pytest.skip("already rejected by the range check")
    with pytest.raises(ValueError, match=rf"{key}: expected .*, got -?(nan|inf)"):
        load_config(str(path))


def test_seed_beyond_64_bits_is_rejected_up_front() -> None:
    # The env and the policy initialisation take seeds in [0, 2**64); a larger one passed the
    # config check and failed inside train() ("Overflow when unpacking long long"), after the run
    # directory had been created.
    TrainConfig(seed=2**64 - 1)
    with pytest.raises(ValueError, match=r"seed: expected .*, got 18446744073709551616"):
        TrainConfig(seed=2**64)


def test_a_single_hidden_size_is_one_layer():
    assert parse_override("hidden_sizes=64") == ("hidden_sizes", (64,))


def test_old_key_names_still_load() -> None:
    """Configs, runs and --set overrides written with the old names (num_steps, num_batches,
    eval_steps) load under the new ones; giving both names is an error naming them."""
    config = from_dict({"num_steps": 2, "num_batches": 7, "eval_steps": 3})
    assert (config.adapt_steps, config.num_iterations, config.eval_adapt_steps) == (2, 7, 3)
    assert "num_batches" not in config.to_dict() and config.to_dict()["num_iterations"] == 7
    assert parse_override("num_batches=5") == ("num_iterations", 5)
    with pytest.raises(ValueError, match=r"'num_steps' is the old name of 'adapt_steps'; give one of them"):
        from_dict({"num_steps": 2, "adapt_steps": 2})
