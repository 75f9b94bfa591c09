"""Evidence items and the controls they must beat before the evidence page cites them.

A detector that cannot beat its control says nothing about which scenario we are in: a probe
whose AUROC random directions also reach, an attribution score an untrained model also gets,
an eval that was never shown to say "yes" on a model known to have the tendency. So every
measurement the evidence page shows is an `EvidenceItem` carrying a `Control`; the page cites an
item only when its control passed and lists the rest as "not informative", with the reason.

Where controls come from:

- the flagship study: its gates (an estimate stands only on cells that passed every gate);
- probe AUROCs: the random-direction null stored beside them (``random_null_q99`` per hook in
  ``probe.json``, or an estimate named like the AUROC with ``_null`` in its first part);
- training-data attribution: the untrained-model and clean-query baselines stored beside each
  score (``data_attribution_untrained_auroc/<method>`` for ``data_attribution_auroc/<method>``);
- evals: the positive control of the task (``eval_controls`` of a registered study's result,
  written by the ``eval-controls`` study);
- scaling fits: a ``control`` object in the fit's ``extra`` (none is recorded by default).

Any registered study adds its own items by storing them in its result:
``result["evidence"] = [item.to_dict(), ...]``; and positive controls of eval tasks as
``result["eval_controls"] = {task: control.to_dict()}``.

Example:
    >>> item = EvidenceItem("probes", "3f2a", "defection AUROC, layer 1", Estimate(0.8, 0.7, 0.9, 200, "b"),
    ...                     "detects", Control("random-direction null", False, "0.80 [0.70, 0.90] vs 0.93"))
    >>> item.informative
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alignlab.stats import Estimate

__all__ = [
    "CONTROL_MARKERS",
    "QUESTIONS",
    "Control",
    "EvidenceItem",
    "beats",
    "control_estimates",
    "items_from_result",
    "missing_control",
]

#: The research questions the evidence page answers, by key (in page order).
QUESTIONS: dict[str, str] = {
    "safety": "Do safety techniques remove planted failures, and which?",
    "probes": "Can interpretability detect them (probe AUROC)?",
    "scale": "How does each change with scale (fits and trend tests)?",
    "tracing": "Can behaviour be traced to training data?",
    "evals": "Does evaluation show worrying tendencies (sycophancy, power-seeking)?",
}

#: Words in the first part of a stored estimate's name that make it a control of the estimate
#: named without them (``data_attribution_untrained_auroc/x`` controls ``data_attribution_auroc/x``).
CONTROL_MARKERS = ("untrained", "null", "baseline", "control", "random")


@dataclass(frozen=True)
class Control:
    """The control a measurement must beat, and whether it did.

    Attributes:
        name: what the control is, e.g. "random-direction null (99th percentile)".
        passed: True when the measurement beat it; False when it did not; None when no control
            was measured (the measurement is then not informative either).
        detail: the numbers behind the verdict, or why there are none.
    """

    name: str
    passed: bool | None
    detail: str

    @property
    def status(self) -> str:
        """``"passed"``, ``"failed"`` or ``"missing"``."""
        return {True: "passed", False: "failed", None: "missing"}[self.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Control:
        passed = data.get("passed")
        return cls(
            str(data.get("name", "")),
            passed if isinstance(passed, bool) else None,
            str(data.get("detail", "")),
        )


def missing_control(name: str, why: str) -> Control:
    """A control that was never measured (the item is listed as not informative)."""
    return Control(name, None, why)


@dataclass(frozen=True)
class EvidenceItem:
    """One measurement for the evidence page.

    Attributes:
        question: key in `QUESTIONS`.
        source: the run id (or ``"scaling/<fit>"``) the number comes from; the page links it.
        measure: what was measured, in words (task, organism, size, layer).
        estimate: the number with its interval (None when the item is a statement only).
        reading: the one-phrase reading computed from the interval, or a statement.
        control: the control and its verdict.
    """

    question: str
    source: str
    measure: str
    estimate: Estimate | None
    reading: str
    control: Control

    @property
    def informative(self) -> bool:
        """Whether the page may cite it: its control was measured and beaten."""
        return self.control.passed is True

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "source": self.source,
            "measure": self.measure,
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
            "reading": self.reading,
            "control": self.control.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvidenceItem:
        """Rebuild an item (ValueError, KeyError or TypeError when ``data`` is not one)."""
        question = str(data["question"])
        if question not in QUESTIONS:
            raise ValueError(f"unknown evidence question {question!r}")
        est = data.get("estimate")
        control = data.get("control")
        return cls(
            question,
            str(data["source"]),
            str(data["measure"]),
            None if est is None else Estimate.from_dict(est),
            str(data.get("reading", "")),
            Control.from_dict(control) if isinstance(control, Mapping) else missing_control("", "no control"),
        )


def items_from_result(result: Mapping[str, Any], source: str) -> list[EvidenceItem]:
    """The items a registered study stored under ``"evidence"`` (malformed entries are dropped:
    the page shows what it can read rather than failing). ``source`` fills items without one."""
    out = []
    for raw in result.get("evidence") or ():
        if not isinstance(raw, Mapping):
            continue
        try:
            out.append(EvidenceItem.from_dict({**raw, "source": raw.get("source") or source}))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _strip_markers(prefix: str) -> str:
    parts = [p for p in prefix.split("_") if p not in CONTROL_MARKERS]
    return "_".join(parts)


def _is_control_name(name: str) -> bool:
    return any(p in CONTROL_MARKERS for p in name.split("/", 1)[0].split("_"))


def control_estimates(name: str, stored: Mapping[str, Mapping[str, Any]]) -> dict[str, Estimate]:
    """The stored estimates that control ``name``, by their names (see `CONTROL_MARKERS`).

    ``name`` itself a control name gives none (a control is not a measurement).
    """
    if _is_control_name(name):
        return {}
    head, _, tail = name.partition("/")
    out = {}
    for other, row in stored.items():
        o_head, _, o_tail = other.partition("/")
        if other != name and o_tail == tail and _is_control_name(other) and _strip_markers(o_head) == head:
            try:
                out[other] = Estimate.from_dict(row)
            except (KeyError, TypeError, ValueError):
                continue
    return out


def beats(est: Estimate, controls: Mapping[str, Estimate | float]) -> tuple[bool, str]:
    """Whether ``est``'s lower bound is above every control's upper end (a float is a quantile of
    a null distribution, e.g. the 99th percentile of random directions), and the numbers."""
    parts, ok = [], True
    for name, c in controls.items():
        top = c if isinstance(c, float) else (c.hi if math.isfinite(c.hi) else c.value)
        shown = f"{c:.2f}" if isinstance(c, float) else str(c)
        beaten = math.isfinite(est.lo) and est.lo > top
        ok &= beaten
        parts.append(f"{name} {shown} ({'beaten' if beaten else 'not beaten'})")
    return ok, f"{est} vs " + "; ".join(parts)


def is_control_name(name: str) -> bool:
    """Whether a stored estimate's name marks it as a control (see `CONTROL_MARKERS`)."""
    return _is_control_name(name)


def sort_items(items: Sequence[EvidenceItem]) -> list[EvidenceItem]:
    """Items in page order: by question, informative first, then as given."""
    order = {q: i for i, q in enumerate(QUESTIONS)}
    return sorted(items, key=lambda it: (order[it.question], not it.informative))
