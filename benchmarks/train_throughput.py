"""Training throughput of alignlab vs Hugging Face GPT-NeoX at identical shapes, and MFU.

Both models are built from the *same weights* (HF as
``GPTNeoXForCausalLM(GPTNeoXConfig(**hf_config(cfg)))`` loaded with ``to_hf_state_dict``), so they
do identical maths; their initial losses are checked to agree (1e-4) before anything is timed.
Each side runs a plain fp32 torch training loop (AdamW step, forward + backward on the next-token
LM loss) on the same batches, batch size, sequence length, steps and thread count.

Timing (the machine may be shared with other jobs, so every choice here is about robustness):

* warm-up steps are excluded;
* alignlab and HF timing rounds are interleaved in ABBA order (A B B A A B ...), so slow drifts in
  background load hit both sides equally; the median round per side is reported, with the spread;
* every round records wall-clock time *and* process CPU time (``time.process_time``). Wall-clock
  tokens/s is the headline number; CPU-time tokens/s ("tok/cpu-s") is what the same run would do
  if it had its cores to itself, so it is the fairer comparison when other jobs share the CPUs;
* per-step CPU times also give the rate of the fastest quarter of steps (contention mostly adds
  time), a third, still more load-robust estimate. Even so, expect +-5% between runs on a busy
  machine (benchmarks/RESULTS.md).

FLOP convention (training FLOPs per token, used for MFU):

    6 * N_matmul + 6 * n_layers * d_attn * (T + 1)
    N_matmul = every weight matrix that is multiplied per token: QKV, attention output and MLP
               (in and out) of every layer, *plus the unembedding* (d_model * d_vocab), which is
               7-25% of N_matmul from al-100k down to al-10k. Biases, norm gains and the embedding lookup are
               not matmuls and are not counted (so N_matmul differs slightly from the
               ``non_embedding`` parameter count).
    attention: QK^T and PV, 2 FLOPs per multiply-add, over the (T + 1) / 2 keys a causal query
               attends to on average, forward x 3 for training; i.e. 6 * L * d_attn * (T + 1) per
               token. (PaLM's convention counts the full T x T square, i.e. twice this; causal
               kernels skip the masked half, so we do not count it.)

MFU = FLOPs/token * tokens/s / peak, where peak is the best fp32 matmul rate measured in this
process with the same thread count, over a large square matmul (2048^3, at the start and at the
end) and each model's own largest GEMM ([B*T, d_model] @ [d_model, width], also printed).
Wall-clock MFU uses the best wall-clock peak, CPU-time MFU the best per-CPU-second peak.

Threads study (``--threads-study``, on by default): for one small and one larger size
(``--study-sizes``), tokens/s of alignlab training with 1 thread, 2 threads, and two concurrent
1-thread processes (aggregate), each in a fresh subprocess released by a GO line so the concurrent
ones overlap. This decides the default thread setting of the sweep runner.

Not part of the pytest suite. A default run takes ~3-6 minutes (more on a loaded machine). Example:

    python benchmarks/train_throughput.py --sizes al-30k,al-100k,al-300k,al-1m --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from alignlab.model import SIZES, ModelConfig, Transformer, model_preset
from alignlab.model.hf import hf_config, to_hf_state_dict

DEFAULT_SIZES = "al-30k,al-100k,al-300k,al-1m"
LOSS_TOL = 1e-4


# --------------------------------------------------------------------------------------------
# FLOPs and peak


def matmul_params(cfg: ModelConfig) -> int:
    """Weights multiplied per token: QKV, W_O, MLP in/out of every layer, plus the unembedding."""
    d, hd = cfg.d_model, cfg.d_head
    attn = d * (cfg.n_heads + 2 * cfg.kv_heads) * hd + cfg.n_heads * hd * d
    if cfg.attn_only:
        mlp = 0
    elif cfg.arch == "llama":
        mlp = 3 * d * cfg.mlp_width
    else:
        mlp = 2 * d * cfg.mlp_width
    return cfg.n_layers * (attn + mlp) + d * cfg.d_vocab


def train_flops_per_token(cfg: ModelConfig, seq: int) -> dict[str, float]:
    """Training FLOPs per token (see the module docstring for the convention)."""
    dense = 6.0 * matmul_params(cfg)
    d_attn = cfg.n_heads * cfg.d_head
    # forward: (QK^T + PV) * 2 FLOPs/MAC * d_attn * mean causal keys (T+1)/2; training = 3x.
    attn = 3.0 * 2 * 2 * d_attn * (seq + 1) / 2 * cfg.n_layers
    return {"dense": dense, "attention": attn, "total": dense + attn}


def _time_matmul(m: int, k: int, n: int, min_seconds: float) -> tuple[float, float]:
    """Best-of-reps GFLOP/s of an fp32 [m,k] @ [k,n] matmul: (wall, cpu)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    flops = 2.0 * m * k * n
    reps = 1
    while True:  # calibrate so one timed rep takes >= 20 ms
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        if time.perf_counter() - t > 0.02:
            break
        reps *= 2
    best_w = best_c = 0.0
    end = time.perf_counter() + min_seconds
    while True:
        t, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        best_w = max(best_w, flops * reps / dt / 1e9)
        best_c = max(best_c, flops * reps / max(dc, 1e-9) / 1e9)
        if time.perf_counter() > end:
            return best_w, best_c


