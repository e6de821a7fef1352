"""The shared argument checks (bmaml_robot_deploy.checks): what they accept, what they return and
the exact messages, the ones the code base already used."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from bmaml_robot_deploy.checks import check_choice, check_float, check_int, check_seconds, describe_range

# --- check_int ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 7, np.int64(7), np.uint16(7), np.int8(-0), 2**70])
def test_check_int_accepts_python_and_numpy_integers_and_returns_an_int(value):
    got = check_int(value, "n")
    assert got == int(value) and type(got) is int


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (-1, dict(minimum=0), "steps: expected an integer >= 0, got -1"),
        (True, dict(minimum=0), "steps: expected an integer >= 0, got True"),
        (np.True_, dict(minimum=0), f"steps: expected an integer >= 0, got {np.True_!r}"),
        (1.0, dict(minimum=0), "steps: expected an integer >= 0, got 1.0"),
        ("3", dict(minimum=1), "steps: expected an integer >= 1, got '3'"),
        (None, dict(minimum=1), "steps: expected an integer >= 1, got None"),
        (0, dict(minimum=1, allow_none=True), "steps: expected an integer >= 1 or None, got 0"),
        (65536, dict(minimum=0, maximum=65535), "steps: expected an integer in [0, 65535], got 65536"),
        (2**32, dict(minimum=0, maximum=2**32 - 1), "steps: expected an integer in [0, 4294967295], got 4294967296"),
        (0, dict(minimum=1, maximum=2**31 - 1), "steps: expected an integer in [1, 2147483647], got 0"),
        (2**64, dict(minimum=0, below=2**64), "steps: expected an integer in [0, 2**64), got 18446744073709551616"),
        (-1, dict(minimum=0, below=2**63), "steps: expected an integer in [0, 2**63), got -1"),
        (0, dict(minimum=1, maximum=2**30), "steps: expected an integer in [1, 2**30], got 0"),
        (65537, dict(minimum=1, maximum=65536), "steps: expected an integer in [1, 65536], got 65537"),
        (6, dict(maximum=5), "steps: expected an integer <= 5, got 6"),
        (3, dict(minimum=16, maximum=4096, what="an even integer", note=" (video encoders need even sizes)"),
         "steps: expected an even integer in [16, 4096] (video encoders need even sizes), got 3"),
    ],
)
def test_check_int_messages(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_int(value, "steps", **kwargs)


def test_check_int_none_type_errors_and_exclusive_arguments():
    assert check_int(None, "steps", minimum=0, allow_none=True) is None
    with pytest.raises(TypeError, match=r"^batch_size: expected an integer in \[1, 65536\], got 2.0$"):
        check_int(2.0, "batch_size", minimum=1, maximum=65536, type_error=TypeError)
    with pytest.raises(ValueError, match=r"^batch_size: expected an integer in \[1, 65536\], got 0$"):
        check_int(0, "batch_size", minimum=1, maximum=65536, type_error=TypeError)  # range: a ValueError
    with pytest.raises(TypeError, match="maximum .* or below .*, not both"):
        check_int(1, "n", maximum=2, below=3)


# --- check_float ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1.5, np.float32(1.5), np.float64(-2.0), np.int64(3)])
def test_check_float_accepts_real_numbers_and_returns_a_float(value):
    got = check_float(value, "x")
    assert got == float(value) and type(got) is float


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0, dict(low=0, low_open=True), "rate_hz: expected a finite number > 0, got 0"),
        (math.nan, dict(low=0, low_open=True), "rate_hz: expected a finite number > 0, got nan"),
        (math.inf, dict(), "rate_hz: expected a finite number, got inf"),
        (10**400, dict(), f"rate_hz: expected a finite number, got {10**400!r}"),
        (True, dict(), "rate_hz: expected a finite number, got True"),
        ("0.1", dict(), "rate_hz: expected a finite number, got '0.1'"),
        (np.zeros(1), dict(), "rate_hz: expected a finite number, got array([0.])"),
        (-1.0, dict(low=0), "rate_hz: expected a finite number >= 0, got -1.0"),
        (0.0, dict(low=0, low_open=True, what="a number"), "rate_hz: expected a number > 0, got 0.0"),
        (-1, dict(low=0, what="seconds"), "rate_hz: expected seconds >= 0, got -1"),
        (0.0, dict(low=1e-6, high=3600.0, what="seconds"), "rate_hz: expected seconds in [1e-06, 3600], got 0.0"),
        (241, dict(low=0, high=240, low_open=True, what="a number"), "rate_hz: expected a number in (0, 240], got 241"),
        (1.0, dict(low=0, high=1, low_open=True, high_open=True, what="a number"),
         "rate_hz: expected a number in (0, 1), got 1.0"),
        (2.0, dict(high=1, allow_none=True), "rate_hz: expected a finite number <= 1 or None, got 2.0"),
    ],
)
def test_check_float_messages(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_float(value, "rate_hz", **kwargs)


def test_check_float_non_finite_none_and_type_errors():
    assert check_float(math.inf, "x", finite=False) == math.inf
    assert math.isnan(check_float(math.nan, "x", finite=False))
    with pytest.raises(ValueError, match=r"^x: expected a number >= 0, got nan$"):
        check_float(math.nan, "x", finite=False, low=0)  # NaN is inside no bound
    assert check_float(None, "x", allow_none=True) is None
    with pytest.raises(TypeError, match=r"^x: expected a real number in \[0, 1\], got 'a'$"):
        check_float("a", "x", low=0, high=1, what="a real number", type_error=TypeError)
    assert check_seconds(0, "timeout") == 0.0
    with pytest.raises(ValueError, match=r"^timeout: expected seconds >= 0, got -0.5$"):
        check_seconds(-0.5, "timeout")


# --- check_choice and describe_range --------------------------------------------------------------


def test_check_choice():
    assert check_choice("gru", "policy_kind", ("mlp", "gru")) == "gru"
    for value in ("transformer", None, np.array(["gru", "mlp"]), ["gru"]):
        with pytest.raises(ValueError, match=r"^policy_kind: expected one of \['mlp', 'gru'\], got "):
            check_choice(value, "policy_kind", ("mlp", "gru"))
    with pytest.raises(ValueError, match=r"expected one of \[0, 1\], got True"):
        check_choice(True, "bit", (0, 1))  # a bool is not the number 1 here


def test_without_a_name_for_argparse_types():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected an integer >= 1, got 'x'$"):
        check_int("x", None, minimum=1, type_error=argparse.ArgumentTypeError)
    with pytest.raises(ValueError, match=r"^expected a finite number >= 0, got -1.0$"):
        check_float(-1.0, "", low=0)


def test_describe_range():
    assert describe_range() == ""
    assert describe_range(0) == " >= 0" and describe_range(0, low_open=True) == " > 0"
    assert describe_range(high=5) == " <= 5" and describe_range(high=5, high_open=True) == " < 5"
    assert describe_range(0, 2**64, high_open=True) == " in [0, 2**64)"
    assert describe_range(1, 2**20 - 1) == " in [1, 1048575]" and describe_range(1, 2**20) == " in [1, 2**20]"
    assert describe_range(1e-6, 3600.0) == " in [1e-06, 3600]"
