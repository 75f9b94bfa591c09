"""Training SAEs on activations streamed in chunks (never all in memory).

A standard (ReLU + L1) SAE's sparsity/reconstruction trade-off depends on the input's scale: the
squared error grows with its square, the L1 term linearly. Trained on raw inputs with one fixed
coefficient it recovered planted features at one setting only and stayed at a random decoder's
score at others (issue 15). Following Anthropic's April 2024 update (Conerly et al., "Training
SAEs"), a standard SAE is therefore trained on inputs scaled to unit mean squared (centred) norm,
with the L1 penalty on ``f_i * ||W_dec_i||`` (decoder norms free, not clamped to 1), and the
coefficient warmed up from 0; the scale and the decoder norms are folded back into the weights at
the end, so the saved SAE reads raw activations and has unit decoder rows as before.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from alignlab.interp.sae.model import SAE, SAEConfig

# Adam moves every coordinate by about ``lr`` per step, so a unit-norm decoder row in ``d_in``
# dimensions turns by about ``lr * sqrt(d_in)`` radians: the standard SAE's default learning rate
# is ``3e-3`` at ``d_in = 128`` scaled by ``sqrt(128 / d_in)`` to keep that angle fixed. Measured
# on planted features (512 steps): at 3e-3 flat, d_in = 12-24 stayed at MMCS 0.70-0.88 while
# d_in >= 64 reached 0.97-0.99; scaled, every d_in from 12 to 128 reached 0.94-0.998.
_STANDARD_LR_AT_128 = 3e-3
_TOPK_LR = 3e-3
# Steps over which the recent L0 is averaged for the density warning.
_L0_WINDOW = 50


class SAEDensityWarning(UserWarning):
    """A trained standard SAE is much denser than its inputs' sparse structure allows: its
    decoder rows are then unlikely to be the underlying features (raise the L1 coefficient)."""


@dataclass(frozen=True)
class SAETrainConfig:
    """Optimisation settings.

    Attributes:
        lr: Adam learning rate; None = 3e-3 for TopK, and for a standard SAE 3e-3 at
            ``d_in = 128`` scaled by ``sqrt(128 / d_in)`` (see the module's note).
        l1_coefficient: weight of the L1 penalty (standard SAEs only), in units of inputs scaled
            to unit mean squared centred norm, so the same value suits any input scale and width.
            0.5 recovered planted features (mean max cosine 0.925-0.998 in 512 steps) at seven
            (features, d_in, p_active) settings from (32, 12, 0.06) to (256, 128, 0.01); the old
            raw-scale 1e-3 at none (0.31-0.64, a random decoder's 0.27-0.65). 512 features in
            d_in=64 needed 3x the steps (0.95), and warned when stopped early. It suits a few
            active features per input (each is shrunk by about a quarter of the typical input
            norm): lower it for denser activations; `SAEDensityWarning` flags both failures.
        l1_warmup_steps: steps over which the L1 coefficient rises linearly from 0 (Conerly et
            al. 2024 warm it up over the first 5% of training), so features align with the data
            before the penalty can kill them.
        batch_size: activations per optimiser step.
        epochs_per_chunk: passes over each streamed chunk before the next is fetched.
        seed: initialisation and shuffling seed.
        aux_k_coefficient: weight of the AuxK loss that revives dead features (TopK only; 0
            turns it off). The paper's 1/32; SAELens defaults to 1, which on our CPU-scale runs
            revived more features but cost up to 1.5x FVU after a few hundred steps.
        dead_window: optimiser steps without firing after which a feature counts as dead for
            the AuxK loss (SAELens's ``dead_feature_window``). Keep it well above how long a live
            feature can go quiet: with 10 steps on planted data (512 latents, k=2) AuxK treated
            live latents as dead and the dead fraction rose from 0.33 to 0.82.
        expected_l0: the number of features active per input, when known (planted data): a
            standard SAE whose final L0 is more than ``l0_warn_ratio`` times it, or less than
            1 / ``l0_warn_ratio`` of it, warns (`SAEDensityWarning`). Unknown (None): it warns
            when L0 exceeds ``d_in``, a code no sparser than the input itself.
        l0_warn_ratio: how far from ``expected_l0`` the L0 may be before the warning.
    """

    lr: float | None = None
    l1_coefficient: float = 0.5
    l1_warmup_steps: int = 50
    batch_size: int = 256
    epochs_per_chunk: int = 1
    seed: int = 0
    aux_k_coefficient: float = 1 / 32
    dead_window: int = 1000
    expected_l0: float | None = None
    l0_warn_ratio: float = 4.0

    def __post_init__(self) -> None:
        lr_ok = self.lr is None or (math.isfinite(self.lr) and self.lr > 0)
        if not lr_ok or self.batch_size < 1 or self.epochs_per_chunk < 1 or self.dead_window < 1:
            raise ValueError(
                "SAETrainConfig needs lr > 0 (or None), batch_size >= 1, epochs_per_chunk >= 1 and "
                f"dead_window >= 1; got {self}"
            )
        coefs = (self.aux_k_coefficient, self.l1_coefficient)
        if not all(math.isfinite(c) and c >= 0 for c in coefs) or self.l1_warmup_steps < 0:
            raise ValueError(f"loss coefficients must be finite and >= 0, l1_warmup_steps >= 0; got {self}")
        expected_ok = self.expected_l0 is None or (math.isfinite(self.expected_l0) and self.expected_l0 > 0)
        if not expected_ok or not (math.isfinite(self.l0_warn_ratio) and self.l0_warn_ratio > 1):
            raise ValueError(
                f"SAETrainConfig needs expected_l0 > 0 (or None) and l0_warn_ratio > 1; got {self}"
            )

    def learning_rate(self, cfg: SAEConfig) -> float:
        """The learning rate used for an SAE of shape ``cfg`` (resolves ``lr=None``)."""
        if self.lr is not None:
            return self.lr
        if cfg.architecture == "topk":
            return _TOPK_LR
        return _STANDARD_LR_AT_128 * math.sqrt(128 / cfg.d_in)


@dataclass
class SAETrainLog:
    """Loss history, the number of activations seen, and what a standard SAE was trained at.

    Attributes:
        l0: active features per input, per step (training batches).
        input_scale: the factor inputs were divided by during training (1 for TopK).
    """

    losses: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    aux: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    n_seen: int = 0
    input_scale: float = 1.0

    def final_l0(self) -> float:
        """Mean L0 over the last training steps (nan before any step)."""
        # The last quarter of a short run, so that the L1 warm-up's dense start is left out.
        recent = self.l0[-min(_L0_WINDOW, max(1, len(self.l0) // 4)) :]
        return sum(recent) / len(recent) if recent else float("nan")


def sae_loss(
    sae: SAE, x: Float[Tensor, "n d"], l1_coefficient: float
) -> tuple[Tensor, Tensor, Float[Tensor, "n f"]]:
    """``(total, mse, features)``: MSE summed over dims, mean over rows, plus, for standard SAEs,
    the L1 penalty on ``f_i * ||W_dec_i||`` (Conerly et al. 2024; equal to plain L1 when the decoder
    rows have unit norm). Weighting by the norm stops the penalty being dodged by shrinking
    ``f`` and growing the decoder row, without clamping the rows during training."""
    f = sae.encode(x)
    mse = (sae.decode(f) - x).pow(2).sum(-1).mean()
    total = mse
    if sae.cfg.architecture == "standard":
        total = mse + l1_coefficient * (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    return total, mse, f


def aux_k_loss(
    sae: SAE, x: Float[Tensor, "n d"], recon: Float[Tensor, "n d"], pre: Float[Tensor, "n f"], dead: Tensor
) -> Tensor:
    """AuxK loss (Gao et al. 2024, appendix A.2): the top dead latents reconstruct the residual.

    The ``d_in // 2`` dead latents with the largest pre-activations (fewer if fewer are dead)
    decode, without ``b_dec``, the part of ``x`` the live latents missed; the loss is scaled by
    ``min(n_dead / k_aux, 1)``, as SAELens does. Gradient reaches dead latents only through this
    term, which is what brings them back.
    """
    n_dead = int(dead.sum())
    if n_dead == 0:
        return x.new_zeros(())
    k_aux = x.shape[-1] // 2
    scale = min(n_dead / k_aux, 1.0)
    k_aux = min(k_aux, n_dead)
    top = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    residual = (x - recon).detach()
    return scale * (acts @ sae.W_dec - residual).pow(2).sum(-1).mean()


def train_sae(
    chunks: Iterable[Float[Tensor, "n d"]],
    cfg: SAEConfig,
    train_cfg: SAETrainConfig | None = None,
    sae: SAE | None = None,
) -> tuple[SAE, SAETrainLog]:
    """Train an SAE on a stream of activation chunks.

    Each chunk (e.g. one batch of token sequences run through the model, see
    `alignlab.interp.activations.stream_activations`) is shuffled, split into mini-batches and
    discarded, so memory stays at one chunk whatever the total. A standard SAE trains on inputs
    divided by the first chunk's root mean squared centred norm (see the module's note) and warns
    (`SAEDensityWarning`) when it ends up dense.

    Args:
        chunks: iterable of ``[n, d_in]`` activation tensors.
        cfg: the SAE's shape and architecture.
        train_cfg: optimisation settings.
        sae: continue training this SAE instead of a fresh one.

    Returns:
        ``(sae, log)``; the SAE reads raw (unscaled) activations.

    Example:
        >>> chunks = stream_activations(model, token_batches, "blocks.0.hook_resid_post")
        >>> sae, log = train_sae(chunks, SAEConfig(d_in=64, d_sae=256, architecture="topk", k=8))
    """
    tc = train_cfg or SAETrainConfig()
    fresh = sae is None
    sae = sae or SAE(cfg, seed=tc.seed)
    # The fused Adam kernel (CPU and CUDA, torch >= 2.4) updates all four tensors in one call:
    # 7% less time per step at d_in=80, d_sae=640 than the per-tensor loop, same values to rounding.
    fused = sae.W_enc.device.type in ("cpu", "cuda")
    opt = torch.optim.Adam(sae.parameters(), lr=tc.learning_rate(cfg), betas=(0.9, 0.999), fused=fused)
    gen = torch.Generator().manual_seed(tc.seed)
    log = SAETrainLog()
    standard = cfg.architecture == "standard"
    use_aux = cfg.architecture == "topk" and tc.aux_k_coefficient > 0
    steps_since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    step, first = 0, True
    for chunk in _as_iter(chunks):
        chunk = chunk.detach().float()
        if first:
            first = False
            mean = chunk.mean(0)
            if standard:
                log.input_scale = _input_scale(chunk, mean)
                if not fresh:
                    # A fresh SAE's initialisation is meant for the scaled inputs; a trained one
                    # reads raw inputs and is converted.
                    _rescale_inputs(sae, 1 / log.input_scale)
            if fresh:
                # Start b_dec at the data mean, so features model deviations from it from step 0
                # (a continued SAE keeps its own).
                with torch.no_grad():
                    sae.b_dec.copy_(mean / log.input_scale)
        chunk = chunk / log.input_scale
        for _ in range(tc.epochs_per_chunk):
            perm = torch.randperm(chunk.shape[0], generator=gen)
            for lo in range(0, chunk.shape[0], tc.batch_size):
                x = chunk[perm[lo : lo + tc.batch_size]]
                if use_aux:
                    pre = sae.pre_acts(x)
                    f = sae.topk(pre)
                    recon = sae.decode(f)
                    total = mse = (recon - x).pow(2).sum(-1).mean()
                    dead = steps_since_fired > tc.dead_window
                    if bool(dead.any()):
                        aux = aux_k_loss(sae, x, recon, pre, dead)
                        total = mse + tc.aux_k_coefficient * aux
                        log.aux.append(float(aux.detach()))
                    with torch.no_grad():
                        steps_since_fired.add_(1).masked_fill_((f > 0).any(0), 0)
                else:
                    warm = min(1.0, (step + 1) / tc.l1_warmup_steps) if tc.l1_warmup_steps else 1.0
                    total, mse, f = sae_loss(sae, x, tc.l1_coefficient * warm)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                if not standard:
                    sae.normalise_decoder()
                step += 1
                log.losses.append(float(total.detach()))
                log.mse.append(float(mse.detach()))
                log.l0.append(float((f > 0).sum(-1).float().mean()))
                log.n_seen += x.shape[0]
    if standard:
        # Back to raw inputs first: that rescales the decoder rows, which folding then unit-norms.
        _rescale_inputs(sae, log.input_scale)
        _fold_decoder_norms(sae)
        _warn_if_dense(log.final_l0(), cfg, tc)
    sae.eval()
    return sae, log


def _input_scale(chunk: Tensor, mean: Tensor) -> float:
    """Root mean squared norm of the centred inputs; 1 for constant inputs (nothing to scale)."""
    scale = float((chunk - mean).pow(2).sum(-1).mean().sqrt())
    return scale if math.isfinite(scale) and scale > 0 else 1.0


@torch.no_grad()
def _rescale_inputs(sae: SAE, factor: float) -> None:
    """Make ``sae`` act on inputs multiplied by ``factor`` as it did on the originals: the same
    features, reconstructions multiplied by ``factor``."""
    sae.W_enc.div_(factor)
    sae.W_dec.mul_(factor)
    sae.b_dec.mul_(factor)


@torch.no_grad()
def _fold_decoder_norms(sae: SAE) -> None:
    """Unit decoder rows with the same reconstructions: feature ``i`` is scaled by ``||W_dec_i||``
    (encoder column and bias), its row divided by it (SAELens's convention for saved SAEs)."""
    norms = sae.W_dec.norm(dim=1).clamp_min(1e-8)
    sae.W_enc.mul_(norms)
    sae.b_enc.mul_(norms)
    sae.W_dec.div_(norms[:, None])


def _warn_if_dense(l0: float, cfg: SAEConfig, tc: SAETrainConfig) -> None:
    if not math.isfinite(l0):
        return
    if tc.expected_l0 is not None:
        ratio = l0 / tc.expected_l0
        if ratio > tc.l0_warn_ratio:
            msg = f"far above the expected {tc.expected_l0:g}: raise l1_coefficient"
        elif ratio < 1 / tc.l0_warn_ratio:
            msg = f"far below the expected {tc.expected_l0:g}: lower l1_coefficient"
        else:
            return
    elif l0 > cfg.d_in:
        msg = f"above d_in={cfg.d_in} (a dense code): raise l1_coefficient"
    else:
        return
    warnings.warn(
        f"standard SAE L0 {l0:.1f} is {msg} (l1_coefficient={tc.l1_coefficient:g}); its decoder "
        "rows are unlikely to be the underlying features",
        SAEDensityWarning,
        stacklevel=3,
    )


def _as_iter(chunks: Iterable[Tensor]) -> Iterator[Tensor]:
    if isinstance(chunks, Tensor):
        return iter([chunks])
    return iter(chunks)
