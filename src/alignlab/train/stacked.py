"""Stacked training: N same-shape configurations trained as one batched model.

Each member keeps everything a separate run has: its own initialisation, data stream (its batch
function called with its own seed and step), learning-rate schedule position, gradient-norm
clipping, AdamW state and checkpoints, written in the normal format into the run directory a
separate run would use. So a stacked run and a separate run of the same config share one run id
and one cache, either can resume the other's checkpoints, and a stacked run killed mid-way
resumes to the same weights as one left alone. Members differ from their separate runs by
float32 rounding only (the batched matmuls and the loss sum in another order; tests/test_stacked.py
bounds it).

Where it pays: stacking amortises each op's fixed cost over the members, so the gain is large
where ops are tiny (small batches, small models, and GPUs, which tiny models leave idle) and
vanishes on a CPU once one member's op is big enough to run at the kernel's speed (measured in
benchmarks/RESULTS.md, "many models"). `train_runs_stacked` falls back to `train_run` for a
group of one.

Example:
    >>> from alignlab.store import Store
    >>> from alignlab.train import train_preset
    >>> cfgs = [train_preset("tiny").replace(seed=s) for s in range(4)]
    >>> results = train_runs_stacked(cfgs, Store())  # [(run, trained_now), ...]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from alignlab.errors import ConfigError, DivergenceError
from alignlab.model.hf import load
from alignlab.model.transformer import Transformer
from alignlab.store import Run, Store
from alignlab.tasks import Batch
from alignlab.tasks.base import BatchFn
from alignlab.train._stacked_model import Layout, StackedTransformer
from alignlab.train._stacked_optim import adamw_rows_, clip_rows_
from alignlab.train.checkpoint import load_latest, save_checkpoint
from alignlab.train.config import TrainConfig
from alignlab.train.loop import (
    MetricsFn,
    TrainResult,
    _check_weights_finite,
    _IntervalLosses,
    _progress,
    evaluate,
    initial_model,
    lr_at,
    make_optimizer,
)
from alignlab.train.preflight import preflight, resolve_device
from alignlab.train.run import _fail_run, _finish_run, _open_run, train_run

if TYPE_CHECKING:
    from alignlab.train.base_model import BaseSpec

#: What a stacked member ends with: its result, or the divergence that ended it.
Outcome = TrainResult | DivergenceError


def shape_key(cfg: TrainConfig, init_model: Transformer | None = None) -> tuple[Any, ...]:
    """Configs with equal keys can be trained in one stack: same architecture (the parent's,
    when fine-tuning), batch shape, micro-batching, device and threads."""
    model = init_model.cfg if init_model is not None else cfg.model
    return (
        model.replace(init_std=0.0),  # the init scale shapes nothing
        cfg.batch_size,
        cfg.seq_len,
        cfg.grad_accum,
        str(resolve_device(cfg.device)),
        cfg.resolved_threads(),
    )


@dataclass
class _Member:
    """One configuration's state outside the stacked tensors."""

    index: int  # position in the caller's lists
    cfg: TrainConfig
    out: Path
    make: BatchFn
    batch_fn: BatchFn | None
    emit: MetricsFn
    model: Transformer  # holds the member's weights for checkpoints and evaluation
    optimizer: torch.optim.AdamW  # its state is filled in only to write checkpoints
    rng: torch.Tensor  # the global RNG state a separate run would checkpoint
    start: int
    step: int  # completed steps
    adam_step: int
    losses: _IntervalLosses
    lr: float = 0.0

    @property
    def log_every(self) -> int:
        return max(1, min(50, self.cfg.steps // 20))


def _start(
    index: int,
    cfg: TrainConfig,
    out: Path,
    emit: MetricsFn | None,
    init_model: Transformer | None,
    batch_fn: BatchFn | None,
    device: torch.device,
) -> tuple[_Member, dict[str, torch.Tensor]]:
    """A member initialised (or restored) exactly as `alignlab.train.train` does, and its AdamW
    moments by parameter name (empty before its first step)."""
    make = preflight(cfg, batch_fn)
    model = initial_model(cfg, init_model, device)
    optimizer = make_optimizer(model, cfg)
    meta = load_latest(out / "ckpt", model, optimizer)
    start = int(meta["step"]) if meta else 0
    names = {id(p): n for n, p in model.named_parameters()}
    moments: dict[str, torch.Tensor] = {}
    adam_step = 0
    for p, state in optimizer.state.items():
        moments["exp_avg." + names[id(p)]] = state["exp_avg"]
        moments["exp_avg_sq." + names[id(p)]] = state["exp_avg_sq"]
        adam_step = int(state["step"])
    member = _Member(
        index=index,
        cfg=cfg,
        out=out,
        make=make,
        batch_fn=batch_fn,
        emit=emit or (lambda _s, _m, _t: None),
        model=model,
        optimizer=optimizer,
        rng=torch.get_rng_state(),
        start=start,
        step=start,
        adam_step=adam_step,
        losses=_IntervalLosses(cfg, meta.get("interval_losses", []) if meta else []),
    )
    return member, moments


class _Stack:
    """The members' weights and AdamW moments as ``[N, P]`` tensors, one row per member."""

    def __init__(
        self, layout: Layout, members: list[_Member], moments: list[dict[str, torch.Tensor]]
    ) -> None:
        self.layout = layout
        self.members = members
        self.flat = torch.stack([layout.row(layout.params_of(m.model)) for m in members]).requires_grad_()
        self.exp_avg = torch.stack([self._moment_row(m, "exp_avg.") for m in moments])
        self.exp_avg_sq = torch.stack([self._moment_row(m, "exp_avg_sq.") for m in moments])

    def _moment_row(self, moments: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        if not moments:
            return torch.zeros(self.layout.width, device=self.flat.device)
        return self.layout.row([moments[prefix + s.name] for s in self.layout.segments])

    def keep(self, rows: list[int]) -> None:
        """Drop every member not in ``rows`` (finished or failed)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.flat.device)
        self.members = [self.members[i] for i in rows]
        self.flat = self.flat.detach().index_select(0, index).requires_grad_()
        self.exp_avg = self.exp_avg.index_select(0, index)
        self.exp_avg_sq = self.exp_avg_sq.index_select(0, index)

    @torch.no_grad()
    def sync_model(self, row: int) -> Transformer:
        """Member ``row``'s `Transformer` holding its current weights."""
        member = self.members[row]
        for p, w in zip(
            self.layout.params_of(member.model), self.layout.split_row(self.flat[row]), strict=True
        ):
            p.copy_(w)
        return member.model

    @torch.no_grad()
    def save(self, row: int) -> None:
        """Checkpoint member ``row`` in `alignlab.train.train`'s format (model, AdamW state with
        its parameter groups, RNG state, config, the log interval's pending losses)."""
        m = self.members[row]
        model = self.sync_model(row)
        step_t = torch.tensor(float(m.adam_step))
        params = self.layout.params_of(model)
        avg, sq = self.layout.split_row(self.exp_avg[row]), self.layout.split_row(self.exp_avg_sq[row])
        for p, a, s in zip(params, avg, sq, strict=True):
            m.optimizer.state[p] = {"step": step_t.clone(), "exp_avg": a, "exp_avg_sq": s}
        for group in m.optimizer.param_groups:
            group["lr"] = m.lr
        torch.set_rng_state(m.rng)
        meta = {"config": m.cfg.identity(), "interval_losses": m.losses.pending()}
        save_checkpoint(m.out / "ckpt", m.step, model, m.optimizer, meta)
        m.optimizer.state.clear()


def _stack_batches(batches: list[Batch]) -> Batch:
    """One ``[N, b, t]`` batch; a member without a mask gets the all-true one that means the same."""

    def stacked(get: Callable[[Batch], torch.Tensor | None], fill: torch.Tensor) -> torch.Tensor | None:
        parts = [get(b) for b in batches]
        if all(p is None for p in parts):
            return None
        return torch.stack([fill if p is None else p.to(fill.dtype) for p in parts])

    tokens = torch.stack([b.tokens for b in batches])
    ones = torch.ones_like(batches[0].tokens, dtype=torch.bool)
    return Batch(
        tokens,
        stacked(lambda b: b.loss_mask, ones),
        stacked(lambda b: b.attention_mask, ones.long()),
    )


def _micro(batch: Batch, lo: int, hi: int) -> Batch:
    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[:, lo:hi]

    return Batch(batch.tokens[:, lo:hi], cut(batch.loss_mask), cut(batch.attention_mask))


def _targets(batch: Batch) -> torch.Tensor:
    """Target tokens per member (as `alignlab.train.loop` counts them)."""
    n, b, t = batch.tokens.shape
    if batch.loss_mask is not None:
        return batch.loss_mask[..., 1:].reshape(n, -1).sum(1)
    return torch.full((n,), b * (t - 1), device=batch.tokens.device)


def train_stacked(
    cfgs: Sequence[TrainConfig],
    out_dirs: Sequence[str | Path],
    *,
    on_metrics: Sequence[MetricsFn | None] | None = None,
    init_models: Sequence[Transformer | None] | None = None,
    batch_fns: Sequence[BatchFn | None] | None = None,
    on_finish: Callable[[int, Outcome], None] | None = None,
    progress: bool = False,
) -> list[Outcome]:
    """Train same-shape ``cfgs`` as one stacked model, each into its ``out_dirs`` entry, resuming.

    Each member behaves as `alignlab.train.train` with the same arguments would (its metrics,
    evaluations, checkpoints and final result), to float32 rounding. A member whose loss or
    weights become non-finite stops there with a `DivergenceError` (returned, not raised: the
    others train on, untouched, as their rows never mix with its row).

    Args:
        cfgs: the configurations; `shape_key` must agree across them.
        out_dirs: a run directory per config (checkpoints in ``out_dir/ckpt``).
        on_metrics: per config, called as ``on_metrics(step, {name: value}, tokens_seen)``.
        init_models: per config, fine-tune from these weights instead of a fresh initialisation.
        batch_fns: per config, a data recipe replacing ``cfg.task`` (see `alignlab.train.train`).
        on_finish: called as ``on_finish(i, outcome)`` as soon as config ``i`` finishes or fails.
        progress: show one progress bar for the stack.

    Returns:
        Per config, its `TrainResult` or the `DivergenceError` that stopped it.

    Raises:
        ConfigError: the configs differ in shape, a list has the wrong length, or a config fails
            `preflight`; nothing is trained then.
    """
    n = len(cfgs)
    lists = {
        "out_dirs": out_dirs,
        "on_metrics": on_metrics,
        "init_models": init_models,
        "batch_fns": batch_fns,
    }
    for name, values in lists.items():
        if values is not None and len(values) != n:
            raise ConfigError(f"{name} has {len(values)} entries for {n} configs; give one per config")
    if n == 0:
        return []
    inits = list(init_models or [None] * n)
    keys = {shape_key(c, i) for c, i in zip(cfgs, inits, strict=True)}
    if len(keys) > 1:
        raise ConfigError(
            "stacked training needs configs of one shape (model, batch_size, seq_len, grad_accum, "
            "device, threads); group them first (train_runs_stacked does)"
        )
    torch.set_num_threads(cfgs[0].resolved_threads())
    device = resolve_device(cfgs[0].device)
    fns = list(batch_fns or [None] * n)
    emits = list(on_metrics or [None] * n)
    started = [
        _start(i, c, Path(out_dirs[i]), emits[i], inits[i], fns[i], device) for i, c in enumerate(cfgs)
    ]
    members = [m for m, _ in started]
    layout = Layout.of(members[0].model, members[0].optimizer)
    for m in members[1:]:
        if Layout.of(m.model, m.optimizer) != layout:
            raise ConfigError("stacked members must have identical parameter layouts")
    outcomes: dict[int, Outcome] = {}
    t0 = time.perf_counter()

    def finish(m: _Member, outcome: Outcome) -> None:
        outcomes[m.index] = outcome
        if on_finish is not None:
            on_finish(m.index, outcome)

    for m in members:
        if m.step >= m.cfg.steps:  # its final checkpoint exists: only the evaluation is left
            finish(m, _final(m, m.model, device, t0))
    todo = [(m, mom) for m, mom in started if m.step < m.cfg.steps]
    if todo:
        stack = _Stack(layout, [m for m, _ in todo], [mom for _, mom in todo])
        _run(stack, device, t0, finish, progress)
    return [outcomes[i] for i in range(n)]


def _run(
    stack: _Stack, device: torch.device, t0: float, finish: Callable[[_Member, Outcome], None], progress: bool
) -> None:
    """The training loop over the stack, until every member finished or failed."""
    first = stack.members[0].cfg
    model = StackedTransformer(stack.members[0].model.cfg)
    layout = stack.layout
    micro = first.batch_size // first.grad_accum
    tokens_per_step = first.batch_size * first.seq_len
    total = max(m.cfg.steps for m in stack.members)
    bar = _progress(progress, total, min(m.step for m in stack.members))
    while stack.members:
        members = stack.members
        lrs = [lr_at(m.step, m.cfg) for m in members]
        batch = _stack_batches(
            [m.make(m.cfg.batch_size, m.cfg.seq_len, m.cfg.seed, m.step, "train").to(device) for m in members]
        )
        total_targets = _targets(batch)
        if not bool((total_targets > 0).all()):
            raise ConfigError("a stacked member's batch has no target tokens; its data recipe is broken")
        step_loss = torch.zeros(len(members), device=device)
        for k in range(first.grad_accum):
            part = _micro(batch, k * micro, (k + 1) * micro)
            views = stack.layout.views(stack.flat)
            sums, _ = model.loss_sums(views, part.tokens, part.loss_mask, part.attention_mask)
            # Each micro-batch weighted by its share of the member's target tokens, as in `train`.
            loss = sums / total_targets
            loss.sum().backward()
            step_loss += loss.detach()
        grad = stack.flat.grad
        assert grad is not None
        stack.flat.grad = None
        clip_rows_(grad, [m.cfg.grad_clip for m in members])
        for m in members:
            m.adam_step += 1
        groups = range(len(members[0].optimizer.param_groups))
        adamw_rows_(
            stack.flat.data,
            stack.exp_avg,
            stack.exp_avg_sq,
            grad,
            lrs=lrs,
            steps=[m.adam_step for m in members],
            decay=[
                (*layout.group_span(g), [m.optimizer.param_groups[g]["weight_decay"] for m in members])
                for g in groups
            ],
            betas=members[0].optimizer.defaults["betas"],
            eps=members[0].optimizer.defaults["eps"],
        )
        values = step_loss.tolist()
        done_rows, keep = [], []
        # Three passes (log, evaluate, checkpoint), so an exception from a metrics callback leaves
        # every member at the same checkpoint, and the rerun repeats exactly the same stacks.
        for phase in ("log", "eval", "ckpt"):
            for row, m in enumerate(members):
                if row in done_rows:
                    continue
                try:
                    if phase == "log":
                        m.step += 1
                        m.lr = lrs[row]
                        m.losses.add(step_loss[row])
                        if not math.isfinite(values[row]):
                            m.losses.settle(m.step)  # raises, naming the step
                    _bookkeep(stack, row, phase, device, t0, tokens_per_step)
                except DivergenceError as e:
                    done_rows.append(row)
                    finish(m, e)
        for row, m in enumerate(members):
            if row in done_rows:
                continue
            if m.step >= m.cfg.steps:
                finish(m, _final(m, stack.sync_model(row), device, t0))
            else:
                keep.append(row)
        if len(keep) < len(members):
            stack.keep(keep)
        if stack.members:
            lead = stack.members[0]
            bar.update(lead.step, values[members.index(lead)], 0.0)
    bar.close()


def _bookkeep(
    stack: _Stack, row: int, phase: str, device: torch.device, t0: float, tokens_per_step: int
) -> None:
    """Member ``row``'s logging, evaluation or checkpoint after its step, on `train`'s schedule."""
    m = stack.members[row]
    cfg, done = m.cfg, m.step
    if phase == "log" and (done % m.log_every == 0 or done == cfg.steps):
        elapsed = time.perf_counter() - t0
        tps = (done - m.start) * tokens_per_step / max(elapsed, 1e-9)
        m.emit(done, {"train_loss": m.losses.take_mean(done), "lr": m.lr, "tokens_per_s": tps}, 0)
    elif phase == "eval" and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
        m.losses.settle(done)
        m.emit(done, evaluate(stack.sync_model(row), cfg, device, m.batch_fn), done * tokens_per_step)
    elif phase == "ckpt" and ((cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps):
        m.losses.settle(done)
        _check_weights_finite(stack.sync_model(row), done, cfg)
        stack.save(row)


def _final(m: _Member, model: Transformer, device: torch.device, t0: float) -> Outcome:
    """The member's `TrainResult`, as `train` builds it after its loop."""
    cfg = m.cfg
    try:
        _check_weights_finite(model, cfg.steps, cfg)
    except DivergenceError as e:
        return e
    elapsed = time.perf_counter() - t0
    tokens_per_step = cfg.batch_size * cfg.seq_len
    model.eval()
    final = evaluate(model, cfg, device, m.batch_fn)
    steps_run = cfg.steps - m.start
    return TrainResult(
        model=model,
        steps=cfg.steps,
        tokens=cfg.steps * tokens_per_step,
        train_seconds=elapsed,
        tokens_per_s=steps_run * tokens_per_step / elapsed if steps_run else 0.0,
        resumed_from=m.start,
        metrics=final,
    )


def train_runs_stacked(
    cfgs: Sequence[TrainConfig],
    store: Store,
    progress: bool = False,
    *,
    kind: str = "train",
    recipes: Sequence[Mapping[str, Any] | None] | None = None,
    batch_fns: Sequence[BatchFn | None] | None = None,
    init_model_dirs: Sequence[str | Path | None] | None = None,
    raise_diverged: bool = True,
    max_stack: int | None = None,
) -> list[tuple[Run, bool]]:
    """`alignlab.train.train_run` for each config, same-shape ones trained stacked.

    Same run ids, cache and semantics as calling `train_run` on each: finished runs are returned
    at once (``trained_now`` False), interrupted ones resume from their checkpoints, and each
    trained run ends ``done`` with its model and summary (which also records ``stacked``, the
    stack's size), or ``failed``. Configs are grouped by `shape_key`; a group of one trains
    through `train_run` itself.

    Args:
        cfgs: the configurations.
        store: the run store.
        progress: show a progress bar per stack.
        kind: the runs' kind in the store (one for all).
        recipes: per config, what else determines the result (see `train_run`).
        batch_fns: per config, its data recipe's batch function.
        init_model_dirs: per config, fine-tune from this model directory (name it in the recipe).
        raise_diverged: after every other run finished, raise the first `DivergenceError`
            (as `train_run` would); False returns the diverged runs (status ``failed``) instead.
        max_stack: the most members per stack (a larger group is split into near-equal stacks);
            None: on a CPU about 8K tokens per stacked step (at least 4 members), the fastest
            measured; 256 on a GPU.

    Returns:
        ``(run, trained_now)`` per config, in order.

    Raises:
        ConfigError: a config fails `preflight`, a parent model is unusable, or a list has the
            wrong length; nothing is stored then.
        DivergenceError: with ``raise_diverged``, a run's loss or weights became non-finite.
    """
    n = len(cfgs)
    for name, values in (
        ("recipes", recipes),
        ("batch_fns", batch_fns),
        ("init_model_dirs", init_model_dirs),
    ):
        if values is not None and len(values) != n:
            raise ConfigError(f"{name} has {len(values)} entries for {n} configs; give one per config")
    recs = list(recipes or [None] * n)
    fns = list(batch_fns or [None] * n)
    dirs = list(init_model_dirs or [None] * n)
    # Everything that can be refused is checked before any run row exists, as in `train_run`.
    for c, f in zip(cfgs, fns, strict=True):
        preflight(c, f)
    inits = [load(d) if d is not None else None for d in dirs]
    out: list[tuple[Run, bool]] = []
    jobs: dict[str, _Job] = {}  # a config given twice trains once
    for i, c in enumerate(cfgs):
        run, done = _open_run(c, store, kind, recs[i])
        out.append((run, False))
        if not done and run.id not in jobs:
            jobs[run.id] = _Job(c, run, recs[i], fns[i], inits[i], dirs[i])
    groups: dict[tuple[Any, ...], list[_Job]] = {}
    for job in jobs.values():
        groups.setdefault(shape_key(job.cfg, job.init), []).append(job)
    diverged: list[DivergenceError] = []
    for group in groups.values():
        for chunk in _chunks(group, max_stack or _default_max_stack(group[0].cfg)):
            diverged += _train_group(store, kind, chunk, progress)
    trained = {rid: store.get(rid) for rid in jobs}
    if diverged and raise_diverged:
        raise diverged[0]
    return [(trained[run.id], True) if run.id in trained else (run, False) for run, _ in out]


def _default_max_stack(cfg: TrainConfig) -> int:
    if resolve_device(cfg.device).type == "cuda":
        return 256
    # About 8K tokens per stacked step (benchmarks/RESULTS.md, "many models"): at batch 64 x 38
    # tokens 3-member stacks beat 12-member ones by 5-10% at every size, at batch 16 x 38 12
    # members beat 3 (2.4x vs 2.1x separate runs at al-10k).
    return max(4, 8192 // (cfg.batch_size * cfg.seq_len))


def _chunks(items: list[_Job], most: int) -> list[list[_Job]]:
    """``items`` in ceil(len / most) consecutive, near-equal parts."""
    parts = -(-len(items) // max(most, 1))
    size, extra = divmod(len(items), parts)
    out, at = [], 0
    for i in range(parts):
        n = size + (i < extra)
        out.append(items[at : at + n])
        at += n
    return out


@dataclass
class _Job:
    """A run `train_runs_stacked` has to train."""

    cfg: TrainConfig
    run: Run
    recipe: Mapping[str, Any] | None
    batch_fn: BatchFn | None
    init: Transformer | None
    init_dir: str | Path | None


def _train_group(store: Store, kind: str, jobs: list[_Job], progress: bool) -> list[DivergenceError]:
    """Train one group of same-shape jobs (a group of one through `train_run`); the divergences."""
    if len(jobs) == 1:
        j = jobs[0]
        try:
            train_run(
                j.cfg,
                store,
                progress,
                kind=kind,
                recipe=j.recipe,
                batch_fn=j.batch_fn,
                init_model_dir=j.init_dir,
            )
        except DivergenceError as e:
            return [e]
        return []
    t0 = time.time()
    pending = set(range(len(jobs)))
    diverged: list[DivergenceError] = []

    def on_finish(i: int, outcome: Outcome) -> None:
        pending.discard(i)
        if isinstance(outcome, DivergenceError):
            _fail_run(store, jobs[i].run, outcome)
            diverged.append(outcome)
        else:
            _finish_run(
                store, jobs[i].run, jobs[i].cfg, jobs[i].recipe, outcome, time.time() - t0, stacked=len(jobs)
            )

    def logger(run: Run) -> MetricsFn:
        return lambda step, values, tokens: store.log_metrics(run.id, step, values, tokens=tokens or None)

    try:
        train_stacked(
            [j.cfg for j in jobs],
            [j.run.dir for j in jobs],
            on_metrics=[logger(j.run) for j in jobs],
            init_models=[j.init for j in jobs],
            batch_fns=[j.batch_fn for j in jobs],
            on_finish=on_finish,
            progress=progress,
        )
    except BaseException as e:
        for i in pending:
            _fail_run(store, jobs[i].run, e)
        raise
    return diverged


def train_bases_stacked(
    store: Store, jobs: Sequence[tuple[str, int]], spec: BaseSpec | None = None, workers: int = 1
) -> None:
    """Train the base models of ``jobs`` (``(size, seed)`` pairs) stacked, one stack per size,
    so that `alignlab.train.base_model.base_run` then finds them done in the store.

    Bases that `base_run` would adopt from the vendored models are skipped. A base that
    diverges is left ``failed``; `base_run` retrains it alone and reports it as usual. Stacks
    run in up to ``workers`` spawned processes (one thread each), largest first.
    """
    from alignlab.model.config import SIZES
    from alignlab.train.base_model import BaseSpec, _vendored, base_config

    spec = spec or BaseSpec()
    seeds: dict[str, list[int]] = {}
    for size, seed in jobs:
        if _vendored(size, seed, base_config(size, seed, spec), spec) is None:
            seeds.setdefault(size, []).append(seed)
    sizes = sorted(seeds, key=lambda s: -SIZES[s].param_counts()["total"])
    root = str(Path(store.root).resolve())
    if workers <= 1 or len(sizes) == 1:
        for size in sizes:
            _train_bases(size, seeds[size], spec, root)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn: forking a process that already ran torch can deadlock its thread pools.
    with ProcessPoolExecutor(
        max_workers=min(workers, len(sizes)), mp_context=mp.get_context("spawn")
    ) as pool:
        for fut in [pool.submit(_train_bases, size, seeds[size], spec, root) for size in sizes]:
            fut.result()


def _train_bases(size: str, seeds: list[int], spec: BaseSpec, root: str) -> None:
    from alignlab.train.base_model import base_batch_fn, base_config

    train_runs_stacked(
        [base_config(size, seed, spec) for seed in seeds],
        Store(root),
        kind="base",
        recipes=[{"base": spec.to_dict()}] * len(seeds),
        batch_fns=[base_batch_fn(spec)] * len(seeds),
        raise_diverged=False,
    )


__all__ = ["Outcome", "shape_key", "train_bases_stacked", "train_runs_stacked", "train_stacked"]
