"""Many models at once: stacked training vs separate runs vs Hugging Face GPT-NeoX, in models x tokens/s.

Workload: the study's base-model training (clean chat tasks copy and reverse: right-padded,
attention-masked, loss on completions only) at ``--batch`` sequences of the base sequence length
per step, one torch thread, fp32, AdamW with clipping. Per size, three ways to train N models:

* **stacked**: `alignlab.train.train_stacked` on N configs (seeds 0..N-1), one process;
* **separate** (today's way): N runs of `alignlab.train.train`, one after another;
* **HF**: N plain training loops of ``GPTNeoXForCausalLM`` built from the same initial weights
  (``to_hf_state_dict``), on the same batches (labels -100 off the completions), same AdamW
  groups and clipping.

Rates are model-tokens per second (tokens of all N models per second). Separate and HF runs are
independent, so their cost is exactly linear in N: their rate is measured over ``--runs`` runs
per round and holds for every N. "On the same cores": on a
machine with C cores, today's way runs C one-thread runs at a time and stacked training would run
C stacks of N / C members; both scale by the same processes, so the per-core rates below compare
them (measured one process at a time, which a shared machine can afford).

Timing: ``--rounds`` rounds per size, each running every way once, in alternating order (a drift
in the machine's load then hits every way alike); a ratio is taken within each round and the
median over rounds is printed, with median rates. The first ``--warmup`` steps of every run are
excluded; from then on each method's
metrics callback (or loop) records process CPU time and wall time at every step, so the rates
exclude model construction, the final checkpoint and evaluation. CPU time is the headline
(``tok/cpu-s``): it is what a run gets when it has its core to itself, and it is much less
sensitive than wall time to other jobs on a shared machine; wall rates are printed beside it.

Example (a few minutes on a quiet 2-core machine):

    python benchmarks/many_models.py --sizes al-10k,al-30k,al-100k,al-300k --n 3,6,12 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from alignlab.model.config import SIZES
from alignlab.model.hf import hf_config, to_hf_state_dict
from alignlab.model.transformer import Transformer
from alignlab.tasks import stream_seed
from alignlab.tasks.base import BatchFn
from alignlab.train import TrainConfig, lr_at, make_optimizer, train, train_stacked
from alignlab.train.base_model import BaseSpec, base_batch_fn


def _config(size: str, seed: int, steps: int, batch: int, spec: BaseSpec) -> TrainConfig:
    return TrainConfig(
        model=SIZES[size],
        task="base",
        steps=steps,
        batch_size=batch,
        seq_len=spec.seq_len(),
        lr=3e-3,
        warmup_steps=2,
        eval_every=0,
        ckpt_every=0,
        seed=seed,
        threads=1,
        device="cpu",
    )


class _Clock:
    """Process CPU time and wall time at each step a callback reports."""

    def __init__(self) -> None:
        self.marks: dict[int, tuple[float, float]] = {}

    def mark(self, step: int, *_: Any) -> None:
        self.marks.setdefault(step, (time.process_time(), time.perf_counter()))

    def span(self, first: int, last: int) -> tuple[float, float]:
        (c0, w0), (c1, w1) = self.marks[first], self.marks[last]
        return c1 - c0, w1 - w0


def _stacked(cfgs: list[TrainConfig], fn: Callable[..., Any], warmup: int, tmp: Path) -> tuple[float, float]:
    clock = _Clock()
    out = train_stacked(
        cfgs,
        [tmp / f"stacked-{cfgs[0].model.d_model}-{len(cfgs)}-{i}" for i in range(len(cfgs))],
        on_metrics=[clock.mark] + [None] * (len(cfgs) - 1),
        batch_fns=[fn] * len(cfgs),
    )
    assert all(not isinstance(o, Exception) for o in out), out
    return clock.span(warmup, cfgs[0].steps)


def _separate(cfg: TrainConfig, fn: Callable[..., Any], warmup: int, tmp: Path) -> tuple[float, float]:
    clock = _Clock()
    train(
        cfg,
        tmp / f"separate-{cfg.model.d_model}-{cfg.seed}",
        on_metrics=clock.mark,
        progress=False,
        batch_fn=fn,
    )
    return clock.span(warmup, cfg.steps)


def _hf(cfg: TrainConfig, fn: Callable[..., Any], warmup: int) -> tuple[float, float]:
    """A plain HF training loop with `train`'s init, data, schedule, AdamW groups and clipping."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    ours = Transformer(cfg.model)
    ours.init_weights(seed=stream_seed("init", cfg.seed))
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(**hf_config(cfg.model), attn_implementation="sdpa")).train()
    sd = to_hf_state_dict(ours)
    if "embed_out.weight" in sd and "embed_out.weight" not in hf.state_dict():
        sd["lm_head.weight"] = sd.pop("embed_out.weight")
    hf.load_state_dict(sd, strict=True)
    opt = make_optimizer(hf, cfg)
    clock = _Clock()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = fn(cfg.batch_size, cfg.seq_len, cfg.seed, step, "train")
        assert batch.loss_mask is not None
        labels = batch.tokens.masked_fill(~batch.loss_mask.bool(), -100)
        loss = hf(input_ids=batch.tokens, attention_mask=batch.attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())
        clock.mark(step + 1)
    return clock.span(warmup, cfg.steps)


