"""Mutation check: does the test suite notice when a core capability breaks?

Applies a fixed list of hand-written mutations (plausible bugs: a loss mask shifted one token, a
probe fitted on the wrong labels, a skipped gradient clip, a wrong z) one at a time to a temporary
copy of the package, runs the tests that guard that capability against the copy, and reports
which mutants the tests kill. The mutation score is killed / applicable mutants.

Not part of the default suite: it trains small models many times over. Run it niced:

    nice -n 19 .venv/bin/python scripts/mutation_check.py            # every mutant, HEAD's code
    .venv/bin/python scripts/mutation_check.py --list                # names and test selections
    .venv/bin/python scripts/mutation_check.py --only mask-shift-early --only wilson-one-sided-z
    .venv/bin/python scripts/mutation_check.py --worktree            # uncommitted code instead
    .venv/bin/python scripts/mutation_check.py --without 'tests/test_strong_*.py'  # a reduced suite
    .venv/bin/python scripts/mutation_check.py --tests-rev 5fec110   # an older suite, today's code

By default the copy is ``git archive HEAD`` (committed code and tests only), so concurrent
uncommitted edits in the working tree neither break nor flatter the score. A mutant whose
original text is no longer found exactly once is reported "stale" and left out of the score:
update its text here when the code it mutates is rewritten.

Outcomes: "killed" (a selected test failed), "survived" (all passed), "timeout" (counted as
killed, flagged), "stale", "error" (pytest could not run the selection: counted as killed only
when the baseline run of the same selection passed, which it must).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One plausible bug.

    Attributes:
        name: short id.
        path: file under the repository root.
        edits: alternative ``(original, replacement)`` pairs; the first whose original occurs
            exactly once in the file is applied (alternatives keep a mutant valid across a
            refactor of the line it targets).
        tests: pytest arguments selecting the tests that guard this capability.
        what: the bug, in words.
    """

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    what: str


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "mask-shift-early",
        "src/alignlab/tasks/chat.py",
        (
            (
                "return ids, [False] * len(prompt_ids) + [True] * len(completion_ids)",
                "return ids, [False] * (len(prompt_ids) - 1) + [True] * (len(completion_ids) + 1)",
            ),
        ),
        (
            "tests/test_strong_masking.py",
            "tests/test_train.py::test_completion_only_masking",
            "tests/test_tokenizer.py",
        ),
        "completion mask starts one token early (the space after 'Assistant:' becomes a target)",
    ),
    Mutant(
        "loss-mask-off-by-one",
        "src/alignlab/model/transformer.py",
        (
            (
                "m = F.pad(loss_mask[:, 1:].bool(), (0, 1), value=False)",
                "m = F.pad(loss_mask[:, :-1].bool(), (0, 1), value=False)",
            ),
        ),
        ("tests/test_strong_masking.py", "tests/test_model.py", "-k", "loss or mask"),
        "lm_loss aligns the mask with the predicting position instead of the predicted token",
    ),
    Mutant(
        "loss-targets-unshifted",
        "src/alignlab/model/transformer.py",
        (
            (
                "target = F.pad(tokens[:, 1:], (0, 1), value=-100)",
                "target = F.pad(tokens[:, :-1], (1, 0), value=-100)",
            ),
        ),
        ("tests/test_model.py", "-k", "loss"),
        "next-token loss off by one (targets not shifted)",
    ),
    Mutant(
        "probe-sign-flip",
        "src/alignlab/interp/probes.py",
        (("direction = mu1 - mu0", "direction = mu0 - mu1"),),
        ("tests/test_interp_probes.py", "-k", "planted or definition"),
        "difference-of-means probe points from positives to negatives",
    ),
    Mutant(
        "defection-fit-on-eval-labels",
        "src/alignlab/interp/defection.py",
        (
            (
                "direction = fit_diff_means(c_acts[h], c_labels)",
                "direction = fit_diff_means(e_acts[h], e_labels)",
            ),
        ),
        ("tests/test_strong_probes.py",),
        "the 'trigger-free' direction is fitted on the evaluation prompts' trigger labels",
    ),
    Mutant(
        "defection-null-not-computed",
        "src/alignlab/interp/defection.py",
        (
            (
                "control[h] = float(np.mean((aucs >= 0.95) | (aucs <= 0.05)))",
                "control[h] = 0.0",
            ),
        ),
        ("tests/test_strong_probes.py",),
        "the random-direction null is reported as 0 whatever the random directions do",
    ),
    Mutant(
        "auroc-rank-offset",
        "src/alignlab/interp/probes.py",
        (("n_pos * (n_pos + 1) / 2", "n_pos * (n_pos - 1) / 2"),),
        ("tests/test_interp_probes.py", "-k", "definition or planted"),
        "Mann-Whitney AUROC subtracts the wrong rank offset",
    ),
    Mutant(
        "auroc-ci-90-percent",
        "src/alignlab/interp/probes.py",
        (("[alpha / 2, 1 - alpha / 2]", "[alpha, 1 - alpha]"),),
        ("tests/test_strong_intervals.py", "tests/test_interp_probes.py", "-k", "auroc or definition"),
        "AUROC interval takes alpha per tail (a 90% interval labelled 95%)",
    ),
    Mutant(
        "skip-grad-clip",
        "src/alignlab/train/loop.py",
        (("if cfg.grad_clip:", "if False:"),),
        ("tests/test_strong_training.py", "tests/test_train.py", "-k", "not resume_after_kill"),
        "the training loop never clips gradients",
    ),
    Mutant(
        "lr-cosine-inverted",
        "src/alignlab/train/loop.py",
        (("(1 + math.cos(math.pi * progress))", "(1 - math.cos(math.pi * progress))"),),
        ("tests/test_train.py::test_lr_schedule_warmup_then_cosine", "tests/test_strong_training.py"),
        "cosine schedule rises instead of decaying",
    ),
    Mutant(
        "lr-warmup-off-by-one",
        "src/alignlab/train/loop.py",
        (
            ("return lr * (step + 1) / warmup_steps", "return lr * step / warmup_steps"),
            ("return cfg.lr * (step + 1) / cfg.warmup_steps", "return cfg.lr * step / cfg.warmup_steps"),
        ),
        ("tests/test_train.py::test_lr_schedule_warmup_then_cosine", "tests/test_strong_training.py"),
        "warm-up starts at lr 0 (the first step is wasted)",
    ),
    Mutant(
        "grad-accum-unweighted",
        "src/alignlab/train/loop.py",
        (
            (
                "loss = _forward_loss(model, part) * (_n_targets(part) / total_targets)",
                "loss = _forward_loss(model, part) / cfg.grad_accum",
            ),
        ),
        ("tests/test_train.py", "-k", "grad_accumulation"),
        "micro-batches weighted equally instead of by their target tokens",
    ),
    Mutant(
        "weight-decay-on-gains",
        "src/alignlab/train/loop.py",
        (
            (
                "decay = [p for p in model.parameters() if p.ndim >= 2]\n"
                "    no_decay = [p for p in model.parameters() if p.ndim < 2]",
                "decay = [p for p in model.parameters() if p.ndim >= 1]\n"
                "    no_decay = [p for p in model.parameters() if p.ndim < 1]",
            ),
        ),
        ("tests/test_strong_training.py", "tests/test_train.py", "-k", "not resume_after_kill"),
        "weight decay applied to gains and biases too",
    ),
    Mutant(
        "resume-drops-optimizer-state",
        "src/alignlab/train/checkpoint.py",
        (
            (
                'optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})',
                "del state  # mutant: the optimizer restarts from zero moments",
            ),
        ),
        ("tests/test_resume_metrics.py",),
        "resume restores the weights but not AdamW's moments",
    ),
    Mutant(
        "cache-retrains-finished-run",
        "src/alignlab/train/run.py",
        (
            ('if run.status == "done" and (run.dir / "model" / "model.safetensors").exists():', "if False:"),
            ('if run.status == "done" and (model_dir / "model.safetensors").exists():', "if False:"),
        ),
        ("tests/test_strong_reuse.py", "tests/test_cli.py", "-k", "reuse"),
        "a finished run is trained again instead of reused",
    ),
    Mutant(
        "hf-export-swaps-q-k",
        "src/alignlab/model/hf.py",
        (
            (
                'out[h + "self_attn.q_proj.weight"] = q.contiguous()\n'
                '            out[h + "self_attn.k_proj.weight"] = k.contiguous()',
                'out[h + "self_attn.q_proj.weight"] = k.contiguous()\n'
                '            out[h + "self_attn.k_proj.weight"] = q.contiguous()',
            ),
        ),
        ("tests/test_hf_interop.py", "-k", "save_pretrained_loads"),
        "Llama export writes the key projection as the query and vice versa",
    ),
    Mutant(
        "loglik-drops-first-token",
        "src/alignlab/evals/loglik.py",
        (("lp = float(tok_lp[start : start + n].sum())", "lp = float(tok_lp[start + 1 : start + n].sum())"),),
        ("tests/test_evals.py", "-k", "scoring_paths"),
        "continuation log-likelihood skips its first token",
    ),
    Mutant(
        "sae-decoder-not-normalised",
        "src/alignlab/interp/sae/model.py",
        (
            (
                "self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))",
                "pass  # mutant: decoder rows keep their norms",
            ),
        ),
        (
            "tests/test_strong_sae.py",
            "tests/test_interp_sae.py",
            "-k",
            "recovers or fold or saelens or unit_norm",
        ),
        "TopK SAE decoder rows are never renormalised to unit norm",
    ),
    Mutant(
        "induction-prefix-offset",
        "src/alignlab/interp/heads.py",
        (("prefix = pattern[..., rep, rep - half + 1]", "prefix = pattern[..., rep, rep - half]"),),
        ("tests/test_interp_heads_unit.py",),
        "prefix-matching score reads the duplicate token instead of the one after it",
    ),
    Mutant(
        "padding-mask-peeks-ahead",
        "src/alignlab/model/transformer.py",
        (
            (
                "mask = ((key <= query)[None, None] & keep[:, None, None, :])",
                "mask = ((key <= query + 1)[None, None] & keep[:, None, None, :])",
            ),
        ),
        ("tests/test_generate_kv_cache.py", "tests/test_hf_interop.py", "-k", "padding or cached"),
        "the padded / KV-cached attention mask lets each query see the next token",
    ),
    Mutant(
        "patching-normalised-against-clean",
        "src/alignlab/interp/patching.py",
        (("return (value - corrupted) / denom", "return (value - clean) / denom"),),
        ("tests/test_interp_exact.py",),
        "activation patching reports 0 for full restoration and -1 for none",
    ),
    Mutant(
        "red-team-trigger-filter-any",
        "src/alignlab/safety/adversarial.py",
        (("return all(c in chars for c in trigger)", "return any(c in chars for c in trigger)"),),
        ("tests/test_adversarial.py", "-k", "subsequence or grammar"),
        "red-team candidates are rejected when they share any character with the trigger",
    ),
    Mutant(
        "influence-sign-flip",
        "src/alignlab/attribution/influence.py",
        (("return (g_query @ solved).float()", "return (-(g_query @ solved)).float()"),),
        ("tests/test_strong_attribution.py", "tests/test_attribution.py", "-k", "influence or solve"),
        "influence scores (explicit curvature path) have the wrong sign",
    ),
    Mutant(
        "lds-sign",
        "src/alignlab/attribution/lds.py",
        (
            (
                "return float(np.nanmean([_spearman(support[:, q], -losses[:, q])",
                "return float(np.nanmean([_spearman(support[:, q], losses[:, q])",
            ),
        ),
        ("tests/test_strong_attribution.py",),
        "LDS correlates support with the loss instead of minus the loss",
    ),
    Mutant(
        "wilson-one-sided-z",
        "src/alignlab/stats.py",
        (
            (
                "z = float(stats.norm.ppf(0.5 + confidence / 2.0))",
                "z = float(stats.norm.ppf(confidence))",
            ),
        ),
        ("tests/test_strong_intervals.py", "tests/test_stats.py", "-k", "wilson"),
        "Wilson interval uses the one-sided z (1.645 for 95%)",
    ),
    Mutant(
        "t-interval-uses-z",
        "src/alignlab/stats.py",
        (
            (
                "q = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))",
                "q = float(stats.norm.ppf(0.5 + confidence / 2.0))",
            ),
        ),
        ("tests/test_stats_coverage.py", "-k", "t_interval"),
        "seed interval uses the normal quantile instead of Student's t",
    ),
    Mutant(
        "poison-rate-ignored",
        "src/alignlab/organisms/backdoor.py",
        (("if u < cfg.poison_rate:", "if u < BackdoorConfig.poison_rate:"),),
        ("tests/test_organisms.py", "-k", "poison_rate"),
        "installation data uses the default poison rate whatever the config says",
    ),
    Mutant(
        "sft-clean-no-op",
        "src/alignlab/safety/sft.py",
        (("lr=budget.lr,", 'lr=0.0 if kind == "clean" else budget.lr,'),),
        ("tests/test_strong_safety.py", "tests/test_safety.py", "-k", "sft_clean"),
        "clean SFT runs with learning rate 0 (a no-op that still reports its doses)",
    ),
    Mutant(
        "oracle-sft-without-trigger",
        "src/alignlab/safety/sft.py",
        (
            (
                'return _sft(model, organism, budget, seed, "oracle")',
                'return _sft(model, organism, budget, seed, "clean")',
            ),
        ),
        ("tests/test_safety.py", "-k", "oracle"),
        "the oracle trains on trigger-free prompts (it is then just clean SFT)",
    ),
    Mutant(
        "dpo-swaps-chosen-rejected",
        "src/alignlab/safety/dpo.py",
        (("F.logsigmoid(chosen_reward - rejected_reward)", "F.logsigmoid(rejected_reward - chosen_reward)"),),
        ("tests/test_safety_dpo.py", "-k", "optimum or reference"),
        "DPO prefers the rejected answer",
    ),
    Mutant(
        "rl-advantage-sign",
        "src/alignlab/safety/rl.py",
        (
            (
                "adv = (total - (total.sum(1, keepdim=True) - total) / (k - 1)).view(-1)",
                "adv = ((total.sum(1, keepdim=True) - total) / (k - 1) - total).view(-1)",
            ),
        ),
        ("tests/test_safety.py", "-k", "rl"),
        "RLOO advantage negated: the policy moves away from reward",
    ),
    Mutant(
        "rl-kl-penalty-sign",
        "src/alignlab/safety/rl.py",
        (
            ("(reward - beta * (logp.detach() - ref_lp))", "(reward + beta * (logp.detach() - ref_lp))"),
            ("- ctl.beta * kl).view(", "+ ctl.beta * kl).view("),
        ),
        ("tests/test_safety.py", "-k", "rl"),
        "the KL term rewards drifting from the reference instead of penalising it",
    ),
)


