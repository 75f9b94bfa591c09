"""The trainer: determinism, exact gradient accumulation, masking, schedules, resume after kill."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alignlab._overrides import apply_overrides
from alignlab.errors import ConfigError
from alignlab.model import SIZES, ModelConfig
from alignlab.tasks import make_batch
from alignlab.train import (
    TrainConfig,
    list_checkpoints,
    lr_at,
    resolve_model,
    train,
    train_preset,
    warmup_lr,
)

from conftest import assert_close_rel

TINY = TrainConfig(
    model=ModelConfig(d_model=16, n_layers=1, n_heads=2, n_ctx=64),
    steps=12,
    batch_size=8,
    seq_len=32,
    warmup_steps=3,
    eval_every=6,
    ckpt_every=4,
    threads=1,
    device="cpu",
)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_same_seed_gives_bit_identical_weights(tmp_path: Path) -> None:
    a = train(TINY, tmp_path / "a", progress=False).model
    b = train(TINY, tmp_path / "b", progress=False).model
    c = train(TINY.replace(seed=1), tmp_path / "c", progress=False).model
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.parametrize("task", ["induction", "chat"])
def test_grad_accumulation_equals_one_big_batch(tmp_path: Path, task: str) -> None:
    cfg = TINY.replace(task=task, steps=3, seq_len=48, ckpt_every=0, eval_every=0)
    one = _weights(train(cfg, tmp_path / "one", progress=False).model)
    four = _weights(train(cfg.replace(grad_accum=4), tmp_path / "four", progress=False).model)
    # Adam moves a weight by <= lr per step whatever its gradient's size, so the two runs agree to
    # a fraction of that travel. Where a gradient is 0 analytically (key biases: softmax ignores
    # a constant added to every key) Adam divides its rounding noise (~1e-12 here) by its
    # epsilon (1e-8): ~1e-4 of the travel, measured 1040 eps·travel (default), 1011 (avx2);
    # elsewhere <= 83 (half an ulp of a unit gain). 8192 eps is 1e-3 of the travel; a wrong
    # micro-batch or scaling would differ by O(travel).
    travel = sum(lr_at(s, cfg) for s in range(cfg.steps))
    for k in one:
        assert_close_rel(four[k], one[k], ulps=8192, what=k, scale=travel, dtype=torch.float32)


def test_training_reduces_loss_and_logs_metrics(tmp_path: Path) -> None:
    logged: list[tuple[int, dict[str, float]]] = []
    cfg = TINY.replace(task="chat", steps=60, seq_len=48, lr=1e-2, eval_every=30)
    result = train(cfg, tmp_path, on_metrics=lambda s, m, _t: logged.append((s, m)))
    evals = [m["eval_loss"] for _, m in logged if "eval_loss" in m]
    assert len(evals) >= 2
    first_train = logged[0][1]["train_loss"]
    # Untrained loss is ~ln(128) = 4.85 nats; 60 steps must learn at least the character set.
    assert first_train > 4.0
    assert evals[-1] < first_train - 1.0
    assert evals[-1] <= evals[0]
    assert result.metrics["eval_loss"] == pytest.approx(evals[-1], rel=1e-6)
    assert {"train_loss", "lr", "tokens_per_s"} <= set(logged[0][1])


def test_completion_only_masking() -> None:
    batch = make_batch("chat", 4, 48, seed=0, step=0)
    assert batch.loss_mask is not None and batch.attention_mask is not None
    # Targets are a strict subset of real tokens, never padding, never the prompt's first token.
    assert bool((batch.loss_mask <= batch.attention_mask.bool()).all())
    assert 0 < int(batch.loss_mask.sum()) < int(batch.attention_mask.sum())
    assert not bool(batch.loss_mask[:, 0].any())


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    lrs = [lr_at(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_safety_fine_tuning_uses_the_trainers_optimizer_grouping_and_warmup() -> None:
    from alignlab.model import Transformer
    from alignlab.safety._loop import WARMUP, make_adamw

    model = Transformer(TINY.model)
    decay, rest = make_adamw(model, 1e-3).param_groups
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in rest["params"])
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))
    # The shared warm-up: lr (s + 1) / WARMUP, within the two float64 roundings it takes.
    ramp = [warmup_lr(1e-3, s, WARMUP) for s in range(WARMUP)]
    for s, lr in enumerate(ramp):
        assert lr == pytest.approx(1e-3 * (s + 1) / WARMUP, rel=2 * 2.0**-52)
    assert warmup_lr(1e-3, WARMUP, WARMUP) == 1e-3 and warmup_lr(1e-3, 0, 0) == 1e-3


def test_checkpoints_are_kept_and_resume_is_noop_when_done(tmp_path: Path) -> None:
    train(TINY, tmp_path, progress=False)
    names = [p.name for p in list_checkpoints(tmp_path / "ckpt")]
    assert names == ["step-00000008", "step-00000012"]
    again = train(TINY, tmp_path, progress=False)
    assert again.resumed_from == 12


_KILL_SCRIPT = """
import sys, torch
from alignlab.model import ModelConfig
from alignlab.train import TrainConfig, train
model = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_ctx=64)
cfg = TrainConfig(model=model, steps=int(sys.argv[2]), batch_size=8, seq_len=32, ckpt_every=5,
                  eval_every=50, threads=1, device="cpu")
