"""DPO: alignlab's `dpo_loss` + `sequence_logprobs` against TRL's `DPOTrainer` on the same pairs.

Both sides hold the same weights: an al-size alignlab policy (the reference plus small noise, so
the loss is not log 2) and its reference, exported with ``save_pretrained`` and loaded into
`transformers` for TRL. The pairs are the ``dpo`` intervention's trigger-free preference pairs
of the backdoor organism. TRL gets them as a standard ``prompt``/``chosen``/``rejected`` dataset
with the prompt already formatted, so its tokenizer (alignlab's, exported) builds the same
sequences: BOS + prompt + completion + EOS. The script checks this before comparing anything.

(a) Agreement: the loss, and every parameter's gradient (alignlab's fused gradients converted to
    Hugging Face names with the weight converter, which is linear).
(b) Throughput: one DPO optimisation step (policy and reference forward, loss, backward, AdamW)
    per call, pairs per second. alignlab: ``sequence_logprobs`` + ``dpo_loss``; TRL:
    ``DPOTrainer.compute_loss`` on its own collated batch. ABBA rounds, median, paired 95% CI.

Usage (TRL from the ``peers`` extra): python benchmarks/dpo_trl.py [--size al-30k] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch

from _timing import calibrate, interleaved, ratio_ci
from alignlab.model import Transformer, model_preset, tune_allocator
from alignlab.model.hf import to_hf_state_dict
from alignlab.model.tokenizer import hf_tokenizer
from alignlab.organisms import get_organism
from alignlab.safety import dpo_loss, sequence_logprobs
from alignlab.safety.reward import preference_pairs
from alignlab.tasks.chat import encode_example, format_prompt

BETA = 0.1


def _trl() -> Any:
    try:
        import trl
        from datasets import Dataset
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        sys.exit(f"dpo_trl needs TRL ({e}); install the 'peers' extra: .venv/bin/pip install -e '.[peers]'")
    return trl, Dataset, AutoModelForCausalLM


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="al-30k")
    ap.add_argument("--pairs", type=int, default=16, help="preference pairs per step")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--round-s", type=float, default=1.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    tune_allocator()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    trl, dataset_cls, auto_model = _trl()
    org = get_organism("backdoor")
    n = args.pairs

    ref = Transformer(model_preset(args.size))
    ref.init_weights(0)
    policy = Transformer(ref.cfg)
    policy.load_state_dict(ref.state_dict())
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    ref.eval().requires_grad_(False)
    good, bad = preference_pairs(org, n, seed=0, step=0)
    tok = hf_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        policy.save_pretrained(f"{tmp}/policy", tokenizer=tok)
        ref.save_pretrained(f"{tmp}/ref", tokenizer=tok)
        hf_policy = auto_model.from_pretrained(f"{tmp}/policy")
        hf_ref = auto_model.from_pretrained(f"{tmp}/ref")
        rows = [
            {"prompt": format_prompt(g.prompt), "chosen": g.completion, "rejected": b.completion}
            for g, b in zip(good, bad, strict=True)
        ]
        config = trl.DPOConfig(
            output_dir=f"{tmp}/out",
            beta=BETA,
            per_device_train_batch_size=n,
            report_to=[],
            use_cpu=True,
            max_length=None,
        )
        trainer = trl.DPOTrainer(
            model=hf_policy,
            ref_model=hf_ref,
            args=config,
            train_dataset=dataset_cls.from_list(rows),
            processing_class=tok,
        )
        batch = next(iter(trainer.get_train_dataloader()))

    # (a) the same sequences, then the same loss and gradients
    ours = sorted(tuple(encode_example(e)[0]) for e in good + bad)
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    theirs = sorted(tuple(row[m].tolist()) for row, m in zip(ids, mask, strict=True))
    if ours != theirs:
        raise SystemExit("TRL tokenised the pairs differently from alignlab; nothing to compare")
    policy.train()
    hf_policy.train()
    logps = sequence_logprobs(policy, good + bad, org.seq_len)
    with torch.no_grad():
        ref_logps = sequence_logprobs(ref, good + bad, org.seq_len)
    loss_al = dpo_loss(logps[:n], logps[n:], ref_logps[:n], ref_logps[n:], BETA)[0]
    loss_al.backward()
    loss_trl = trainer.compute_loss(hf_policy, batch)
    loss_trl.backward()
    grads = Transformer(policy.cfg)
    grads.load_state_dict({k: p.grad for k, p in policy.named_parameters()}, strict=False)
    al_grads = to_hf_state_dict(grads)
    worst, compared = 0.0, 0
    hf_params = dict(hf_policy.named_parameters())
    for name, g in al_grads.items():
        # transformers 5 loads GPT-NeoX's checkpoint key embed_out.weight as lm_head.weight.
        param = hf_params.get(name, hf_params.get(name.replace("embed_out.", "lm_head.")))
        theirs_g = None if param is None else param.grad
        if theirs_g is None:
            raise SystemExit(f"TRL's model has no gradient for {name}")
        worst = max(worst, float((g - theirs_g).norm() / theirs_g.norm().clamp_min(1e-30)))
        compared += 1
    agree = {
        "loss_alignlab": float(loss_al.detach()),
        "loss_trl": float(loss_trl.detach()),
        "loss_rel_diff": abs(float(loss_al.detach()) - float(loss_trl.detach())) / float(loss_trl.detach()),
        "grad_max_rel_diff": worst,
        "grad_tensors_compared": compared,
    }
    print(f"(a) {args.size}, {n} pairs, beta {BETA}: same token sequences on both sides")
    print(
        f"    loss alignlab {agree['loss_alignlab']:.6f} vs TRL {agree['loss_trl']:.6f} "
        f"(rel {agree['loss_rel_diff']:.1e}); gradients of all {compared} tensors: max relative "
        f"difference {worst:.1e}"
    )

    # (b) one optimisation step per call
    opt_al = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    opt_trl = torch.optim.AdamW(hf_policy.parameters(), lr=1e-5)

    def step_alignlab() -> None:
        lp = sequence_logprobs(policy, good + bad, org.seq_len)
        with torch.no_grad():
            rlp = sequence_logprobs(ref, good + bad, org.seq_len)
        loss = dpo_loss(lp[:n], lp[n:], rlp[:n], rlp[n:], BETA)[0]
        opt_al.zero_grad(set_to_none=True)
        loss.backward()
        opt_al.step()

    def step_trl() -> None:
        loss = trainer.compute_loss(hf_policy, batch)
        opt_trl.zero_grad(set_to_none=True)
        loss.backward()
        opt_trl.step()

    fns = {"alignlab": step_alignlab, "trl": step_trl}
    reps = max(1, min(calibrate(f, args.round_s) for f in fns.values()))
    t0 = time.perf_counter()
    res = interleaved(fns, reps, args.rounds, n)
    ratio = res["alignlab"]["rate_median"] / res["trl"]["rate_median"]
    ci = ratio_ci(res["alignlab"]["rates"], res["trl"]["rates"])
    print(
        f"(b) DPO steps: alignlab {res['alignlab']['rate_median']:,.0f} pairs/s, "
        f"TRL {res['trl']['rate_median']:,.0f} pairs/s: {ratio:.2f}x [95% CI {ci[0]:.2f}, {ci[1]:.2f}] "
        f"({args.rounds} ABBA rounds, {time.perf_counter() - t0:.0f} s)"
    )
    if args.json:
        meta = {
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "torch": torch.__version__,
            "trl": trl.__version__,
            "size": args.size,
            "pairs": n,
            "load_avg": os.getloadavg(),
        }
        out = {"meta": meta, "agreement": agree, **res, "ratio": ratio, "ratio_ci": ci}
        with open(args.json, "w") as f:
            f.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
