"""alignlab: an empirical AI-safety workbench.

Train families of small transformers, plant failure modes, apply safety techniques, look inside,
and measure how it all changes with scale.
"""

from alignlab.model import ModelConfig, Transformer, load

__version__ = "0.1.0"

__all__ = ["ModelConfig", "Transformer", "__version__", "load"]
