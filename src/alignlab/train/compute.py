"""How a run uses the hardware: device, mixed precision, gradient checkpointing and LoRA.

`Compute` is the group of these settings a study carries (``alignlab run --device cuda
--precision bf16 --lora-rank 8``); every training run it starts records them in its config
(`alignlab.train.TrainConfig`). Mixed precision is torch's autocast (Micikevicius et al. 2018):
weights and AdamW stay float32, matrix products run in bf16/fp16, and fp16 scales the loss so small
gradients do not underflow. LoRA (Hu et al. 2021) goes through ``peft`` (optional:
``pip install 'alignlab[lora]'``), injected into alignlab's own modules and merged back into the
weights at the end, so a LoRA run's model directory is an ordinary checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from alignlab._validate import check_int, raise_problems
from alignlab.errors import ConfigError
from alignlab.train.config import PRECISIONS, TrainConfig

#: The matrices LoRA adapts: attention in and out, MLP in and out (Hu et al. adapt W_q and W_v;
#: all four is the QLoRA recipe of Dettmers et al. 2023, which matched full fine-tuning).
LORA_TARGETS = ("W_QKV", "W_O", "W_in", "W_out")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Compute:
    """Hardware settings of every training run a study starts (see `TrainConfig` for each).

    Attributes:
        device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
        precision: "fp32", "bf16" or "fp16" (mixed precision, where the hardware has it).
        grad_checkpointing: recompute activations in the backward pass (less memory).
        lora_rank: 0 = full fine-tuning; r > 0 = LoRA adapters of rank r.
        lora_alpha: LoRA scale numerator; 0 = 2 r.
    """

    device: str = "auto"
    precision: str = "fp32"
    grad_checkpointing: bool = False
    lora_rank: int = 0
    lora_alpha: int = 0

    def __post_init__(self) -> None:
        dev = self.device
        raise_problems(
            "Compute",
            [
                None
                if isinstance(dev, str) and (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"))
                else f"device must be auto, cpu, cuda or cuda:N, got {dev!r}",
                None
                if self.precision in PRECISIONS
                else f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
                check_int("lora_rank", self.lora_rank, lo=0, hi=65536),
                check_int("lora_alpha", self.lora_alpha, lo=0, hi=1 << 20),
            ],
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with these settings."""
        return cfg.replace(**self.to_dict())


def check_compute(cfg: TrainConfig, device: torch.device) -> None:
    """What the machine must offer for ``cfg``'s precision and LoRA settings.

    Raises:
        ConfigError: fp16 without CUDA, bf16 on a GPU without it, or LoRA without ``peft``.
    """
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device (use bf16 on CPU, or fp32)")
    if cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bf16; use precision fp16 or fp32")
    if cfg.lora_rank:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise ConfigError("lora_rank needs peft: pip install 'alignlab[lora]'") from None


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Mixed-precision autocast for ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's dynamic loss scaler (None otherwise: bf16 has float32's exponent range)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def apply_lora(model: torch.nn.Module, rank: int, alpha: int = 0, seed: int = 0) -> torch.nn.Module:
    """Inject LoRA adapters of ``rank`` into ``model``'s `LORA_TARGETS` (in place) and freeze
    everything else; returns ``model``. Adapters start at B = 0, so the function is unchanged."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(
        r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS)
    )
    torch.manual_seed(seed)  # A's random init
    inject_adapter_in_model(cfg, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every LoRA adapter into its base weight and put the plain layer back (in place)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    return model
