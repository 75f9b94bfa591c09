"""Training SAEs on activations streamed in chunks (never all in memory)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from alignlab.interp.sae.model import SAE, SAEConfig


@dataclass(frozen=True)
class SAETrainConfig:
    """Optimisation settings.

    Attributes:
        lr: Adam learning rate.
        l1_coefficient: weight of the L1 penalty (standard SAEs only).
        batch_size: activations per optimiser step.
        epochs_per_chunk: passes over each streamed chunk before the next is fetched.
        seed: initialisation and shuffling seed.
    """

    lr: float = 3e-3
    l1_coefficient: float = 1e-3
    batch_size: int = 256
    epochs_per_chunk: int = 1
    seed: int = 0


@dataclass
class SAETrainLog:
    """Loss history and the number of activations seen."""

    losses: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    n_seen: int = 0


def sae_loss(
    sae: SAE, x: Float[Tensor, "n d"], l1_coefficient: float
) -> tuple[Tensor, Tensor, Float[Tensor, "n f"]]:
    """``(total, mse, features)``: MSE summed over dims, mean over rows, plus L1 for standard SAEs."""
    f = sae.encode(x)
    mse = (sae.decode(f) - x).pow(2).sum(-1).mean()
    total = mse
    if sae.cfg.architecture == "standard":
        total = mse + l1_coefficient * f.abs().sum(-1).mean()
    return total, mse, f


def train_sae(
    chunks: Iterable[Float[Tensor, "n d"]],
    cfg: SAEConfig,
    train_cfg: SAETrainConfig | None = None,
    sae: SAE | None = None,
) -> tuple[SAE, SAETrainLog]:
    """Train an SAE on a stream of activation chunks.

    Each chunk (e.g. one batch of token sequences run through the model, see
    `alignlab.interp.activations.stream_activations`) is shuffled, split into mini-batches and
    discarded, so memory stays at one chunk whatever the total.

    Args:
        chunks: iterable of ``[n, d_in]`` activation tensors.
        cfg: the SAE's shape and architecture.
        train_cfg: optimisation settings.
        sae: continue training this SAE instead of a fresh one.

    Returns:
        ``(sae, log)``.

    Example:
        >>> chunks = stream_activations(model, token_batches, "blocks.0.hook_resid_post")
        >>> sae, log = train_sae(chunks, SAEConfig(d_in=64, d_sae=256, architecture="topk", k=8))
    """
    tc = train_cfg or SAETrainConfig()
    sae = sae or SAE(cfg, seed=tc.seed)
    opt = torch.optim.Adam(sae.parameters(), lr=tc.lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(tc.seed)
    log = SAETrainLog()
    first = True
    for chunk in _as_iter(chunks):
        chunk = chunk.detach().float()
        if first:
            # Start b_dec at the data mean, so features model deviations from it from step 0.
            with torch.no_grad():
                sae.b_dec.copy_(chunk.mean(0))
            first = False
        for _ in range(tc.epochs_per_chunk):
            perm = torch.randperm(chunk.shape[0], generator=gen)
            for lo in range(0, chunk.shape[0], tc.batch_size):
                x = chunk[perm[lo : lo + tc.batch_size]]
                total, mse, _ = sae_loss(sae, x, tc.l1_coefficient)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                sae.normalise_decoder()
                log.losses.append(float(total.detach()))
                log.mse.append(float(mse.detach()))
                log.n_seen += x.shape[0]
    sae.eval()
    return sae, log


def _as_iter(chunks: Iterable[Tensor]) -> Iterator[Tensor]:
    if isinstance(chunks, Tensor):
        return iter([chunks])
    return iter(chunks)
