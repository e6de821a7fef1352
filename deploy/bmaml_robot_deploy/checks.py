"""Argument checks shared by the deploy runtime and the main package: integers, real numbers and
choices, each with the one error message style of the code base::

    check_int(steps, "steps", minimum=0)                 # steps: expected an integer >= 0, got -1
    check_int(seed, "seed", minimum=0, below=2**64)      # seed: expected an integer in [0, 2**64), got -1
    check_int(flags, "flags", minimum=0, maximum=65535)  # flags: expected an integer in [0, 65535], got 65536
    check_float(rate, "rate_hz", low=0, low_open=True)   # rate_hz: expected a finite number > 0, got 0
    check_seconds(timeout, "timeout")                    # timeout: expected seconds >= 0, got -1
    check_choice(kind, "policy_kind", ("mlp", "gru"))    # policy_kind: expected one of ['mlp', 'gru'], got 'x'

A message is ``f"{name}: expected {what}{range}{' or None'}{note}, got {value!r}"`` (without
``"{name}: "`` when ``name`` is None or empty: for ``argparse`` types, where argparse names the
option; pass ``type_error=argparse.ArgumentTypeError`` there). Bounds are written as given
(``:g`` for floats), except powers of two from ``2**20`` up, written ``2**k`` (``[0, 2**64)``
reads better than ``[0, 18446744073709551616)``). Booleans are never numbers here (``True`` is
not a step count), numpy scalars are. Only the standard library and numpy: no torch, no
onnxruntime, so both packages can use it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["check_choice", "check_float", "check_int", "check_seconds", "describe_range"]

#: Powers of two at least this large are written ``2**k`` in messages.
_POWER_TEXT_FROM = 2**20


def _bound_text(bound: float) -> str:
    if isinstance(bound, int):
        if bound >= _POWER_TEXT_FROM and bound & (bound - 1) == 0:
            return f"2**{bound.bit_length() - 1}"
        return str(bound)
    return f"{bound:g}"


def describe_range(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> str:
    """The range part of a message, with a leading space: ``" >= 0"``, ``" > 0"``, ``" <= 5"``,
    ``" < 1"``, ``" in [1, 65535]"``, ``" in (0, 240]"``, ``" in [0, 2**64)"``; ``""`` without
    bounds."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_bound_text(low)}, {_bound_text(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_bound_text(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_bound_text(high)}"
    return ""


def _prefix(name: str | None) -> str:
    return f"{name}: " if name else ""


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_int(
    value: Any,
    name: str | None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    below: int | None = None,
    allow_none: bool = False,
    what: str = "an integer",
    note: str = "",
    type_error: type[Exception] = ValueError,
) -> Any:
    """``value`` as an ``int``, checked: an integer (Python or numpy, or anything with
    ``__index__``; never a bool) with ``minimum <= value``, ``value <= maximum`` and
    ``value < below`` (give ``maximum`` or ``below``, not both). With ``allow_none``, None is
    returned as is (and the message says ``or None``).

    Raises:
        ValueError: ``f"{name}: expected {what}{range}{' or None'}{note}, got {value!r}"``, e.g.
            ``"steps: expected an integer >= 0, got -1"``; ``type_error`` (default ``ValueError``)
            with the same message for a value that is not an integer at all.
    """
    if maximum is not None and below is not None:
        raise TypeError("check_int: give maximum (inclusive) or below (exclusive), not both")
    if value is None and allow_none:
        return None
    high = maximum if below is None else below
    message = (
        f"{_prefix(name)}expected {what}{describe_range(minimum, high, high_open=below is not None)}"
        f"{' or None' if allow_none else ''}{note}, got {value!r}"
    )
    if _is_bool(value):
        raise type_error(message)
    try:
        number = operator.index(value)
    except TypeError:
        raise type_error(message) from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum) or (
        below is not None and number >= below
    ):
        raise ValueError(message)
    return int(number)


def check_float(
    value: Any,
    name: str | None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    allow_none: bool = False,
    what: str | None = None,
    note: str = "",
    type_error: type[Exception] = ValueError,
) -> Any:
    """``value`` as a ``float``, checked: a real number (``int``, ``float`` or a numpy integer or
    floating scalar; never a bool, a string or an array), finite unless ``finite=False``, inside
    the bounds (``low``/``high`` inclusive unless ``low_open``/``high_open``; NaN is never inside
    a bound). With ``allow_none``, None is returned as is.

    ``what`` names the expected value in the message: default ``"a finite number"`` (``"a
    number"`` with ``finite=False``); e.g. ``"seconds"``, or ``"a number"`` where a message never
    said ``finite``.

    Raises:
        ValueError: ``f"{name}: expected {what}{range}{' or None'}{note}, got {value!r}"``, e.g.
            ``"rate_hz: expected a finite number > 0, got 0"``; ``type_error`` (default
            ``ValueError``) with the same message for a value that is not a real number.
    """
    if value is None and allow_none:
        return None
    if what is None:
        what = "a finite number" if finite else "a number"
    message = (
        f"{_prefix(name)}expected {what}{describe_range(low, high, low_open=low_open, high_open=high_open)}"
        f"{' or None' if allow_none else ''}{note}, got {value!r}"
    )
    if _is_bool(value) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise type_error(message)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf if value > 0 else -math.inf
    if finite and not math.isfinite(number):
        raise ValueError(message)
    if low is not None and not (number > low if low_open else number >= low):
        raise ValueError(message)
    if high is not None and not (number < high if high_open else number <= high):
        raise ValueError(message)
    return number


def check_seconds(value: Any, name: str | None) -> float:
    """A duration: a finite number of seconds >= 0 (``"{name}: expected seconds >= 0, got ..."``)."""
    return check_float(value, name, low=0, what="seconds")


def check_choice(value: Any, name: str | None, choices: Iterable[Any]) -> Any:
    """``value`` if it equals one of ``choices``, else ``ValueError(f"{name}: expected one of
    {list(choices)}, got {value!r}")``."""
    options = list(choices)
    try:
        found = any(value == option for option in options if not _is_bool(value) or _is_bool(option))
    except (TypeError, ValueError):  # e.g. an array: no truth value
        found = False
    if not found:
        raise ValueError(f"{_prefix(name)}expected one of {options}, got {value!r}")
    return value