@dataclass
class Peak:
    """Best fp32 matmul rate seen in this process (large square and the models' GEMM shapes)."""

    wall: float = 0.0  # GFLOP/s of wall-clock time
    cpu: float = 0.0  # GFLOP per CPU-second
    shapes: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, key: str, wall: float, cpu: float) -> None:
        old = self.shapes.get(key, {"wall": 0.0, "cpu": 0.0})
        self.shapes[key] = {"wall": max(wall, old["wall"]), "cpu": max(cpu, old["cpu"])}
        self.wall, self.cpu = max(self.wall, wall), max(self.cpu, cpu)

    def measure_square(self, n: int, seconds: float) -> None:
        self.add(f"square {n}", *_time_matmul(n, n, n, seconds))


def model_gemm_rate(cfg: ModelConfig, tokens: int, seconds: float) -> dict[str, Any]:
    """GFLOP/s of the model's largest forward GEMM ([B*T, d] @ [d, max(width)])."""
    widths = {
        "qkv": (cfg.n_heads + 2 * cfg.kv_heads) * cfg.d_head,
        "unembed": cfg.d_vocab,
    }
    if not cfg.attn_only:
        widths["mlp_in"] = cfg.mlp_width * (2 if cfg.arch == "llama" else 1)
    name, n = max(widths.items(), key=lambda kv: kv[1])
    w, c = _time_matmul(tokens, cfg.d_model, n, seconds)
    return {"gemm": f"{name} [{tokens}x{cfg.d_model}]@[{cfg.d_model}x{n}]", "wall": w, "cpu": c}


# --------------------------------------------------------------------------------------------
# Models and steps


def build_pair(cfg: ModelConfig, seed: int, hf_attn: str) -> tuple[Transformer, torch.nn.Module]:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    if cfg.arch != "neox":
        raise SystemExit(f"only neox configs are compared with GPTNeoXForCausalLM (got {cfg.arch})")
    torch.manual_seed(seed)
    ours = Transformer(cfg).train()
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(**hf_config(cfg), attn_implementation=hf_attn)).train()
    sd = to_hf_state_dict(ours)
    hf_keys = set(hf.state_dict())
    # transformers 5 calls the output head lm_head (it renames embed_out when loading a checkpoint).
    if "embed_out.weight" in sd and "embed_out.weight" not in hf_keys:
        sd["lm_head.weight"] = sd.pop("embed_out.weight")
    hf.load_state_dict(sd, strict=True)
    return ours, hf


def make_optimizer(model: torch.nn.Module, impl: str) -> torch.optim.Optimizer:
    kw: dict[str, Any] = {"foreach": False}
    if impl == "foreach":
        kw = {"foreach": True}
    elif impl == "fused":
        kw = {"fused": True}
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, **kw)


