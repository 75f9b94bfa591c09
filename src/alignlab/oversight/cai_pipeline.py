"""One seed of the CAI comparison: every arm from one helpful-only policy and one feedback model.

Arms (all measured by the rule checker on the same held-out requests):

* ``none``: the helpful-only policy (no safety training).
* ``sl-cai``: SL-CAI on its critiqued, revised samples (`alignlab.oversight.cai.sl_cai`).
* ``rl-cai``: RLOO from ``sl-cai`` against a preference model of AI harmlessness labels and
  ground-truth helpfulness labels (`alignlab.oversight.rlaif`).
* ``dpo-cai``: DPO from ``sl-cai`` on (revision, original) pairs and the same helpfulness pairs.
* ``gt-rlhf``: as ``rl-cai`` with the rule checker labelling the same pairs (equal label budget:
  as many ground-truth labels as taught the feedback model).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from alignlab._validate import check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.model.hf import load, save_pretrained
from alignlab.model.transformer import Transformer
from alignlab.oversight.cai import MAX_NEW, helpful_only_run, measure_policy, revision_stats, sl_cai
from alignlab.oversight.cai_training import sample_responses
from alignlab.oversight.constitution import BENIGN_KINDS, KINDS, sample_requests
from alignlab.oversight.feedback import (
    FeedbackModel,
    agreement,
    demonstrations,
    labelled_triples,
    train_feedback_model,
)
from alignlab.oversight.rlaif import (
    ai_labels,
    dpo_train,
    fit_preference_model,
    gt_labels,
    helpfulness_labels,
    helpfulness_pairs,
    label_agreement,
    preference_accuracy,
    revision_pairs,
    rloo,
    sample_pairs,
)
from alignlab.store import Run, Store
from alignlab.train.base_model import base_run

ARMS = ("none", "sl-cai", "rl-cai", "dpo-cai", "gt-rlhf")
#: Folder of a stored critic's weights inside its ``cai-critic`` run.
CRITIC_DIR = "model"


@dataclasses.dataclass(frozen=True)
class CAIBudget:
    """How much of everything one seed of the pipeline spends.

    Attributes:
        kinds: request kinds of the world (`alignlab.oversight.constitution.KINDS`).
        helpful_steps: fine-tuning steps from the base model to the helpful-only policy; 0 uses the
            base model itself (enough when ``kinds`` are only ``plain`` and ``banned``, which are
            the base tasks).
        label_budget: ground-truth harmlessness labels per arm: the feedback model's
            demonstrations (CAI) and the labelled pairs (``gt-rlhf``); the AI-labelled pairs are
            as many.
        fm_steps: feedback-model fine-tuning steps (32 demonstrations each).
        sl_prompts: prompts SL-CAI samples and revises.
        rounds: critique-revise rounds per sample (principles drawn without replacement).
        sft_steps: SL-CAI fine-tuning steps (32 examples each).
        help_pairs: ground-truth helpfulness pairs (benign prompts), the same for every preference arm.
        pm_steps: preference-model steps (32 pairs each).
        rl_steps: RLOO steps (8 prompts x 4 samples each).
        dpo_steps: DPO steps (16 pairs each).
        lr: fine-tuning learning rate (RL and DPO use 0.3 x, as `alignlab.safety` does).
        kl_target: RLOO's KL target, nats per response.
        n_eval: held-out requests per kind for every measurement.
    """

    kinds: tuple[str, ...] = KINDS
    helpful_steps: int = 1000
    label_budget: int = 1024
    fm_steps: int = 300
    sl_prompts: int = 512
    rounds: int = 3
    sft_steps: int = 150
    help_pairs: int = 512
    pm_steps: int = 100
    rl_steps: int = 40
    dpo_steps: int = 60
    lr: float = 1e-3
    kl_target: float = 2.0
    n_eval: int = 100

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        raise_problems(
            "CAIBudget",
            [
                f"unknown kinds {unknown}; choose from {', '.join(KINDS)}"
                if unknown or not self.kinds
                else None,
                check_int("helpful_steps", self.helpful_steps, lo=0, hi=100_000),
                check_int("label_budget", self.label_budget, lo=2, hi=1_000_000),
                check_int("fm_steps", self.fm_steps, lo=1, hi=100_000),
                check_int("sl_prompts", self.sl_prompts, lo=1, hi=1_000_000),
                check_int("rounds", self.rounds, lo=1, hi=10),
                check_int("sft_steps", self.sft_steps, lo=1, hi=100_000),
                check_int("help_pairs", self.help_pairs, lo=0, hi=1_000_000),
                check_int("pm_steps", self.pm_steps, lo=1, hi=100_000),
                check_int("rl_steps", self.rl_steps, lo=0, hi=100_000),
                check_int("dpo_steps", self.dpo_steps, lo=0, hi=100_000),
                check_real("lr", self.lr, lo=0.0, lo_open=True, hi=1.0),
                check_real("kl_target", self.kl_target, lo=0.0, lo_open=True),
                check_int("n_eval", self.n_eval, lo=1, hi=100_000),
            ],
        )
        if not any(k in BENIGN_KINDS for k in self.kinds):
            raise ConfigError(
                "CAIBudget: kinds needs at least one benign kind (helpfulness is measured on them)"
            )


def helpful_only_policy(store: Store, size: str, seed: int, budget: CAIBudget) -> Transformer:
    """The starting policy: the gated base model, fine-tuned on the world (``helpful_steps``)."""
    base, gates = base_run(store, size, seed)
    failed = [g.describe() for g in gates if not g.passed]
    if failed:
        raise ConfigError(f"base model {size} seed {seed} fails its competence gate: {'; '.join(failed)}")
    if budget.helpful_steps == 0:
        return load(base.dir / "model")
    run = helpful_only_run(store, base, size, seed, budget.helpful_steps, 3e-3, budget.kinds)
    return load(run.dir / "model")


def stored_feedback_model(store: Store, fm_size: str, seed: int, budget: CAIBudget) -> FeedbackModel:
    """The feedback model of ``fm_size`` trained from its base model, through the store.

    The critic depends on its size, the seed and the budget's labels, steps and kinds, never on
    the policy it will judge, so every policy of a feedback-size x policy-size grid shares one
    (a stored ``cai-critic`` run) instead of training it again per policy. Reading it back gives
    the same weights bit for bit (safetensors, float32) and the pipeline's later stages seed
    their own generators, so a cell's numbers do not depend on whether its critic was cached.
    """
    config = {
        "fm_size": fm_size,
        "seed": seed,
        "label_budget": budget.label_budget,
        "fm_steps": budget.fm_steps,
        "kinds": list(budget.kinds),
    }
    run, _ = store.get_or_create("cai-critic", config, name=f"cai critic {fm_size}/{seed}")
    path = run.dir / CRITIC_DIR
    if run.status == "done" and (path / "config.json").exists():
        return FeedbackModel(load(path))
    store.set_status(run.id, "running")
    try:
        fm_base, _ = base_run(store, fm_size, seed)
        fm = train_feedback_model(
            load(fm_base.dir / "model"), budget.label_budget, seed, budget.fm_steps, kinds=budget.kinds
        )
        save_pretrained(fm.model, path)
    except BaseException:
        store.set_status(run.id, "failed")
        raise
    store.set_status(run.id, "done")
    return fm


def feedback_cell(
    store: Store, policy: Transformer, fm_size: str, seed: int, budget: CAIBudget
) -> tuple[FeedbackModel, dict[str, Any]]:
    """The feedback model of ``fm_size`` (`stored_feedback_model`) and its agreement with the
    rule checker on held-out demonstrations and on ``policy``'s held-out samples."""
    fm = stored_feedback_model(store, fm_size, seed, budget)
    demo = agreement(fm, demonstrations(4 * budget.n_eval, seed, "fm-eval", kinds=budget.kinds))
    reqs = sample_requests(len(budget.kinds) * budget.n_eval, seed, "fm-eval-policy", 0, budget.kinds)
    outs = sample_responses(policy, [r.prompt for r in reqs], MAX_NEW, seed)
    pol = agreement(fm, labelled_triples(reqs, outs, seed, "fm-eval-policy"))
    return fm, {"demo": demo.counts, "policy": pol.counts, "policy_balanced": pol.balanced}


