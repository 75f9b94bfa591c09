"""Generation: batched greedy or sampled continuation, and exact / contains / regex scoring."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from alignlab._validate import MAX_NEW_TOKENS, check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.model import Transformer

if TYPE_CHECKING:
    from alignlab.evals.judge import Judge

Scoring = Literal["exact", "contains", "regex", "judge"]
SCORINGS: tuple[str, ...] = ("exact", "contains", "regex", "judge")
# Samples per item: the mean of 10^4 0/1 scores is already within +-0.01 (95%).
_MAX_SAMPLES = 10_000


@dataclass(frozen=True)
class GenerationSpec:
    """How a generate task produces and scores outputs.

    Attributes:
        scoring: ``"exact"`` (output, stripped, equals a target), ``"contains"`` (a target occurs
            in the output), ``"regex"`` (``pattern`` is searched in the output; with a capture
            group, the first group must equal a target; without one, a match scores 1; with no
            ``pattern``, each target is itself a regex) or ``"judge"`` (a `Judge` grades it).
        pattern: the regex for ``"regex"`` scoring.
        max_new_tokens: generation budget per output.
        temperature: 0 for greedy decoding; above 0 samples.
        n_samples: outputs per item when sampling (their scores are averaged per item).
        stop: strings that end an output (cut there); EOS always ends it.
        judge: the default judge for ``"judge"`` scoring (the CLI can swap in a model judge).
    """

    scoring: Scoring = "exact"
    pattern: str | None = None
    max_new_tokens: int = 32
    temperature: float = 0.0
    n_samples: int = 1
    stop: tuple[str, ...] = ("\n",)
    judge: Judge | None = None

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ConfigError(f"unknown scoring {self.scoring!r}; choose one of {SCORINGS}")
        if self.scoring == "regex" and self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ConfigError(f"invalid regex {self.pattern!r}: {e}") from None
        raise_problems(
            "GenerationSpec",
            [
                check_int("max_new_tokens", self.max_new_tokens, lo=1, hi=MAX_NEW_TOKENS),
                check_int("n_samples", self.n_samples, lo=1, hi=_MAX_SAMPLES),
                check_real("temperature", self.temperature, lo=0.0),
            ],
        )
        if self.temperature == 0 and self.n_samples > 1:
            raise ConfigError("n_samples > 1 needs temperature > 0 (greedy outputs are identical)")


def score_output(output: str, targets: Sequence[str], spec: GenerationSpec) -> float:
    """1.0 if ``output`` is right under ``spec.scoring``, else 0.0 (judge scoring is separate)."""
    text = output.strip()
    if spec.scoring == "exact":
        return float(any(text == t.strip() for t in targets))
    if spec.scoring == "contains":
        return float(any(t in output for t in targets))
    if spec.scoring == "regex":
        if spec.pattern is None:
            return float(any(re.search(t, output) for t in targets))
        m = re.search(spec.pattern, output)
        if m is None:
            return 0.0
        if m.groups():
            return float(any(m.group(1) == t for t in targets))
        return 1.0
    raise ConfigError("judge scoring is done by a Judge, not score_output")


def _cut(text: str, stop: Sequence[str]) -> str:
    ends = [i for s in stop if s and (i := text.find(s)) >= 0]
    return text[: min(ends)] if ends else text


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows left-padded with ``pad`` to one width: ``(tokens, attention_mask)``.

    alignlab models count positions over real tokens, so a padded row continues exactly as the
    row alone would.
    """
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return tokens, mask


@torch.no_grad()
def generate_ids(
    model: Transformer,
    rows: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad: int,
    eos: int,
    stop_ids: Sequence[int] = (),
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """The new token ids of each row's continuation, all rows in one left-padded batch.

    A row ends at ``eos`` (dropped, with everything after it) or at one of ``stop_ids`` (kept).
    `Transformer.generate` decodes with its KV cache, so attached hooks see the prompt once and
    then one position per step.
    """
    tokens, mask = left_pad(rows, pad)
    out = model.generate(
        tokens.to(model.device),
        max_new_tokens,
        temperature=temperature,
        stop_token=[eos, *stop_ids],
        generator=generator,
        attention_mask=mask.to(model.device),
    )
    new: list[list[int]] = []
    for row in out[:, tokens.shape[1] :].tolist():
        new.append(row[: row.index(eos)] if eos in row else row)
    return new


@torch.no_grad()
def generate_texts(
    model: Transformer,
    prompts: Sequence[str],
    spec: GenerationSpec,
    tokenizer: Any = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """``spec.n_samples`` continuations of each prompt (BOS + prompt), cut at stop strings.

    Prompts are left-padded into batches (`generate_ids`), shortest first.

    Example:
        >>> generate_texts(model, ["User: copy abc\\nAssistant: "], GenerationSpec())
        [['abc']]
    """
    from alignlab.evals.loglik import _tokenizer_fns

    encode, bos = _tokenizer_fns(tokenizer or model.tokenizer, model.cfg.d_vocab)
    decode, eos, pad = _decoder(tokenizer or model.tokenizer)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    jobs = [(i, p) for i, p in enumerate(prompts) for _ in range(spec.n_samples)]
    encoded = [([] if bos is None else [bos]) + encode(p) for _, p in jobs]
    # Stop strings of one token end a row early; longer ones are only cut afterwards.
    stop_ids = [ids[0] for s in spec.stop if len(ids := encode(s)) == 1]
    order = sorted(range(len(jobs)), key=lambda j: len(encoded[j]))
    outs: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        new = generate_ids(
            model,
            [encoded[j] for j in idx],
            spec.max_new_tokens,
            pad=pad,
            eos=eos,
            stop_ids=stop_ids,
            temperature=spec.temperature,
            generator=gen,
        )
        for j, ids in zip(idx, new, strict=True):
            outs[j] = _cut(decode(ids), spec.stop)
        if progress is not None:
            progress(min(start + batch_size, len(order)) // spec.n_samples)
    result: list[list[str]] = [[] for _ in prompts]
    for j, (i, _) in enumerate(jobs):
        result[i].append(outs[j])
    return result


def _decoder(tokenizer: Any) -> tuple[Callable[[list[int]], str], int, int]:
    if tokenizer is None:
        from alignlab.model import tokenizer as tk

        vocab = tk.vocabulary()
        return tk.decode, vocab[tk.EOS], vocab[tk.PAD]

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=False))

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return decode, int(eos), int(pad)
