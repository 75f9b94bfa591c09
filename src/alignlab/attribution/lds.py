"""The linear datamodeling score (LDS): do attribution scores predict retraining?

Park et al. 2023 (TRAK): train models on random subsets of a fixed training set, and check
whether the summed attribution scores of each subset rank the subsets' query losses correctly.
It is the counterfactual ground truth for attribution on networks, where leave-one-out effects
drown in seed noise (NOTES: Grosse et al. 2023). Every subset model here starts from the same
initialisation and uses the same batch-order seed, so the subset is the only thing that varies.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alignlab.attribution.ekfac import DEFAULT_DAMPING
from alignlab.attribution.influence import METHODS
from alignlab.attribution.scoring import AnyMethod, check_methods, method_scores
from alignlab.model import Transformer, lm_loss
from alignlab.stats import Estimate
from alignlab.tasks.base import Batch, BatchFn, stream_seed
from alignlab.tasks.chat import Example, collate, encode_example
from alignlab.train import TrainConfig, train


def fixed_set_batches(examples: Sequence[Example]) -> BatchFn:
    """A `BatchFn` drawing (with replacement) from a fixed list: a finite training set."""
    pool = list(examples)
    if not pool:
        raise ValueError("a training set needs at least one example")

    def make(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
        rng = random.Random(stream_seed("fixed-set", seed, split, step))
        return collate([pool[rng.randrange(len(pool))] for _ in range(batch_size)], seq_len)

    return make


@torch.no_grad()
def query_losses(model: Transformer, queries: Sequence[Example]) -> np.ndarray:
    """Completion loss of each query under ``model``."""
    model.eval()
    out = []
    for ex in queries:
        ids, mask = encode_example(ex)
        tokens = torch.tensor([ids])
        out.append(float(lm_loss(model(tokens), tokens, torch.tensor([mask]))))
    return np.array(out)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.argsort().argsort().astype(float), b.argsort().argsort().astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class LDSResult:
    """LDS per method: mean over queries of the Spearman correlation across subsets, with a 95%
    bootstrap interval over subsets (queries of one behaviour are strongly correlated, so the
    subsets are the unit of replication)."""

    lds: dict[str, Estimate]
    per_query: dict[str, list[float]]
    n_subsets: int
    fraction: float
    null: Estimate  # LDS of random Gaussian scores: mean and the central 95% of 200 draws


def _lds(support: np.ndarray, losses: np.ndarray) -> float:
    return float(np.nanmean([_spearman(support[:, q], -losses[:, q]) for q in range(losses.shape[1])]))


def linear_datamodeling_score(
    train_examples: Sequence[Example],
    queries: Sequence[Example],
    cfg: TrainConfig,
    n_subsets: int = 16,
    fraction: float = 0.5,
    methods: Sequence[AnyMethod] = METHODS,
    extra_predictors: dict[str, np.ndarray] | None = None,
    dim: int = 4096,
    seed: int = 0,
    n_boot: int = 1000,
    ekfac_damping: float = DEFAULT_DAMPING,
) -> LDSResult:
    """Train on all of ``train_examples`` and on ``n_subsets`` random subsets; score the methods.

    The prediction for subset S and query q is ``sum_{i in S} score(q, i)`` (support for q); a
    good method's prediction ranks the subsets in the reverse order of their query losses, so
    LDS is the Spearman correlation of support with *minus* the loss, averaged over queries.

    Args:
        train_examples: the fixed training set.
        queries: behaviours to attribute.
        cfg: how each model is trained (same config, init and data-order seed for all).
        n_subsets: subset models to train.
        fraction: share of the training set in each subset.
        methods: attribution methods (`ALL_METHODS`) scored at the model trained on everything.
        extra_predictors: other per-example scores ``[n_train]`` to score the same way (e.g. an
            oracle that knows which examples are poisoned), shared by all queries.
        dim: gradient sketch width.
        seed: seed for the subsets, the sketch and the bootstrap.
        n_boot: bootstrap resamples of the subsets for the interval.
        ekfac_damping: EK-FAC's damping, a multiple of the mean eigenvalue (for "ekfac").

    Returns:
        `LDSResult`; 0 means no better than chance, 1 a perfect ranking.
    """
    check_methods(methods)
    n = len(train_examples)
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_subsets, n), dtype=bool)
    for j in range(n_subsets):
        masks[j, rng.choice(n, size=round(fraction * n), replace=False)] = True
    with tempfile.TemporaryDirectory(prefix="alignlab-lds-") as tmp:
        full = train(
            cfg, Path(tmp) / "full", progress=False, batch_fn=fixed_set_batches(train_examples)
        ).model
        scored = method_scores(
            full, train_examples, [queries], methods, dim=dim, seed=seed, ekfac_damping=ekfac_damping
        )
        predictors = {m: sets[0] for m, sets in scored.items()}
        for name, score in (extra_predictors or {}).items():
            predictors[name] = np.broadcast_to(np.asarray(score, dtype=float), (len(queries), n))
        losses = np.empty((n_subsets, len(queries)))
        for j in range(n_subsets):
            subset = [ex for ex, keep in zip(train_examples, masks[j], strict=True) if keep]
            model = train(cfg, Path(tmp) / f"s{j}", progress=False, batch_fn=fixed_set_batches(subset)).model
            losses[j] = query_losses(model, queries)
    lds, per_query, null = score_subsets(masks, predictors, losses, rng, n_boot)
    return LDSResult(lds=lds, per_query=per_query, n_subsets=n_subsets, fraction=fraction, null=null)


def score_subsets(
    masks: np.ndarray,
    predictors: dict[str, np.ndarray],
    losses: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 1000,
) -> tuple[dict[str, Estimate], dict[str, list[float]], Estimate]:
    """LDS of each predictor from subset models' query losses.

    Args:
        masks: ``[n_subsets, n_train]`` bool, which examples each subset model trained on.
        predictors: name -> scores ``[n_queries, n_train]`` (positive = supports the query).
        losses: ``[n_subsets, n_queries]`` query losses of the subset models.
        rng: draws the bootstrap resamples of subsets and the random-score null.
        n_boot: bootstrap resamples.

    Returns:
        ``(lds, per_query, null)``: per predictor the LDS with its 95% bootstrap interval over
        subsets and its per-query Spearman correlations, and the LDS of random Gaussian scores on
        the same subsets (mean and central 95% of 200 draws).
    """
    n_subsets, n = masks.shape
    per_query: dict[str, list[float]] = {}
    lds: dict[str, Estimate] = {}
    boot = [rng.integers(0, n_subsets, n_subsets) for _ in range(n_boot)]
    for name, score in predictors.items():
        support = masks.astype(float) @ score.T  # [n_subsets, n_queries]
        per_query[name] = [_spearman(support[:, q], -losses[:, q]) for q in range(losses.shape[1])]
        value = float(np.nanmean(per_query[name]))
        stats = np.array([_lds(support[b], losses[b]) for b in boot])
        lo, hi = np.nanquantile(stats, [0.025, 0.975])
        lds[name] = Estimate(value, min(float(lo), value), max(float(hi), value), n_subsets, "bootstrap95")
    # With few subsets one draw of them can make any predictor look (anti)correlated; random
    # scores on the same subsets show how large a chance LDS is.
    draws = [_lds(masks.astype(float) @ rng.normal(size=(n, 1)), losses[:, :1]) for _ in range(200)]
    null = Estimate(
        float(np.mean(draws)),
        float(np.quantile(draws, 0.025)),
        float(np.quantile(draws, 0.975)),
        200,
        "null95",
    )
    return lds, per_query, null
