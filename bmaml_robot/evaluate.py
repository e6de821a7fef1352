"""Held-out evaluation of a meta-trained run: return after 0, 1, ..., K adaptation steps.

    bmaml-eval runs/hc-gru --adapt-steps 3 --tasks 40 --episodes 20
    from bmaml_robot.evaluate import evaluate
    result = evaluate("runs/hc-gru", adapt_steps=3)
    result.summary[1]["mean"], result.summary[1]["gain_mean"]

What it does, for one run directory:

1. Loads the run's meta-policy (``run.RunDir.load``: the file furthest along, ``policy.pt`` or
   ``checkpoint.pt``). The config comes from the same file.
2. Draws ``num_tasks`` held-out tasks from the run's family with the evaluation stream of seeds
   (``seeds.evaluation_seed``), which training never uses.
3. Adapts to every task exactly as training does (``meta.adapt_to_tasks``, with the run's
   ``fast_lr``, gamma and GAE lambda unless ``fast_lr`` is given): the episodes sampled with the
   parameters after ``k`` inner steps give the return at step ``k``; step 0 is the meta-policy.
4. Writes ``eval.json`` (every task's mean return per step, and per step the mean over tasks with
   its 95% Student-t confidence interval and the gain over step 0 with a paired interval) and
   ``eval.png`` (return versus adaptation steps), atomically, and returns an ``EvalResult``.

Seeds: ``bmaml_robot.seeds`` (evaluation streams, disjoint from training's and independent of
the run's seed: every run evaluated with the same ``--seed`` sees the same tasks and noise).

The confidence intervals are over tasks (each task's value is the mean of its episodes): they
say how precisely this policy's mean return over the task distribution is known, not how much
another training seed would differ (that is ``bmaml-compare``'s question).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bmaml_robot.checkpoint import write_text_atomic
from bmaml_robot.config import TrainConfig
from bmaml_robot.envs.discrete import DISCRETE_FAMILIES
from bmaml_robot.envs.discrete_agents import BANDIT_AGENTS, TWO_STEP_AGENTS
from bmaml_robot.factory import build_learner
from bmaml_robot.meta import MetaLearner, adapt_to_tasks
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.policies import Policy
from bmaml_robot.rl2 import RL2Policy
from bmaml_robot.rl2.evaluation import bandit_comparison, evaluate_trials, two_step_stays
from bmaml_robot.run import LoadedRun, load_run
from bmaml_robot.seeds import MAX_SEED, evaluation_seed, held_out_tasks
from bmaml_robot.stats import mean_ci
from bmaml_robot.torch_threads import one_torch_thread
from bmaml_robot_deploy.checks import check_float, check_int

EVAL_JSON = "eval.json"
EVAL_PNG = "eval.png"
#: The two-step task's stay-probability plot (Wang et al. 2018, Fig. 4), next to eval.png.
STAY_PNG = "stay.png"
#: Where ``bmaml-eval --initial`` writes by default, inside the run directory.
INITIAL_DIR = "initial"


def adaptation_returns(learner: MetaLearner, sampler: MetaSampler, adapt_steps: int, eval_seed: int) -> np.ndarray:
    """Episode returns after 0..``adapt_steps`` inner steps on the tasks ``sampler`` holds, float64
    ``[adapt_steps + 1, K, B]``, with the noise of the evaluation streams of ``eval_seed``."""
    loop = adapt_to_tasks(learner, sampler, adapt_steps, lambda step: evaluation_seed(eval_seed, 1 + step))
    return loop.episode_returns()


class HeldOutEvaluation:
    """``bmaml-eval``'s held-out adaptation, repeated during training (``config.eval_every``):
    the same ``eval_tasks`` tasks and noise (evaluation seed 0) every time, so the values form a
    curve; ``__call__`` gives ``{"eval_return_step0": ..., ..., "eval_return_step{eval_adapt_steps}": ...}``
    (mean return per episode after k adaptation steps). Never touches training's random streams."""

    def __init__(self, config: TrainConfig, policy: Policy) -> None:
        self.policy = policy
        self.adapt_steps = config.eval_adapt_steps
        self.sampler = MetaSampler(config.family, config.eval_tasks, config.eval_episodes, config.horizon,
                                   num_threads=config.num_threads, action_scale=config.action_scale)
        try:
            self.sampler.set_tasks(held_out_tasks(config.family, config.eval_tasks, 0))
            learner = build_learner(config, policy)
            assert isinstance(learner, MetaLearner)  # a MAML config (RL^2: HeldOutTrials)
            self.learner = learner
        except BaseException:
            self.sampler.close()
            raise

    def __call__(self) -> dict[str, float]:
        returns = adaptation_returns(self.learner, self.sampler, self.adapt_steps, eval_seed=0)
        return {f"eval_return_step{k}": float(returns[k].mean()) for k in range(self.adapt_steps + 1)}

    def close(self) -> None:
        self.sampler.close()


