"""The exact examples an install trained on, in order, and installs that leave some of them out.

An install draws its batches from `Organism.batch_fn` ("install"): the batch of step ``s`` is
``organism.training_examples(batch_size, seed, "train", s)``, a pure function of its arguments.
Every training example therefore has an index, ``s * batch_size + j`` (position ``j`` of step
``s``'s batch), and the whole stream can be rebuilt without storing it. Attribution scores these
examples (not a fresh sample of the same mix), and a counterfactual install drops some indices and
trains on the rest in the same order, from the same starting model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alignlab.errors import ConfigError
from alignlab.organisms.base import Organism
from alignlab.tasks import Batch, Example, collate
from alignlab.tasks.base import BatchFn
from alignlab.train.config import TrainConfig


@dataclass(frozen=True)
class InstallStream:
    """Every example an install trained on, in training order.

    Attributes:
        examples: example ``i`` was the ``i % batch_size``-th of step ``i // batch_size``'s batch.
        batch_size: examples per optimiser step.
    """

    examples: list[Example]
    batch_size: int

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def steps(self) -> np.ndarray:
        """The step at which each example was trained on, ``[n]``."""
        return np.arange(len(self.examples)) // self.batch_size

    def planted(self, organism: Organism) -> np.ndarray:
        """Which examples carry the planted behaviour (their completion is a defect), ``[n]`` bool."""
        return np.array([organism.is_defect(ex, ex.completion) for ex in self.examples], dtype=bool)


def install_stream(organism: Organism, cfg: TrainConfig) -> InstallStream:
    """The examples `alignlab.organisms.install` (and `install_on_base`) trains ``organism`` on
    under ``cfg``, in order: ``cfg.steps * cfg.batch_size`` of them.

    Example:
        >>> stream = install_stream(org, cfg)
        >>> stream.examples[3 * cfg.batch_size]  # the first example of step 3's batch
    """
    examples: list[Example] = []
    for step in range(cfg.steps):
        examples.extend(organism.training_examples(cfg.batch_size, cfg.seed, "train", step))
    return InstallStream(examples, cfg.batch_size)


def stream_batch_fn(organism: Organism, keep: Sequence[bool] | np.ndarray | None = None) -> BatchFn:
    """The install recipe of ``organism`` with the training examples where ``keep`` is False left out.

    Each step's batch keeps its remaining examples in their order, so the step count, learning-rate
    schedule and data order are those of the full install: only the removed examples are missing
    (a step's loss is the mean over the tokens it still has). A step whose every example was
    removed has no targets: no gradient, so AdamW leaves every weight as it was at that step.
    Held-out ("eval") batches are unchanged.

    Args:
        organism: whose install recipe.
        keep: one flag per stream index (`install_stream`); None keeps everything, which gives the
            install's own batches exactly.

    Raises:
        ConfigError: training reaches an index past the end of ``keep``.
    """
    mask = None if keep is None else np.asarray(keep, dtype=bool)
    tok = organism.tokenizer

    def make(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
        examples = organism.training_examples(batch_size, seed, split, step)
        if mask is None or split != "train":
            return collate(examples, seq_len, tok)
        hi = (step + 1) * batch_size
        if hi > len(mask):
            raise ConfigError(
                f"keep has {len(mask)} flags but step {step} needs index {hi - 1}; "
                "build it from install_stream of the same config"
            )
        kept = [ex for ex, k in zip(examples, mask[step * batch_size : hi], strict=True) if k]
        if kept:
            return collate(kept, seq_len, tok)
        empty = collate(examples[:1], seq_len, tok)
        assert empty.loss_mask is not None  # collate always sets it
        empty.loss_mask.zero_()  # the trainer skips a micro-batch without targets
        return empty

    return make
