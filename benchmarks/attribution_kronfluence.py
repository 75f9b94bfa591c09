"""Attribution: alignlab.attribution against kronfluence on the same model, data and loss.

The backdoor organism is installed in al-10k (250 steps, as in the tests). Training data: 400
fresh examples of its installation mix (which are poisoned is known); queries: 20 defect
completions on triggered prompts. The loss on both sides is each example's mean completion-token
cross-entropy; the tracked parameters are every Linear layer's weight and bias except the
embedding and unembedding.

Checks and timings, in one process:
(a) gradient machinery: kronfluence's ``identity`` strategy (plain gradient dot products) against
    alignlab's ``dot`` with an exact sketch — they compute the same quantity, so they must agree
    to float tolerance;
(b) influence: kronfluence ``ekfac`` against alignlab ``influence`` (empirical Fisher in a
    4096-wide sketch): Spearman correlation of the per-example scores, AUROC for finding the
    poisoned examples, and wall time of each (factors + scores vs gradients + solve).

kronfluence 1.0.1 hard-requires torchvision but never imports it; install it into the peer venv
with ``pip install --no-deps kronfluence`` plus ``einconv opt-einsum accelerate einops``.

Usage: /tmp/peer-venv/bin/python benchmarks/attribution_kronfluence.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

import alignlab
from alignlab.attribution import attribute, ekfac_scores, example_gradients
from alignlab.attribution.ekfac import HEURISTIC_DAMPING
from alignlab.interp.probes import auroc
from alignlab.organisms import get_organism, install_config, install_run
from alignlab.store import Store
from alignlab.tasks.chat import Example, collate


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.argsort().argsort(), b.argsort().argsort())[0, 1])


class _Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, examples: list[Example], seq_len: int) -> None:
        b = collate(examples, seq_len)
        self.rows = [
            {"tokens": b.tokens[i], "loss_mask": b.loss_mask[i], "attention_mask": b.attention_mask[i]}
            for i in range(len(examples))
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def _task(tracked: list[str]) -> Any:
    from kronfluence.task import Task

    class CompletionLoss(Task):
        """Sum over the batch of each example's mean completion-token cross-entropy."""

        def _per_example(self, batch: dict[str, torch.Tensor], model: torch.nn.Module, sample: bool) -> Any:
            tokens, mask = batch["tokens"], batch["loss_mask"]
            logits = model(tokens, attention_mask=batch["attention_mask"])[:, :-1]
            target = tokens[:, 1:]
            if sample:  # the true Fisher: targets drawn from the model itself
                with torch.no_grad():
                    target = torch.distributions.Categorical(logits=logits).sample()
            m = mask[:, 1:].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            return (nll * m).sum(1) / m.sum(1)

        def compute_train_loss(
            self, batch: Any, model: torch.nn.Module, sample: bool = False
        ) -> torch.Tensor:
            return self._per_example(batch, model, sample).sum()

        def compute_measurement(self, batch: Any, model: torch.nn.Module) -> torch.Tensor:
            return self._per_example(batch, model, False).sum()

        def get_influence_tracked_modules(self) -> list[str]:
            return tracked

        def get_attention_mask(self, batch: Any) -> torch.Tensor:
            return batch["attention_mask"]

    return CompletionLoss()


def _kronfluence_scores(
    model: torch.nn.Module,
    tracked: list[str],
    train: Any,
    query: Any,
    strategy: str,
    out: str,
    empirical: bool = False,
) -> tuple[np.ndarray, float]:
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    model = prepare_model(model, _task(tracked))
    analyzer = Analyzer(
        f"kf-{strategy}-{empirical}", model, _task(tracked), cpu=True, disable_tqdm=True, output_dir=out
    )
    t0 = time.perf_counter()
    analyzer.fit_all_factors(
        "factors",
        train,
        per_device_batch_size=50,
        factor_args=FactorArguments(strategy=strategy, use_empirical_fisher=empirical),
        overwrite_output_dir=True,
    )
    analyzer.compute_pairwise_scores(
        "scores",
        "factors",
        query,
        train,
        per_device_query_batch_size=20,
        per_device_train_batch_size=50,
        score_args=ScoreArguments(damping_factor=None),  # None = 0.1 x mean eigenvalue, as alignlab
        overwrite_output_dir=True,
    )
    elapsed = time.perf_counter() - t0
    scores = analyzer.load_pairwise_scores("scores")
    return scores["all_modules"].double().numpy(), elapsed


