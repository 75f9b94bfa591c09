"""Fine-tuning throughput: alignlab's `train` vs TRL's `SFTTrainer` on a ~100M Pythia-shaped model.

Issue 21's GPU benchmark. Both sides start from the same checkpoint, initialised here by
transformers (no download): Pythia-160m's shape (GPT-NeoX, d_model 768, 12 layers, 12 heads,
parallel residual, rotary on a quarter of each head) with a BPE trained on the task text instead
of Pythia's 50k vocabulary, so ~85M parameters. Both fine-tune on the same examples: the
flagship organism's installation mix (`alignlab.studies.spec.StudySpec().organism_config`),
prompt + completion with the loss on the completion only, encoded by the checkpoint's own
tokenizer; same batch size, peak learning rate, AdamW, gradient clipping at 1.0 and precision.
Padding: each batch is padded to its longest row on both sides (TRL's collator does that;
alignlab's batches are trimmed the same way here), so both do the same arithmetic. Token counts are
each side's own: alignlab prepends BOS and encodes prompt and completion apart; TRL encodes them
together and moves the prompt's trailing space into the completion (its warning says so), so the
same examples are ~10% fewer tokens for TRL (smoke run: 246 vs 274 in the timed steps).

Throughput = non-padding tokens per second of wall time between the end of warm-up step
``--warmup`` and the last step (each side synchronises the device at both ends), so start-up,
dataset preparation, the final evaluation and checkpoint are excluded on both sides. Sides run
alternately for ``--rounds`` rounds; the median round per side is reported.

``--flagship`` also times ``alignlab run --preset quick --base-model DIR`` on the checkpoint (the
issue's second number), after a clean fine-tune of ``--flagship-base-steps`` steps.

Usage (TRL from the ``peers`` extra):
    python benchmarks/sft_trl.py --device cuda --precision bf16 --json out.json [--flagship]
    python benchmarks/sft_trl.py --smoke          # tiny model, CPU, a few steps: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch

from alignlab.model.bpe import init_hf_dir, task_texts, train_bpe
from alignlab.model.text import load_tokenizer
from alignlab.organisms import get_organism
from alignlab.studies.spec import StudySpec
from alignlab.tasks import Batch, Example, collate, format_prompt

# Pythia-160m's shape (EleutherAI/pythia-160m config.json) with the task BPE's vocabulary.
PYTHIA_SHAPE = {"d_model": 768, "n_layers": 12, "n_heads": 12, "n_ctx": 2048}
SMOKE_SHAPE = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_ctx": 128}


def _trl() -> Any:
    try:
        import trl
        from datasets import Dataset
    except ImportError as e:
        sys.exit(f"sft_trl needs TRL ({e}); install the 'peers' extra: .venv/bin/pip install -e '.[peers]'")
    return trl, Dataset


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_checkpoint(root: Path, shape: dict[str, int], vocab: int) -> Path:
    """The Pythia-shaped GPT-NeoX with a BPE trained on the task text, as a Hugging Face dir."""
    tok = train_bpe(task_texts(3000, seed=0), vocab_size=vocab)
    return init_hf_dir(root / "pythia-shaped", "neox", tok, seed=0, **shape)


def examples(n: int) -> list[Example]:
    """The flagship's installation mix (its default organism config), ``n`` examples."""
    spec = StudySpec()
    org = get_organism(spec.organism, **spec.organism_config.to_dict())
    return org.training_examples(n, seed=0)


def _trimmed(batch: Batch) -> Batch:
    width = int(batch.attention_mask.sum(1).max()) if batch.attention_mask is not None else None
    return Batch(
        tokens=batch.tokens[:, :width],
        loss_mask=None if batch.loss_mask is None else batch.loss_mask[:, :width],
        attention_mask=None if batch.attention_mask is None else batch.attention_mask[:, :width],
    )


