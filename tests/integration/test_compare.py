"""bmaml-compare: variants across seeds, on synthetic run directories written by the tests.

Each synthetic run has a ``config.yaml`` (``dump_config``) and a ``metrics.jsonl`` whose curves
are designed so that every run's final-window mean is a known number: the statistics of the
report are checked against ``bmaml_robot.stats`` on those numbers, and the alignment of runs of
different lengths is checked by curves that change after the common length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest

from bmaml_robot.compare import compare, load_run_metrics, main, smooth
from bmaml_robot.config import TrainConfig, dump_config, load_config
from bmaml_robot.evaluate import EvalResult, LoadedRun, summarize
from bmaml_robot.stats import detectable_effect, holm, mean_ci, pooled_std, welch_test

WINDOW = 10
#: Final values (return after adaptation) per variant and seed, and the gain of each variant.
FINAL_AFTER = {("mlp", "frozen"): [-50.0, -48.0, -52.0], ("rnn", "frozen"): [-49.0, -51.0, -50.5],
               ("gru", "outer"): [-20.0, -21.0, -19.0]}
GAIN = {("mlp", "frozen"): 5.0, ("rnn", "frozen"): 5.0, ("gru", "outer"): 15.0}


def assert_png_is_a_plot(path: Path, min_width: int = 300, min_height: int = 200) -> None:
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_height and image.shape[1] >= min_width, image.shape
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std() > 5.0
    assert len(np.unique(rgb, axis=0)) > 10


def designed_curve(final: float, length: int, planned: int | None = None) -> np.ndarray:
    """Rises to ``final``, then alternates +-1 around it over the last WINDOW of ``planned``
    iterations (mean exactly ``final`` over any even-length run of them); truncated to ``length``."""
    planned = planned or length
    i = np.arange(planned, dtype=float)
    ramp = np.clip(1.0 - i / (planned - WINDOW), 0.0, 1.0)
    wiggle = np.where(i >= planned - WINDOW, np.where(i % 2 == 0, 1.0, -1.0), 0.0)
    return (final - 60.0 * ramp + wiggle)[:length]


def write_run(path: Path, *, after: np.ndarray, gain: float | np.ndarray, finished: bool = True,
              planned: int | None = None, env_steps: int = 1000, **config: Any) -> Path:
    values = dict(family="Navigation2D", num_tasks=20, episodes_per_task=10, horizon=100,
                  num_iterations=planned or len(after))
    values.update(config)
    path.mkdir(parents=True)
    dump_config(TrainConfig(**values), path / "config.yaml")
    before = after - gain
    lines = [json.dumps({"iteration": i, "time_s": 1.0, "env_steps": env_steps, "return_before": float(b),
                         "return_after": float(a), "kl_after": 0.005}) for i, (b, a) in enumerate(zip(before, after))]
    (path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if finished:
        (path / "policy.pt").write_bytes(b"")
    return path


def study(root: Path, length: int = 40) -> list[Path]:
    runs = []
    for (policy, recurrence), finals in FINAL_AFTER.items():
        for seed, final in enumerate(finals):
            runs.append(write_run(root / f"nav-{policy}-{recurrence}-seed{seed}", after=designed_curve(final, length),
                                  gain=GAIN[policy, recurrence], policy=policy, recurrence=recurrence, seed=seed))
    return runs


def test_report_figures_and_statistics(tmp_path: Path) -> None:
    runs = study(tmp_path / "runs")
    c = compare(runs, last=WINDOW, out=tmp_path / "out")
    assert [v.label for v in c.variants] == ["mlp", "rnn-frozen", "gru-outer"]
    assert c.length == 40 and c.window == (30, 40)
    # Final values per seed are the designed ones; CIs over seeds are stats.mean_ci of them.
    for summary, (key, finals) in zip(c.summaries, FINAL_AFTER.items()):
        assert summary.seeds == [0, 1, 2]
        assert summary.final["return_after"] == pytest.approx(finals)
        assert summary.final["gain"] == pytest.approx([GAIN[key]] * 3)
        assert summary.ci["return_after"] == pytest.approx(mean_ci(finals))
        assert summary.within_run_std == pytest.approx([np.std([1.0, -1.0] * 5, ddof=1)] * 3)
    tests = {(t.metric, t.a, t.b): t for t in c.pair_tests}
    assert len(tests) == 3 * 3  # 3 metrics x 3 pairs
    gru_vs_mlp = tests["return_after", "mlp", "gru-outer"]
    assert gru_vs_mlp.welch == welch_test(FINAL_AFTER["mlp", "frozen"], FINAL_AFTER["gru", "outer"])
    assert gru_vs_mlp.welch.p_value < 0.01 and gru_vs_mlp.welch.hedges_g < -5
    assert gru_vs_mlp.bootstrap.high < 0
    same = tests["return_after", "mlp", "rnn-frozen"]
    assert same.welch.p_value > 0.5
    a, b = np.asarray(FINAL_AFTER["mlp", "frozen"]), np.asarray(FINAL_AFTER["rnn", "frozen"])
    assert same.detectable == pytest.approx(detectable_effect(a.size, b.size) * pooled_std(a, b))
    p_values = [tests["return_after", a, b].welch.p_value
                for a, b in (("mlp", "rnn-frozen"), ("mlp", "gru-outer"), ("rnn-frozen", "gru-outer"))]
    assert [tests["return_after", a, b].p_holm for a, b in (("mlp", "rnn-frozen"), ("mlp", "gru-outer"),
                                                            ("rnn-frozen", "gru-outer"))] == pytest.approx(holm(p_values))
    findings = "\n".join(c.findings)
    assert "return after adaptation: gru-outer > mlp by 30.00" in findings
    assert "return after adaptation: gru-outer > rnn-frozen" in findings
    assert "no significant difference" in findings and "mlp vs rnn-frozen" in findings
    assert f"detectable at 80% power: |difference| >= {same.detectable:.2f}" in findings  # the power statement

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "curves.png", "final.png", "gain.png",
                                                     "report.md"]
    for name in ("curves.png", "gain.png", "final.png"):
        assert_png_is_a_plot(out / name)
    report = (out / "report.md").read_text()
    for heading in ("## Runs", "## Final performance", "## Differences between variants", "## Variance across seeds",
                    "## What the statistics say", "![learning curves](curves.png)"):
        assert heading in report
    assert "| gru-outer | 3 | " in report and "`nav-gru-outer-seed2`" in report
    assert f"{mean_ci(FINAL_AFTER['gru', 'outer']).mean:.2f} [" in report
    assert "All runs have 40 meta-iterations" in report and "trailing mean over 5 iterations" in report
    data = json.loads((out / "comparison.json").read_text())
    assert data["aligned_iterations"] == 40 and [v["label"] for v in data["variants"]] == ["mlp", "rnn-frozen", "gru-outer"]
    assert data["variants"][2]["final"]["return_after"] == pytest.approx(FINAL_AFTER["gru", "outer"])


def test_runs_of_different_lengths_and_in_progress_are_aligned(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    runs = []
    for seed, final in enumerate([-30.0, -31.0, -29.0]):
        runs.append(write_run(root / f"a{seed}", after=designed_curve(final, 50), gain=2.0 + 0.1 * seed, policy="mlp",
                              seed=seed))
    # Still running: 36 of 50 planned iterations written. Its curve would end at -10, but at the
    # common length it is still climbing.
    for seed, final in enumerate([-10.0, -11.0, -9.0]):
        runs.append(write_run(root / f"b{seed}", after=designed_curve(final, 36 + seed, planned=50), gain=3.0 - 0.2 * seed,
                              finished=False, planned=50, policy="gru", recurrence="outer", seed=seed))
    c = compare(runs, last=5, out=tmp_path / "out")
    assert c.length == 36 and c.window == (31, 36)
    gru = c.summaries[1]
    expected = [designed_curve(f, 36, planned=50)[31:36].mean() for f in (-10.0, -11.0, -9.0)]
    assert gru.final["return_after"] == pytest.approx(expected)
    assert c.summaries[0].final["return_after"] == pytest.approx([designed_curve(f, 50)[31:36].mean()
                                                                  for f in (-30.0, -31.0, -29.0)])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "different lengths (36, 37, 38, 50 meta-iterations)" in report
    assert "compared on iterations 0-35" in report and "iterations 31-35" in report
    assert "in progress (36/50)" in report and "| finished |" in report
    assert_png_is_a_plot(tmp_path / "out" / "curves.png")
    # A run that has barely started can be left out instead of shortening everything.
    short = write_run(root / "b9", after=designed_curve(-10.0, 3, planned=50), gain=1.0, finished=False, planned=50,
                      policy="gru", recurrence="outer", seed=9)
    assert compare([*runs, short], last=5).length == 3
    c = compare([*runs, short], last=5, min_iterations=20)
    assert c.length == 36 and [r.name for r in c.left_out] == ["b9"]
    # A comparison at one budget: every run cut at 20 iterations, the finished ones included.
    c = compare(runs, last=5, until=20, out=tmp_path / "at20")
    assert c.length == 20 and c.window == (15, 20)
    assert "| finished; 50 trained, cut by --until |" in (tmp_path / "at20" / "report.md").read_text()
    assert c.summaries[0].final["return_after"] == pytest.approx([designed_curve(f, 50)[15:20].mean()
                                                                  for f in (-30.0, -31.0, -29.0)])
    with pytest.raises(ValueError, match="until"):
        compare(runs, until=0)


def test_a_torn_last_metrics_line_is_ignored(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", after=designed_curve(-5.0, 12), gain=1.0, finished=False, planned=20)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 12, "return_bef')  # killed mid-write
    assert load_run_metrics(run).iterations == 12


def test_variance_difference_across_seeds_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    runs = [write_run(root / f"steady{s}", after=designed_curve(f, 20), gain=1.0, policy="mlp", seed=s)
            for s, f in enumerate([-20.0, -20.1, -19.9])]
    runs += [write_run(root / f"erratic{s}", after=designed_curve(f, 20), gain=1.0, policy="rnn", seed=s)
             for s, f in enumerate([-60.0, -20.0, 20.0])]
    c = compare(runs, last=WINDOW)
    pair = next(p for p in c.variance_pairs if p.metric == "return_after")
    assert pair.std_a == pytest.approx(0.1) and pair.std_b == pytest.approx(40.0)
    assert pair.f_p < 1e-3
    assert any("unequal by at least one test" in line and "mlp vs rnn-frozen" in line for line in c.findings)
    # The means do not differ significantly: the erratic variant's mean is about the same.
    assert next(t for t in c.pair_tests if t.metric == "return_after").welch.p_value > 0.5


def test_group_by_other_keys(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    runs = [write_run(root / f"lr{lr}-{s}", after=designed_curve(-10.0 * lr + s, 20), gain=1.0, fast_lr=lr, seed=s)
            for lr in (0.05, 0.1) for s in range(2)]
    c = compare(runs, group_by=["fast_lr"], last=4)
    assert [v.label for v in c.variants] == ["fast_lr=0.05", "fast_lr=0.1"]
    # Different inner-step counts are comparable only as the grouping key.
    steps = [write_run(root / f"steps{k}-{s}", after=designed_curve(-5.0, 20), gain=1.0, adapt_steps=k, seed=s)
             for k in (1, 2) for s in range(2)]
    assert [v.label for v in compare(steps, group_by=["adapt_steps"]).variants] == ["adapt_steps=1", "adapt_steps=2"]
    # the key's old name (config.RENAMED) still groups
    assert [v.label for v in compare(steps, group_by=["num_steps"]).variants] == ["adapt_steps=1", "adapt_steps=2"]
    with pytest.raises(ValueError, match="adapt_steps=1: steps1-0, steps1-1; adapt_steps=2: steps2-0, steps2-1"):
        compare(steps)


def write_eval(eval_dir: Path, run: Path, before: float, after: float, steps: int = 1, num_tasks: int = 4,
               iterations: int | None = None) -> None:
    """An eval.json as bmaml-eval writes it (EvalResult.to_dict), with known per-task returns."""
    config = load_config(str(run / "config.yaml"))
    offsets = np.linspace(-1.0, 1.0, num_tasks)  # tasks differ; their mean is 0
    # [steps + 1, tasks]: `after` after one step, 5 more after each further step
    task_returns = np.stack([before + offsets] + [after + 5.0 * k + offsets for k in range(steps)])
    episode_returns = np.repeat(task_returns[:, :, None], 2, axis=2)
    settings = {"steps": steps, "num_tasks": num_tasks, "episodes_per_task": 2, "fast_lr": 0.1, "seed": 0,
                "num_threads": 1, "horizon": config.horizon}
    result = EvalResult(LoadedRun(run, config, None, "policy.pt", iterations or config.num_iterations), settings,
                        [{"goal": [0.0, 0.0]}] * num_tasks, episode_returns, summarize(task_returns))
    (eval_dir / run.name).mkdir(parents=True)
    (eval_dir / run.name / "eval.json").write_text(json.dumps(result.to_dict()))


def test_held_out_evaluations_are_summarised_and_tested(tmp_path: Path) -> None:
    runs = study(tmp_path / "runs", length=20)
    evals = tmp_path / "evals"
    held_out = {"mlp": ([-40.0, -42.0, -41.0], [-30.0, -31.0, -29.5]), "rnn": ([-40.0, -41.0, -42.0], [-30.5, -30.0, -31.0]),
                "gru": ([-45.0, -44.0, -46.0], [-10.0, -12.0, -11.0])}
    for run in runs[:-1]:  # the last gru seed is not evaluated
        before, after = held_out[run.name.split("-")[1]]
        seed = int(run.name[-1])
        write_eval(evals, run, before[seed], after[seed], steps=2)
    c = compare(runs, last=4, eval_dir=evals, out=tmp_path / "out")
    h = c.held_out
    assert h is not None and h.missing == ["nav-gru-outer-seed2"] and h.settings["steps"] == 2
    assert h.step == 1  # the runs train with one inner step: their objective is tested
    assert h.variants[0].per_step[2] == mean_ci(np.array(held_out["mlp"][1]) + 5.0)
    assert [v.label for v in h.variants] == ["mlp", "rnn-frozen", "gru-outer"]
    gru = h.variants[2]
    assert gru.seeds == [0, 1]
    assert gru.values["after"] == pytest.approx([-10.0, -12.0]) and gru.values["gain"] == pytest.approx([35.0, 32.0])
    assert gru.ci["after"] == pytest.approx(mean_ci([-10.0, -12.0]))
    test = next(t for t in h.tests if (t.metric, t.a, t.b) == ("after", "mlp", "gru-outer"))
    assert test.welch == welch_test([-30.0, -31.0, -29.5], [-10.0, -12.0])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| before adaptation | after 1 step | after 2 steps | gain at step 1 |" in report
    assert "trained for different numbers of meta-iterations" not in report  # all 20
    assert "## Held-out evaluation (`bmaml-eval`)" in report and "Not evaluated (no eval.json): `nav-gru-outer-seed2`" in report
    findings = "\n".join(c.findings)
    assert "held-out return after adaptation (1 step): gru-outer > mlp by 19.17" in findings
    # The gains differ by 9 to 15 but gru-outer has 2 evaluated seeds: Welch p = 0.029, 0.076 after
    # Holm's adjustment over the 3 pairs: not significant.
    gain = next(t for t in h.tests if (t.metric, t.a, t.b) == ("gain", "mlp", "gru-outer"))
    assert gain.welch.p_value < 0.05 < gain.p_holm
    assert "held-out adaptation gain (1 step): no significant difference (Holm-adjusted) for mlp vs rnn-frozen" in findings
    assert "held-out return after adaptation (1 step): no significant difference (Holm-adjusted) for mlp vs rnn-frozen" in findings
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert data["held_out"]["variants"][2]["values"]["after"] == pytest.approx([-10.0, -12.0])
    # Evaluations made with other settings cannot be pooled.
    other = tmp_path / "other"
    write_eval(other, runs[0], -40.0, -30.0)
    write_eval(other, runs[3], -40.0, -30.0, steps=2)
    with pytest.raises(ValueError, match="evaluated with different settings"):
        compare(runs, eval_dir=other)
    longer = tmp_path / "longer"
    write_eval(longer, runs[0], -40.0, -30.0, iterations=35)
    write_eval(longer, runs[3], -40.0, -30.0)
    compare(runs, eval_dir=longer, out=tmp_path / "longer-report")
    assert ("trained for different numbers of meta-iterations (20, 35)"
            in (tmp_path / "longer-report" / "report.md").read_text())
    with pytest.raises(ValueError, match="eval_dir: expected a directory"):
        compare(runs, eval_dir=tmp_path / "nowhere")
    # Without eval_dir, a run's own eval.json is used; without any, there is no held-out section.
    assert compare(runs).held_out is None


def test_smoothing_is_a_trailing_mean() -> None:
    values = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    np.testing.assert_allclose(smooth(values, 1), values)
    np.testing.assert_allclose(smooth(values, 2), [[1.0, 1.5, 2.5, 3.5, 4.5]])
    np.testing.assert_allclose(smooth(values, 3), [[1.0, 1.5, 2.0, 3.0, 4.0]])


# ----------------------------------------------------------------------------- errors
def test_different_families_or_batch_sizes_are_an_error_naming_runs_and_keys(tmp_path: Path) -> None:
    curve = designed_curve(-5.0, 12)
    nav = write_run(tmp_path / "nav", after=curve, gain=1.0)
    cheetah = write_run(tmp_path / "cheetah", after=curve, gain=1.0, family="HalfCheetahDir", seed=1)
    with pytest.raises(ValueError, match=r"family='Navigation2D': nav; family='HalfCheetahDir': cheetah"):
        compare([nav, cheetah])
    small = write_run(tmp_path / "small", after=curve, gain=1.0, num_tasks=5, episodes_per_task=4, seed=2)
    with pytest.raises(ValueError, match=r"num_tasks=20: nav; num_tasks=5: small \| episodes_per_task=10: nav; "
                                         r"episodes_per_task=4: small"):
        compare([nav, small])


def test_bad_run_directories_are_clear_errors(tmp_path: Path) -> None:
    curve = designed_curve(-5.0, 12)
    good = write_run(tmp_path / "good", after=curve, gain=1.0)
    with pytest.raises(ValueError, match="no such directory"):
        compare([tmp_path / "missing"])
    (tmp_path / "no-config").mkdir()
    with pytest.raises(ValueError, match="no-config: no config.yaml"):
        compare([good, tmp_path / "no-config"])
    no_metrics = write_run(tmp_path / "no-metrics", after=curve, gain=1.0, seed=1)
    (no_metrics / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match="no-metrics: no metrics.jsonl"):
        compare([good, no_metrics])
    empty = write_run(tmp_path / "empty", after=curve, gain=1.0, seed=2)
    (empty / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty: metrics.jsonl is empty"):
        compare([good, empty])
    keyless = write_run(tmp_path / "keyless", after=curve, gain=1.0, seed=3)
    (keyless / "metrics.jsonl").write_text('{"iteration": 0, "return_before": 1.0}\n')
    with pytest.raises(ValueError, match=r"keyless: metrics.jsonl line 1 lacks \['return_after'\]"):
        compare([good, keyless])
    twin = write_run(tmp_path / "twin", after=curve, gain=1.0)
    with pytest.raises(ValueError, match="good and twin are the same variant .mlp. with the same seed 0"):
        compare([good, twin])
    other_mode = write_run(tmp_path / "other-mode", after=curve, gain=1.0, policy="rnn", recurrence="outer")
    frozen = write_run(tmp_path / "frozen", after=curve, gain=1.0, policy="rnn", recurrence="frozen")
    with pytest.raises(ValueError, match=r"frozen and other-mode fall into one variant \(rnn\) with the same seed 0 "
                                         r"but differ in \['recurrence'\]: add them to group_by"):
        compare([frozen, other_mode], group_by=["policy"])
    with pytest.raises(ValueError, match="given more than once"):
        compare([good, good])
    with pytest.raises(ValueError, match=r"group_by: unknown config keys \['colour'\]"):
        compare([good], group_by=["colour"])


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = study(tmp_path / "runs", length=20)
    out = tmp_path / "report"
    assert main([*map(str, runs), "--last", "6", "--smooth", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gru-outer" in printed and "final window 14-19" in printed
    assert (out / "report.md").is_file()
    assert "(no smoothing)" in (out / "report.md").read_text()
    for args, message in (([str(runs[0]), "--group-by", "nope"], "unknown config keys ['nope']"),
                          ([str(runs[0]), "--last", "0"], "last: expected an integer >= 1"),
                          ([str(tmp_path / "missing")], "no such directory")):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--out", str(tmp_path / "x")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written when the arguments are wrong


# ----------------------------------------------------------------------------- package structure
def test_variant_labels_and_order_come_from_the_config_through_key_styles(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new config key (here a future ``curriculum``) is labelled ``key=value`` without any code,
    and bare and ordered by adding one ``KeyStyle``; keys a config lacks are harmless."""
    from bmaml_robot.compare import KEY_STYLES, KeyStyle, variant_label, variant_sort_key

    hard = {"curriculum": "hard", "policy": "gru", "recurrence": "outer", "fast_lr": 0.05}
    easy = {"curriculum": "easy", "policy": "mlp", "recurrence": "all", "fast_lr": 0.1}
    assert variant_label(hard, ["curriculum", "policy", "fast_lr"]) == "curriculum=hard-gru-fast_lr=0.05"
    monkeypatch.setitem(KEY_STYLES, "curriculum", KeyStyle(bare=True, order=("hard", "easy")))
    group_by = ["curriculum", "policy", "recurrence"]
    assert variant_label(hard, group_by) == "hard-gru-outer"
    assert variant_label(easy, group_by) == "easy-mlp"  # recurrence means nothing to an MLP
    assert sorted([easy, hard], key=lambda c: variant_sort_key(c, group_by)) == [hard, easy]
    assert isinstance(variant_label({"policy": "mlp"}, group_by), str)
    assert variant_label(TrainConfig(policy="lstm", recurrence="all"), ["policy", "recurrence"]) == "lstm-all"