def make_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[torch.Tensor], hf: bool
) -> Callable[[], None]:
    """One plain training step: zero grads, forward on the LM loss, backward, AdamW step."""
    state = {"i": 0}

    def step() -> None:
        tokens = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=tokens, labels=tokens).loss if hf else model(tokens, "loss")
        loss.backward()
        opt.step()

    return step


def run_steps(step: Callable[[], None], n: int) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    return time.perf_counter() - t, time.process_time() - c


def run_round(step: Callable[[], None], n: int) -> tuple[float, float, list[float]]:
    """n steps: (wall seconds, CPU seconds, CPU seconds of each step)."""
    per_step = []
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        c0 = time.process_time()
        step()
        per_step.append(time.process_time() - c0)
    return time.perf_counter() - t, time.process_time() - c, per_step


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def bench_size(name: str, args: argparse.Namespace, peak: Peak) -> dict[str, Any]:
    cfg = model_preset(name)
    B, T = args.batch, args.seq
    if cfg.n_ctx < T:
        cfg = cfg.replace(n_ctx=T)
    ours, hf = build_pair(cfg, args.seed, args.hf_attn)
    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = [torch.randint(0, cfg.d_vocab, (B, T), generator=gen) for _ in range(4)]

    # Sanity: identical maths before timing.
    with torch.no_grad():
        l_ours = float(ours(batches[0], return_type="loss"))
        l_hf = float(hf(input_ids=batches[0], labels=batches[0]).loss)
    if abs(l_ours - l_hf) > LOSS_TOL:
        raise SystemExit(f"{name}: initial losses differ: alignlab {l_ours:.6f} vs HF {l_hf:.6f}")

    steps = {
        "alignlab": make_step(ours, make_optimizer(ours, args.optimizer), batches, hf=False),
        "hf": make_step(hf, make_optimizer(hf, args.optimizer), batches, hf=True),
    }
    step_time = 0.0
    for side, fn in steps.items():
        run_steps(fn, max(args.warmup - 1, 0))
        w, _ = run_steps(fn, 1)
        if side == "alignlab":
            step_time = w
    n_steps = args.steps or max(1, round(args.round_seconds / max(step_time, 1e-6)))

    tokens = B * T * n_steps
    wall: dict[str, list[float]] = {"alignlab": [], "hf": []}
    cpu: dict[str, list[float]] = {"alignlab": [], "hf": []}
    step_cpu: dict[str, list[float]] = {"alignlab": [], "hf": []}
    for r in range(args.rounds):
        order = ("alignlab", "hf") if r % 2 == 0 else ("hf", "alignlab")  # ABBA
        for side in order:
            w, c, per_step = run_round(steps[side], n_steps)
            wall[side].append(tokens / w)
            cpu[side].append(tokens / max(c, 1e-9))
            step_cpu[side].extend(per_step)
    # Paired ratios: each alignlab round against the HF round adjacent to it.
    paired = [a / b for a, b in zip(wall["alignlab"], wall["hf"], strict=True)]
    paired_cpu = [a / b for a, b in zip(cpu["alignlab"], cpu["hf"], strict=True)]

    gemm = model_gemm_rate(cfg, B * T, args.peak_seconds / 2)
    peak.add(gemm["gemm"], gemm["wall"], gemm["cpu"])
    fpt = train_flops_per_token(cfg, T)
    pc = cfg.param_counts()
    res: dict[str, Any] = {
        "size": name,
        "params_total": pc["total"],
        "params_non_embedding": pc["non_embedding"],
        "matmul_params": matmul_params(cfg),
        "flops_per_token": fpt,
        "initial_loss": {"alignlab": l_ours, "hf": l_hf},
        "steps_per_round": n_steps,
        "tokens_per_round": tokens,
        "model_gemm": gemm,
    }
    for side in ("alignlab", "hf"):
        res[side] = {"wall_tok_s": _stats(wall[side]), "cpu_tok_s": _stats(cpu[side])}
        res[side]["wall_tok_s"]["rounds"] = wall[side]
        res[side]["cpu_tok_s"]["rounds"] = cpu[side]
        # Contention only ever adds time, so the fastest quarter of the steps is the most
        # robust estimate of what the code costs on a quiet core.
        q = sorted(step_cpu[side])
        res[side]["cpu_tok_s_p25"] = B * T / q[len(q) // 4]
    med = {s: res[s]["wall_tok_s"]["median"] for s in ("alignlab", "hf")}
    med_cpu = {s: res[s]["cpu_tok_s"]["median"] for s in ("alignlab", "hf")}
    res["ratio"] = {
        "wall": med["alignlab"] / med["hf"],
        "cpu": med_cpu["alignlab"] / med_cpu["hf"],
        "paired_wall": _stats(paired),
        "paired_cpu": _stats(paired_cpu),
        "cpu_p25": res["alignlab"]["cpu_tok_s_p25"] / res["hf"]["cpu_tok_s_p25"],
    }
    # Fraction of a CPU per thread this process actually got (1.0 on a quiet machine).
    res["cpu_share"] = (med["alignlab"] + med["hf"]) / (med_cpu["alignlab"] + med_cpu["hf"])
    res["mfu"] = {
        f"{s}_{k}": fpt["total"] * v[s] / (getattr(peak, k) * 1e9)
        for s in ("alignlab", "hf")
        for k, v in (("wall", med), ("cpu", med_cpu))
    }
    return res


# --------------------------------------------------------------------------------------------
# Threads study (subprocess workers)


def worker(spec: dict[str, Any]) -> None:
    """Train alignlab for ``seconds`` after a GO line on stdin; print a JSON result."""
    torch.set_num_threads(spec["threads"])
    if spec.get("flush_denormal"):
        torch.set_flush_denormal(True)
    cfg = model_preset(spec["size"])
    B, T = spec["batch"], spec["seq"]
    if cfg.n_ctx < T:
        cfg = cfg.replace(n_ctx=T)
    torch.manual_seed(spec["seed"])
    model = Transformer(cfg).train()
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    batches = [torch.randint(0, cfg.d_vocab, (B, T), generator=gen) for _ in range(4)]
    step = make_step(model, make_optimizer(model, spec["optimizer"]), batches, hf=False)
    run_steps(step, spec["warmup"])
    print("READY", flush=True)
    sys.stdin.readline()
    n = 0
    t, c = time.perf_counter(), time.process_time()
    end = t + spec["seconds"]
    while True:
        step()
        n += 1
        if time.perf_counter() >= end and n >= spec["min_steps"]:
            break
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    print(json.dumps({"steps": n, "wall": wall, "cpu": cpu, "tok_s": n * B * T / wall}), flush=True)


def _launch(spec: dict[str, Any], threads: int) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def run_config(base: dict[str, Any], threads: int, n_procs: int) -> list[float]:
    """Start n_procs workers, release them together, return each one's tokens/s."""
    procs = [_launch({**base, "threads": threads}, threads) for _ in range(n_procs)]
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"worker failed to start: {line!r}")
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("GO\n")
        p.stdin.flush()
    out = []
    for p in procs:
        assert p.stdout is not None
        out.append(json.loads(p.stdout.readline())["tok_s"])
        p.wait()
    return out


