"""alignlab: an empirical AI-safety workbench.

Train families of small transformers, plant failure modes, apply safety techniques, look inside,
and measure how it all changes with scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from alignlab.model import ModelConfig, Transformer, load

__all__ = ["ModelConfig", "Transformer", "__version__", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: `import alignlab.store` (or the CLI's `runs`) must not pay torch's import time.
    if name in ("ModelConfig", "Transformer", "load"):
        import alignlab.model

        return getattr(alignlab.model, name)
    raise AttributeError(f"module 'alignlab' has no attribute {name!r}")
