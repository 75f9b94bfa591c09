"""The training loop, schedules, atomic checkpoints and resume; training through the store."""

from alignlab.train.checkpoint import list_checkpoints, load_latest, save_checkpoint
from alignlab.train.config import TRAIN_PRESETS, TrainConfig, resolve_model, train_preset
from alignlab.train.loop import TrainResult, evaluate, grouped_adamw, lr_at, make_optimizer, train, warmup_lr
from alignlab.train.preflight import estimate_train_bytes, preflight
from alignlab.train.run import run_summary, train_run
from alignlab.train.stacked import train_runs_stacked, train_stacked
from alignlab.train.stacked_eval import StackedModel, evaluate_stacked

__all__ = [
    "TRAIN_PRESETS",
    "StackedModel",
    "TrainConfig",
    "TrainResult",
    "estimate_train_bytes",
    "evaluate",
    "evaluate_stacked",
    "grouped_adamw",
    "list_checkpoints",
    "load_latest",
    "lr_at",
    "make_optimizer",
    "preflight",
    "resolve_model",
    "run_summary",
    "save_checkpoint",
    "train",
    "train_preset",
    "train_run",
    "train_runs_stacked",
    "train_stacked",
    "warmup_lr",
]