def test_welch_tables_share_one_row_formatter(tmp_path: Path) -> None:
    from bmaml_robot.compare.report import welch_row

    runs = study(tmp_path / "runs", length=20)
    for run in runs:
        write_eval(tmp_path / "evals", run, -40.0 - int(run.name[-1]), -30.0 + 2.0 * int(run.name[-1]))
    c = compare(runs, last=4, eval_dir=tmp_path / "evals", out=tmp_path / "out")
    assert c.held_out is not None and c.held_out.tests and c.pair_tests
    report = (tmp_path / "out" / "report.md").read_text().splitlines()
    assert all(welch_row(t) in report for t in c.pair_tests)
    assert all(welch_row(t, with_t=False) in report for t in c.held_out.tests)
    assert sum(line.startswith("| a | b | a - b |") for line in report) == 3 + 2  # 3 metrics, 2 held-out


def test_maml_and_rl2_are_compared_at_equal_environment_steps(tmp_path: Path) -> None:
    """MAML runs of 40,000 env-steps per iteration against RL^2 runs of 4,000: point k of the grid
    is MAML's iteration k and RL^2's iteration 10k + 9 (both after 40,000 (k + 1) steps)."""
    rl2 = dict(algorithm="rl2", policy="gru", recurrence="all", num_tasks=10, episodes_per_trial=4)
    runs = []
    for seed in range(2):
        runs.append(write_run(tmp_path / f"maml-{seed}", after=np.arange(30.0) + seed, gain=1.0, env_steps=40_000,
                              seed=seed, policy="gru", recurrence="all"))
        runs.append(write_run(tmp_path / f"rl2-{seed}", after=np.arange(400.0) + seed, gain=0.0, env_steps=4_000,
                              seed=seed, **rl2))
    with pytest.raises(ValueError, match=r"differ in .*num_tasks"):
        compare(runs, group_by=["algorithm", "policy"])  # per iteration, their batches differ
    with pytest.raises(ValueError, match=r"differ in algorithm=.*add them to|share family, horizon, algorithm"):
        compare(runs, group_by=["policy"], x_axis="env_steps")  # two algorithms in one variant
    c = compare(runs, group_by=["algorithm", "policy"], x_axis="env_steps", last=5, out=tmp_path / "report")
    assert [v.label for v in c.variants] == ["maml-gru", "rl2-gru"]
    assert c.length == 30 and np.array_equal(c.env_step_grid, 40_000.0 * np.arange(1, 31))
    maml, rl2_variant = c.variants
    assert np.array_equal(maml.runs[0].return_after, np.arange(30.0))
    assert np.array_equal(rl2_variant.runs[1].return_after, 10.0 * np.arange(30) + 9 + 1)
    # Final window: the last 5 points; RL^2 has seen as many steps, and its curve is higher there.
    assert c.window == (25, 30)
    assert c.summaries[1].final["return_after"].mean() > c.summaries[0].final["return_after"].mean()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "equal environment steps" in report and "(k + 1) x 40,000" in report
    assert json.loads((tmp_path / "report" / "comparison.json").read_text())["x_axis"] == "env_steps"
    # At one budget of environment steps: 20 x 40,000 (MAML's iteration 19, RL^2's 199).
    c = compare(runs, group_by=["algorithm", "policy"], x_axis="env_steps", last=5, until=800_000)
    assert c.length == 20 and c.env_step_grid[-1] == 800_000
    assert c.variants[1].runs[0].return_after[-1] == 199.0
    with pytest.raises(ValueError, match=r"x_axis: expected one of \['iteration', 'env_steps'\]"):
        compare(runs, group_by=["algorithm"], x_axis="steps")
