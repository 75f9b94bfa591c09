"""The study registry: every study besides the flagship plugs in here (name -> `StudyDef`).

A study module in ``alignlab/studies/`` registers itself at import time; `studies()` imports them
all, so the CLI (``alignlab study NAME``), the report pages and the evidence page find each study
by the name stored in its ``study.json``.

Example:
    >>> from alignlab.studies.registry import studies
    >>> sorted(studies())  # doctest: +SKIP
    ['debate', 'weak-to-strong', ...]
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alignlab.errors import ConfigError
from alignlab.store import Run, Store

RESULT_FILE = "study.json"

Result = dict[str, Any]


@dataclass(frozen=True)
class StudyDef:
    """One registered study.

    Attributes:
        name: registry name, used on the command line and stored in ``study.json``.
        question: the one-line question the study answers (shown in listings and reports).
        presets: preset name -> (spec, description); must hold ``"quick"`` and ``"default"``.
        run: ``(store, spec) -> result``; the result is JSON-able and holds ``"answer"``, a one-line
            headline that states the finding with its interval and gates.
        summary: result -> console text, leading with the answer.
        report: result -> HTML fragment (all text escaped), leading with the answer.
        given_base: ``(spec, model dirs) -> spec`` with those Hugging Face checkpoints as the
            study's base models (``alignlab study NAME --base-model DIR``); None when the study's
            models come from the built-in family only (`with_base_models` then says so).
    """

    name: str
    question: str
    presets: Callable[[], dict[str, tuple[Any, str]]]
    run: Callable[[Store, Any], Result]
    summary: Callable[[Result], str]
    report: Callable[[Result], str]
    given_base: Callable[[Any, tuple[str, ...]], Any] | None = None

    def preset(self, name: str) -> Any:
        """The spec of preset ``name`` (ConfigError naming the choices when unknown)."""
        table = self.presets()
        if name not in table:
            raise ConfigError(
                f"unknown preset {name!r} for study {self.name!r}; choose one of: {', '.join(table)}"
            )
        return table[name][0]


_STUDIES: dict[str, StudyDef] = {}
_loaded = False


def register_study(defn: StudyDef) -> StudyDef:
    """Add ``defn`` to the registry (re-registering the same name replaces it: module reloads)."""
    _STUDIES[defn.name] = defn
    return defn


def studies() -> dict[str, StudyDef]:
    """Every registered study, by name (imports each module of ``alignlab.studies`` once)."""
    global _loaded
    if not _loaded:
        import alignlab.studies as pkg

        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_") and info.name != "registry":
                importlib.import_module(f"{pkg.__name__}.{info.name}")
        _loaded = True
    return dict(_STUDIES)


def get_study(name: str) -> StudyDef:
    """The study called ``name`` (ConfigError naming the choices when unknown)."""
    table = studies()
    if name not in table:
        raise ConfigError(f"unknown study {name!r}; choose one of: {', '.join(sorted(table))}")
    return table[name]


def with_base_models(defn: StudyDef, spec: Any, model_dirs: Sequence[str]) -> Any:
    """``spec`` with the checkpoints in ``model_dirs`` as its base models (``spec`` itself when
    none are given).

    Raises:
        ConfigError: the study takes no given base model; the one-line message names the commands
            and studies that do.
    """
    if not model_dirs:
        return spec
    if defn.given_base is None:
        takes = sorted(name for name, d in studies().items() if d.given_base is not None)
        others = "".join(f", alignlab study {name}" for name in takes)
        raise ConfigError(
            f"study {defn.name!r} does not take --base-model: it trains and compares models of the "
            "built-in family (character tokenizer); a given checkpoint runs in alignlab run "
            "--base-model DIR (the flagship), alignlab eval --model DIR, "
            f"alignlab interp sae|probe DIR{others}"
        )
    return defn.given_base(spec, tuple(str(d) for d in model_dirs))


def _spec_dict(spec: Any) -> Any:
    return dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) and not isinstance(spec, type) else spec


def run_registered(store: Store, name: str, spec: Any) -> tuple[Run, Result]:
    """Run study ``name`` with ``spec`` and store its result as ``study.json`` of a study run.

    The run's id is the hash of (study name, spec), so the same study with the same spec is the
    same run; a finished one is returned without running again, since nothing stored is redone.

    Returns:
        ``(run, result)``; the result also carries ``"study"``, ``"spec"`` and ``"timing"``.
    """
    defn = get_study(name)
    config = {"study": name, "spec": _spec_dict(spec)}

    def compute(run: Run) -> Result:
        t0 = time.perf_counter()
        result = dict(defn.run(store, spec))
        if not isinstance(result.get("answer"), str):
            raise TypeError(f"study {name!r} returned no 'answer' string")
        result.update(study=name, question=defn.question, spec=config["spec"], run_id=run.id)
        result.setdefault("timing", {})["wall_seconds"] = time.perf_counter() - t0
        return result

    result, run = store.cached_json("study", config, RESULT_FILE, compute, name=name, indent=1)
    return run, result


def registered_result(run: Run) -> tuple[StudyDef, Result] | None:
    """(study, result) when ``run`` holds the ``study.json`` of a registered study, else None."""
    import json

    path = run.dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    name = result.get("study") if isinstance(result, dict) else None
    if not isinstance(name, str) or name not in studies():
        return None
    return _STUDIES[name], result
