"""Resume: a run killed mid log interval and resumed logs the curve an uninterrupted run logs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from alignlab.model.config import SIZES
from alignlab.store import Store
from alignlab.train import TrainConfig, run_summary, train_run

torch.set_num_threads(1)

# 40 steps log every 2 steps (train logs max(1, min(50, steps // 20))); a checkpoint every 5
# steps falls inside a log interval, which is where the first log after a resume went wrong.
CFG = TrainConfig(
    model=SIZES["al-10k"],
    steps=40,
    batch_size=4,
    seq_len=16,
    warmup_steps=4,
    eval_every=10,
    ckpt_every=5,
    threads=1,
)
KILL_AT = 8  # after the checkpoint at step 5, before the one at 10: resumes from step 5


class _Killed(Exception):
    pass


class _KilledAt(Store):
    """A store whose process "dies" when step ``KILL_AT``'s training loss is logged."""

    def log_metrics(
        self, run_id: str, step: int, values: Mapping[str, float], tokens: int | None = None
    ) -> None:
        if step == KILL_AT and "train_loss" in values:
            raise _Killed
        super().log_metrics(run_id, step, values, tokens)


def _curve(store: Store, run_id: str) -> list[tuple[int, str, float]]:
    # Throughput is wall-clock; every other metric is a function of the weights and the data.
    return [(r["step"], r["name"], r["value"]) for r in store.metrics(run_id) if r["name"] != "tokens_per_s"]


def test_resumed_run_logs_the_uninterrupted_curve(tmp_path: Path) -> None:
    whole = Store(tmp_path / "whole")
    run, _ = train_run(CFG, whole, progress=False)
    expected = _curve(whole, run.id)

    with pytest.raises(_Killed):
        train_run(CFG, _KilledAt(tmp_path / "killed"), progress=False)
    resumed_store = Store(tmp_path / "killed")
    resumed, trained = train_run(CFG, resumed_store, progress=False)
    assert trained and resumed.id == run.id
    assert run_summary(resumed)["resumed_from"] == 5  # the resume really started mid-interval

    got = _curve(resumed_store, resumed.id)
    steps = sorted({s for s, name, _ in got if name == "train_loss"})
    assert steps == list(range(2, 41, 2))
    # Exact equality, not a tolerance: resume is bit-exact (same weights, same batches, same
    # order of float additions, same machine and thread count), so any difference is a bug such
    # as the first log after the resume averaging only the steps since the resume.
    assert got == expected
