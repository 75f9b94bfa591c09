"""The training loop: plain, readable, deterministic, resumable.

Deliberately not the Hugging Face Trainer: on tiny CPU models its per-step overhead dominates, and
a researcher should be able to read every line that touches the weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignlab.errors import DivergenceError
from alignlab.model.transformer import Transformer
from alignlab.tasks import Batch, get_task, stream_seed
from alignlab.tasks.base import BatchFn
from alignlab.tasks.induction import repeat_halves
from alignlab.train.checkpoint import load_latest, save_checkpoint
from alignlab.train.compute import apply_lora, autocast, grad_scaler, merge_lora
from alignlab.train.config import TrainConfig
from alignlab.train.preflight import preflight, resolve_device

MetricsFn = Callable[[int, dict[str, float], int], None]
EVAL_BATCHES = 4


@dataclass
class TrainResult:
    """What `train` returns. ``metrics`` holds the final evaluation."""

    model: Transformer
    steps: int
    tokens: int
    train_seconds: float
    tokens_per_s: float
    resumed_from: int
    metrics: dict[str, float] = field(default_factory=dict)


def warmup_lr(lr: float, step: int, warmup_steps: int) -> float:
    """``lr`` ramped up linearly over the first ``warmup_steps`` steps (``lr / warmup_steps`` at
    step 0), then ``lr``; no warm-up when ``warmup_steps`` is 0."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr`` — a pure function of the step,
    so resuming needs no scheduler state."""
    if step < cfg.warmup_steps:
        return warmup_lr(cfg.lr, step, cfg.warmup_steps)
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def grouped_adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.95) with ``weight_decay`` on the matrices only.

    Decaying gains and biases pulls LayerNorm towards zero for no benefit (the GPT-2/Pythia
    convention).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA freezes the rest
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """`grouped_adamw` at the config's learning rate and weight decay."""
    return grouped_adamw(model, cfg.lr, cfg.weight_decay)


def _forward_loss(model: Transformer, batch: Batch) -> torch.Tensor:
    return model(
        batch.tokens,
        return_type="loss",
        loss_mask=batch.loss_mask,
        attention_mask=batch.attention_mask,
    )


def _n_targets(batch: Batch) -> int:
    if batch.loss_mask is not None:
        return int(batch.loss_mask[:, 1:].sum())
    return batch.tokens.shape[0] * (batch.tokens.shape[1] - 1)


def _slice(batch: Batch, lo: int, hi: int) -> Batch:
    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[lo:hi]

    return Batch(batch.tokens[lo:hi], cut(batch.loss_mask), cut(batch.attention_mask))


@torch.no_grad()
def evaluate(
    model: Transformer,
    cfg: TrainConfig,
    device: torch.device,
    batch_fn: BatchFn | None = None,
) -> dict[str, float]:
    """Held-out loss (and, for the induction task, loss on the first vs the repeated half)."""
    make = batch_fn or get_task(cfg.task)
    was_training = model.training
    model.eval()
    losses, first, repeat = [], [], []
    for i in range(EVAL_BATCHES):
        batch = make(cfg.batch_size, cfg.seq_len, cfg.seed, i, "eval").to(device)
        if batch_fn is None and cfg.task == "induction":
            logits = model(batch.tokens)
            per_tok = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), batch.tokens[:, 1:], reduction="none"
            )
            a, b = repeat_halves(cfg.seq_len)
            # per_tok[:, t-1] is the loss of predicting token t.
            first.append(per_tok[:, a.start - 1 : a.stop - 1].mean().item())
            repeat.append(per_tok[:, b.start - 1 : b.stop - 1].mean().item())
            losses.append(per_tok.mean().item())
        else:
            losses.append(_forward_loss(model, batch).item())
    model.train(was_training)
    out = {"eval_loss": sum(losses) / len(losses)}
    if first:
        out["loss_first_half"] = sum(first) / len(first)
        out["loss_repeat_half"] = sum(repeat) / len(repeat)
        # In-context improvement: how much seeing the sequence once helps (positive = learning
        # in context). Olsson et al. 2022 report the opposite-signed "ICL score"; we keep
        # "bigger is better" throughout alignlab.
        out["icl_improvement"] = out["loss_first_half"] - out["loss_repeat_half"]
    return out