Rate = Callable[[list[tuple[float, float]], int], tuple[float, float]]


def _ways(
    cfgs: list[TrainConfig], ns: list[int], runs: int, warmup: int, fn: BatchFn, hf: bool, rate: Rate
) -> dict[str, Callable[[Path], tuple[float, float]]]:
    """Each way to train, as a function of a scratch folder returning its two rates."""
    ways: dict[str, Callable[[Path], tuple[float, float]]] = {
        "separate": lambda tmp: rate([_separate(c, fn, warmup, tmp) for c in cfgs[:runs]], runs)
    }
    if hf:
        ways["HF"] = lambda tmp: rate([_hf(c, fn, warmup) for c in cfgs[:runs]], runs)
    for n in ns:
        # One stack's span covers all n members' steps: n models' tokens.
        ways[f"stacked {n}"] = lambda tmp, n=n: rate([_stacked(cfgs[:n], fn, warmup, tmp)], n)
    return ways


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="al-10k,al-30k,al-100k,al-300k")
    ap.add_argument("--n", default="3,6,12", help="stack sizes")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="separate and HF runs per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per size, in alternating order")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = BaseSpec()
    fn = base_batch_fn(spec)
    ns = [int(x) for x in args.n.split(",")]
    timed = args.steps - args.warmup
    tok = args.batch * spec.seq_len()  # tokens per step per model (padded, as `train` counts)
    rows: list[dict[str, Any]] = []
    print(f"base data, batch {args.batch} x seq {spec.seq_len()}, {timed} timed steps, 1 thread")
    head = ("size", "way", "model-tok/cpu-s", "model-tok/s", "vs separate", "vs HF")
    print(f"{head[0]:>8} {head[1]:>12} {head[2]:>20} {head[3]:>11} {head[4]:>12} {head[5]:>7}")

    def rate(spans: list[tuple[float, float]], models: int) -> tuple[float, float]:
        """Tokens of all ``models`` per CPU-second and per wall-second over ``spans``."""
        work = models * timed * tok
        return work / sum(c for c, _ in spans), work / sum(w for _, w in spans)

    with tempfile.TemporaryDirectory() as d:
        for size in args.sizes.split(","):
            cfgs = [_config(size, s, args.steps, args.batch, spec) for s in range(max(ns))]
            ways = _ways(cfgs, ns, args.runs, args.warmup, fn, not args.no_hf, rate)
            # Rounds in alternating order (A B C, C B A, ...), so a drift in the machine's load
            # hits every way alike; ratios are taken within a round (paired), then the median.
            got: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
            for r in range(args.rounds):
                for way in list(ways) if r % 2 == 0 else list(ways)[::-1]:
                    got[way].append(ways[way](Path(d) / f"{size}-{r}-{way.replace(' ', '')}"))
            row: dict[str, Any] = {"size": size, "rounds": got, "ratio_vs_separate": {}, "ratio_vs_hf": {}}
            for way, rs in got.items():
                cpu = statistics.median(c for c, _ in rs)
                wall = statistics.median(w for _, w in rs)
                vs_sep = statistics.median(a[0] / b[0] for a, b in zip(rs, got["separate"], strict=True))
                vs_hf = (
                    statistics.median(a[0] / b[0] for a, b in zip(rs, got["HF"], strict=True))
                    if "HF" in got
                    else float("nan")
                )
                row["ratio_vs_separate"][way], row["ratio_vs_hf"][way] = vs_sep, vs_hf
                print(
                    f"{size:>8} {way:>12} {cpu:>20,.0f} {wall:>11,.0f} {vs_sep:>12.2f} {vs_hf:>7.2f}",
                    flush=True,
                )
            rows.append(row)
    if args.json:
        meta = {
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "batch": args.batch,
            "seq_len": spec.seq_len(),
            "timed_steps": timed,
            "runs": args.runs,
            "rounds": args.rounds,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