def run_alignlab(ckpt: Path, data: list[Example], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """`alignlab.train.train` fine-tuning the checkpoint; tokens/s between warm-up and the end."""
    from alignlab.train import TrainConfig, train
    from alignlab.train.given_base import size_config

    tok = load_tokenizer(ckpt)
    bs, seq_len = args.batch_size, args.seq_len

    def batch_fn(batch_size: int, seq: int, seed: int, step: int, split: str) -> Batch:
        # Step s takes examples [s*B, (s+1)*B) of the shared list: TRL sees the same set.
        rows = [data[(step * batch_size + i) % len(data)] for i in range(batch_size)]
        return _trimmed(collate(rows, seq, tok))

    real = [int(batch_fn(bs, seq_len, 0, s, "train").attention_mask.sum()) for s in range(args.steps)]
    stamps: dict[int, float] = {}

    def on_metrics(step: int, metrics: dict[str, float], _tokens: int) -> None:
        if "tokens_per_s" in metrics:  # a log point (one device sync per log interval)
            _sync(args.device)
            stamps[step] = time.perf_counter()

    cfg = TrainConfig(
        model=size_config(str(ckpt)),
        task="sft-benchmark",
        steps=args.steps,
        batch_size=bs,
        seq_len=seq_len,
        lr=args.lr,
        warmup_steps=max(1, args.steps // 10),
        eval_every=0,
        ckpt_every=args.steps,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
    )
    import alignlab

    init = alignlab.load(ckpt)
    t0 = time.perf_counter()
    res = train(cfg, out, on_metrics=on_metrics, progress=False, init_model=init, batch_fn=batch_fn)
    logged = sorted(stamps)
    first = min((s for s in logged if s >= args.warmup), default=None)
    last = logged[-1] if logged else None
    if first is None or last is None or last <= first:
        raise SystemExit(f"too few log points after warm-up (steps {args.steps}, logged {logged})")
    seconds = stamps[last] - stamps[first]
    tokens = sum(real[first:last])
    return {
        "tokens_per_s": tokens / seconds,
        "timed_steps": last - first,
        "timed_tokens": tokens,
        "seconds": seconds,
        "total_seconds": time.perf_counter() - t0,
        "final_eval_loss": float(res.metrics.get("eval_loss", float("nan"))),
    }


def run_trl(ckpt: Path, data: list[Example], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """TRL's `SFTTrainer` on the same examples (prompt-completion rows, completion-only loss)."""
    trl, dataset_cls = _trl()
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    n = args.steps * args.batch_size
    rows = [{"prompt": format_prompt(e.prompt), "completion": e.completion} for e in data[:n]]
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)
    on_cpu = not args.device.startswith("cuda")
    config = trl.SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.steps // 10),
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=args.precision == "bf16",
        fp16=args.precision == "fp16",
        use_cpu=on_cpu,
        max_length=args.seq_len,
        logging_steps=max(1, args.steps // 4),
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = trl.SFTTrainer(
        model=model, args=config, train_dataset=dataset_cls.from_list(rows), processing_class=tok
    )
    real: list[int] = []
    collator = trainer.data_collator

    def counting(features: list[Any]) -> Any:
        batch = collator(features)
        real.append(int(batch["attention_mask"].sum()))
        return batch

    trainer.data_collator = counting
    stamps: dict[int, float] = {}
    warmup, device = args.warmup, args.device

    class Stamp(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, _args: Any, state: Any, _control: Any, **_kw: Any) -> None:
            if state.global_step in (warmup, args.steps):
                _sync(device)
                stamps[state.global_step] = time.perf_counter()

    trainer.add_callback(Stamp())
    t0 = time.perf_counter()
    trainer.train()
    if set(stamps) != {warmup, args.steps}:
        raise SystemExit(f"TRL stopped early: stamped steps {sorted(stamps)}")
    seconds = stamps[args.steps] - stamps[warmup]
    tokens = sum(real[warmup : args.steps])
    return {
        "tokens_per_s": tokens / seconds,
        "timed_steps": args.steps - warmup,
        "timed_tokens": tokens,
        "seconds": seconds,
        "total_seconds": time.perf_counter() - t0,
    }


def run_flagship(ckpt: Path, args: argparse.Namespace, store: Path) -> dict[str, Any]:
    """``alignlab run --preset quick --base-model CKPT`` in a subprocess: its wall time and gates."""
    cmd = [sys.executable, "-c", "from alignlab.cli import main; main()"]
    cmd += ["run", "--preset", "quick", "--json", "--workers", "1", "--store", str(store)]
    cmd += ["--base-model", str(ckpt), "--device", args.device]
    if args.precision != "fp32":
        cmd += ["--precision", args.precision]
    cmd += ["--set", f"base.steps={args.flagship_base_steps}", "--set", f"base.lr={args.flagship_base_lr}"]
    cmd += [x for s in args.flagship_set for x in ("--set", s)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"command": " ".join(cmd), "wall_s": wall, "error": proc.stderr[-2000:]}
    result = json.loads(proc.stdout)
    gates = [
        {"cell": f"seed {c['seed']}", "name": g["name"], "passed": g["passed"], "value": g.get("estimate")}
        for c in result["cells"]
        for g in c["gates"]
    ]
    return {"command": " ".join(cmd), "wall_s": wall, "answer": result.get("answer", ""), "gates": gates}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU, a few steps")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="", help="fp32, bf16 or fp16 (default bf16 on CUDA)")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=20, help="steps excluded from the timing")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--flagship", action="store_true", help="also time the quick flagship preset")
    ap.add_argument("--flagship-base-steps", type=int, default=600)
    ap.add_argument("--flagship-base-lr", type=float, default=1e-4)
    ap.add_argument("--flagship-set", action="append", default=[], help="extra --set for the flagship")
    ap.add_argument("--keep", default="", help="directory to keep the checkpoint and runs in")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shape = PYTHIA_SHAPE
    if args.smoke:
        shape = SMOKE_SHAPE
        args.device, args.steps, args.warmup, args.batch_size, args.rounds = "cpu", 8, 4, 4, 1
        args.vocab = 400
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    if not 0 < args.warmup < args.steps:
        raise SystemExit("need 0 < --warmup < --steps")
    torch.set_num_threads(args.threads)
    _trl()  # fail before any work when TRL is missing

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sft_trl-"))
    root.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(root, shape, args.vocab)
    from transformers import AutoConfig

    hf_cfg = AutoConfig.from_pretrained(str(ckpt))
    import alignlab

    params = int(alignlab.load(ckpt).cfg.param_counts()["total"])
    data = examples(args.steps * args.batch_size)
    rounds: dict[str, list[dict[str, Any]]] = {"alignlab": [], "trl": []}
    for r in range(args.rounds):
        order = ("alignlab", "trl") if r % 2 == 0 else ("trl", "alignlab")
        for side in order:
            out = root / f"{side}-{r}"
            fn = run_alignlab if side == "alignlab" else run_trl
            rounds[side].append(fn(ckpt, data, args, out))
            print(side, r, f"{rounds[side][-1]['tokens_per_s']:,.0f} tok/s", flush=True)
    med = {side: statistics.median(x["tokens_per_s"] for x in rs) for side, rs in rounds.items()}
    report: dict[str, Any] = {
        "benchmark": "sft_trl",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "",
        "torch": torch.__version__,
        "trl": _trl()[0].__version__,
        "model": {"params": params, "vocab": hf_cfg.vocab_size, **shape},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "keep")},
        "rounds": rounds,
        "median_tokens_per_s": med,
        "alignlab_over_trl": med["alignlab"] / med["trl"],
    }
    ratio = report["alignlab_over_trl"]
    print(f"alignlab {med['alignlab']:,.0f} tok/s, TRL {med['trl']:,.0f} tok/s, ratio {ratio:.2f}")
    if args.flagship:
        report["flagship"] = run_flagship(ckpt, args, root / "store")
        print("flagship:", json.dumps(report["flagship"])[:2000])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
