"""``--set key=value`` overrides for any (nested) config dataclass, with clear errors.

The CLI is generated from the dataclasses themselves, so every field is settable and documented
in one place (the dataclass docstring).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from alignlab.errors import ConfigError

T = TypeVar("T")

# Values given by name for a nested dataclass field (e.g. ``model=al-1m``) resolve through these.
PresetResolver = Callable[[str, str], Any]


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse(key: str, text: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(key, text, inner[0])
    if origin is typing.Literal:
        if text not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {text!r}")
        return text
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} expects true or false, got {text!r}")
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise ConfigError(f"{key} expects an integer, got {text!r}") from None
            if not as_float.is_integer():
                raise ConfigError(f"{key} expects an integer, got {text!r}") from None
            return int(as_float)
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key} expects a number, got {text!r}") from None
    if tp is str:
        return text
    if origin is tuple:
        # Comma-separated: ``sizes=al-30k,al-100k``; ``word_len=2,5`` for a fixed-length tuple.
        items = [t.strip() for t in text.split(",") if t.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(key, t, args[0]) for t in items)
        if len(items) != len(args):
            raise ConfigError(f"{key} expects {len(args)} comma-separated values, got {text!r}")
        return tuple(_parse(key, t, a) for t, a in zip(items, args, strict=True))
    raise ConfigError(f"{key} cannot be set from the command line")


def settable_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every ``key`` (dotted for nested dataclasses) that `apply_overrides` accepts."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(settable_keys(value, prefix + f.name + "."))
    return keys


def apply_overrides(cfg: T, overrides: Iterable[str], resolve_preset: PresetResolver | None = None) -> T:
    """Return a copy of ``cfg`` with ``key=value`` overrides applied (dotted keys reach nested
    configs, e.g. ``model.d_model=32``). Errors name the key and say what would be valid.

    Example:
        >>> apply_overrides(TrainConfig(), ["steps=100", "model.n_layers=3"])
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        cfg = _set(cfg, key.strip(), text.strip(), key.strip(), resolve_preset)
    return cfg


def _set(cfg: Any, key: str, text: str, full: str, resolve: PresetResolver | None) -> Any:
    head, _, rest = key.partition(".")
    names = {f.name for f in dataclasses.fields(cfg)}
    if head not in names:
        hint = ", ".join(settable_keys(cfg))
        raise ConfigError(f"unknown config key {full!r}; settable keys: {hint}")
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{head} has no sub-keys; use --set {head}=VALUE")
        new = _set(current, rest, text, full, resolve)
    elif dataclasses.is_dataclass(current):
        if resolve is None:
            raise ConfigError(f"{full} is a group of settings; set its fields as {full}.FIELD=VALUE")
        new = resolve(full, text)
    else:
        new = _parse(full, text, _field_types(type(cfg))[head])
    try:
        return dataclasses.replace(cfg, **{head: new})
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid value for {full}: {e}") from None
