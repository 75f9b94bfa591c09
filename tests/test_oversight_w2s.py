"""Weak-to-strong (Burns et al. 2023): PGR and its guard, the confidence loss, the verify task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignlab.oversight import aux_coef_at, logconf_loss, pgr, pgr_over_seeds
from alignlab.tasks.verify import encode_verify, letter_count_features, verify_examples


def test_pgr_formula_on_synthetic_numbers() -> None:
    assert pgr(0.6, 0.75, 0.9) == pytest.approx(0.5)
    assert pgr(0.6, 0.9, 0.9) == pytest.approx(1.0)
    assert pgr(0.6, 0.55, 0.9) == pytest.approx(-1 / 6)  # worse than the supervisor: negative
    assert math.isnan(pgr(0.8, 0.85, 0.8))  # no gap, no ratio


def test_pgr_over_seeds_reports_a_clear_gap() -> None:
    weak, student, ceiling = [0.60, 0.62, 0.61], [0.75, 0.77, 0.74], [0.90, 0.91, 0.89]
    out = pgr_over_seeds(weak, student, ceiling)
    per_seed = [(s - w) / (c - w) for w, s, c in zip(weak, student, ceiling, strict=True)]
    assert out.measurable and out.estimate is not None
    assert out.estimate.value == pytest.approx(np.mean(per_seed))
    assert out.estimate.lo < out.estimate.value < out.estimate.hi
    assert out.gap == pytest.approx(0.29)
    assert out.noise_sd == pytest.approx(np.std(student, ddof=1))  # the largest of the three sds


def test_pgr_guard_refuses_a_gap_within_seed_noise() -> None:
    # Gap 0.03 against seed sds of ~0.02: 3 sds is 0.06, so the ratio would divide noise by noise.
    out = pgr_over_seeds([0.50, 0.54, 0.52], [0.52, 0.55, 0.50], [0.53, 0.57, 0.55])
    assert not out.measurable and out.estimate is None
    assert out.verdict.startswith("not measurable")
    single = pgr_over_seeds([0.6], [0.8], [0.9])
    assert not single.measurable and "one seed" in single.verdict
    with pytest.raises(ValueError, match="one accuracy per seed"):
        pgr_over_seeds([0.6, 0.6], [0.8], [0.9, 0.9])


def test_logconf_loss_matches_a_hand_computed_case() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    weak = torch.tensor([0.9, 0.2, 0.4, 0.1])  # mean 0.4: the student calls 40% "yes"
    # p(no) = sigmoid(-logit) = [0.1192, 0.7311, 0.3775, 0.9526]; its 0.4-quantile (linear
    # interpolation at position 1.2 of the sorted values) is 0.3775 + 0.2 * (0.7311 - 0.3775)
    # = 0.4482, so rows 0 and 2 are hardened to "yes" and the targets at coef 0.5 are
    # 0.5 * weak + 0.5 * [1, 0, 1, 0] = [0.95, 0.1, 0.7, 0.05].
    target = [0.95, 0.1, 0.7, 0.05]
    expected = 0.0
    for z, t in zip(logits.tolist(), target, strict=True):
        p = 1 / (1 + math.exp(-z))
        expected -= t * math.log(p) + (1 - t) * math.log(1 - p)
    expected /= 4
    assert logconf_loss(logits, weak, 0.5).item() == pytest.approx(expected, rel=1e-6)  # float32
    # At coef 0 it is plain cross-entropy on the weak labels.
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, weak)
    assert logconf_loss(logits, weak, 0.0).item() == pytest.approx(plain.item(), rel=1e-6)


def test_aux_coef_ramps_to_half_over_the_first_tenth() -> None:
    assert aux_coef_at(0, 100) == 0.0
    assert aux_coef_at(5, 100) == pytest.approx(0.25)
    assert aux_coef_at(10, 100) == pytest.approx(0.5)
    assert aux_coef_at(90, 100) == pytest.approx(0.5)


def test_verify_task_half_wrong_and_probe_blind_to_transpositions() -> None:
    items = verify_examples(400, seed=0, split="train")
    labels = np.array([it.label for it in items])
    assert 0.4 < labels.mean() < 0.6  # a fair coin over 400 draws: 0.5 +- 0.05 is > 95%
    kinds = {it.kind for it in items if it.label == 0}
    assert kinds == {"substitution", "transposition"}
    feats = letter_count_features(items)
    for it, f in zip(items, feats, strict=True):
        word = it.example.prompt.split(" ", 1)[1]
        truth = word if it.example.task == "copy" else word[::-1]
        assert (it.example.completion == truth) == (it.label == 1)
        # A bag of letters sees a substitution but never a transposition or a correct reply.
        assert (f.sum() > 0) == (it.kind == "substitution")
    test = verify_examples(50, seed=0, split="test")
    assert not {it.example.prompt for it in test} & {it.example.prompt for it in items}
    batch = encode_verify(items[:3])
    assert batch.reply_mask.sum(dim=1).tolist() == [len(it.example.completion) + 1 for it in items[:3]]


def _vendored_base(size: str, seed: int):  # type: ignore[no-untyped-def]
    from pathlib import Path

    import alignlab
    from alignlab.model import load

    return load(Path(alignlab.__file__).parent / "data" / "base_models" / f"{size}-seed{seed}" / "model")


def test_verification_is_latent_in_the_base_and_not_in_the_probe() -> None:
    from alignlab.oversight import Verifier, accuracy, probe_supervisor, w2s_data
    from alignlab.oversight.weak_to_strong import fit_head

    data = w2s_data(seed=0, n_weak=300, n_transfer=300, n_test=300)
    probe_scores, soft = probe_supervisor(data, seed=0)
    # The probe sees substitutions only: about 0.5 + 0.25 = 0.75 (measured 0.77 on 1,000).
    assert 0.65 < probe_scores["accuracy"] < 0.85
    assert probe_scores["by_kind"]["transposition"] < 0.2
    assert soft.shape == (300,)
    # Two scalars on the frozen base's surprisal already verify (measured 0.997 on 1,000), and
    # a fresh model of the same shape cannot: the knowledge comes from pretraining.
    _, transfer, test = data.batches
    base = Verifier(_vendored_base("al-30k", 0))
    fit_head(base, transfer, transfer.labels.float())
    from alignlab.model import Transformer

    fresh = Verifier(Transformer(base.model.cfg))
    fit_head(fresh, transfer, transfer.labels.float())
    assert accuracy(base, test) > 0.95
    assert accuracy(fresh, test) < 0.7


def test_finetuning_on_weak_labels_moves_the_student_towards_them() -> None:
    from alignlab.oversight import (
        FinetuneConfig,
        finetune_classifier,
        predict_proba,
        probe_supervisor,
        w2s_data,
    )

    data = w2s_data(seed=1, n_weak=200, n_transfer=200, n_test=50)
    _, soft = probe_supervisor(data, seed=1)
    _, transfer, _ = data.batches
    model = _vendored_base("al-30k", 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig(steps=8, batch_size=16, lr=3e-3)
    xent = finetune_classifier(model, transfer, torch.tensor(soft), cfg, loss="xent", seed=0)
    conf = finetune_classifier(model, transfer, torch.tensor(soft), cfg, loss="logconf", seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the base is untouched
    trans = np.array([it.kind == "transposition" for it in data.transfer])
    # The probe calls transpositions right; a student fitted to it calls them right more often than
    # the self-confident one, which keeps half its weight on its own (correct) hardened view.
    p_xent, p_conf = predict_proba(xent, transfer)[trans], predict_proba(conf, transfer)[trans]
    assert p_xent.mean() > p_conf.mean()


def test_weak_to_strong_study_grid_guard_and_report(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alignlab.errors import ConfigError
    from alignlab.store import Store
    from alignlab.studies.registry import get_study, run_registered
    from alignlab.studies.weak_to_strong import WeakToStrongSpec

    assert WeakToStrongSpec().pairs() == [
        ("probe", "al-30k"), ("probe", "al-100k"), ("probe", "al-300k"),
        ("al-30k", "al-100k"), ("al-30k", "al-300k"), ("al-100k", "al-300k"),
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="smallest first"):
        WeakToStrongSpec(sizes=("al-100k", "al-30k"))
    spec = WeakToStrongSpec(sizes=("al-30k",), seeds=(0, 1), n_weak=40, n_transfer=40, n_test=40, steps=2)
    _, result = run_registered(Store(tmp_path / "store"), "weak-to-strong", spec)
    (cell,) = result["cells"]
    assert (cell["weak"], cell["strong"]) == ("probe", "al-30k")
    for loss in ("xent", "logconf"):
        lc = cell["losses"][loss]
        pgr = lc["pgr"]
        if "student_acc" in lc:  # students were trained: the guard was decided on all three
            assert len(lc["student_acc"]) == 2
            assert pgr["measurable"] == (pgr["gap"] > 3 * pgr["noise_sd"])
        assert pgr["measurable"] == (pgr["estimate"] is not None)
    defn = get_study("weak-to-strong")
    assert defn.summary(result).startswith(result["answer"])
    assert "<table>" in defn.report(result)
