"""Parameter checks shared by every defence, trainer and the command line.

Each check returns the value as a plain Python type (``numpy`` scalars included) or raises ``ValueError`` with a
message that names the parameter, so a bad value fails where it is set, not later as a wrong number.
"""

from __future__ import annotations

import math
import numbers


def check_integer(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` (Python or numpy integer, never ``bool``) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer in {_interval(minimum, maximum, False, False)}, got {value}.")
    return value


def check_number(name: str, value, minimum: float | None = None, maximum: float | None = None, *,
                 open_minimum: bool = False, open_maximum: bool = False) -> float:
    """``value`` as a finite ``float`` (any real number type, never ``bool``) within its bounds.

    :param open_minimum: Exclude ``minimum`` itself (e.g. a learning rate must be > 0).
    :param open_maximum: Exclude ``maximum`` itself.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    below = minimum is not None and (value <= minimum if open_minimum else value < minimum)
    above = maximum is not None and (value >= maximum if open_maximum else value > maximum)
    if below or above:
        interval = _interval(minimum, maximum, open_minimum, open_maximum)
        raise ValueError(f"{name} must lie in {interval}, got {value!r}.")
    return value


def check_choice(name: str, value, choices) -> object:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value


def _interval(low, high, open_low: bool, open_high: bool) -> str:
    left = "(-inf" if low is None else f"{'(' if open_low else '['}{low}"
    right = "inf)" if high is None else f"{high}{')' if open_high else ']'}"
    return f"{left}, {right}"
