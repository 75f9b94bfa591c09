"""Range checks shared by every config's ``__post_init__``: one message shape everywhere.

Each check returns ``None`` when the value is fine, else one phrase naming the field, the value
and the allowed range (``"lr must be a finite number > 0, got nan"``); `raise_problems` joins a
config's phrases into one `ConfigError` line. NaN compares false with everything, so a bare
``x <= 0`` test lets it through: every float check here asks `math.isfinite` first.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from alignlab.errors import ConfigError

# Upper bounds that no sensible run reaches, so a typo (an extra digit, 1e12 for 1e2) is caught
# before it starts a run that would never end or allocates without limit.
MAX_STEPS = 10_000_000
MAX_BATCH = 1 << 20
MAX_NEW_TOKENS = 1 << 16


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return ""


def check_real(
    name: str,
    value: object,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> str | None:
    """A finite real number within the bounds (``lo_open``/``hi_open`` exclude the bound)."""
    wanted = f"{name} must be a finite number {_range_text(lo, hi, lo_open, hi_open)}".rstrip()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{wanted}, got {value!r}"
    x = float(value)
    bad = not math.isfinite(x)
    bad = bad or (lo is not None and (x < lo or (lo_open and x == lo)))
    bad = bad or (hi is not None and (x > hi or (hi_open and x == hi)))
    # str, not repr: numpy scalars print as "nan", not "np.float64(nan)".
    return f"{wanted}, got {value}" if bad else None


def check_int(name: str, value: object, *, lo: int | None = None, hi: int | None = None) -> str | None:
    """An integer (not a bool, not a float) within ``[lo, hi]``."""
    wanted = f"{name} must be an integer {_range_text(lo, hi, False, False)}".rstrip()
    # bool is an Integral; True for a step count is a bug, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"{wanted}, got {value!r}"
    n = int(value)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        return f"{wanted}, got {value}"
    return None


def check_choice(name: str, value: object, choices: Iterable[object]) -> str | None:
    """One of ``choices`` (named in the message)."""
    options = list(choices)
    if value in options:
        return None
    return f"{name} must be one of {', '.join(map(str, options))}, got {value!r}"


def raise_problems(owner: str, problems: Iterable[str | None]) -> None:
    """Raise one `ConfigError` line listing every problem found, if any."""
    found = [p for p in problems if p]
    if found:
        raise ConfigError(f"invalid {owner}: " + "; ".join(found))