train(cfg, sys.argv[1], progress=False)
"""


def _run_script(out: Path, steps: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(out), str(steps)], env=env)


def test_resume_after_kill_is_bit_identical(tmp_path: Path) -> None:
    steps = 200
    ref_proc = _run_script(tmp_path / "ref", steps)
    assert ref_proc.wait(timeout=300) == 0

    proc = _run_script(tmp_path / "killed", steps)
    ckpt = tmp_path / "killed" / "ckpt"
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [int(p.name.split("-")[1]) for p in list_checkpoints(ckpt)]
        if done and max(done) >= 20:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = max(int(p.name.split("-")[1]) for p in list_checkpoints(ckpt))
    assert killed_at < steps, "the run finished before it could be killed; raise steps"

    assert _run_script(tmp_path / "killed", steps).wait(timeout=300) == 0

    def final(d: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        last = list_checkpoints(d / "ckpt")[-1]
        assert last.name == f"step-{steps:08d}"
        return load_file(str(last / "state.safetensors"))

    ref, resumed = final(tmp_path / "ref"), final(tmp_path / "killed")
    model_keys = [k for k in ref if k.startswith("model.")]
    assert model_keys and set(ref) == set(resumed)
    for k in ref:
        assert torch.equal(ref[k], resumed[k]), f"{k} differs after resume"


def test_overrides_parse_types_and_nested_keys() -> None:
    cfg = apply_overrides(
        train_preset("tiny"),
        ["steps=7", "lr=1e-3", "model.n_layers=3", "task=chat", "device=cpu"],
        resolve_model,
    )
    assert (cfg.steps, cfg.lr, cfg.model.n_layers, cfg.task) == (7, 1e-3, 3, "chat")
    cfg = apply_overrides(cfg, ["model=al-1m"], resolve_model)
    assert cfg.model == SIZES["al-1m"]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("stepz=3", ["unknown config key 'stepz'", "steps"]),
        ("steps=abc", ["steps expects an integer", "'abc'"]),
        ("lr=fast", ["lr expects a number"]),
        ("model.d_model=31", ["d_model (31) must be divisible by n_heads"]),
        ("model=al-7", ["unknown model preset 'al-7'"]),
        ("steps=-1", ["steps must be an integer in [1, 10000000], got -1"]),
        ("seq_len=4096", ["exceeds model.n_ctx"]),
        ("noequals", ["key=value"]),
    ],
)
def test_bad_overrides_raise_clear_errors(override: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(train_preset("tiny"), [override], resolve_model)
    for w in words:
        assert w in str(info.value)


def test_unknown_preset_and_task() -> None:
    with pytest.raises(ConfigError, match="alignlab presets"):
        train_preset("nope")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        make_batch("nope", 1, 8, 0, 0)
