"""Claim (5) of the study: does the prefrontal-cortex model (RL^2, adapting in its activations) adapt
faster or better than gradient adaptation (MAML), at equal environment steps of meta-training?
Runs at the family's budget (``study_runs``).

Both are meta-trained on the same number of environment steps (run_study.sh: RL2_FACTOR) and
evaluated on the same 40 held-out tasks (``bmaml-eval``, evaluation seed 0). Per run (eval.json):

- *first attempt*: MAML's return before adaptation; RL^2's first episode of a trial (which may
  already adapt within the episode, from the rewards it sees: RL^2 has no "before");
- *adapted*: MAML's return after 1 gradient step (its training objective); RL^2's last episode of
  the trial (the trial length it was trained on);
- *gain*: adapted - first attempt;
- the experience the adaptation used, in environment steps of the task (MAML: the episodes of its
  inner step; RL^2: the episodes of the trial before the last).

Per variant: the mean over seeds with its 95% t-interval. Then each RL^2 variant against each MAML
variant, per metric: Welch's test (Holm-adjusted over the pairs of the metric), Hedges' g and the
smallest difference the seeds detect with 80% power.

    usage: PYTHONPATH=. python docs/study/claim5.py RUNS_DIR/FAMILY   (prints markdown)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from study_runs import StudyRun, describe_budget, family_budget, study_runs

from bmaml_robot.stats import detectable_effect, holm, mean_ci, pooled_std, welch_test

METRICS = ("first attempt", "adapted", "gain")


def run_figures(run: StudyRun) -> tuple[dict[str, float], int]:
    """({metric: value}, environment steps of task experience before the adapted episodes)."""
    data = run.evaluation()
    evaluation, per_step = data["evaluation"], data["per_step"]
    horizon = int(evaluation["horizon"])
    if evaluation.get("algorithm") == "rl2":
        last = int(evaluation["episodes_per_trial"]) - 1
        experience = last * horizon
    else:
        last = 1
        experience = int(evaluation["episodes_per_task"]) * horizon
    first, adapted = float(per_step[0]["mean"]), float(per_step[last]["mean"])
    return {"first attempt": first, "adapted": adapted, "gain": adapted - first}, experience


def interval(values: np.ndarray) -> str:
    if values.size < 2:
        return f"{values.mean():.1f} (1 seed)"
    ci = mean_ci(values)
    return f"{ci.mean:.1f} [{ci.low:.1f}, {ci.high:.1f}]"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: claim5.py RUNS_DIR/FAMILY", file=sys.stderr)
        return 2
    family = Path(argv[0])
    variants: dict[str, list[dict[str, float]]] = {}
    experience: dict[str, set[int]] = {}
    for name, runs in study_runs(family).items():
        if name.endswith("-small"):
            continue  # claim 3's variant
        for run in runs:
            figures, steps = run_figures(run)
            variants.setdefault(name, []).append(figures)
            experience.setdefault(name, set()).add(steps)
    rl2 = [v for v in variants if v.startswith("rl2-")]
    maml = [v for v in variants if v.startswith("maml-")]
    if not rl2 or not maml:
        print(f"{family}: claim 5 needs evaluated MAML and RL^2 runs; have {sorted(variants) or 'none'}")
        return 0
    evaluation = study_runs(family)[rl2[0]][0].evaluation()["evaluation"]
    print(f"Claim 5 on {family.name} at {describe_budget(family_budget(family) or 0)}: held-out returns "
          f"({evaluation['num_tasks']} tasks, evaluation seed {evaluation['seed']}), "
          "mean over seeds [95% t-interval]\n")
    print("| variant | seeds | first attempt | adapted | gain | task experience before 'adapted' (env steps) |")
    print("|---|---|---|---|---|---|")
    for name, values in variants.items():
        cells = [interval(np.array([r[m] for r in values])) for m in METRICS]
        print(f"| {name} | {len(values)} | {' | '.join(cells)} | {', '.join(map(str, sorted(experience[name])))} |")
    for metric in METRICS:
        pairs = [(a, b) for a in rl2 for b in maml]
        tests = []
        for a, b in pairs:
            x, y = np.array([r[metric] for r in variants[a]]), np.array([r[metric] for r in variants[b]])
            tests.append((x, y, welch_test(x, y) if x.size > 1 and y.size > 1 else None))
        adjusted = holm([t.p_value if t is not None else np.nan for _, _, t in tests])
        tested = sum(t is not None for _, _, t in tests)
        print(f"\n{metric}, RL^2 - MAML (Welch; Holm over the {tested} pairs with 2 or more seeds each):\n")
        print("| RL^2 | MAML | difference [95% CI] | p | p (Holm) | Hedges' g | detectable (80% power) |")
        print("|---|---|---|---|---|---|---|")
        for (a, b), (x, y, w), p_holm in zip(pairs, tests, adjusted):
            if w is None:
                print(f"| {a} | {b} | {x.mean() - y.mean():+.1f} (too few seeds) | | | | |")
                continue
            detectable = detectable_effect(x.size, y.size) * pooled_std(x, y)
            print(f"| {a} | {b} | {w.difference:+.1f} [{w.ci_low:+.1f}, {w.ci_high:+.1f}] | {w.p_value:.3g} "
                  f"| {p_holm:.3g} | {w.hedges_g:+.2f} | {detectable:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
