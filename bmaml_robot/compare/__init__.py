"""Compare variants of meta-training across seeds: learning curves, final performance, tests.

    bmaml-compare runs/nav-* --group-by policy,recurrence --out reports/nav
    from bmaml_robot.compare import compare
    comparison = compare(["runs/a", "runs/b", ...], group_by=("policy", "recurrence"))

Runs are grouped into variants by the config keys of ``group_by`` (each variant has one run per
seed). From every run's ``metrics.jsonl`` it reads ``return_before`` and ``return_after`` (mean
return per episode of the meta-batch before and after adaptation) per meta-iteration, and writes
to ``out``:

- ``report.md``: the runs, how they were aligned, the final-performance table (per run the mean
  of the last ``last`` iterations, then per variant the mean over seeds with a 95% t-CI), the
  adaptation gain (after - before), pairwise Welch tests with Hedges' g, a seeded bootstrap CI and
  Holm-adjusted p-values, tests of a difference in variance across seeds (Brown-Forsythe and F),
  and plain-language findings;
- ``curves.png`` (before / after adaptation per meta-iteration, mean over seeds with a 95% band),
  ``gain.png`` (after - before), ``final.png`` (every seed's final value and the variant means);
- ``comparison.json``: every number of the report.

With ``bmaml-eval`` results of the runs (``EVAL_DIR/<run name>/eval.json`` with ``--eval-dir``,
else ``RUN_DIR/eval.json`` where present, all made with the same settings), the report adds a
held-out section: per variant the mean over seeds of each run's held-out return before and after
adaptation and the gain, with pairwise Welch tests, Holm, Hedges' g and a bootstrap CI.

Runs in progress and runs of different lengths are fine: every comparison uses the iterations all
its runs have (``0 .. L - 1``, ``L`` the length of the shortest run), and the report says so and
lists each run's length. Runs given to one comparison must share the family, the horizon and the
meta-batch size (otherwise their returns are not comparable), and the number of inner steps
unless it is a grouping key; a ValueError names the runs and the differing keys.

Modules, in the order of the work:

- ``runs``: load a run (``Run``), check runs are comparable, group them into ``Variant``s and
  label them. Labels and order come from the runs' configs through ``KEY_STYLES`` (data): a new
  algorithm's runs are compared by adding its config keys there, if they need a style at all.
- ``analysis``: the statistics as plain data (``Comparison``; ``to_dict`` is comparison.json).
- ``report``: the findings and ``report.md`` (text only).
- ``figures``: curves.png, gain.png, final.png (matplotlib, imported when drawing).
- ``pipeline``: ``compare`` and ``write_outputs``, which chain the above.
- ``cli``: the printed summary and ``main`` (the parser is ``bmaml_robot.cli.compare_main``).
"""

from bmaml_robot.compare.analysis import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    EVAL_SETTINGS,
    HELD_OUT_NAMES,
    METRIC_NAMES,
    Comparison,
    HeldOut,
    HeldOutVariant,
    PairTest,
    VariancePair,
    VariantSummary,
    analyse,
    eval_path,
    held_out_evaluation,
    smooth,
)
from bmaml_robot.compare.cli import format_summary, main
from bmaml_robot.compare.figures import plot_curves, plot_final, plot_gain
from bmaml_robot.compare.pipeline import compare, write_outputs
from bmaml_robot.compare.report import findings, held_out_markdown, report_markdown
from bmaml_robot.compare.runs import (
    DEFAULT_GROUP_BY,
    KEY_STYLES,
    RUN_KEYS,
    SAME_KEYS,
    SAME_UNLESS_GROUPED,
    KeyStyle,
    Run,
    Variant,
    check_comparable,
    check_group_by,
    group_runs,
    load_run_metrics,
    variant_label,
    variant_sort_key,
)

__all__ = [
    "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "DEFAULT_GROUP_BY", "EVAL_SETTINGS", "HELD_OUT_NAMES", "KEY_STYLES",
    "METRIC_NAMES", "RUN_KEYS", "SAME_KEYS", "SAME_UNLESS_GROUPED", "Comparison", "HeldOut", "HeldOutVariant",
    "KeyStyle", "PairTest", "Run", "Variant", "VariancePair", "VariantSummary", "analyse", "check_comparable",
    "check_group_by", "compare", "eval_path", "findings", "format_summary", "group_runs", "held_out_evaluation",
    "held_out_markdown", "load_run_metrics", "main", "plot_curves", "plot_final", "plot_gain", "report_markdown",
    "smooth", "variant_label", "variant_sort_key", "write_outputs",
]
