"""Weak-to-strong generalisation (Burns et al. 2023, "Weak-to-strong generalization").

A *weak supervisor* trained on ground truth labels a transfer set; a pretrained *strong student*
is fine-tuned on those labels, and its test accuracy is compared with the weak supervisor's and
with the *ceiling* (the same student fine-tuned on the transfer set's ground truth):

    PGR = (weak-to-strong - weak) / (ceiling - weak)

the performance gap recovered. The student is fine-tuned with plain cross-entropy on the weak
soft labels, or with Burns et al.'s auxiliary confidence loss (`logconf_loss`), which mixes the
weak labels with the student's own hardened predictions so the student can disagree with a
supervisor it has outgrown.

Every model is read as a `Verifier`: its logit is an affine function of its own surprisal at the
reply (two scalars on top of the language model), so what pretraining taught is what is elicited.

Example:
    >>> weak_p = predict_proba(weak_model, transfer)             # soft labels
    >>> student = finetune_classifier(strong, transfer, torch.tensor(weak_p), FinetuneConfig(),
    ...                               loss="logconf", seed=0)
    >>> accuracy(student, test)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from alignlab._validate import check_choice, check_int, check_real, raise_problems
from alignlab.model.transformer import Transformer
from alignlab.stats import Estimate, seed_interval
from alignlab.tasks.verify import (
    CORRUPTIONS,
    VerifyBatch,
    VerifyItem,
    encode_verify,
    letter_count_features,
    verify_examples,
)

Loss = Literal["xent", "logconf"]
LOSSES: tuple[Loss, ...] = ("xent", "logconf")
# Burns et al.'s guard: a PGR whose denominator is within seed noise is not a measurement (their
# anthropic_hh weak and strong both sat near chance and gave meaningless PGRs).
GUARD_SDS = 3.0


@dataclass(frozen=True)
class FinetuneConfig:
    """How a classifier is fine-tuned (every weak, student and ceiling model alike).

    Attributes:
        steps: optimiser steps.
        batch_size: examples per step (drawn with replacement from the training set).
        lr: peak learning rate (AdamW; linear warm-up over 10% of steps, then cosine to 10%) of a
            model of width ``lr_width_ref``.
        lr_width_ref: wider models get ``lr * lr_width_ref / d_model``, since Adam's step per weight
            should shrink with fan-in (muP, Yang et al. 2021); at one lr of 1e-3, al-300k's ceiling
            fell to 0.88 on one seed of three while al-30k's stayed at 0.995-1.0 (measured). 0 turns
            the scaling off.
        aux_coef: the final weight of the student's hardened predictions in `logconf_loss`.
        aux_warmup_frac: share of steps over which that weight ramps up from 0.
    """

    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    lr_width_ref: int = 32
    aux_coef: float = 0.5
    aux_warmup_frac: float = 0.1

    def __post_init__(self) -> None:
        raise_problems(
            "FinetuneConfig",
            [
                check_int("steps", self.steps, lo=1, hi=1_000_000),
                check_int("batch_size", self.batch_size, lo=2, hi=1 << 16),
                check_real("lr", self.lr, lo=0.0, hi=1.0, lo_open=True),
                check_int("lr_width_ref", self.lr_width_ref, lo=0, hi=1 << 16),
                check_real("aux_coef", self.aux_coef, lo=0.0, hi=1.0),
                check_real("aux_warmup_frac", self.aux_warmup_frac, lo=0.0, hi=1.0),
            ],
        )


class Verifier(torch.nn.Module):
    """A language model read as a verifier of replies, through its own next-token surprisal.

    The logit that a reply is right is ``bias - exp(log_scale) * LSE_t s_t``, where ``s_t`` is the
    model's surprisal (-log p) of reply token ``t`` given everything before it and LSE is a smooth
    maximum over the reply's tokens: a reply is wrong when some token of it is one the model
    would not have written. This is the pretrained model's latent knowledge made readable by
    two scalars; fine-tuning moves the model too, so a student can learn to accept what a weak
    supervisor accepts. (A linear head on the last token's residual, as Burns et al. use, stayed
    at chance on this task at al-30k and al-100k after 300 steps on ground truth — measured —
    because no position of a small model holds "an earlier token was wrong".)

    Attributes:
        model: the language model (trained along with the head).
        log_scale: log of the surprisal's weight.
        bias: the logit of a reply the model finds entirely unsurprising.
    """

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        self.log_scale = torch.nn.Parameter(torch.zeros(()))
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def surprisal(self, batch: VerifyBatch) -> torch.Tensor:
        """``[n]`` smooth maximum (log-sum-exp) of the surprisal over each reply's tokens."""
        logits = self.model(batch.tokens, attention_mask=batch.attention_mask)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        s = -logp.gather(-1, batch.tokens[:, 1:, None])[..., 0]
        return torch.logsumexp(s.masked_fill(~batch.reply_mask[:, 1:], -math.inf), dim=1)

    def head(self, surprisal: torch.Tensor) -> torch.Tensor:
        return self.bias - self.log_scale.exp() * surprisal

    def forward(self, batch: VerifyBatch) -> torch.Tensor:
        """``[n]`` logit that each reply is right."""
        return self.head(self.surprisal(batch))