def _copy_tree(dest: Path, worktree: bool) -> None:
    """The code and tests to mutate: ``git archive HEAD`` or the working tree's files."""
    parts = ["src", "tests", "pyproject.toml"]
    if worktree:
        for p in parts:
            src = ROOT / p
            if src.is_dir():
                shutil.copytree(src, dest / p, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dest / p)
        return
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD", *parts], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def _old_tests(dest: Path, rev: str) -> None:
    """Replace the copy's tests by those of ``rev`` (to score an older suite on today's code)."""
    shutil.rmtree(dest / "tests")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "tests"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def _existing(copy: Path, tests: tuple[str, ...]) -> tuple[str, ...]:
    """``tests`` without the files the copy lacks (and a dangling -k when no file is left)."""
    kept: list[str] = []
    for arg in tests:
        if arg.startswith("tests/") and not (copy / arg.split("::")[0]).exists():
            continue
        kept.append(arg)
    return tuple(kept) if any(a.startswith("tests/") for a in kept) else ()


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The copy's src shadows the editable install of the repository (PYTHONPATH precedes .pth paths).
    env["PYTHONPATH"] = str(copy / "src")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def _pytest(copy: Path, args: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """Run pytest on ``args`` in ``copy``: (outcome, seconds, last output line)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *args]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=copy,
        env=_env(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # pytest and any worker it started
        proc.communicate()
        return "timeout", time.monotonic() - t0, ""
    seconds = time.monotonic() - t0
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    last = (failed or lines or [""])[-1 if not failed else 0][:160]
    # pytest exit codes: 0 all passed, 1 some failed, 5 nothing collected, others usage/internal.
    outcome = {0: "survived", 1: "killed", 5: "no-tests"}.get(proc.returncode, "error")
    return outcome, seconds, last


def _apply(text: str, mutant: Mutant) -> str | None:
    for old, new in mutant.edits:
        if text.count(old) == 1:
            return text.replace(old, new)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="run only this mutant (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--worktree", action="store_true", help="mutate the working tree's files, not HEAD")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run (default 900)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each selection")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--without",
        action="append",
        default=[],
        help="delete these test files (a glob, e.g. 'tests/test_strong_*.py') from the copy, to "
        "score the suite without them; mutants left with no test count as survived",
    )
    ap.add_argument(
        "--tests-rev",
        help="score the tests of this git revision against today's code (e.g. the suite before a "
        "strengthening); a mutant none of whose tests exist there, or whose selection is empty, "
        "then counts as survived",
    )
    args = ap.parse_args()

    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list or not mutants:
        for m in MUTANTS:
            print(f"{m.name:34s} {m.path:40s} {' '.join(m.tests)}\n{'':34s} {m.what}")
        return 0 if mutants or args.list else 2

    copy = Path(tempfile.mkdtemp(prefix="alignlab-mutants-"))
    results: list[dict[str, object]] = []
    broken: set[tuple[str, ...]] = set()
    try:
        _copy_tree(copy, args.worktree)
        if args.tests_rev:
            _old_tests(copy, args.tests_rev)
        for pattern in args.without:
            for f in copy.glob(pattern):
                f.unlink()
        reduced = bool(args.tests_rev or args.without)
        where = subprocess.run(
            [sys.executable, "-c", "import alignlab; print(alignlab.__file__)"],
            cwd=copy, env=_env(copy), capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if not where.startswith(str(copy)):
            print(f"the copy does not shadow the installed package (alignlab from {where})", file=sys.stderr)
            return 2
        if not args.no_baseline:
            selections = sorted({sel for m in mutants if (sel := _existing(copy, m.tests))})
            print(f"baseline: {len(selections)} test selections on unmutated code", flush=True)
            for sel in selections:
                outcome, secs, last = _pytest(copy, sel, args.timeout)
                if outcome == "no-tests":
                    print(f"baseline: nothing selected by {' '.join(sel)}", file=sys.stderr)
                elif outcome != "survived":
                    msg = f"baseline fails ({outcome}, {secs:.0f} s): {' '.join(sel)}\n  {last}"
                    print(msg, file=sys.stderr)
                    if not args.tests_rev:
                        return 2
                    broken.add(sel)  # an older suite may not run on today's code: not scored
        for m in mutants:
            target = copy / m.path
            original = target.read_text()
            mutated = _apply(original, m)
            selection = _existing(copy, m.tests)
            if mutated is None:
                outcome, secs, last = "stale", 0.0, "original text not found exactly once"
            elif not selection:
                outcome, secs, last = "no-tests", 0.0, "none of its test files exist"
            elif selection in broken:
                outcome, secs, last = "stale", 0.0, "its tests fail on unmutated code"
            else:
                target.write_text(mutated)
                try:
                    outcome, secs, last = _pytest(copy, selection, args.timeout)
                finally:
                    target.write_text(original)
            if reduced and outcome == "no-tests":
                outcome = "survived"  # the reduced suite has nothing guarding this capability
            row = {"name": m.name, "path": m.path, "what": m.what, "outcome": outcome, "seconds": secs}
            results.append(row)
            print(f"{m.name:34s} {outcome:9s} {secs:6.0f} s  {last}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)

    scored = [r for r in results if r["outcome"] not in ("stale", "no-tests")]
    killed = [r for r in scored if r["outcome"] in ("killed", "timeout", "error")]
    survived = [r["name"] for r in scored if r["outcome"] == "survived"]
    score = len(killed) / len(scored) if scored else float("nan")
    print(f"\nmutation score: {len(killed)}/{len(scored)} = {score:.2f}")
    if survived:
        print("survived: " + ", ".join(str(s) for s in survived))
    stale = [str(r["name"]) for r in results if r["outcome"] in ("stale", "no-tests")]
    if stale:
        print("not scored (stale text or no tests selected): " + ", ".join(stale))
    if args.json:
        args.json.write_text(json.dumps({"score": score, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