class HeldOutTrials:
    """RL^2's counterpart of ``HeldOutEvaluation``: ``eval_tasks`` held-out tasks x ``eval_episodes``
    trials of the run's ``episodes_per_trial`` episodes, the same tasks and noise every time
    (``bmaml-eval``'s, evaluation seed 0); ``__call__`` gives ``{"eval_return_episode0": ..., ...}``
    (mean return of each episode of the trial). Never touches training's random streams."""

    def __init__(self, config: TrainConfig, policy: RL2Policy) -> None:
        self.config = config
        self.policy = policy
        self.tasks = held_out_tasks(config.family, config.eval_tasks, 0)

    def __call__(self) -> dict[str, float]:
        c = self.config
        trials = evaluate_trials(self.policy, c.family, self.tasks, episodes_per_trial=c.episodes_per_trial,
                                 horizon=c.horizon, trials_per_task=c.eval_episodes, seed=evaluation_seed(0, 1),
                                 num_threads=c.num_threads, action_scale=c.action_scale)
        means = trials.episode_returns.mean(axis=(1, 2))
        return {f"eval_return_episode{e}": float(value) for e, value in enumerate(means)}

    def close(self) -> None:
        pass


def held_out_during_training(config: TrainConfig, policy: Policy | RL2Policy) -> HeldOutEvaluation | HeldOutTrials:
    """The evaluation ``train`` runs every ``eval_every`` iterations, by the policy's algorithm."""
    if isinstance(policy, RL2Policy):
        return HeldOutTrials(config, policy)
    return HeldOutEvaluation(config, policy)


# ----------------------------------------------------------------------------- result
@dataclasses.dataclass
class EvalResult:
    """What ``evaluate`` measured (``to_dict`` is the content of ``eval.json``)."""

    run: LoadedRun
    settings: dict[str, Any]
    """steps, num_tasks, episodes_per_task, fast_lr, seed, num_threads, horizon."""
    tasks: list[dict[str, Any]]
    episode_returns: np.ndarray
    """float64 [steps + 1, num_tasks, episodes_per_task]."""
    summary: list[dict[str, float]]
    """Per step: ``step``, ``mean``, ``ci_low``, ``ci_high``, ``std_over_tasks``, ``gain_mean``,
    ``gain_ci_low``, ``gain_ci_high`` (the CIs over tasks, 95%)."""
    json_path: Path | None = None
    png_path: Path | None = None
    replaced: bool = False
    """Whether ``eval.json`` replaced an earlier one in its folder."""

    @property
    def task_returns(self) -> np.ndarray:
        """Mean return of each task per step, float64 [steps + 1, num_tasks]."""
        return self.episode_returns.mean(axis=2)

    def to_dict(self) -> dict[str, Any]:
        config = self.run.config
        per_task = self.task_returns
        return {
            "run_dir": str(self.run.run_dir),
            "policy_file": self.run.source,
            "iterations_trained": self.run.iterations,
            "run_config": config.to_dict(),
            "evaluation": {
                **self.settings,
                "family": config.family,
                "confidence": 0.95,
                "seeds": "numpy SeedSequence(entropy=seed, spawn_key=(0x6576616C, stream)); stream 0: tasks, "
                         "1 + k: episodes after k steps (disjoint from training's SeedSequence([seed, iteration, "
                         "stream]))",
                "confidence_intervals": "Student t over tasks (each task: mean over its episodes); gains are "
                                        "paired per task (step k - step 0)",
            },
            "per_step": self.summary,
            "per_task": [
                {
                    "task": task,
                    "mean_return": [float(v) for v in per_task[:, i]],
                    "std_over_episodes": [float(v) for v in self.episode_returns[:, i].std(axis=1, ddof=0)],
                }
                for i, task in enumerate(self.tasks)
            ],
        }


