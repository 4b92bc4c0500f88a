"""The shared parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from art_purifiers.checks import check_choice, check_integer, check_number


def test_integer_accepts_numpy_scalars_and_returns_int():
    value = check_integer("iterations", np.int64(30), minimum=1)
    assert value == 30 and type(value) is int


@pytest.mark.parametrize("bad", [True, 1.0, "3", None, np.float32(2)])
def test_integer_refuses_non_integers(bad):
    with pytest.raises(ValueError, match="iterations must be an integer"):
        check_integer("iterations", bad)


def test_integer_range():
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, inf\), got 0"):
        check_integer("n", 0, minimum=1)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 5\]"):
        check_integer("seed", 6, minimum=0, maximum=5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float64("nan")])
def test_number_refuses_non_finite(bad):
    with pytest.raises(ValueError, match="lr must be finite"):
        check_number("lr", bad, minimum=0, open_minimum=True)


def test_number_bounds_and_types():
    assert check_number("step", np.float32(0.5), minimum=0) == 0.5
    assert check_number("step", 0, minimum=0) == 0.0
    with pytest.raises(ValueError, match=r"lr must lie in \(0, inf\)"):
        check_number("lr", 0, minimum=0, open_minimum=True)
    with pytest.raises(ValueError, match=r"ratio must lie in \[0, 1\)"):
        check_number("ratio", 1, minimum=0, maximum=1, open_maximum=True)
    with pytest.raises(ValueError, match="must be a number"):
        check_number("lr", True)
    with pytest.raises(ValueError, match="must be a number"):
        check_number("lr", "0.1")


def test_choice():
    assert check_choice("norm", "inf", ("inf", "2")) == "inf"
    with pytest.raises(ValueError, match=r"norm must be one of \('inf', '2'\), got '1'"):
        check_choice("norm", "1", ("inf", "2"))