@torch.no_grad()
def _pooled_surprisal(verifier: Verifier, batch: VerifyBatch, chunk: int = 512) -> torch.Tensor:
    was_training = verifier.training
    verifier.eval()
    parts = [
        verifier.surprisal(batch.rows(torch.arange(lo, min(len(batch), lo + chunk))))
        for lo in range(0, len(batch), chunk)
    ]
    verifier.train(was_training)
    return torch.cat(parts)


def predict_proba(verifier: Verifier, batch: VerifyBatch) -> NDArray[np.float64]:
    """``[n]`` the verifier's probability that each reply is right."""
    with torch.no_grad():
        return torch.sigmoid(verifier.head(_pooled_surprisal(verifier, batch))).double().numpy()


def accuracy(verifier: Verifier, batch: VerifyBatch) -> float:
    """Share of rows whose thresholded prediction (p > 0.5) equals the ground truth."""
    p = predict_proba(verifier, batch)
    return float(np.mean((p > 0.5) == batch.labels.numpy().astype(bool)))


def fit_head(verifier: Verifier, data: VerifyBatch, targets: torch.Tensor) -> None:
    """Set the head's two scalars by logistic regression of ``targets`` on the frozen model's
    surprisal (L-BFGS), so fine-tuning starts from the best reading of what the model knows."""
    feats = _pooled_surprisal(verifier, data)
    opt = torch.optim.LBFGS([verifier.log_scale, verifier.bias], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = F.binary_cross_entropy_with_logits(verifier.head(feats), targets.float())
        value.backward()
        return value

    opt.step(closure)


def xent_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (probabilities of "yes")."""
    return F.binary_cross_entropy_with_logits(logits, targets)


def aux_coef_at(step: int, steps: int, coef: float = 0.5, warmup_frac: float = 0.1) -> float:
    """The weight of the student's own predictions at ``step``: ramped linearly from 0 to ``coef``
    over the first ``warmup_frac`` of steps, then constant (Burns et al. §4.3.2).

    Burns et al.'s reference code (``logconf_loss_fn``) uses ``coef * step_frac`` during the
    warm-up and then jumps to ``coef`` (0.05 -> 0.5 at 10% of steps); the issue, and the paper's
    text, describe a ramp to 0.5, which is what this computes.
    """
    if warmup_frac <= 0 or steps <= 0:
        return coef
    return coef * min(1.0, step / (warmup_frac * steps))


def logconf_loss(logits: torch.Tensor, weak: torch.Tensor, coef: float) -> torch.Tensor:
    """Burns et al.'s auxiliary confidence loss for one batch (binary case).

    The student's predictions are hardened at an adaptive threshold: the share of rows called
    "yes" equals the weak labels' mean (their prior in this batch), as in the reference code's
    ``torch.quantile(preds[:, 0], mean_weak[1])``. The target is ``(1 - coef) * weak +
    coef * hardened`` (the hardened part detached), and the loss is cross-entropy against it.

    Args:
        logits: ``[n]`` the student's logits of "yes".
        weak: ``[n]`` the weak supervisor's soft labels (probability of "yes").
        coef: weight of the hardened predictions (see `aux_coef_at`).
    """
    with torch.no_grad():
        p_no = torch.sigmoid(-logits.float())
        threshold = torch.quantile(p_no, weak.float().mean())
        hardened = (p_no < threshold).to(weak.dtype)
    target = (1 - coef) * weak + coef * hardened
    return F.binary_cross_entropy_with_logits(logits, target)


def finetune_classifier(
    model: Transformer,
    data: VerifyBatch,
    targets: torch.Tensor,
    cfg: FinetuneConfig,
    *,
    loss: Loss = "xent",
    seed: int = 0,
) -> Verifier:
    """A `Verifier` on a copy of ``model``, fine-tuned (all weights) to predict ``targets``.

    Args:
        model: the pretrained model (not modified).
        data: the training exchanges.
        targets: ``[n]`` soft labels in [0, 1] (ground truth as 0/1, or a weak supervisor's
            probabilities).
        cfg: steps, batch size, learning rate and the auxiliary loss schedule.
        loss: "xent" (cross-entropy on ``targets``) or "logconf" (`logconf_loss`).
        seed: seeds the order of the batches.

    Returns:
        The fine-tuned verifier (head first fitted by `fit_head`), in eval mode.
    """
    from alignlab.train.config import TrainConfig
    from alignlab.train.loop import grouped_adamw, lr_at

    raise_problems("finetune_classifier", [check_choice("loss", loss, LOSSES)])
    if targets.shape != (len(data),):
        raise ValueError(f"targets must have shape ({len(data)},), got {tuple(targets.shape)}")
    student = Verifier(model.clone())
    fit_head(student, data, targets)
    student.train()
    lr = cfg.lr * min(1.0, cfg.lr_width_ref / model.cfg.d_model) if cfg.lr_width_ref else cfg.lr
    schedule = TrainConfig(
        model=model.cfg, steps=cfg.steps, batch_size=cfg.batch_size, lr=lr,
        warmup_steps=max(1, cfg.steps // 10), seq_len=min(model.cfg.n_ctx, data.tokens.shape[1]),
    )  # fmt: skip
    opt = grouped_adamw(student, lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    targets = targets.float()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule)
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
        logits = student(data.rows(idx))
        if loss == "xent":
            value = xent_loss(logits, targets[idx])
        else:
            coef = aux_coef_at(step, cfg.steps, cfg.aux_coef, cfg.aux_warmup_frac)
            value = logconf_loss(logits, targets[idx], coef)
        value.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    student.eval()
    return student


def fit_probe(features: NDArray[np.float64], labels: NDArray[np.int64], seed: int = 0) -> Any:
    """A logistic-regression probe (scikit-learn) on ``features``, trained on ground truth."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, random_state=seed).fit(features, labels)


def pgr(weak: float, weak_to_strong: float, ceiling: float) -> float:
    """Performance gap recovered; NaN when the ceiling does not exceed the weak supervisor."""
    gap = ceiling - weak
    return (weak_to_strong - weak) / gap if gap > 0 else math.nan


@dataclass(frozen=True)
class PGRResult:
    """PGR over seeds with its guard.

    Attributes:
        estimate: mean of the per-seed PGRs with a t interval over seeds, or None when the guard
            says the gap is not measurable.
        gap: ceiling - weak, mean over seeds.
        noise_sd: the largest seed-to-seed standard deviation of the three accuracies.
        measurable: whether ``gap > GUARD_SDS * noise_sd`` (False with one seed: no noise estimate).
        verdict: a short text for tables ("PGR 0.62 [0.41, 0.83]" or "not measurable: ...").
    """

    estimate: Estimate | None
    gap: float
    noise_sd: float
    measurable: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate.to_dict() if self.estimate else None,
            "gap": self.gap,
            "noise_sd": self.noise_sd,
            "measurable": self.measurable,
            "verdict": self.verdict,
        }