def summarize(task_returns: np.ndarray) -> list[dict[str, float]]:
    """Per step: mean over tasks with its 95% t-CI, and the paired gain over step 0 with its CI.

    task_returns: float [steps + 1, num_tasks]."""
    rows = []
    for step, values in enumerate(task_returns):
        ci = mean_ci(values)
        gain = mean_ci(values - task_returns[0])
        rows.append({
            "step": step, "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "std_over_tasks": ci.std,
            "gain_mean": gain.mean, "gain_ci_low": gain.low, "gain_ci_high": gain.high,
        })
    return rows


# ----------------------------------------------------------------------------- evaluate
def check_settings(adapt_steps: int, num_tasks: int, episodes: int, fast_lr: float | None, seed: int,
                   num_threads: int) -> None:
    """ValueError naming the first bad argument."""
    for name, value, low in (("adapt_steps", adapt_steps, 0), ("tasks", num_tasks, 1), ("episodes", episodes, 1),
                             ("num_threads", num_threads, 1)):
        check_int(value, name, minimum=low)
    check_float(fast_lr, "fast_lr", low=0, allow_none=True)
    check_int(seed, "seed", minimum=0, below=MAX_SEED)


def evaluate(
    run_dir: str | Path | LoadedRun,
    *,
    adapt_steps: int = 3,
    num_tasks: int = 20,
    episodes: int = 10,
    fast_lr: float | None = None,
    seed: int = 0,
    num_threads: int = 1,
    out: str | Path | None = None,
    write: bool = True,
    initial: bool = False,
    episodes_per_trial: int | None = None,
) -> EvalResult:
    """Evaluate the run in ``run_dir`` on ``num_tasks`` held-out tasks, ``episodes`` episodes per
    task and adaptation step, after 0..``adapt_steps`` inner steps (module docstring).

    fast_lr: the inner step size (default: the run's). seed: the evaluation seed (tasks and
    noise; the same for every run). num_threads: threads stepping the robots (results do not
    depend on it). out: where ``eval.json`` and ``eval.png`` go (default: ``run_dir``, or
    ``run_dir/initial`` with ``initial``); nothing is written with ``write=False``. initial: evaluate
    the run's policy at initialisation instead (``load_run``). ``run_dir`` may be a ``LoadedRun``
    (loaded with ``initial`` already as wanted).

    An RL^2 run (``algorithm: rl2``) adapts within a trial: ``episodes`` trials of
    ``episodes_per_trial`` episodes (default: the run's) per task, and the result's "steps" are the
    episodes of the trial (``adapt_steps`` and ``fast_lr`` are MAML's).
    """
    check_settings(adapt_steps, num_tasks, episodes, fast_lr, seed, num_threads)
    check_int(episodes_per_trial, "episodes_per_trial", minimum=1, allow_none=True)
    run = load_run(run_dir, initial=initial)
    config = run.config
    tasks = held_out_tasks(config.family, num_tasks, seed)
    if isinstance(run.policy, RL2Policy):
        if fast_lr is not None:
            raise ValueError(f"fast_lr: an RL^2 run adapts in its activations, without gradient steps; got {fast_lr}")
        result = _evaluate_trials(run, tasks, episodes, episodes_per_trial or config.episodes_per_trial, seed,
                                  num_threads)
    else:
        if episodes_per_trial is not None:
            raise ValueError(f"episodes_per_trial: only RL^2 runs have trials; {run.run_dir} is a MAML run "
                             f"(--adapt-steps sets its adaptation steps), got {episodes_per_trial}")
        lr = config.fast_lr if fast_lr is None else float(fast_lr)
        with one_torch_thread():  # as train()
            sampler = MetaSampler(config.family, num_tasks, episodes, config.horizon, num_threads=num_threads,
                                  action_scale=config.action_scale)
            try:
                sampler.set_tasks(tasks)
                learner = build_learner(config.replace(fast_lr=lr), run.policy)
                assert isinstance(learner, MetaLearner)
                returns = adaptation_returns(learner, sampler, adapt_steps, seed)
            finally:
                sampler.close()
        # (eval.json keeps the key "steps": the number of adaptation steps, K)
        settings = {"steps": adapt_steps, "num_tasks": num_tasks, "episodes_per_task": episodes, "fast_lr": lr,
                    "seed": seed, "num_threads": num_threads, "horizon": config.horizon}
        result = EvalResult(run, settings, tasks, returns, summarize(returns.mean(axis=2)))
    if write:
        out_dir = Path(out) if out is not None else run.run_dir / (INITIAL_DIR if initial else "")
        out_dir.mkdir(parents=True, exist_ok=True)
        result.json_path = out_dir / EVAL_JSON
        result.replaced = result.json_path.is_file()
        write_text_atomic(result.json_path, json.dumps(_finite(result.to_dict()), indent=1) + "\n")
        result.png_path = plot_evaluation(result, out_dir / EVAL_PNG)
        if "two_step" in result.settings:
            plot_stay_probabilities(result, out_dir / STAY_PNG)
    return result


