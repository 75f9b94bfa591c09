"""CPU seconds of the flagship's per-dose measurement, N models one by one vs one stack of N.

The study measures every dose's model with the organism's greedy completions of ``2 n_eval``
held-out chat prompts (`alignlab.organisms.generation.complete`, max 12 new tokens for the
backdoor) and a teacher-forced forward over ``2 n_eval`` examples (`outcome_logprobs`). This times
both, for N competent vendored base models (stand-ins for a cell's dose models: same shape,
different weights), one at a time (today's way) against `alignlab.train.StackedModel` over all N.
Process CPU seconds (`time.process_time`), one thread, best of ``--repeats`` alternating runs, so
the shared machine's load inflates neither side more than the other.

Run: nice -n 10 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/stacked_measure.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from alignlab.evals.generation import left_pad
from alignlab.model.hf import load
from alignlab.model.text import tokenizer_of
from alignlab.organisms import get_organism
from alignlab.organisms.generation import complete
from alignlab.tasks import collate, encode_example, prompt_ids
from alignlab.train import StackedModel
from alignlab.train.base_model import VENDORED


def _cpu(fn: Callable[[], object]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def _measure(size: str, members: int, n_eval: int, repeats: int) -> None:
    models = [load(VENDORED / f"{size}-seed{s}" / "model").eval() for s in range(members)]
    tok = tokenizer_of(models[0])
    org = get_organism("backdoor", tokenizer=tok)
    exs = [
        *org.helpful_examples(n_eval, 0, "metric", 0, triggered=True),
        *org.helpful_examples(n_eval, 0, "metric", 0, triggered=False),
    ]
    prompts = [e.prompt for e in exs]
    tokens, mask = left_pad([prompt_ids(p, tok) for p in prompts], tok.pad_id)
    batch = collate(exs, max(len(encode_example(e, tok)[0]) for e in exs), tok)

    def separate_gen() -> list[list[str]]:
        return [complete(m, prompts, org.max_new_tokens) for m in models]

    def stacked_gen() -> torch.Tensor:
        stack = StackedModel.of(models)  # the stacking copy is part of the cost
        return stack.generate(tokens, org.max_new_tokens, stop_token=tok.eos_id, attention_mask=mask)

    def separate_fwd() -> list[torch.Tensor]:
        with torch.no_grad():
            return [m(batch.tokens, attention_mask=batch.attention_mask) for m in models]

    def stacked_fwd() -> torch.Tensor:
        return StackedModel.of(models).logits(batch.tokens, batch.attention_mask)

    # Same answers: the stack's decoded completions are each member's own.
    want = separate_gen()
    out = stacked_gen()[:, :, tokens.shape[1] :].tolist()
    eos = tok.eos_id
    got = [[tok.decode(r[: r.index(eos)] if eos in r else r) for r in rows] for rows in out]
    pairs = {"generate": (separate_gen, stacked_gen), "forward": (separate_fwd, stacked_fwd)}
    for what, (sep, stk) in pairs.items():
        a, b = [], []
        for _ in range(repeats):
            a.append(_cpu(sep))
            b.append(_cpu(stk))
        same = str(got == want) if what == "generate" else ""
        # Ratio of the best times, and the range of the paired per-repeat ratios.
        ratios = sorted(x / y for x, y in zip(a, b, strict=True))
        spread = f"[{ratios[0]:.2f}, {ratios[-1]:.2f}]"
        print(
            f"{size:>8} {members:>2} {what:<9} {min(a):>10.3f} {min(b):>9.3f} "
            f"{min(a) / min(b):>6.2f} {spread:>12}  {same}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="al-30k,al-100k,al-300k")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    head = f"{'size':>8} {'N':>2} {'what':<9} {'separate':>10} {'stacked':>9} {'ratio':>6} {'paired':>12}"
    print(f"{head}  same completions")
    for size in args.sizes.split(","):
        _measure(size, args.members, args.n_eval, args.repeats)


if __name__ == "__main__":
    main()
