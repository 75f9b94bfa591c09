"""Stacked training: each member trains as its separate run would, in the same run directory.

Separate and stacked runs compute the same numbers in a different summation order (batched
matmuls, the loss summed per member), so they agree to float32 rounding, not bit for bit; within
one stack the members never share a number, so a member is bit-identical whatever else is stacked
with it, and a resumed stack is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignlab import load
from alignlab.errors import ConfigError, DivergenceError
from alignlab.model import SIZES
from alignlab.store import Store
from alignlab.tasks import make_batch
from alignlab.train import TrainConfig, list_checkpoints, lr_at, train, train_run
from alignlab.train._stacked_model import Layout, StackedTransformer, _causal_suffices
from alignlab.train._stacked_optim import adamw_rows_, clip_rows_
from alignlab.train.loop import MetricsFn, make_optimizer
from alignlab.train.stacked import train_runs_stacked, train_stacked

from conftest import FORWARD_ULPS, TINY_CFGS, assert_close_rel, make_model

# Chat data: right padding, attention masks and completion-only loss masks, the study's case.
BASE = TrainConfig(
    model=TINY_CFGS["neox-parallel"].replace(n_ctx=64),
    task="chat",
    steps=50,
    batch_size=8,
    seq_len=48,
    warmup_steps=5,
    eval_every=25,
    ckpt_every=25,
    threads=1,
    device="cpu",
)


def _members(base: TrainConfig) -> list[TrainConfig]:
    """Three members that differ in everything a member may: seed (init and data), peak lr,
    schedule length (the third drops out of the stack at step 40), warm-up, clipping, decay."""
    return [
        base.replace(seed=0),
        base.replace(seed=1, lr=1e-2),
        base.replace(seed=2, steps=40, warmup_steps=10, grad_clip=0.0, weight_decay=0.1),
    ]


def _logger(into: list[tuple[int, dict[str, float]]]) -> MetricsFn:
    return lambda step, values, _tokens: into.append((step, dict(values)))


def _curve(logs: list[tuple[int, dict[str, float]]], name: str) -> dict[int, float]:
    return {s: m[name] for s, m in logs if name in m}


def _key_bias(cfg: TrainConfig) -> slice:
    m = cfg.model
    return slice(m.n_heads * m.d_head, (m.n_heads + m.kv_heads) * m.d_head)


@pytest.mark.parametrize("arch", ["neox-parallel", "llama-gqa"])
def test_members_match_their_separate_runs(tmp_path: Path, arch: str) -> None:
    cfgs = _members(BASE.replace(model=TINY_CFGS[arch].replace(n_ctx=64)))
    logs: list[list[tuple[int, dict[str, float]]]] = [[] for _ in cfgs]
    stacked = train_stacked(
        cfgs, [tmp_path / f"stacked{i}" for i in range(3)], on_metrics=[_logger(lg) for lg in logs]
    )
    for i, cfg in enumerate(cfgs):
        ref_logs: list[tuple[int, dict[str, float]]] = []
        ref = train(cfg, tmp_path / f"separate{i}", on_metrics=_logger(ref_logs), progress=False)
        got = stacked[i]
        assert not isinstance(got, DivergenceError)
        assert [s for s, _ in logs[i]] == [s for s, _ in ref_logs]  # same log, eval and step schedule
        # The bound: 1e-5 relative per logged point (25 two-step means, 2 evaluations).
        # Measured <= 3e-7: the forward differs by rounding only (reordered sums), and Adam's
        # step m / sqrt(v) is scale-free, so a relative gradient error of ~1e-7 stays ~1e-7.
        for name in ("train_loss", "eval_loss"):
            a, b = _curve(logs[i], name), _curve(ref_logs, name)
            assert len(a) >= 2 and a.keys() == b.keys()
            worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in a)
            print(f"{arch} member {i} {name}: max relative difference {worst:.3g}")
            assert worst <= 1e-5, (name, worst)
        # Adam moves a weight by <= ~lr per step whatever its gradient, so weights agree to a
        # fraction of that travel (sum of the lr schedule). Measured <= 25 eps·travel; 512 is 20x
        # that and 1/16000 of the travel, where a wrong row, schedule or clip moves O(travel).
        travel = sum(lr_at(s, cfg) for s in range(cfg.steps))
        mine, theirs = got.model.state_dict(), ref.model.state_dict()
        for k in theirs:
            a_k, b_k = mine[k], theirs[k]
            if k.endswith("W_QKV.bias"):
                # The key bias adds q·b_k to every score of a query, which the softmax ignores:
                # its gradient is 0 analytically, rounding noise in practice, and Adam scales
                # noise up to steps of size lr, differently in the two runs (measured up to 0.8%
                # of the travel). It cannot change any output; the logits check below covers it.
                keep = torch.ones(a_k.shape[0], dtype=torch.bool)
                keep[_key_bias(cfg)] = False
                a_k, b_k = a_k[keep], b_k[keep]
            assert_close_rel(a_k, b_k, ulps=512, what=f"{arch}/{i}/{k}", scale=travel, dtype=torch.float32)
        tokens = torch.randint(0, cfg.model.d_vocab, (4, 32), generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            out, want = got.model(tokens), ref.model(tokens)
        # Logits are sums over d_model terms of weights that differ by <= 512 eps·travel each
        # (travel 0.1-0.3 here) plus the key bias, which cancels in the softmax. Measured <= 20
        # eps of max|logit|; 1024 leaves room for 2 layers of amplification on other SIMD
        # widths, while a wrong layout or member moves the logits by O(max|logit|).
        assert_close_rel(out, want, ulps=1024, what=f"{arch}/{i} logits")
        assert [p.name for p in list_checkpoints(tmp_path / f"stacked{i}" / "ckpt")] == [
            p.name for p in list_checkpoints(tmp_path / f"separate{i}" / "ckpt")
        ]


@pytest.mark.parametrize("arch", sorted(TINY_CFGS))
@pytest.mark.parametrize("padding", ["right", "left"])
def test_stacked_loss_and_gradients_match_the_transformer(arch: str, padding: str) -> None:
    cfg = TINY_CFGS[arch].replace(n_ctx=64)
    models = [make_model(cfg, seed=s).train() for s in range(3)]
    optimizer = make_optimizer(models[0], BASE.replace(model=cfg))
    layout = Layout.of(models[0], optimizer)
    flat = torch.stack([layout.row(layout.params_of(m)) for m in models]).requires_grad_()
    batches = [make_batch("chat", 4, 48, seed=s, step=0) for s in range(3)]
    if padding == "left":  # roll each row's padding to the front: the padding-mask path
        for b in batches:
            assert b.attention_mask is not None and b.loss_mask is not None
            for r in range(b.tokens.shape[0]):
                shift = int((b.attention_mask[r] == 0).sum())
                b.tokens[r], b.loss_mask[r], b.attention_mask[r] = (
                    t[r].roll(shift) for t in (b.tokens, b.loss_mask, b.attention_mask)
                )
    tokens, loss_mask, attn = (
        torch.stack([getattr(b, k) for b in batches]) for k in ("tokens", "loss_mask", "attention_mask")
    )
    assert _causal_suffices(attn, loss_mask) == (padding == "right")
    sums, counts = StackedTransformer(cfg).loss_sums(layout.views(flat), tokens, loss_mask, attn)
    (sums / counts).sum().backward()
    assert flat.grad is not None
    for m, (model, b) in enumerate(zip(models, batches, strict=True)):
        want = model(b.tokens, return_type="loss", loss_mask=b.loss_mask, attention_mask=b.attention_mask)
        want.backward()
        # Same maths in another summation order (batched matmuls, the loss summed per member):
        # FORWARD_ULPS of the quantity's scale, as for other reordered forwards (conftest).
        assert_close_rel(sums[m] / counts[m], want, ulps=FORWARD_ULPS, what=f"{arch} loss {m}")
        grads = layout.row([p.grad for p in layout.params_of(model) if p.grad is not None])
        assert_close_rel(flat.grad[m], grads, ulps=FORWARD_ULPS, what=f"{arch} gradients {m}")


def test_adamw_rows_equal_torch_adamw_bitwise() -> None:
    gen = torch.Generator().manual_seed(0)
    lrs, wds, extra = [1e-3, 3e-3, 3e-3], [0.01, 0.0, 0.1], [0, 0, 2]  # member 2 is 2 steps ahead
    shapes = [(6, 5), (7,)]  # a decayed matrix group and an undecayed vector group
    init = [[torch.randn(s, generator=gen) for s in shapes] for _ in lrs]
    grads = [
        [[torch.randn(s, generator=gen) * 10.0 ** (k - 3) for s in shapes] for k in range(5)] for _ in lrs
    ]
    ref, opts = [], []
    for m in range(3):
        ps = [torch.nn.Parameter(t.clone()) for t in init[m]]
        opt = torch.optim.AdamW(
            [{"params": ps[:1], "weight_decay": wds[m]}, {"params": ps[1:], "weight_decay": 0.0}],
            lr=lrs[m],
            betas=(0.9, 0.95),
            eps=1e-8,
        )
        for k in range(extra[m]):
            for p, g in zip(ps, grads[m][k], strict=True):
                p.grad = g
            opt.step()
        ref.append(ps)
        opts.append(opt)

    def row(ts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.detach().reshape(-1) for t in ts])

    param = torch.stack([row(ps) for ps in ref])
    avg = torch.stack(
        [
            row([opts[m].state[p]["exp_avg"] if extra[m] else torch.zeros_like(p) for p in ref[m]])
            for m in range(3)
        ]
    )
    sq = torch.stack(
        [
            row([opts[m].state[p]["exp_avg_sq"] if extra[m] else torch.zeros_like(p) for p in ref[m]])
            for m in range(3)
        ]
    )
    for k in range(3):
        for m in range(3):
            for p, g in zip(ref[m], grads[m][extra[m] + k], strict=True):
                p.grad = g
            opts[m].step()
        grad = torch.stack([row(grads[m][extra[m] + k]) for m in range(3)])
        adamw_rows_(
            param,
            avg,
            sq,
            grad,
            lrs=lrs,
            steps=[extra[m] + k + 1 for m in range(3)],
            decay=[(0, 30, wds), (30, 37, [0.0] * 3)],
            betas=(0.9, 0.95),
            eps=1e-8,
        )
        for m in range(3):
            assert torch.equal(param[m], row(ref[m])), (k, m)
            assert torch.equal(avg[m], row([opts[m].state[p]["exp_avg"] for p in ref[m]]))


def test_clipping_is_per_member() -> None:
    gen = torch.Generator().manual_seed(1)
    shapes = [(16, 8), (8,), (33,)]
    max_norms = [1.0, 1.0, 0.0, 5.0]  # clipped, under its limit, not clipping, clipped to 5
    scales = [30.0, 1e-3, 30.0, 30.0]
    grads = [[torch.randn(s, generator=gen) * sc for s in shapes] for sc in scales]
    rows = torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in grads])
    clip_rows_(rows, max_norms)
    for m, gs in enumerate(grads):
        ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in gs]
        for p, g in zip(ps, gs, strict=True):
            p.grad = g.clone()
        if max_norms[m]:
            torch.nn.utils.clip_grad_norm_(ps, max_norms[m])
        want = torch.cat([p.grad.reshape(-1) for p in ps if p.grad is not None])
        if scales[m] < 1 or not max_norms[m]:
            assert torch.equal(rows[m], want), m  # untouched rows stay bit-identical
        else:
            # The norm of the row vs torch's norm of per-tensor norms: one sum of 169 squares in
            # another order, off by a few eps; the scaled gradients inherit it. 16 eps of scale.
            assert_close_rel(rows[m], want, ulps=16, what=f"member {m}")
            assert float(torch.linalg.vector_norm(rows[m])) == pytest.approx(max_norms[m], rel=1e-5)


def test_divergence_is_isolated_and_marks_only_that_run_failed(tmp_path: Path) -> None:
    good = [BASE.replace(seed=s, steps=30, eval_every=0, ckpt_every=0) for s in range(2)]
    bad = good[0].replace(seed=9, lr=1e3, grad_clip=0.0)  # diverges within a few steps
    store = Store(tmp_path / "store")
    with pytest.raises(DivergenceError, match="diverged") as info:
        train_runs_stacked([good[0], bad, good[1]], store)
    runs = {r.id: r for r in store.runs()}
    (bad_run,) = [r for r in runs.values() if r.status == "failed"]
    assert store.latest_metrics(bad_run.id)["diverged_at_step"] == info.value.step
    assert sorted(r.status for r in runs.values()) == ["done", "done", "failed"]
    # The healthy members equal, bit for bit, a stack that never held the diverging one: no NaN
    # reached their rows (a tolerance would hide a small leak).
    alone = train_stacked(good, [tmp_path / "alone0", tmp_path / "alone1"])
    trained, _ = zip(*train_runs_stacked(good, store), strict=True)
    for run, res in zip(trained, alone, strict=True):
        assert not isinstance(res, DivergenceError)
        got = load(run.dir / "model").state_dict()
        assert all(torch.equal(got[k], v) for k, v in res.model.state_dict().items())


def test_store_ids_and_cache_are_shared_with_separate_runs(tmp_path: Path) -> None:
    cfgs = [BASE.replace(seed=s, steps=12, eval_every=0, ckpt_every=6) for s in range(4)]
    recipe = {"data": "chat", "note": "same recipe, same id"}
    store = Store(tmp_path / "store")
    # Config 3 was trained separately before; the stack must reuse it, not retrain it.
    sep3, _ = train_run(cfgs[3], store, progress=False, kind="organism", recipe=recipe)
    out = train_runs_stacked(cfgs, store, kind="organism", recipes=[recipe] * 4)
    assert [t for _, t in out] == [True, True, True, False]
    assert out[3][0].id == sep3.id
    other = Store(tmp_path / "other")
    for cfg, (run, _) in zip(cfgs, out, strict=True):
        assert run.status == "done" and run.kind == "organism"
        again, trained = train_run(cfg, store, progress=False, kind="organism", recipe=recipe)
        assert (again.id, trained) == (run.id, False)  # a separate run finds the stacked one done
        fresh, _ = other.get_or_create("organism", cfg.identity(), recipe)
        assert fresh.id == run.id  # ids are the content hash, as for separate runs
    assert [_stacked_size(r.dir) for r, _ in out[:3]] == [3, 3, 3]


def _stacked_size(run_dir: Path) -> int:
    return int(json.loads((run_dir / "summary.json").read_text())["stacked"])


def test_resume_after_an_interrupt_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfgs = [BASE.replace(seed=s, steps=40, eval_every=20, ckpt_every=10) for s in range(3)]
    ref_store, store = Store(tmp_path / "ref"), Store(tmp_path / "killed")
    ref = train_runs_stacked(cfgs, ref_store)

    real = Store.log_metrics

    def failing(self: Store, run_id: str, step: int, values: dict[str, float], **kw: object) -> None:
        if step == 26 and "train_loss" in values:
            raise KeyboardInterrupt("simulated kill at step 26")
        real(self, run_id, step, values, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "log_metrics", failing)
    with pytest.raises(KeyboardInterrupt):
        train_runs_stacked(cfgs, store)
    monkeypatch.setattr(Store, "log_metrics", real)
    assert {r.status for r in store.runs()} == {"failed"}
    for r in store.runs():
        assert list_checkpoints(r.dir / "ckpt")[-1].name == "step-00000020"
    resumed = train_runs_stacked(cfgs, store)
    for (a, _), (b, _) in zip(ref, resumed, strict=True):
        assert a.id == b.id and b.status == "done"
        want = load_file(str(list_checkpoints(a.dir / "ckpt")[-1] / "state.safetensors"))
        got = load_file(str(list_checkpoints(b.dir / "ckpt")[-1] / "state.safetensors"))
        assert want.keys() == got.keys() and any(k.startswith("optim.") for k in want)
        for k in want:
            assert torch.equal(want[k], got[k]), k
        # The resumed run logged the same curve (the interval's losses came back with the checkpoint).
        for name in ("train_loss", "eval_loss"):
            assert [(m["step"], m["value"]) for m in ref_store.metrics(a.id, name)] == [
                (m["step"], m["value"]) for m in store.metrics(b.id, name)
            ]


def test_a_separate_run_resumes_a_stacked_checkpoint(tmp_path: Path) -> None:
    cfgs = [BASE.replace(seed=s, steps=30, eval_every=0, ckpt_every=10) for s in range(2)]

    def stop(step: int, values: dict[str, float], _tokens: int) -> None:
        if step == 16:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        train_stacked(cfgs, [tmp_path / "a", tmp_path / "b"], on_metrics=[stop, None])
    resumed = train(cfgs[0], tmp_path / "a", progress=False)
    assert resumed.resumed_from == 10
    ref = train(cfgs[0], tmp_path / "ref", progress=False)
    travel = sum(lr_at(s, cfgs[0]) for s in range(cfgs[0].steps))
    got, want = resumed.model.state_dict(), ref.model.state_dict()
    for k in want:  # 10 stacked steps then 20 separate: rounding only (see the test above)
        if not k.endswith("W_QKV.bias"):
            assert_close_rel(got[k], want[k], ulps=512, what=k, scale=travel, dtype=torch.float32)


def test_configs_of_different_shapes_are_refused(tmp_path: Path) -> None:
    small = BASE.replace(model=SIZES["al-10k"].replace(n_ctx=64))
    with pytest.raises(ConfigError, match="one shape"):
        train_stacked([BASE, small], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ConfigError, match="2 entries for 1"):
        train_stacked([BASE], [tmp_path / "a", tmp_path / "b"])


def test_stacked_bases_are_found_by_base_run(tmp_path: Path) -> None:
    from alignlab.train.base_model import BaseSpec, base_run
    from alignlab.train.stacked import train_bases_stacked

    spec = BaseSpec(steps=20, batch_size=16, n_gate=20)
    store = Store(tmp_path / "store")
    train_bases_stacked(store, [("al-30k", 0), ("al-30k", 1)], spec)
    for seed in (0, 1):
        run, gates = base_run(store, "al-30k", seed, spec, vendored=False)
        assert run.status == "done" and len(gates) == len(spec.tasks)
        # Trained in the stack (its summary says so), not retrained alone by base_run.
        assert _stacked_size(run.dir) == 2


def test_stacked_installs_are_found_by_install_on_base(tmp_path: Path) -> None:
    """Installs of one size over several seeds, stacked, land under the ids `install_on_base`
    gives them; it then trains nothing, and the members' weights match separate installs."""
    from alignlab.organisms import get_organism, install_on_base
    from alignlab.organisms.install import install_on_bases_stacked
    from alignlab.train.base_model import BaseSpec, base_run

    spec = BaseSpec(steps=20, batch_size=16, n_gate=20)
    store, alone = Store(tmp_path / "stacked"), Store(tmp_path / "alone")
    org = get_organism("backdoor", poison_rate=0.15, near_miss_rate=0.15)
    bases = [(base_run(store, "al-30k", s, spec, vendored=False)[0], s) for s in (0, 1)]
    stacked = install_on_bases_stacked(org, "al-30k", bases, store, steps=12, lr=3e-3)
    for (run, trained), (base, seed) in zip(stacked, bases, strict=True):
        assert trained and run.status == "done" and _stacked_size(run.dir) == 2
        again, trained_again = install_on_base(org, "al-30k", base, store, 12, 3e-3, seed)
        assert again.id == run.id and not trained_again
        alone_base, _ = base_run(alone, "al-30k", seed, spec, vendored=False)
        single, _ = install_on_base(org, "al-30k", alone_base, alone, 12, 3e-3, seed)
        assert single.id == run.id  # content-addressed: the same run in either store
        tokens = torch.randint(0, 40, (4, 24), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            out, want = load(run.dir / "model")(tokens), load(single.dir / "model")(tokens)
        # 12 fine-tuning steps, batched vs plain matmuls: the logits differ by rounding only, bounded
        # relative to max|logit| as in test_members_match_their_separate_runs (and for its reasons).
        assert_close_rel(out, want, ulps=1024, what=f"seed {seed} logits")