def _evaluate_trials(run: LoadedRun, tasks: list[dict[str, Any]], trials_per_task: int, episodes_per_trial: int,
                     seed: int, num_threads: int) -> EvalResult:
    """An RL^2 run: ``trials_per_task`` trials of ``episodes_per_trial`` episodes per held-out task
    (``rl2.evaluation``); the "steps" of the result are the episodes of a trial. Bandit families
    add the reference agents on the same draws, two-step families the stay probabilities."""
    config = run.config
    assert isinstance(run.policy, RL2Policy)
    sample_seed = evaluation_seed(seed, 1)
    with one_torch_thread():  # as train()
        trials = evaluate_trials(run.policy, config.family, tasks, episodes_per_trial=episodes_per_trial,
                                 horizon=config.horizon, trials_per_task=trials_per_task, seed=sample_seed,
                                 num_threads=num_threads, action_scale=config.action_scale)
    settings: dict[str, Any] = {
        "algorithm": "rl2", "steps": episodes_per_trial - 1, "episodes_per_trial": episodes_per_trial,
        "num_tasks": len(tasks), "episodes_per_task": trials_per_task, "seed": seed, "num_threads": num_threads,
        "horizon": config.horizon,
    }
    family = DISCRETE_FAMILIES.get(config.family)
    if family is not None and family.kind == "bandit":
        settings["bandit"] = bandit_comparison(trials, config.family, config.horizon, sample_seed)
    elif family is not None:
        settings["two_step"] = two_step_stays(trials, config.family, sample_seed)
    returns = trials.episode_returns
    return EvalResult(run, settings, tasks, returns, summarize(returns.mean(axis=2)))