def pgr_over_seeds(
    weak: Sequence[float], weak_to_strong: Sequence[float], ceiling: Sequence[float]
) -> PGRResult:
    """PGR from per-seed accuracies, reported only where the gap stands clear of seed noise.

    Guard: the gap ``mean(ceiling - weak)`` must exceed `GUARD_SDS` times the largest
    seed-to-seed standard deviation among the weak, weak-to-strong and ceiling accuracies;
    otherwise the ratio divides noise by noise and is reported as "not measurable".
    """
    w, s, c = (np.asarray(x, dtype=np.float64) for x in (weak, weak_to_strong, ceiling))
    if not (w.shape == s.shape == c.shape) or w.ndim != 1 or w.size == 0:
        raise ValueError("weak, weak_to_strong and ceiling need one accuracy per seed each, same seeds")
    gap = float(np.mean(c - w))
    if w.size < 2:
        return PGRResult(None, gap, math.nan, False, "not measurable: one seed gives no noise estimate")
    sd = float(max(np.std(x, ddof=1) for x in (w, s, c)))
    if not gap > GUARD_SDS * sd:
        return PGRResult(
            None, gap, sd, False, f"not measurable: gap {gap:.3f} <= {GUARD_SDS:g} x seed sd {sd:.3f}"
        )
    per_seed = [pgr(float(a), float(b), float(d)) for a, b, d in zip(w, s, c, strict=True)]
    if not all(math.isfinite(p) for p in per_seed):
        return PGRResult(None, gap, sd, False, "not measurable: a seed's ceiling does not exceed its weak")
    est = seed_interval(per_seed)
    return PGRResult(est, gap, sd, True, f"PGR {est}")


