"""Generation throughput: alignlab's KV-cached `Transformer.generate` vs transformers' `generate`.

The same weights on both sides: each alignlab model is exported with ``save_pretrained`` and loaded
back with ``AutoModelForCausalLM`` (GPT-NeoX), which generates with its own KV cache. Prompts are
a left-padded batch with an attention mask. The script checks that greedy decoding gives the same
tokens on both sides, then times interleaved ABBA rounds and prints new tokens/s and the ratio with
a 95% bootstrap interval over rounds. It also times alignlab with ``kv_cache=False``, to show what
the cache buys.

Usage:
    python benchmarks/generate_hf.py
    python benchmarks/generate_hf.py --sizes al-100k,al-1m --batch 16 --new 32 --json out.json
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

sys.path.insert(0, str(Path(__file__).parent))

import torch
from transformers import AutoModelForCausalLM

from _timing import calibrate, interleaved, ratio_ci
from alignlab.model import Transformer, model_preset


def _prompts(batch: int, longest: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(longest // 2, longest + 1, (batch,), generator=gen)
    lengths[0] = longest
    tokens = torch.zeros(batch, longest, dtype=torch.long)
    mask = torch.zeros(batch, longest, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, longest - n :] = torch.randint(1, vocab, (n,), generator=gen)
        mask[i, longest - n :] = 1
    return tokens, mask


def bench(size: str, args: argparse.Namespace) -> dict[str, Any]:
    model = Transformer(model_preset(size))
    model.init_weights(seed=0)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp).eval()
    tokens, mask = _prompts(args.batch, args.prompt, model.cfg.d_vocab, seed=1)
    new = args.new

    def ours() -> torch.Tensor:
        return model.generate(tokens, new, attention_mask=mask)

    def ours_uncached() -> torch.Tensor:
        return model.generate(tokens, new, attention_mask=mask, kv_cache=False)

    def theirs() -> torch.Tensor:
        with torch.no_grad():
            return hf.generate(
                input_ids=tokens,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )

    a, b = ours(), theirs()
    agree = float((a[:, -new:] == b[:, -new:]).float().mean())
    fns = {"alignlab": ours, "transformers": theirs, "alignlab_no_cache": ours_uncached}
    reps = calibrate(theirs, args.round_s)
    timed = interleaved(fns, reps, args.rounds, units_per_call=args.batch * new)
    rates = {k: v["rates"] for k, v in timed.items()}
    ratio = timed["alignlab"]["rate_median"] / timed["transformers"]["rate_median"]
    return {
        "size": size,
        "params": model.cfg.param_counts()["total"],
        "token_agreement": agree,
        "timing": timed,
        "ratio": ratio,
        "ratio_ci": ratio_ci(rates["alignlab"], rates["transformers"]),
        "cache_speedup": timed["alignlab"]["rate_median"] / timed["alignlab_no_cache"]["rate_median"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="al-30k,al-300k,al-1m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=40, help="longest prompt; others are 1/2-1x")
    ap.add_argument("--new", type=int, default=32, help="new tokens per sequence")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--round-s", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    meta = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "argv": sys.argv[1:],
        "loadavg_start": os.getloadavg(),
    }
    print(
        f"torch {meta['torch']}, transformers {meta['transformers']}, threads={args.threads}; "
        f"batch {args.batch}, prompts up to {args.prompt} tokens (left-padded), {args.new} new tokens, greedy"
    )
    hdr = f"{'size':>8} {'same tokens':>11} {'alignlab tok/s':>15} {'HF tok/s':>9}"
    print(hdr + f" {'ratio [95% CI]':>20} {'cache gain':>10}")
    results = []
    for size in args.sizes.split(","):
        r = bench(size, args)
        results.append(r)
        t = r["timing"]
        lo, hi = r["ratio_ci"]
        print(
            f"{size:>8} {r['token_agreement']:>11.3f} {t['alignlab']['rate_median']:>15,.0f} "
            f"{t['transformers']['rate_median']:>9,.0f} {r['ratio']:>6.2f}x [{lo:.2f}, {hi:.2f}] "
            f"{r['cache_speedup']:>9.2f}x",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
