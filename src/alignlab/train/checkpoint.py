"""Atomic training checkpoints in safetensors + JSON (no pickle anywhere).

A checkpoint is a directory ``step-00000100`` holding the model and AdamW tensors
(``state.safetensors``) and the scalars (``meta.json``). It is written under a temporary name,
fsynced, then renamed, so a ``kill -9`` at any instant leaves either the previous checkpoint or the
new one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from alignlab._weights import check_weights
from alignlab.errors import AlignlabError

_NAME = re.compile(r"^step-(\d{8})$")


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write the state after ``step`` completed steps; keep only the newest ``keep`` checkpoints."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()
    }
    opt_state = optimizer.state_dict()
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    full_meta = {"step": step, "param_groups": opt_state["param_groups"], **meta}
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=ckpt_dir))
    try:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(full_meta))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = ckpt_dir / f"step-{step:08d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are never listed)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if _NAME.match(p.name))


def load_latest(
    ckpt_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    allow_nonfinite: bool = False,
) -> dict[str, Any] | None:
    """Restore the newest checkpoint into ``model`` and ``optimizer``; return its meta or None.

    Raises:
        WeightsError: a model or optimizer tensor of the newest readable checkpoint is not
            floating point or (unless ``allow_nonfinite``) not finite. The trainer never writes
            such a checkpoint, so it was altered; resuming from it would only spread the NaNs.
        AlignlabError: every checkpoint is unreadable.
    """
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            tensors = load_file(str(path / "state.safetensors"))
            meta = json.loads((path / "meta.json").read_text())
        except (SafetensorError, OSError, json.JSONDecodeError):
            continue  # damaged by something other than us; fall back to the previous one
        # The RNG state is a byte tensor by design; every other tensor is a weight or a moment.
        learned = {k: v for k, v in tensors.items() if k != "rng.torch"}
        check_weights(learned, str(path / "state.safetensors"), allow_nonfinite=allow_nonfinite)
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        return dict(meta)
    if list_checkpoints(ckpt_dir):
        raise AlignlabError(
            f"every checkpoint in {ckpt_dir} is unreadable; delete the folder to restart the run"
        )
    return None