@dataclass(frozen=True)
class W2SData:
    """The three disjoint sets of one seed: the weak supervisor's ground truth, the transfer set
    it labels for the student (whose ground truth trains the ceiling), and the test set."""

    weak: list[VerifyItem]
    transfer: list[VerifyItem]
    test: list[VerifyItem]

    @cached_property
    def batches(self) -> tuple[VerifyBatch, VerifyBatch, VerifyBatch]:
        return encode_verify(self.weak), encode_verify(self.transfer), encode_verify(self.test)


def w2s_data(seed: int, n_weak: int = 2000, n_transfer: int = 2000, n_test: int = 1000) -> W2SData:
    """Draw the sets of ``seed``: weak and transfer from training prompts (separate streams), test
    from held-out prompts (`alignlab.tasks.verify.verify_examples`)."""
    return W2SData(
        verify_examples(n_weak, seed, "weak"),
        verify_examples(n_transfer, seed, "transfer"),
        verify_examples(n_test, seed, "test"),
    )


def _scores(p: NDArray[np.float64], items: Sequence[VerifyItem]) -> dict[str, Any]:
    """Test accuracy overall and per kind of reply (correct, substitution, transposition)."""
    right = (p > 0.5) == np.array([it.label == 1 for it in items])
    kinds = np.array([it.kind for it in items])
    return {
        "accuracy": float(right.mean()),
        "by_kind": {
            k: float(right[kinds == k].mean()) for k in ("correct", *CORRUPTIONS) if (kinds == k).any()
        },
    }


def probe_supervisor(data: W2SData, seed: int) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """A bag-of-letters probe trained on the weak set's ground truth: (test scores, soft labels
    of the transfer set)."""
    probe = fit_probe(letter_count_features(data.weak), np.array([it.label for it in data.weak]), seed)
    test_p = probe.predict_proba(letter_count_features(data.test))[:, 1]
    return _scores(test_p, data.test), probe.predict_proba(letter_count_features(data.transfer))[:, 1]


def model_supervisor(
    model: Transformer, data: W2SData, cfg: FinetuneConfig, seed: int
) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """``model`` fine-tuned on the weak set's ground truth: (test scores, transfer soft labels)."""
    weak, transfer, test = data.batches
    verifier = finetune_classifier(model, weak, weak.labels.float(), cfg, seed=seed)
    return _scores(predict_proba(verifier, test), data.test), predict_proba(verifier, transfer)


def train_student(
    model: Transformer,
    data: W2SData,
    targets: NDArray[np.float64] | None,
    cfg: FinetuneConfig,
    *,
    loss: Loss = "xent",
    seed: int = 0,
) -> dict[str, Any]:
    """Test scores of ``model`` fine-tuned on the transfer set with ``targets`` (weak soft labels),
    or on its ground truth when ``targets`` is None (the ceiling)."""
    _, transfer, test = data.batches
    y = transfer.labels.float() if targets is None else torch.as_tensor(targets, dtype=torch.float32)
    verifier = finetune_classifier(model, transfer, y, cfg, loss=loss, seed=seed)
    return _scores(predict_proba(verifier, test), data.test)
