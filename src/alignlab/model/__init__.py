"""The hooked transformer family: config and size presets, the model, HF import/export."""

from alignlab._alloc import tune_allocator
from alignlab.model._native import native_status
from alignlab.model.config import MODEL_PRESETS, SIZES, VARIANTS, ModelConfig, model_preset
from alignlab.model.hf import load, save_pretrained
from alignlab.model.hooks import ActivationCache, HookedModule, HookPoint
from alignlab.model.transformer import Transformer, lm_loss

__all__ = [
    "MODEL_PRESETS",
    "SIZES",
    "VARIANTS",
    "ActivationCache",
    "HookPoint",
    "HookedModule",
    "ModelConfig",
    "Transformer",
    "lm_loss",
    "load",
    "model_preset",
    "native_status",
    "save_pretrained",
    "tune_allocator",
]