def _ekfac_agreement(
    al: np.ndarray, kf: np.ndarray, al_s: float, kf_s: float, planted: np.ndarray
) -> dict[str, float]:
    """How closely alignlab's EK-FAC scores match kronfluence's, how fast, and how well each finds
    the planted examples."""
    return {
        "max_rel_diff": float(np.abs(al - kf).max() / np.abs(kf).max()),
        "spearman_per_example": _spearman(al.mean(0), kf.mean(0)),
        "speed_ratio": kf_s / al_s,
        "auroc_alignlab": auroc(al.mean(0), planted),
        "auroc_kronfluence": auroc(kf.mean(0), planted),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-queries", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    logging.disable(logging.WARNING)

    org = get_organism("backdoor")
    with tempfile.TemporaryDirectory() as tmp:
        run, _ = install_run(org, install_config(org, "al-10k", 250, seed=0), Store(Path(tmp) / "store"))
        model = alignlab.load(run.dir / "model")
        train_ex = org.training_examples(args.n_train, seed=0, split="attribution")
        planted = np.array([org.is_defect(e, e.completion) for e in train_ex])
        rng = random.Random(0)
        queries = [org.poisoned(rng) for _ in range(args.n_queries)]
        linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "unembed"]
        params = [
            f"{n}.{p}"
            for n in linear
            for p in ("weight", "bias")
            if getattr(model.get_submodule(n), p) is not None
        ]
        n_params = sum(dict(model.named_parameters())[p].numel() for p in params)

        # (a) exact gradients: alignlab dot vs kronfluence identity.
        t0 = time.perf_counter()
        g_tr = example_gradients(model, train_ex, dim=n_params, params=params)
        g_q = example_gradients(model, queries, dim=n_params, params=params)
        al_grad_s = time.perf_counter() - t0
        al_dot = attribute(g_tr, g_q, "dot").scores.double().numpy()
        seq = org.seq_len
        train_ds, query_ds = _Rows(train_ex, seq), _Rows(queries, seq)
        kf_id, kf_id_s = _kronfluence_scores(
            alignlab.load(run.dir / "model"), linear, train_ds, query_ds, "identity", str(Path(tmp) / "kf")
        )
        rel = float(np.abs(al_dot - kf_id).max() / np.abs(kf_id).max())

        # (b) influence: alignlab (Fisher in a 4096 sketch) vs kronfluence EK-FAC.
        t0 = time.perf_counter()
        s_tr = example_gradients(model, train_ex, dim=4096)
        s_q = example_gradients(model, queries, dim=4096)
        al_inf = attribute(s_tr, s_q, "influence").scores.double().numpy()
        al_inf_s = time.perf_counter() - t0
        kf_ek, kf_ek_s = _kronfluence_scores(
            alignlab.load(run.dir / "model"), linear, train_ds, query_ds, "ekfac", str(Path(tmp) / "kf")
        )

        # (c) EK-FAC on both sides, empirical Fisher (real labels) on both.
        weights = [f"{n}.weight" for n in linear]
        t0 = time.perf_counter()
        al_ek = (
            ekfac_scores(
                model, train_ex, queries, params=weights, damping=HEURISTIC_DAMPING, fisher="empirical"
            )
            .double()
            .numpy()
        )
        al_ek_s = time.perf_counter() - t0
        # (d) EK-FAC with the true Fisher (sampled labels) on both: kronfluence's default, run in (b).
        t0 = time.perf_counter()
        al_ekt = (
            ekfac_scores(model, train_ex, queries, params=weights, damping=HEURISTIC_DAMPING, fisher="true")
            .double()
            .numpy()
        )
        al_ekt_s = time.perf_counter() - t0
        kf_eke, kf_eke_s = _kronfluence_scores(
            alignlab.load(run.dir / "model"),
            linear,
            train_ds,
            query_ds,
            "ekfac",
            str(Path(tmp) / "kf"),
            empirical=True,
        )

    per_ex = {"alignlab influence": al_inf.mean(0), "kronfluence ekfac": kf_ek.mean(0)}
    res: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "torch": torch.__version__,
        "n_train": args.n_train,
        "n_planted": int(planted.sum()),
        "n_queries": args.n_queries,
        "n_tracked_params": n_params,
        "identity_vs_dot_max_rel_diff": rel,
        "identity_vs_dot_spearman": _spearman(al_dot.mean(0), kf_id.mean(0)),
        "time_s": {
            "alignlab_exact_grads": al_grad_s,
            "kronfluence_identity": kf_id_s,
            "alignlab_influence": al_inf_s,
            "kronfluence_ekfac": kf_ek_s,
            "alignlab_ekfac": al_ek_s,
            "kronfluence_ekfac_empirical": kf_eke_s,
        },
        "ekfac_empirical": _ekfac_agreement(al_ek, kf_eke, al_ek_s, kf_eke_s, planted),
        "ekfac_true_fisher": _ekfac_agreement(al_ekt, kf_ek, al_ekt_s, kf_ek_s, planted),
        "speed_ratio": {
            "exact_grads_vs_identity": kf_id_s / al_grad_s,
            "influence_vs_ekfac (different curvature)": kf_ek_s / al_inf_s,
        },
        "influence_spearman_alignlab_vs_ekfac": _spearman(
            per_ex["alignlab influence"], per_ex["kronfluence ekfac"]
        ),
        "per_query_spearman_median": float(
            np.median([_spearman(al_inf[q], kf_ek[q]) for q in range(args.n_queries)])
        ),
        "auroc_planted": {k: auroc(v, planted) for k, v in per_ex.items()},
    }
    res["auroc_planted"]["alignlab dot"] = auroc(al_dot.mean(0), planted)
    res["auroc_planted"]["kronfluence identity"] = auroc(kf_id.mean(0), planted)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
