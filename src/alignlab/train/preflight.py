"""Checks a training config must pass on this machine before anything is stored or allocated.

`TrainConfig` checks what is true everywhere (ranges, finite values); this module checks what
depends on the machine and the registries: the task exists, the device exists, and a rough
estimate of the memory the run needs fits in the memory available.
"""

from __future__ import annotations

import os

import torch

from alignlab.errors import ConfigError
from alignlab.tasks import get_task
from alignlab.tasks.base import BatchFn
from alignlab.train.compute import check_compute
from alignlab.train.config import TrainConfig

_F32 = 4  # bytes; training runs in float32


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; a CUDA request without CUDA is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda requested but CUDA is not available; use device=auto")
    return torch.device(name)


def estimate_train_bytes(cfg: TrainConfig) -> int:
    """A rough lower bound on the memory training ``cfg`` needs, in bytes.

    Weights, gradients and AdamW's two moments (4 float32 copies of every parameter), plus the
    larger of: the activations a micro-batch keeps for the backward pass (per token and layer:
    about 8 residual-width vectors, the MLP's input and output, and the attention scores and
    pattern; the logits three times: values, log-softmax, gradient), or one evaluation forward of a
    full batch (nothing kept, but the whole batch at once). Kept deliberately low, so that what it
    refuses certainly cannot fit.
    """
    m = cfg.model
    params = m.param_counts()["total"]
    per_token_layer = 8 * m.d_model + (0 if m.attn_only else 2 * m.mlp_width) + 2 * m.n_heads * cfg.seq_len
    micro = cfg.batch_size // cfg.grad_accum
    # Gradient checkpointing keeps each block's input only and one block's activations at a time.
    kept = m.n_layers * (m.d_model if cfg.grad_checkpointing else per_token_layer)
    kept += per_token_layer if cfg.grad_checkpointing else 0
    train_act = micro * cfg.seq_len * (kept + 3 * m.d_vocab)
    eval_act = cfg.batch_size * cfg.seq_len * (per_token_layer + 2 * m.d_vocab)
    copies = 1 if cfg.lora_rank else 4  # LoRA: frozen weights, no gradients or moments for them
    return _F32 * (copies * params + max(train_act, eval_act))


def available_bytes(device: torch.device) -> int | None:
    """Memory a new run can use on ``device``: free GPU memory, or the OS's available RAM
    (``MemAvailable``: free plus reclaimable cache); None where it cannot be read."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def preflight(cfg: TrainConfig, batch_fn: BatchFn | None = None) -> BatchFn:
    """Check that ``cfg`` can run here; return its batch function.

    Raises:
        ConfigError: unknown task (when no ``batch_fn`` is given), unavailable device, precision
            or LoRA (`alignlab.train.compute.check_compute`), or a run whose estimated memory
            exceeds what is available (the message gives both numbers).
    """
    make = batch_fn or get_task(cfg.task)
    device = resolve_device(cfg.device)
    check_compute(cfg, device)
    need, have = estimate_train_bytes(cfg), available_bytes(device)
    if have is not None and need > have:
        raise ConfigError(
            f"this run needs at least {need / 2**30:.3g} GiB but {device.type} has {have / 2**30:.3g} "
            f"GiB available (model {cfg.model.param_counts()['total']:,} parameters, batch_size "
            f"{cfg.batch_size}, seq_len {cfg.seq_len}); lower batch_size or the model size, or raise "
            "grad_accum"
        )
    return make
