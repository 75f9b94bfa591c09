"""Hook points with TransformerLens's names and semantics.

A `HookPoint` is an identity module; its name is its path in the module tree, so
``blocks.0.attn.hook_pattern`` is simply ``model.blocks[0].attn.hook_pattern``. Hook functions have
TransformerLens's signature ``fn(tensor, hook) -> tensor | None`` (a returned tensor replaces the
activation), so code written for TransformerLens ports by changing the import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]
NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]  # noqa: UP007


class HookPoint(nn.Module):
    """Identity module that activations pass through; attach hooks to read or edit them."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""
        self._handles: list[RemovableHandle] = []

    @property
    def active(self) -> bool:
        """Whether any hook is attached (lets callers skip computing optional activations)."""
        return bool(self._forward_hooks)

    def add_hook(self, fn: HookFn) -> RemovableHandle:
        def _wrapped(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> Any:
            return fn(output, self)

        handle = self.register_forward_hook(_wrapped)
        self._handles.append(handle)
        return handle

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _make_filter(names_filter: NamesFilter) -> Callable[[str], bool]:
    if names_filter is None:
        return lambda _name: True
    if isinstance(names_filter, str):
        target = names_filter
        return lambda name: name == target
    if callable(names_filter):
        return names_filter
    wanted = set(names_filter)
    return lambda name: name in wanted


class ActivationCache(dict[str, torch.Tensor]):
    """Activations by hook name (a plain dict with TransformerLens-style helpers)."""

    def stack(self, suffix: str) -> torch.Tensor:
        """Stack ``blocks.{i}.{suffix}`` over layers: ``[n_layers, ...]``."""
        keys = sorted(
            (k for k in self if k.startswith("blocks.") and k.endswith("." + suffix)),
            key=lambda k: int(k.split(".")[1]),
        )
        if not keys:
            raise KeyError(f"no cached activations end with {suffix!r}; cached: {sorted(self)}")
        return torch.stack([self[k] for k in keys])


class HookedModule(nn.Module):
    """Mixin giving a module TransformerLens's hook API over its `HookPoint` children."""

    def setup_hooks(self) -> None:
        """Name every hook point after its path in the module tree; call at the end of __init__."""
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def hook_names(self) -> list[str]:
        """All hook point names, in forward order."""
        return list(self.hook_dict)

    def _hook_point(self, name: str) -> HookPoint:
        try:
            return self.hook_dict[name]
        except KeyError:
            raise KeyError(
                f"no hook point named {name!r}; model.hook_names() lists the "
                f"{len(self.hook_dict)} available names"
            ) from None

    def reset_hooks(self) -> None:
        for hp in self.hook_dict.values():
            hp.remove_hooks()

    @contextlib.contextmanager
    def hooks(
        self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = ()
    ) -> Iterator[HookedModule]:
        """Context manager that attaches hooks and always removes them afterwards."""
        handles: list[RemovableHandle] = []
        try:
            for name, fn in fwd_hooks:
                if callable(name):
                    targets = [hp for n, hp in self.hook_dict.items() if name(n)]
                else:
                    targets = [self._hook_point(name)]
                handles.extend(hp.add_hook(fn) for hp in targets)
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_hooks(
        self,
        *args: Any,
        fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
        **kwargs: Any,
    ) -> Any:
        """Run forward with temporary hooks, e.g. ``[("blocks.0.hook_resid_post", fn)]``."""
        with self.hooks(fwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(
        self,
        *args: Any,
        names_filter: NamesFilter = None,
        detach: bool = True,
        **kwargs: Any,
    ) -> tuple[Any, ActivationCache]:
        """Run forward and return ``(output, cache)`` of the activations selected by names_filter.

        Example:
            >>> logits, cache = model.run_with_cache(tokens, names_filter=lambda n: "resid" in n)
            >>> cache["blocks.0.hook_resid_post"].shape  # [batch, pos, d_model]
        """
        keep = _make_filter(names_filter)
        cache = ActivationCache()

        def save(t: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = t.detach() if detach else t

        hooks = [(n, save) for n in self.hook_dict if keep(n)]
        out = self.run_with_hooks(*args, fwd_hooks=hooks, **kwargs)
        return out, cache
