"""Eval throughput: alignlab's log-likelihood scorer vs lm-eval's HFLM, same model, same items.

Both score the same (context, continuation) pairs of advanced-ai-risk items on the same exported
model. The script checks that every item gets the same choice and that log-likelihoods agree within
1e-4, then prints items/s for each and the ratio (floor: alignlab >= 2x the best HFLM batch size).

Usage:
    python benchmarks/eval_throughput.py                 # trains the tiny HH-RLHF model (~10 s)
    python benchmarks/eval_throughput.py --model DIR --limit 300 --threads 1 --json

Needs lm-eval (``pip install 'alignlab[evals]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

import alignlab
from alignlab.evals import Request, TransformerScorer, get_eval_task
from alignlab.evals.lmeval import hflm, lm_eval_logliks
from alignlab.evals.tiny import train_tiny_text_model

FLOOR = 2.0
TASKS = (
    "advanced-ai-risk/human/self-awareness-general-ai",
    "advanced-ai-risk/human/power-seeking-inclination",
)


def _items(limit: int) -> list[Request]:
    reqs = []
    for name in TASKS:
        reqs += [Request(it.prompt, it.choices) for it in get_eval_task(name).items(limit=limit)]
    return reqs


def _time(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="exported model directory (default: train the tiny model)")
    ap.add_argument("--limit", type=int, default=200, help="items per task (2 tasks)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats; best kept")
    ap.add_argument("--hf-batch-sizes", default="8,16,32", help="HFLM batch sizes to try")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(args.model) if args.model else Path(tmp.name) / "tiny-hh"
    if not args.model:
        train_tiny_text_model().save_pretrained(str(model_dir))
    model = alignlab.load(model_dir)
    requests = _items(args.limit)
    pairs = [(r.context, c) for r in requests for c in r.continuations]

    scorer = TransformerScorer(model)
    scorer.score(requests[:8])  # warm-up
    lms = {int(b): hflm(model_dir, batch_size=int(b)) for b in args.hf_batch_sizes.split(",")}
    for lm in lms.values():
        lm_eval_logliks(lm, pairs[:16])  # warm-up
    # Interleaved repeats, best of each: on a shared machine the load drifts, and interleaving
    # exposes both sides to the same drift.
    t_ours, hf_runs = float("inf"), dict.fromkeys(lms, float("inf"))
    ours: Any = None
    theirs: list[tuple[float, bool]] = []
    for _ in range(args.repeats):
        t, ours = _time(lambda: scorer.score(requests), 1)
        t_ours = min(t_ours, t)
        for bs, lm in lms.items():
            t, theirs = _time(lambda lm=lm: lm_eval_logliks(lm, pairs), 1)
            hf_runs[bs] = min(hf_runs[bs], t)

    k = 0
    agree = 0
    worst = 0.0
    for r, row in zip(requests, ours, strict=True):
        ll = [theirs[k + i][0] for i in range(len(r.continuations))]
        k += len(r.continuations)
        mine = [x.logprob for x in row]
        agree += ll.index(max(ll)) == mine.index(max(mine))
        worst = max(worst, *(abs(a - b) for a, b in zip(ll, mine, strict=True)))

    n = len(requests)
    best_bs = min(hf_runs, key=lambda b: hf_runs[b])
    result = {
        "items": n,
        "continuations": len(pairs),
        "model": str(model_dir) if args.model else "tiny HH-RLHF char model (train_tiny_text_model)",
        "params": model.cfg.param_counts()["total"],
        "threads": args.threads,
        "alignlab_items_per_s": round(n / t_ours, 1),
        "hflm_items_per_s": {bs: round(n / t, 1) for bs, t in hf_runs.items()},
        "ratio_vs_best_hflm": round(hf_runs[best_bs] / t_ours, 2),
        "choice_agreement": agree / n,
        "max_abs_loglik_diff": worst,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{n} items ({len(pairs)} continuations), {result['params']:,} params, {args.threads} thread(s)"
        )
        print(f"alignlab            {result['alignlab_items_per_s']:8.1f} items/s")
        for bs, v in result["hflm_items_per_s"].items():
            print(f"lm-eval HFLM bs={bs:<4d}{v:8.1f} items/s")
        print(f"ratio (vs best HFLM) {result['ratio_vs_best_hflm']:.2f}x  (floor {FLOOR}x)")
        print(f"choices agree on {agree}/{n} items; max |loglik diff| {worst:.2e}")
    ok = agree == n and worst < 1e-4 and result["ratio_vs_best_hflm"] >= FLOOR
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
