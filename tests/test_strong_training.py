"""Training-loop settings that a plausible bug could silently ignore: the gradient clip, the
learning rate actually applied, and which parameters are weight-decayed.

Adam divides each gradient by its running RMS, so most changes to the gradient's scale vanish
from the update; the gradient clip acts only through Adam's epsilon (1e-8) or through how the
clip factor varies between steps. A clip to 1e-12 puts every coordinate's gradient far below
epsilon, so the weights barely move: a loop that skipped the clip would move them by ~lr a step.
"""

from __future__ import annotations

from pathlib import Path

from alignlab.model import ModelConfig, Transformer
from alignlab.train import TrainConfig, lr_at, train
from alignlab.train.loop import make_optimizer

CFG = TrainConfig(
    model=ModelConfig(d_model=16, n_layers=1, n_heads=2, n_ctx=32),
    steps=6,
    batch_size=4,
    seq_len=16,
    warmup_steps=2,
    lr=1e-2,
    eval_every=0,
    ckpt_every=0,
    threads=1,
    device="cpu",
)


def _travel(cfg: TrainConfig, out: Path, logged: list[tuple[int, dict[str, float]]] | None = None) -> float:
    """Largest change of any weight after training ``cfg`` from a fixed initial model."""
    init = Transformer(cfg.model)
    init.init_weights(seed=0)
    start = {k: v.clone() for k, v in init.state_dict().items()}

    def log(step: int, values: dict[str, float], tokens: int) -> None:
        if logged is not None:
            logged.append((step, values))

    model = train(cfg, out, progress=False, init_model=init, on_metrics=log).model
    return max((model.state_dict()[k] - v).abs().max().item() for k, v in start.items())


def test_gradient_clip_is_applied_and_the_scheduled_lr_is_used(tmp_path: Path) -> None:
    logged: list[tuple[int, dict[str, float]]] = []
    free = _travel(CFG, tmp_path / "free", logged)
    clipped = _travel(CFG.replace(grad_clip=1e-12), tmp_path / "clipped")
    lr_sum = sum(lr_at(s, CFG) for s in range(CFG.steps))
    # Unclipped (the default clip of 1 rarely binds here): Adam moves some weight by close to
    # the summed lr (measured 0.99 of it). Clipped to 1e-12: <= 1e-12 per coordinate against
    # epsilon 1e-8, so at most ~1e-4 of a step's lr per step, plus what the bias correction of
    # the first steps adds (measured 8e-4 of the summed lr).
    assert 0.3 * lr_sum <= free <= 1.5 * lr_sum, (free, lr_sum)
    assert clipped <= 0.01 * lr_sum, (clipped, lr_sum)
    # The lr logged at each step is the one the schedule gives the step just taken.
    lrs = {step: m["lr"] for step, m in logged if "lr" in m}
    assert lrs and all(lr == lr_at(step - 1, CFG) for step, lr in lrs.items()), lrs


def test_only_matrices_are_weight_decayed() -> None:
    model = Transformer(CFG.model)
    opt = make_optimizer(model, CFG.replace(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert decayed["params"] and all(p.ndim >= 2 for p in decayed["params"])
    assert plain["params"] and all(p.ndim < 2 for p in plain["params"])
    assert {id(p) for p in decayed["params"] + plain["params"]} == {id(p) for p in model.parameters()}
    # Gains are never decayed (decay would pull LayerNorm towards zero).
    gains = {id(p) for n, p in model.named_parameters() if n.endswith("ln1.weight")}
    assert gains and gains <= {id(p) for p in plain["params"]}
