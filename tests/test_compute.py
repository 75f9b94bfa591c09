"""Hardware settings of a run: mixed precision, gradient checkpointing, LoRA, devices; and the
study's given base models (`StudySpec.base_models`, `Compute`) as configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.model.config import SIZES
from alignlab.tasks import make_batch
from alignlab.train import TrainConfig, train
from alignlab.train.compute import LORA_TARGETS, Compute, autocast

TINY = TrainConfig(
    model=SIZES["al-10k"], task="chat", steps=12, batch_size=8, seq_len=48, eval_every=0, ckpt_every=0
).replace(device="cpu", threads=1)


def _train(tmp_path: Path, name: str, **kw: object) -> dict[str, torch.Tensor]:
    return train(TINY.replace(**kw), tmp_path / name, progress=False).model.state_dict()


def test_gradient_checkpointing_trains_the_same_weights(tmp_path: Path) -> None:
    plain, ckpt = _train(tmp_path, "plain"), _train(tmp_path, "ckpt", grad_checkpointing=True)
    # Recomputation replays the same CPU ops in the same order: bit for bit the same weights.
    assert plain.keys() == ckpt.keys()
    assert all(torch.equal(plain[k], ckpt[k]) for k in plain)


def test_bf16_autocast_changes_the_loss_by_rounding_only() -> None:
    torch.manual_seed(0)
    from alignlab.model import Transformer

    model = Transformer(SIZES["al-30k"]).eval()
    batch = make_batch("chat", 16, 48, 0, 0, "train")
    device = torch.device("cpu")
    with torch.no_grad():
        exact = model(batch.tokens, "loss", batch.loss_mask, batch.attention_mask)
        with autocast("bf16", device):
            mixed = model(batch.tokens, "loss", batch.loss_mask, batch.attention_mask)
    eps = torch.finfo(torch.bfloat16).eps
    diff = abs(mixed.item() - exact.item())
    # bf16 keeps 8 bits of mantissa: every matrix product rounds its inputs by eps/2 relative, and
    # through 2 layers the loss moves by at most a few eps of its scale; never exactly 0 (autocast
    # ran in bf16), far below a layout-sized error. Measured 0.0002-0.002 eps on this untrained
    # model, whose near-uniform logits damp the rounding.
    assert 0 < diff <= 16 * eps * exact.item()


def test_lora_trains_a_low_rank_update_of_the_targets_only(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from alignlab.train.loop import initial_model

    start = initial_model(TINY, None, torch.device("cpu")).state_dict()
    after = _train(tmp_path, "lora", lora_rank=2)
    assert after.keys() == start.keys()  # merged back: an ordinary model, no adapter tensors
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed and all(any(t in k for t in LORA_TARGETS) and k.endswith("weight") for k in changed)
    for k in changed:
        s = torch.linalg.svdvals((after[k] - start[k]).double())
        # W + (alpha/r) B A has rank <= r = 2; the rest is float32 rounding of W (~eps |W|).
        assert s[2] <= 1e-4 * s[0] < s[1], (k, s[:4])


def test_fp16_without_cuda_and_bad_values_are_clear_errors(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
            train(TINY.replace(precision="fp16"), tmp_path / "x", progress=False)
    for bad in ({"precision": "fp8"}, {"lora_rank": -1}, {"device": "tpu"}):
        with pytest.raises(ConfigError):
            Compute(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="precision"):
        TINY.replace(precision="half")


def test_new_fields_keep_old_run_ids_and_count_when_set() -> None:
    ident = TINY.identity()
    assert not {"precision", "lora_rank", "lora_alpha", "grad_checkpointing"} & set(ident)
    assert TINY.replace(grad_checkpointing=True).identity() == ident  # execution only
    assert TINY.replace(precision="bf16").identity() != ident
    assert TINY.replace(lora_rank=4).identity() != ident
    cfg = Compute(device="cpu", precision="bf16", lora_rank=4).apply(TINY)
    assert (cfg.device, cfg.precision, cfg.lora_rank) == ("cpu", "bf16", 4)


def test_study_spec_given_base_models(tmp_path: Path) -> None:
    from alignlab.studies.spec import StudySpec
    from alignlab.train.given_base import size_params

    spec = StudySpec()
    d = spec.to_dict()
    assert "base_models" not in d and "compute" not in d  # the family's study keeps its id
    with pytest.raises(ConfigError, match="not model directories"):
        dataclasses.replace(spec, base_models=(str(tmp_path / "missing"),))
    big, small = SIZES["al-100k"], SIZES["al-30k"]
    dirs = []
    for name, cfg in (("big", big), ("small", small)):
        from alignlab.model import Transformer

        Transformer(cfg).save_pretrained(str(tmp_path / name))
        dirs.append(str(tmp_path / name))
    given = dataclasses.replace(spec, base_models=tuple(dirs), compute=Compute(precision="bf16"))
    assert given.sizes == (dirs[1], dirs[0])  # the size axis is the checkpoints, smallest first
    assert [size_params(s) for s in given.sizes] == [
        small.param_counts()["total"],
        big.param_counts()["total"],
    ]
    back = StudySpec.from_dict(given.to_dict())
    assert back == given and back.compute.precision == "bf16"