def threads_study(args: argparse.Namespace) -> list[dict[str, Any]]:
    configs = {"1 thread": (1, 1), "2 threads": (2, 1), "2 procs x 1 thread": (1, 2)}
    results = []
    for size in args.study_sizes.split(","):
        base = {
            "size": size,
            "batch": args.batch,
            "seq": args.seq,
            "seed": args.seed,
            "optimizer": args.optimizer,
            "flush_denormal": args.flush_denormal,
            "warmup": 1,
            "min_steps": 1,
            "seconds": args.study_seconds,
        }
        agg: dict[str, list[float]] = {k: [] for k in configs}
        per_proc: dict[str, list[float]] = {k: [] for k in configs}
        for r in range(args.study_repeats):
            names = list(configs) if r % 2 == 0 else list(reversed(configs))
            for name in names:
                threads, n_procs = configs[name]
                each = run_config(base, threads, n_procs)
                agg[name].append(sum(each))
                per_proc[name].extend(each)
        row: dict[str, Any] = {"size": size}
        for name in configs:
            row[name] = {"aggregate_tok_s": _stats(agg[name]), "per_process": per_proc[name]}
        one = row["1 thread"]["aggregate_tok_s"]["median"]
        row["speedup_2_threads"] = row["2 threads"]["aggregate_tok_s"]["median"] / one
        row["speedup_2_procs"] = row["2 procs x 1 thread"]["aggregate_tok_s"]["median"] / one
        results.append(row)
        print(
            f"  {size:8s} 1 thread {one:9,.0f} tok/s | 2 threads "
            f"{row['2 threads']['aggregate_tok_s']['median']:9,.0f} "
            f"(x{row['speedup_2_threads']:.2f}) | 2 procs x 1 thread "
            f"{row['2 procs x 1 thread']['aggregate_tok_s']['median']:9,.0f} aggregate "
            f"(x{row['speedup_2_procs']:.2f})",
            flush=True,
        )
    return results


