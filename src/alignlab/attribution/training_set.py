"""Attribution over the examples a model was actually trained on, and the install that made it.

`install_and_score` fine-tunes a base model on an organism's install stream (keeping snapshots
for TracIn), then scores every example of that stream, by its index, against a set of queries with
each method. `untrained_scores` gives the same scores from a freshly initialised model of the same
shape: a method that finds the planted data no better there is reading surface similarity, not
what training did.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignlab.attribution.ekfac import DEFAULT_DAMPING
from alignlab.attribution.scoring import ALL_METHODS, method_scores
from alignlab.attribution.tracin import Snapshots, tracin_scores, train_with_snapshots
from alignlab.model import Transformer
from alignlab.organisms.base import Organism
from alignlab.organisms.stream import InstallStream, install_stream, stream_batch_fn
from alignlab.tasks import Example
from alignlab.train import TrainConfig

# TracIn over the run's snapshots, then the single-model methods of `method_scores`.
STREAM_METHODS: tuple[str, ...] = ("tracin", *ALL_METHODS)


def check_stream_methods(methods: Sequence[str]) -> None:
    """Raise a ValueError naming any method not in `STREAM_METHODS`."""
    unknown = [m for m in methods if m not in STREAM_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown attribution methods {unknown or '(none)'}; choose from {STREAM_METHODS}")


def training_set_scores(
    model: Transformer,
    examples: Sequence[Example],
    queries: Sequence[Example],
    methods: Sequence[str],
    snapshots: Snapshots | None = None,
    example_steps: Sequence[int] | np.ndarray | None = None,
    dim: int = 4096,
    seed: int = 0,
    ekfac_damping: float = DEFAULT_DAMPING,
) -> dict[str, np.ndarray]:
    """``scores[method]``: ``[len(queries), len(examples)]``, positive = the example supports the query.

    "tracin" needs the run's ``snapshots`` and the step of each example; without snapshots (an
    untrained model has no trajectory) it is the gradient dot product at ``model`` itself, which
    is TracIn at one checkpoint with a constant learning rate.
    """
    check_stream_methods(methods)
    single = [m for m in methods if m != "tracin"]
    if "tracin" in methods and snapshots is None and "dot" not in single:
        single.append("dot")
    out = {
        m: s[0]
        for m, s in method_scores(model, examples, [queries], single, dim, seed, ekfac_damping).items()
    }
    if "tracin" in methods:
        if snapshots is None:
            out["tracin"] = out["dot"]
        else:
            if example_steps is None:
                raise ValueError("tracin with snapshots needs example_steps (InstallStream.steps)")
            out["tracin"] = (
                tracin_scores(snapshots, examples, example_steps, queries, dim, seed).double().numpy()
            )
    return {m: out[m] for m in methods}


def untrained_like(model: Transformer, seed: int) -> Transformer:
    """A freshly initialised model of ``model``'s shape (the surface-similarity baseline)."""
    fresh = Transformer(model.cfg)
    fresh.init_weights(seed)
    return fresh.eval()


@dataclass(frozen=True)
class ScoredInstall:
    """An installed organism and its training stream's attribution scores.

    Attributes:
        model: the installed model.
        stream: the examples it was trained on, in order (index = position in the stream).
        scores: method -> ``[n_queries, n_train]``.
    """

    model: Transformer
    stream: InstallStream
    scores: dict[str, np.ndarray]

    def support(self, method: str) -> np.ndarray:
        """Mean score over the queries: how much each training example supports the behaviour."""
        return self.scores[method].mean(0)


def install_and_score(
    organism: Organism,
    cfg: TrainConfig,
    base: Transformer | None,
    queries: Sequence[Example],
    methods: Sequence[str],
    n_snapshots: int = 4,
    dim: int = 4096,
) -> ScoredInstall:
    """Install ``organism`` into ``base`` (None: from scratch) with ``cfg`` and score its whole
    training stream.

    The install is `alignlab.organisms.install`'s (same batches, bit for bit); it runs in a
    temporary directory. ``cfg.seed`` also seeds the gradient sketch.
    """
    check_stream_methods(methods)
    stream = install_stream(organism, cfg)
    with tempfile.TemporaryDirectory(prefix="alignlab-attr-") as tmp:
        result, snaps = train_with_snapshots(
            cfg, Path(tmp) / "install", stream_batch_fn(organism), base, n_snapshots
        )
    model = result.model.eval()
    scores = training_set_scores(
        model, stream.examples, queries, methods, snaps, stream.steps, dim=dim, seed=cfg.seed
    )
    return ScoredInstall(model, stream, scores)
