"""Is the assistant's reply right? A yes/no task over the clean chat tasks (copy, reverse).

The competent base models (`alignlab.train.base_model`) were pretrained with next-token loss on
correct exchanges of exactly this process, so whether a reply is right is *latent* in them: it
is what their own next-token prediction checks. Labels never appear in pretraining — the setting
of weak-to-strong generalisation (Burns et al. 2023), where a label is elicited from a
pretrained model rather than taught.

Half the replies are correct (label 1). A wrong reply (label 0) has either one letter replaced
by another (a *substitution*) or two adjacent different letters exchanged (a *transposition*).
Letter counts tell a substitution from a correct reply but not a transposition, so a bag-of-letters
probe (`letter_count_features`) is a weak supervisor whose errors are systematic, while a model
that can do the task sees both.

Example:
    >>> items = verify_examples(4, seed=0, split="train")
    >>> items[0].example.prompt, items[0].example.completion, items[0].label  # doctest: +SKIP
    ('reverse kdw', 'wdk', 1)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignlab.model.text import Tokenizer, char_tokenizer
from alignlab.tasks.base import stream_seed
from alignlab.tasks.chat import LETTERS, Example, encode_example, sample_examples

CORRUPTIONS = ("substitution", "transposition")


@dataclass(frozen=True)
class VerifyItem:
    """One exchange and whether its reply is right.

    Attributes:
        example: the exchange as shown (its completion possibly corrupted).
        label: 1 if the reply is right, else 0.
        kind: "correct", "substitution" or "transposition".
    """

    example: Example
    label: int
    kind: str


def _corrupt(reply: str, rng: random.Random) -> tuple[str, str]:
    """A wrong version of ``reply`` and its kind (a transposition when two adjacent letters differ)."""
    pairs = [i for i in range(len(reply) - 1) if reply[i] != reply[i + 1]]
    if pairs and rng.random() < 0.5:
        i = rng.choice(pairs)
        return reply[:i] + reply[i + 1] + reply[i] + reply[i + 2 :], "transposition"
    i = rng.randrange(len(reply))
    letter = rng.choice([c for c in LETTERS if c != reply[i]])
    return reply[:i] + letter + reply[i + 1 :], "substitution"


def verify_examples(
    n: int,
    seed: int,
    split: str,
    tasks: Sequence[str] = ("copy", "reverse"),
    word_len: tuple[int, int] = (2, 5),
) -> list[VerifyItem]:
    """``n`` exchanges of ``tasks``, half with a corrupted reply, deterministic in (seed, split).

    Measurement splits ("test", "eval", ...) draw held-out prompts only, other splits training
    prompts only (`alignlab.tasks.chat.sample_examples`), so a test set never shares a prompt
    with the exchanges a model was pretrained or fine-tuned on.
    """
    rng = random.Random(stream_seed("verify", seed, split, tuple(tasks), tuple(word_len)))
    items = []
    for ex in sample_examples(n, seed, f"verify-{split}", tasks, word_len=word_len):
        if rng.random() < 0.5:
            items.append(VerifyItem(ex, 1, "correct"))
        else:
            reply, kind = _corrupt(ex.completion, rng)
            items.append(VerifyItem(Example(ex.prompt, reply, ex.task), 0, kind))
    return items


@dataclass(frozen=True)
class VerifyBatch:
    """Exchanges as model input: right-padded tokens ending in EOS.

    Attributes:
        tokens: ``[n, seq_len]`` ids (BOS, prompt, reply, EOS, padding).
        attention_mask: ``[n, seq_len]`` 1 for real tokens.
        reply_mask: ``[n, seq_len]`` True at the reply's tokens and its EOS (what is verified).
        labels: ``[n]`` ground truth (1 = right).
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    reply_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def rows(self, idx: torch.Tensor) -> VerifyBatch:
        """The rows ``idx``."""
        return VerifyBatch(self.tokens[idx], self.attention_mask[idx], self.reply_mask[idx], self.labels[idx])


def encode_verify(items: Sequence[VerifyItem], tokenizer: Tokenizer | None = None) -> VerifyBatch:
    """Encode ``items`` (padded to the longest)."""
    tok = tokenizer or char_tokenizer()
    encoded = [encode_example(it.example, tok) for it in items]
    width = max(len(ids) for ids, _ in encoded)
    tokens = torch.full((len(items), width), tok.pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    reply = torch.zeros((len(items), width), dtype=torch.bool)
    for i, (ids, mask) in enumerate(encoded):
        tokens[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        reply[i, : len(ids)] = torch.tensor(mask)
    labels = torch.tensor([it.label for it in items])
    return VerifyBatch(tokens, attn, reply, labels)


def letter_count_features(items: Sequence[VerifyItem]) -> np.ndarray:
    """``[n, 27]``: per letter, |count in the reply - count in the prompt's word|, and the length
    difference — what a bag-of-letters probe sees (blind to order, hence to transpositions)."""
    out = np.zeros((len(items), len(LETTERS) + 1))
    for i, it in enumerate(items):
        word = it.example.prompt.split(" ", 1)[1]
        reply = it.example.completion
        for j, c in enumerate(LETTERS):
            out[i, j] = abs(reply.count(c) - word.count(c))
        out[i, -1] = abs(len(reply) - len(word))
    return out