# --------------------------------------------------------------------------------------------
# Report


def machine_info() -> dict[str, Any]:
    import transformers

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_start": os.getloadavg(),
    }


def _k(x: float) -> str:
    return f"{x / 1e3:,.1f}k"


def print_table(results: list[dict[str, Any]], peak: Peak, threads: int) -> None:
    def rng(s: dict[str, float]) -> str:
        return f"{_k(s['median'])} [{_k(s['min'])}-{_k(s['max'])}]"

    print("\nwall clock (median of rounds [min-max]); MFU against the best wall-clock peak")
    print(
        f"{'size':8s} {'params':>9s} {'non-emb':>9s} {'MFLOP/tok':>9s} | "
        f"{'alignlab tok/s':>21s} {'HF tok/s':>21s} {'ratio':>5s} | {'MFU al':>6s} {'MFU HF':>6s}"
    )
    for r in results:
        print(
            f"{r['size']:8s} {r['params_total']:9,d} {r['params_non_embedding']:9,d} "
            f"{r['flops_per_token']['total'] / 1e6:9.3f} | {rng(r['alignlab']['wall_tok_s']):>21s} "
            f"{rng(r['hf']['wall_tok_s']):>21s} {r['ratio']['wall']:5.2f} | "
            f"{r['mfu']['alignlab_wall']:6.1%} {r['mfu']['hf_wall']:6.1%}"
        )
    print(
        "\nCPU time (tokens per CPU-second: median of rounds, and of the fastest quarter of steps);"
        " MFU against the best per-CPU-second peak"
    )
    print(
        f"{'size':8s} {'al tok/cpu-s':>12s} {'HF tok/cpu-s':>12s} {'ratio':>5s} | "
        f"{'al fastest¼':>11s} {'HF fastest¼':>11s} {'ratio':>5s} | {'MFU al':>6s} {'MFU HF':>6s} | "
        "CPU share"
    )
    for r in results:
        a, h = r["alignlab"], r["hf"]
        print(
            f"{r['size']:8s} {_k(a['cpu_tok_s']['median']):>12s} {_k(h['cpu_tok_s']['median']):>12s} "
            f"{r['ratio']['cpu']:5.2f} | {_k(a['cpu_tok_s_p25']):>11s} {_k(h['cpu_tok_s_p25']):>11s} "
            f"{r['ratio']['cpu_p25']:5.2f} | {r['mfu']['alignlab_cpu']:6.1%} {r['mfu']['hf_cpu']:6.1%} "
            f"| {r['cpu_share'] / threads:9.2f}"
        )
    print(
        f"\npeak fp32 matmul (best measured): {peak.wall:.1f} GFLOP/s wall, {peak.cpu:.1f} GFLOP "
        "per CPU-second; per shape:"
    )
    for key, v in peak.shapes.items():
        print(f"  {key:48s} {v['wall']:6.1f} wall {v['cpu']:6.1f} GFLOP/s per CPU-s")
    print(
        "\npaired (per-round) ratios alignlab/HF, median [min-max], wall: "
        + ", ".join(
            f"{r['size']} {r['ratio']['paired_wall']['median']:.2f} "
            f"[{r['ratio']['paired_wall']['min']:.2f}-{r['ratio']['paired_wall']['max']:.2f}]"
            for r in results
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma list of {', '.join(SIZES)}")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=0, help="steps per round; 0 = ~--round-seconds")
    p.add_argument("--round-seconds", type=float, default=0.75)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side")
    p.add_argument("--rounds", type=int, default=10, help="timing rounds per side (ABBA order)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    p.add_argument("--optimizer", choices=("loop", "foreach", "fused"), default="fused",
                   help="torch AdamW implementation, both sides")  # fmt: skip
    p.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.set_flush_denormal (process-wide: applies to both sides)")  # fmt: skip
    p.add_argument("--hf-attn", default="sdpa", help="HF attn_implementation (sdpa or eager)")
    p.add_argument("--peak-seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads-study", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--study-sizes", default="al-100k,al-1m")
    p.add_argument("--study-seconds", type=float, default=3.0)
    p.add_argument("--study-repeats", type=int, default=2)
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    info = machine_info()
    print(
        f"{info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']}, transformers "
        f"{info['transformers']}, {info['date']}, load average {info['loadavg_start'][0]:.2f}"
    )
    print(
        f"threads={args.threads} B={args.batch} T={args.seq} optimizer=AdamW({args.optimizer}) "
        f"flush_denormal={args.flush_denormal} HF attn={args.hf_attn} rounds={args.rounds}"
    )

    peak = Peak()
    peak.measure_square(2048, args.peak_seconds)
    print(f"peak fp32 matmul 2048^3: {peak.wall:.1f} GFLOP/s wall", flush=True)

    results = []
    for name in args.sizes.split(","):
        r = bench_size(name, args, peak)
        results.append(r)
        print(
            f"  {name:8s} alignlab {_k(r['alignlab']['wall_tok_s']['median'])} tok/s, "
            f"HF {_k(r['hf']['wall_tok_s']['median'])} tok/s, ratio {r['ratio']['wall']:.2f} "
            f"(cpu-time ratio {r['ratio']['cpu']:.2f}, fastest-quarter {r['ratio']['cpu_p25']:.2f}), "
            f"{r['steps_per_round']} steps/round, "
            f"CPU share {r['cpu_share'] / args.threads:.2f}, "
            f"loss {r['initial_loss']['alignlab']:.5f} vs {r['initial_loss']['hf']:.5f}",
            flush=True,
        )
    # Measure the peak again at the end (best of both), then recompute MFUs against it.
    peak.measure_square(2048, args.peak_seconds)
    for r in results:
        fpt = r["flops_per_token"]["total"]
        for s in ("alignlab", "hf"):
            r["mfu"][f"{s}_wall"] = fpt * r[s]["wall_tok_s"]["median"] / (peak.wall * 1e9)
            r["mfu"][f"{s}_cpu"] = fpt * r[s]["cpu_tok_s"]["median"] / (peak.cpu * 1e9)
    print_table(results, peak, args.threads)
    t_sizes = time.perf_counter() - t_start

    study = None
    if args.threads_study:
        print(f"\nthreads study (alignlab training, {args.study_seconds:.0f} s per run, median of "
              f"{args.study_repeats}):", flush=True)  # fmt: skip
        study = threads_study(args)
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = {"sizes": t_sizes, "total": time.perf_counter() - t_start}
    print(
        f"\nload average at end: {info['loadavg_end'][0]:.2f} (on {info['logical_cpus']} CPUs); "
        f"took {info['seconds']['total']:.0f} s ({t_sizes:.0f} s for the size comparison)"
    )

    if args.json:
        out = {
            "machine": info,
            "args": {k: v for k, v in vars(args).items() if k != "worker"},
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "flop_convention": "6*N_matmul (incl. unembedding) + 6*L*d_attn*(T+1) per token",
            "peak_gflops": {"wall": peak.wall, "cpu": peak.cpu, "shapes": peak.shapes},
            "results": results,
            "threads_study": study,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