def _finite(value: Any) -> Any:
    """NaN/inf -> None, so eval.json is strict JSON (a CI over one task is undefined)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def run_label(config: TrainConfig) -> str:
    """``"Navigation2D, mlp"`` or ``"HalfCheetahDir, gru (outer)"``."""
    recurrence = "" if config.policy == "mlp" else f" ({config.recurrence})"
    return f"{config.family}, {config.policy}{recurrence}"


def plot_evaluation(result: EvalResult, path: Path) -> Path:
    """Return versus adaptation steps: every task (thin), the mean with its 95% CI (band)."""
    from bmaml_robot.plots import new_figure, save_png

    figure = new_figure(6.0, 4.0)
    axes = figure.add_subplot()
    steps = np.arange(result.task_returns.shape[0])
    lines = axes.plot(steps, result.task_returns, color="0.6", linewidth=0.7, alpha=0.5)
    lines[0].set_label("each task")
    mean = np.array([row["mean"] for row in result.summary])
    low = np.array([row["ci_low"] for row in result.summary], dtype=float)
    high = np.array([row["ci_high"] for row in result.summary], dtype=float)
    axes.fill_between(steps, low, high, color="C0", alpha=0.25, label="95% CI over tasks")
    axes.plot(steps, mean, "o-", color="C0", linewidth=2, label="mean over tasks")
    axes.set_xticks(steps)
    axes.set_xlabel(_axis(result)[1])
    axes.set_ylabel("mean return per episode")
    axes.set_title(f"{run_label(result.run.config)}: {result.run.run_dir.name}\n"
                   f"{_batch(result)}, {result.run.iterations} meta-iterations", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_png(figure, path)


def plot_stay_probabilities(result: EvalResult, path: Path) -> Path:
    """The two-step task's signature (Wang et al. 2018, Fig. 4; Daw et al. 2011): the probability
    of repeating the first-stage action after a rewarded or unrewarded episode whose transition
    was common or rare, for the policy and the model-free and model-based agents on the same draws."""
    from bmaml_robot.plots import new_figure, save_png

    two_step = result.settings["two_step"]
    agents = ("rl2", *TWO_STEP_AGENTS)
    figure = new_figure(10.0, 3.6)
    panels = figure.subplots(1, len(agents), sharey=True)
    for axes, name in zip(panels, agents):
        stay = two_step[name]["stay_probability"]
        for offset, (transition, colour) in enumerate((("common", "C0"), ("rare", "C3"))):
            values = [stay["rewarded"][transition], stay["unrewarded"][transition]]
            axes.bar(np.arange(2) + 0.2 * (2 * offset - 1), values, width=0.4, color=colour, label=transition)
        axes.set_xticks([0, 1])
        axes.set_xticklabels(["rewarded", "unrewarded"])
        axes.set_ylim(0.0, 1.2)
        axes.set_title(f"{'RL^2 (this run)' if name == 'rl2' else name.replace('_', '-')}: interaction "
                       f"{two_step[name]['interaction']:+.2f}", fontsize=9)
        axes.grid(alpha=0.3, axis="y")
    panels[0].set_ylabel("stay probability")
    panels[0].legend(fontsize=8, loc="upper center", ncol=2)
    figure.suptitle(f"{run_label(result.run.config)}: {result.run.run_dir.name}, {result.settings['num_tasks']} "
                    f"held-out tasks x {result.settings['episodes_per_task']} trials of {two_step['episodes']} "
                    "episodes (the same draws for all three)", fontsize=9)
    return save_png(figure, path)


def format_table(result: EvalResult) -> str:
    """The short table ``bmaml-eval`` prints."""
    run, settings = result.run, result.settings
    name = _axis(result)[0]
    width = len(name)
    lines = [
        f"{run.run_dir}: {run_label(run.config)}, {run.source} after {run.iterations} meta-iterations",
        f"{_batch(result)}, evaluation seed {settings['seed']}",
        f"{name:>{width}}  {'mean return':>11}  {'95% CI (tasks)':>20}  {f'gain vs {name} 0':>15}  {'95% CI':>20}",
    ]
    for row in result.summary:
        ci = f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]" if math.isfinite(row["ci_low"]) else "n/a (1 task)"
        if row["step"] == 0:
            gain = gain_ci = ""
        else:
            gain = f"{row['gain_mean']:+.2f}"
            gain_ci = (f"[{row['gain_ci_low']:+.2f}, {row['gain_ci_high']:+.2f}]"
                       if math.isfinite(row["gain_ci_low"]) else "n/a (1 task)")
        lines.append(f"{row['step']:>{width}}  {row['mean']:>11.2f}  {ci:>20}  {gain:>15}  {gain_ci:>20}")
    bandit = settings.get("bandit")
    if bandit is not None:
        lines.append(f"cumulative reward over {bandit['pulls']} pulls (same draws, {bandit['trials']} trials):")
        for name in ("rl2", *BANDIT_AGENTS):
            row = bandit[name]
            lines.append(f"  {name:>8}  {row['cumulative_reward']:8.2f} +- {row['cumulative_reward_se']:.2f}   "
                         f"expected regret {row['expected_regret']:6.2f} +- {row['expected_regret_se']:.2f}")
    two_step = settings.get("two_step")
    if two_step is not None:
        lines.append(f"stay probability ({two_step['episodes']} episodes per trial, same draws): rewarded "
                     f"common/rare, unrewarded common/rare; reward x transition interaction (> 0: model-based)")
        for name in ("rl2", *TWO_STEP_AGENTS):
            row = two_step[name]
            stay = row["stay_probability"]
            lines.append(f"  {name:>11}  {stay['rewarded']['common']:.3f} {stay['rewarded']['rare']:.3f}  "
                         f"{stay['unrewarded']['common']:.3f} {stay['unrewarded']['rare']:.3f}   interaction "
                         f"{row['interaction']:+.3f}   reward per episode {row['reward_per_episode']:.3f}")
    return "\n".join(lines)


def _axis(result: EvalResult) -> tuple[str, str]:
    """The table's column name and the plot's axis label of the result's "steps"."""
    if result.settings.get("algorithm") == "rl2":
        return "episode", "episode of the trial (RL^2 adapts in its activations)"
    return "step", "adaptation steps"


def _batch(result: EvalResult) -> str:
    """What was sampled, in words."""
    settings = result.settings
    if settings.get("algorithm") == "rl2":
        return (f"{settings['num_tasks']} held-out tasks x {settings['episodes_per_task']} trials of "
                f"{settings['episodes_per_trial']} episodes of {settings['horizon']} steps")
    return (f"{settings['num_tasks']} held-out tasks x {settings['episodes_per_task']} episodes x "
            f"{settings['horizon']} steps, fast_lr {settings['fast_lr']:g}")


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``bmaml-eval`` (``bmaml_robot.cli.eval_main``: arguments are checked before torch is imported)."""
    from bmaml_robot.cli import eval_main

    return eval_main(argv)


if __name__ == "__main__":
    sys.exit(main())
