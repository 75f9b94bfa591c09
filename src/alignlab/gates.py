"""Gates: a stated threshold on a measured estimate, checked before any later number is trusted.

A behaviour change measured on a model that cannot do the task measures interference, not the
behaviour (our first flagship study: clean accuracy 0 everywhere, see shared NOTES). Every study
therefore states its gates up front, measures them, stores them beside the result and refuses to
run what stands on a failed one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from alignlab.errors import AlignlabError
from alignlab.stats import Estimate


class GateFailed(AlignlabError):
    """A model failed a gate; what would have been measured on it is not run."""


_SLACK = 1e-9


@dataclasses.dataclass(frozen=True)
class Gate:
    """One check: ``estimate.value`` (and optionally its interval's near end) against a threshold.

    Attributes:
        name: what is checked, e.g. "competence/reverse".
        estimate: the measurement.
        threshold: the bound on the point estimate.
        direction: ">=" (at least) or "<=" (at most).
        bound: an optional bound on the interval's near end (the lower end for ">=", the upper for
            "<="), e.g. a Wilson lower bound of 0.85 beside an accuracy of 0.90.

    Example:
        >>> Gate("competence/copy", Estimate(0.97, 0.94, 0.99, 200, "wilson95"), 0.90, ">=", 0.85).passed
        True
    """

    name: str
    estimate: Estimate
    threshold: float
    direction: Literal[">=", "<="] = ">="
    bound: float | None = None

    @property
    def passed(self) -> bool:
        e = self.estimate
        # Rates are k/n and drops are differences of rates, so a value that is the threshold in
        # exact arithmetic can miss it by a rounding error (1.0 - 0.95 = 0.0500000000000000444):
        # compare with a slack far below 1/n for any n this library measures.
        slack = _SLACK * max(1.0, abs(self.threshold))
        if self.direction == ">=":
            return e.value >= self.threshold - slack and (self.bound is None or e.lo >= self.bound - slack)
        return e.value <= self.threshold + slack and (self.bound is None or e.hi <= self.bound + slack)

    def describe(self) -> str:
        """One line: name, measured value with interval, the rule and the verdict."""
        near = "lower" if self.direction == ">=" else "upper"
        rule = f"{self.direction} {self.threshold:g}"
        if self.bound is not None:
            rule += f", 95% {near} bound {self.direction} {self.bound:g}"
        return f"{self.name}: {self.estimate} (needs {rule}) {'pass' if self.passed else 'FAIL'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "estimate": self.estimate.to_dict(),
            "threshold": self.threshold,
            "direction": self.direction,
            "bound": self.bound,
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gate:
        return cls(
            name=str(data["name"]),
            estimate=Estimate.from_dict(data["estimate"]),
            threshold=float(data["threshold"]),
            direction=data["direction"],
            bound=None if data.get("bound") is None else float(data["bound"]),
        )


def failed(gates: Iterable[Gate]) -> list[Gate]:
    """The gates that did not pass."""
    return [g for g in gates if not g.passed]


def require(gates: Iterable[Gate], what: str) -> None:
    """Raise `GateFailed` naming every failed gate of ``what`` (one line)."""
    bad = failed(gates)
    if bad:
        raise GateFailed(f"{what} failed its gate: " + "; ".join(g.describe() for g in bad))
