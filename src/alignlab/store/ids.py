"""Content-addressed run ids: the one place alignlab turns a config into an id."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import numbers
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from alignlab.errors import ConfigError

JSON = Any  # None | bool | int | float | str | list[JSON] | dict[str, JSON]


def run_id(
    config: Mapping[str, Any],
    recipe: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> str:
    """The id of the run that ``config`` (plus ``recipe``) describes under an alignlab version.

    The id is the first 16 hex digits of the sha256 of the canonical JSON of
    ``{"config": config, "recipe": recipe, "version": version}``, so it is stable across dict key
    order and processes, and changes when any value or the version changes.

    Args:
        config: what is run (nested mappings, sequences, scalars and dataclasses).
        recipe: how it is run, when that is kept apart from the config.
        version: defaults to ``alignlab.__version__``.

    Raises:
        ConfigError: a value cannot be canonicalised (e.g. a set, bytes or an arbitrary object).

    Example:
        >>> run_id({"lr": 0.1, "steps": 100}, version="0.1.0") == run_id(
        ...     {"steps": 100, "lr": 0.1}, version="0.1.0")
        True
    """
    if version is None:
        version = current_version()
    payload = {"config": config, "recipe": recipe, "version": version}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:16]


def current_version() -> str:
    """The installed alignlab version (the default ``version`` of :func:`run_id`)."""
    # Looked up at call time: alignlab/__init__ may itself import the store.
    import alignlab

    return str(alignlab.__version__)


def canonical_json(obj: Any) -> str:
    """Deterministic compact JSON of ``obj``: sorted keys, tuples as lists, dataclasses as dicts.

    Floats go through ``repr`` (what ``json`` does), so ``0.1`` stays ``0.1``.
    """
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_jsonable(obj: Any, path: str = "config") -> JSON:
    """``obj`` as plain JSON types; ``path`` names the location in error messages."""
    # bool before numbers: bool is an Integral and must stay true/false, not 1/0.
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, path)
    if isinstance(obj, numbers.Integral):  # includes numpy integer scalars
        return int(obj)
    if isinstance(obj, numbers.Real):  # includes numpy float scalars
        return float(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name), f"{path}.{f.name}") for f in dataclasses.fields(obj)
        }
    if isinstance(obj, Mapping):
        out: dict[str, JSON] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ConfigError(f"{path} has a non-string key {key!r}; run configs need string keys")
            out[key] = to_jsonable(value, f"{path}.{key}")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    raise ConfigError(
        f"{path} is a {type(obj).__name__} ({obj!r}), which a run config cannot hold; "
        "use numbers, strings, lists, dicts or dataclasses"
    )