def run_cell(
    store: Store,
    policy_size: str,
    fm_size: str,
    seed: int,
    budget: CAIBudget,
    arms: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every arm (or, with ``arms`` False, only ``none`` and ``sl-cai``) for one seed.

    Returns:
        ``{"policy_size", "fm_size", "seed", "arms": {arm: PolicyCounts dict}, "feedback": counts,
        "revisions": stats, "pairs": {...}, "seconds": {stage: wall s}, "cpu_seconds": {stage:
        CPU s of this process}}``; every count is a ground-truth measurement.
    """
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    t, c = time.perf_counter(), time.process_time()

    def lap(stage: str) -> None:
        nonlocal t, c
        seconds[stage] = round(time.perf_counter() - t, 2)
        cpu[stage] = round(time.process_time() - c, 2)
        if log:
            log(f"{policy_size}/{fm_size}/seed {seed}: {stage} {seconds[stage]:.0f}s, {cpu[stage]:.0f} CPU-s")
        t, c = time.perf_counter(), time.process_time()

    b = budget
    policy = helpful_only_policy(store, policy_size, seed, b)
    lap("helpful-only")
    fm, fb = feedback_cell(store, policy, fm_size, seed, b)
    lap("feedback model")
    out: dict[str, Any] = {"policy_size": policy_size, "fm_size": fm_size, "seed": seed, "feedback": fb}
    results = {"none": measure_policy(policy, b.n_eval, seed, b.kinds)}
    sl, revisions = sl_cai(
        policy,
        fm,
        n_prompts=b.sl_prompts,
        rounds=b.rounds,
        steps=b.sft_steps,
        lr=b.lr,
        seed=seed,
        kinds=b.kinds,
    )
    results["sl-cai"] = measure_policy(sl, b.n_eval, seed, b.kinds)
    out["revisions"] = revision_stats(revisions)
    lap("sl-cai")
    if arms:
        reqs, a, bb = sample_pairs(sl, b.label_budget, seed, "pm", b.kinds)
        helpful = helpfulness_pairs(sl, b.help_pairs, seed, b.kinds) if b.help_pairs else []
        ai, gt = ai_labels(fm, reqs, a, bb, seed), gt_labels(reqs, a, bb)
        ereqs, ea, eb = sample_pairs(sl, b.label_budget, seed, "pm-eval", b.kinds)
        held = gt_labels(ereqs, ea, eb) + helpfulness_labels(ereqs, ea, eb)
        pairs: dict[str, Any] = {
            "ai_agreement": label_agreement(ai, gt),
            "gt_strict": sum(p.strict() for p in gt),
        }
        lap("pairs")
        for arm, labels in (("rl-cai", ai), ("gt-rlhf", gt)):
            pm = fit_preference_model(sl, labels + helpful, steps=b.pm_steps, lr=b.lr, seed=seed)
            pairs[f"{arm}_pm_accuracy"] = preference_accuracy(pm, held)
            model, stats = rloo(
                sl, pm, steps=b.rl_steps, lr=b.lr, kl_target=b.kl_target, seed=seed, kinds=b.kinds
            )
            results[arm] = measure_policy(model, b.n_eval, seed, b.kinds)
            pairs[f"{arm}_rl"] = dataclasses.asdict(stats)
            lap(arm)
        revs = revision_pairs(revisions)
        model, dstats = dpo_train(sl, revs + helpful, steps=b.dpo_steps, lr=b.lr, seed=seed)
        results["dpo-cai"] = measure_policy(model, b.n_eval, seed, b.kinds)
        pairs["dpo"] = {**dataclasses.asdict(dstats), "revision_pairs": len(revs)}
        lap("dpo-cai")
        out["pairs"] = pairs
    out["arms"] = {k: v.to_dict() for k, v in results.items()}
    out["seconds"] = seconds
    out["cpu_seconds"] = cpu
    return out


CELL_FILE = "cell.json"


def stored_cell(
    store: Store,
    policy_size: str,
    fm_size: str,
    seed: int,
    budget: CAIBudget,
    arms: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`run_cell` through the store: a finished cell with the same sizes, seed, budget and arms is
    read back, not rerun, so a study can be run (and resumed) one cell at a time."""
    config = {
        "policy_size": policy_size,
        "fm_size": fm_size,
        "seed": seed,
        "budget": dataclasses.asdict(budget),
        "arms": arms,
    }

    def compute(run: Run) -> dict[str, Any]:
        cell = run_cell(store, policy_size, fm_size, seed, budget, arms=arms, log=log)
        cell["run_id"] = run.id
        return cell

    name = f"cai {policy_size}/{fm_size}/{seed}"
    cell, _ = store.cached_json("cai-cell", config, CELL_FILE, compute, name=name, indent=1)
    return dict(cell)
