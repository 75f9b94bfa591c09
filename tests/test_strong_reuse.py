"""A finished run is reused, judged by counting training calls (never by wall time).

``train_run`` hashes the config into the run id; asking again for a finished config must not call
the training loop at all, while a different config must. The store's row count alone would not
show a retrain into the same row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alignlab.model import ModelConfig
from alignlab.store import Store
from alignlab.train import TrainConfig, train_run
from alignlab.train import run as run_mod

CFG = TrainConfig(
    model=ModelConfig(d_model=16, n_layers=1, n_heads=2, n_ctx=32),
    steps=4,
    batch_size=4,
    seq_len=16,
    warmup_steps=1,
    eval_every=0,
    ckpt_every=0,
    threads=1,
    device="cpu",
)


def test_finished_run_is_reused_without_calling_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = run_mod.train

    def counting(cfg: TrainConfig, *args: Any, **kwargs: Any) -> Any:
        calls.append(cfg.steps)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(run_mod, "train", counting)
    store = Store(tmp_path / "store")
    first, trained = train_run(CFG, store, progress=False)
    assert trained and calls == [4]
    weights = (first.dir / "model" / "model.safetensors").read_bytes()

    again, trained = train_run(CFG, store, progress=False)
    assert not trained and calls == [4]  # no second call
    assert again.id == first.id and again.status == "done"
    assert (again.dir / "model" / "model.safetensors").read_bytes() == weights

    other, trained = train_run(CFG.replace(steps=5), store, progress=False)
    assert trained and calls == [4, 5] and other.id != first.id
    assert len(store.runs()) == 2
