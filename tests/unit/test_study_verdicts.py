"""The study's verdict rules (docs/study/verdicts.py): each claim's finding follows from its tests as
the docstring there says; synthetic seeds with effects far beyond or far within the noise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"
pytestmark = pytest.mark.skipif(not (STUDY / "verdicts.py").is_file(), reason="docs/study is not in this tree")
sys.path.insert(0, str(STUDY))
verdicts = pytest.importorskip("verdicts")

NOISE = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # five seeds


def make(a: np.ndarray, b: np.ndarray, **kind: bool) -> verdicts.Test:
    return verdicts.Test("x", "a - b", "m", a, b, **kind)


def test_findings_follow_the_sign_and_the_adjusted_p() -> None:
    higher, same, lower = make(100 + NOISE, NOISE), make(NOISE[::-1], NOISE), make(NOISE, 100 + NOISE)
    verdicts.adjust([higher, same, lower])
    assert [t.finding() for t in (higher, same, lower)] == ["higher", "no difference detected", "lower"]
    effect, low, high, _, detectable = higher.estimate()
    assert effect == pytest.approx(100.0) and low < 100.0 < high and 0.0 < detectable < 100.0
    assert "| +100.0 [" in higher.row("F") and higher.row("F").endswith("| higher |")


def test_ratios_are_compared_with_one() -> None:
    # spreads on the log scale: x e^3 larger; the F-test on raw values: 10x the standard deviation
    larger, wider = make(3 + NOISE / 10, NOISE / 10, ratio=True), make(10 * NOISE, NOISE, variance=True)
    verdicts.adjust([larger, wider])
    assert larger.estimate()[0] == pytest.approx(np.exp(3.0)) and larger.finding() == "higher"
    assert wider.estimate()[0] == pytest.approx(10.0) and wider.finding() == "higher"
    assert "| x10.00 [" in wider.row("F")


def test_too_few_seeds_is_pending() -> None:
    waiting = verdicts.adjust([make(np.array([1.0]), NOISE), make(100 + NOISE, NOISE)])
    assert waiting[0].finding() == "pending" and waiting[0].row("F").endswith("| pending |")
    assert waiting[1].finding() == "higher"  # Holm over the tests that have their seeds only
    assert verdicts.summary("1", waiting).startswith("pending")


@pytest.mark.parametrize("frozen, verdict", [
    (100 + NOISE, "refuted: it adapts better"), (NOISE, "supported: no difference detected"),
    (-100 + NOISE, "supported: it adapts worse"),
])
def test_claim_1(frozen: np.ndarray, verdict: str) -> None:
    tests = verdicts.adjust([verdicts.Test("1", "frozen - mlp", m, frozen, NOISE[::-1]) for m in ("adapted", "gain")])
    assert verdicts.summary("1", tests) == verdict


def test_claims_2_3_4_5_name_what_differs() -> None:
    two = verdicts.adjust([verdicts.Test("2", "f / m", "spread across seeds (sd)", 10 * NOISE, NOISE, variance=True),
                           verdicts.Test("2", "f / m", "spread across tasks", NOISE, NOISE[::-1], ratio=True)])
    assert verdicts.summary("2", two) == ("supported (larger spread: across seeds; "
                                          "no difference detected: across tasks)")
    # claim 3's measures in claim3.py's order: early mean, first iteration at 100, regression, final,
    # return at equal environment steps
    three = verdicts.adjust([verdicts.Test("3", "s - d", m, a, b) for m, a, b in (
        ("early", NOISE, NOISE[::-1]), ("first", NOISE, 50 + NOISE), ("regression", 30 + NOISE, NOISE),
        ("final", NOISE, NOISE[::-1]), ("at steps", NOISE, NOISE[::-1]))])
    assert verdicts.summary("3", three) == ("learns faster per iteration: yes, per environment step: not shown; "
                                            "regresses: yes; final return (equal iterations): no difference detected")
    slower = verdicts.adjust([verdicts.Test("3", "s - d", m, a, b) for m, a, b in (
        ("early", NOISE, 30 + NOISE), ("first", NOISE, NOISE[::-1]), ("regression", NOISE, NOISE[::-1]),
        ("final", NOISE, 80 + NOISE), ("at steps", 50 + NOISE, NOISE))])
    assert verdicts.summary("3", slower) == ("learns faster per iteration: no, slower, per environment step: yes; "
                                             "regresses: not shown; final return (equal iterations): lower")
    four = verdicts.adjust([verdicts.Test("4", "gru - mlp", "m", NOISE, 100 + NOISE),
                            verdicts.Test("4", "lstm - mlp", "m", NOISE, NOISE[::-1])])
    assert verdicts.summary("4", four) == "not supported (worse: gru - mlp; no difference detected: lstm - mlp)"
    maml = verdicts.MAML
    first = [verdicts.Test("5", f"rl2 (first attempt) - {m} (adapted)", "r", 200 + NOISE, 200 + NOISE[::-1]) for m in maml]
    adapted = [verdicts.Test("5", f"rl2 - {m}", "r", 300 + NOISE, (200 if m == maml[0] else 300) + NOISE[::-1])
               for m in maml]
    verdicts.adjust(first)
    verdicts.adjust(adapted)
    five = verdicts.summary("5", first + adapted)
    assert f"no difference detected: {', '.join(maml)}." in five
    assert five.endswith(f"above: {maml[0]}; no difference detected: {', '.join(maml[1:])}")
