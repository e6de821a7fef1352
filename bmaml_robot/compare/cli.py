"""``bmaml-compare``'s printed summary and ``python -m bmaml_robot.compare``.

The argument parser is ``bmaml_robot.cli.compare_main``: it checks the arguments before this
package (and torch) is imported.
"""

from __future__ import annotations

from bmaml_robot.compare.analysis import Comparison
from bmaml_robot.compare.report import fmt_ci


def format_summary(c: Comparison) -> str:
    """The table ``bmaml-compare`` prints."""
    aligned = (f"{c.length} points of equal environment steps (up to {c.env_step_grid[-1]:,.0f}) compared"
               if c.env_step_grid is not None else f"iterations 0-{c.length - 1} compared")
    lines = [f"{c.family}: {len(c.variants)} variants, {aligned}, final window {c.window[0]}-{c.window[1] - 1}",
             f"{'variant':<16} {'seeds':>5}  {'return after [95% CI]':>26}  {'gain [95% CI]':>26}"]
    for s in c.summaries:
        lines.append(f"{s.label:<16} {len(s.seeds):>5}  {fmt_ci(s.ci['return_after']):>26}  "
                     f"{fmt_ci(s.ci['gain'], True):>26}")
    lines += [f"- {line}" for line in c.findings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``bmaml-compare`` (``bmaml_robot.cli.compare_main``: arguments are checked before the heavy imports)."""
    from bmaml_robot.cli import compare_main

    return compare_main(argv)