def initial_model(cfg: TrainConfig, init_model: Transformer | None, device: torch.device) -> Transformer:
    """The model a run starts from: a copy of ``init_model`` (fine-tuning) or a fresh init from
    ``cfg.seed``, in training mode on ``device``. It seeds torch's global RNG first, so the RNG
    state a checkpoint carries is the same whichever trainer (plain or stacked) built the model."""
    torch.manual_seed(stream_seed("init", cfg.seed))
    if init_model is not None:
        model = Transformer(init_model.cfg)
        model.load_state_dict(init_model.state_dict())
        model.tokenizer = init_model.tokenizer  # saved beside the fine-tuned weights
    else:
        model = Transformer(cfg.model)
        model.init_weights(seed=stream_seed("init", cfg.seed))
    model.to(device).train()
    return model


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    on_metrics: MetricsFn | None = None,
    progress: bool = True,
    init_model: Transformer | None = None,
    batch_fn: BatchFn | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (checkpoints in ``out_dir/ckpt``), resuming if interrupted.

    Rerunning after a crash or ``kill -9`` continues from the newest checkpoint and ends with
    weights bit-identical to an uninterrupted run (same machine, same thread count).

    Args:
        cfg: the training configuration.
        out_dir: run directory; created if missing.
        on_metrics: called as ``on_metrics(step, {name: value}, tokens_seen)``; the store uses it.
        progress: show a rich progress bar.
        init_model: start from these weights instead of a fresh initialisation (fine-tuning).
        batch_fn: a data recipe ``(batch_size, seq_len, seed, step, split) -> Batch`` replacing
            ``cfg.task`` (organisms and safety interventions pass their own); it must be a pure
            function of its arguments for resume to be exact.

    Raises:
        ConfigError: unknown task, unavailable device, or a run that cannot fit in memory
            (see `alignlab.train.preflight`).
        DivergenceError: the loss or the weights became non-finite; its ``step`` is the first
            step whose loss was not finite (checked once per log interval, evaluation and
            checkpoint, so no checkpoint or evaluation of a diverged model is ever written).

    Example:
        >>> from alignlab.train import train, train_preset
        >>> result = train(train_preset("tiny"), "out/tiny")
        >>> result.metrics["eval_loss"]
    """
    out = Path(out_dir)
    make = preflight(cfg, batch_fn)
    torch.set_num_threads(cfg.resolved_threads())
    device = resolve_device(cfg.device)
    model = initial_model(cfg, init_model, device)
    model.gradient_checkpointing = cfg.grad_checkpointing
    if cfg.lora_rank:
        apply_lora(model, cfg.lora_rank, cfg.lora_alpha, seed=stream_seed("lora", cfg.seed))
    scaler = grad_scaler(cfg.precision, device)
    optimizer = make_optimizer(model, cfg)
    meta = load_latest(out / "ckpt", model, optimizer)
    start = int(meta["step"]) if meta else 0
    tokens_per_step = cfg.batch_size * cfg.seq_len
    micro = cfg.batch_size // cfg.grad_accum
    emit = on_metrics or (lambda _s, _m, _t: None)
    log_every = max(1, min(50, cfg.steps // 20))

    bar = _progress(progress, cfg.steps, start)
    t0 = time.perf_counter()
    # A checkpoint inside a log interval carries that interval's losses, so the first log after a
    # resume averages the same steps as an uninterrupted run does.
    losses = _IntervalLosses(cfg, meta.get("interval_losses", []) if meta else [])
    for step in range(start, cfg.steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = make(cfg.batch_size, cfg.seq_len, cfg.seed, step, "train").to(device)
        total_targets = _n_targets(batch)
        step_loss = torch.zeros((), device=device)
        for m in range(cfg.grad_accum):
            part = _slice(batch, m * micro, (m + 1) * micro)
            if _n_targets(part) == 0:
                continue
            # Weight each micro-batch by its share of target tokens so the summed gradient equals
            # the full batch's, also when completion masks give micro-batches unequal counts.
            with autocast(cfg.precision, device):
                loss = _forward_loss(model, part) * (_n_targets(part) / total_targets)
            (loss if scaler is None else scaler.scale(loss)).backward()
            step_loss += loss.detach()
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)  # skipped when a gradient overflowed
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.add(step_loss)
        done = step + 1
        if done % log_every == 0 or done == cfg.steps:
            elapsed = time.perf_counter() - t0
            tps = (done - start) * tokens_per_step / max(elapsed, 1e-9)
            train_loss = losses.take_mean(done)  # one device sync per log interval
            emit(done, {"train_loss": train_loss, "lr": lr, "tokens_per_s": tps}, 0)
            bar.update(done, train_loss, tps)
        if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps:
            losses.settle(done)  # a diverged model's evaluation is never logged
            emit(done, evaluate(model, cfg, device, batch_fn), done * tokens_per_step)
        if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
            losses.settle(done)
            _check_weights_finite(model, done, cfg)  # a checkpoint never holds NaN weights
            meta_out = {"config": cfg.identity(), "interval_losses": losses.pending()}
            save_checkpoint(out / "ckpt", done, model, optimizer, meta_out)
    elapsed = time.perf_counter() - t0
    bar.close()
    _check_weights_finite(model, cfg.steps, cfg)
    if cfg.lora_rank:
        merge_lora(model)
    model.eval()
    final = evaluate(model, cfg, device, batch_fn)
    steps_run = cfg.steps - start
    return TrainResult(
        model=model,
        steps=cfg.steps,
        tokens=cfg.steps * tokens_per_step,
        train_seconds=elapsed,
        tokens_per_s=steps_run * tokens_per_step / elapsed if steps_run else 0.0,
        resumed_from=start,
        metrics=final,
    )


class _IntervalLosses:
    """The per-step training losses of the current log interval, read from the device lazily.

    Steps append device tensors (no sync); `settle` reads them in one sync and raises
    `DivergenceError` at the first non-finite one, naming its step.
    """

    def __init__(self, cfg: TrainConfig, restored: list[float]) -> None:
        self._cfg = cfg
        self._values = [float(v) for v in restored]
        self._fresh: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self._fresh.append(loss)

    def settle(self, done: int) -> None:
        """Read the losses of steps up to ``done`` (1-based) from the device and check them."""
        if not self._fresh:
            return
        values = torch.stack(self._fresh).tolist()
        first = done - len(values) + 1
        for i, v in enumerate(values):
            if not math.isfinite(v):
                at = first + i
                raise DivergenceError(
                    f"training diverged: the loss became {v} at step {at} of {self._cfg.steps} "
                    f"(lr {lr_at(at - 1, self._cfg):.3g}); {_remedy(self._cfg)}",
                    at,
                )
        self._values += values
        self._fresh = []

    def pending(self) -> list[float]:
        """The settled losses not yet logged (what a checkpoint stores)."""
        return list(self._values)

    def take_mean(self, done: int) -> float:
        """The mean loss of the interval ending at step ``done``; starts the next interval."""
        self.settle(done)
        mean = sum(self._values) / len(self._values)
        self._values = []
        return mean


def _check_weights_finite(model: torch.nn.Module, done: int, cfg: TrainConfig) -> None:
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()])
    if not bool(finite.all()):
        bad = [n for (n, _), ok in zip(model.named_parameters(), finite.tolist(), strict=True) if not ok]
        raise DivergenceError(
            f"training diverged: weights became non-finite by step {done} (first: {bad[0]}); {_remedy(cfg)}",
            done,
        )


def _remedy(cfg: TrainConfig) -> str:
    return "lower lr" if cfg.grad_clip else "lower lr, or clip gradients (grad_clip=1)"


class _progress:
    """A rich progress bar showing loss and tokens/s (silent when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self._bar: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[tps]:,.0f} tok/s"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, completed=start, loss=0.0, tps=0.0)

    def update(self, step: int, loss: float, tps: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=loss, tps=tps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
