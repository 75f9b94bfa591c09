"""Studies on a given checkpoint: a Hugging Face directory as the base model of every seed.

A researcher with Pythia or a small Llama on disk names its directory instead of a family size
(`alignlab.studies.spec.StudySpec.base_models`, ``alignlab run --base-model DIR``). Each seed's base
run is that checkpoint, optionally after a clean fine-tune on the study's chat tasks
(`BaseSpec.steps` > 0; a pretrained model has never seen the chat format), and then faces the same
competence gate as the family's base models: an organism is installed only into a model that does
the clean tasks (Hubinger et al. 2024). The run id hashes the checkpoint's bytes, not its path.

Example:
    >>> run, gates = given_base_run(Store(), "pythia-160m", seed=0, spec=BaseSpec(steps=300, lr=1e-4))
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from alignlab._io import write_json_atomic
from alignlab.errors import ConfigError
from alignlab.gates import Gate
from alignlab.model.config import SIZES, ModelConfig
from alignlab.store import Run, Store
from alignlab.train.base_model import BaseSpec, base_batch_fn, base_run, gate_base
from alignlab.train.compute import Compute
from alignlab.train.config import TrainConfig

#: Peak learning rate of the clean fine-tune when `BaseSpec.lr` is 0: the usual full fine-tuning
#: rate of pretrained models of 10^8 parameters (a toy model trained from scratch needs ~1e-3).
DEFAULT_FINETUNE_LR = 1e-4
# What `alignlab.load` reads from a model directory, and so what identifies the checkpoint.
_HASHED = (".json", ".safetensors", ".model", ".txt")


def is_model_dir(name: str) -> bool:
    """Whether ``name`` is a directory holding a model's config.json (a given base model)."""
    path = Path(name).expanduser()
    return path.is_dir() and (path / "config.json").is_file()


def size_config(size: str) -> ModelConfig:
    """The architecture of a size of the family, or of the checkpoint in a model directory.

    Raises:
        ConfigError: ``size`` is neither.
    """
    if size in SIZES:
        return SIZES[size]
    if not is_model_dir(size):
        raise ConfigError(
            f"{size!r} is neither a size of the family ({', '.join(SIZES)}) nor a model directory "
            "with a config.json"
        )
    from alignlab.model.hf import config_from_hf

    return config_from_hf(json.loads((Path(size).expanduser() / "config.json").read_text()))


def size_params(size: str) -> int:
    """Total parameters of a family size or of a model directory's checkpoint."""
    return int(size_config(size).param_counts()["total"])


def checkpoint_digest(model_dir: str | os.PathLike[str]) -> str:
    """SHA-256 over the files `alignlab.load` reads (config, weights, tokenizer), by name: the
    checkpoint's identity wherever it lies."""
    path = Path(model_dir).expanduser().resolve()
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in _HASHED)
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(str(path), stamp)


@lru_cache(maxsize=32)
def _digest(path: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    # Keyed on names, sizes and mtimes too: a study hashes each checkpoint once per process.
    h = hashlib.sha256()
    for name, _, _ in stamp:
        h.update(name.encode() + b"\0")
        with open(Path(path) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def finetune_config(model_dir: str, seed: int, spec: BaseSpec, compute: Compute | None = None) -> TrainConfig:
    """The `TrainConfig` of the clean fine-tune of ``model_dir`` (``spec.steps`` steps at
    ``spec.lr``, or `DEFAULT_FINETUNE_LR`, on the clean chat tasks)."""
    model = size_config(model_dir)
    steps = spec.steps
    # The character bound of the longest example, plus room for a BPE's prefix-space token.
    seq_len = min(spec.seq_len() + 2, model.n_ctx)
    cfg = TrainConfig(
        model=model,
        task="base:" + "+".join(spec.tasks),
        steps=steps,
        batch_size=spec.batch_size,
        seq_len=seq_len,
        lr=spec.lr or DEFAULT_FINETUNE_LR,
        warmup_steps=max(10, steps // 20),
        eval_every=0,
        ckpt_every=max(steps // 2, 1),
        seed=seed,
        threads=1,
    )
    return (compute or Compute()).apply(cfg)


def given_base_run(
    store: Store, model_dir: str, seed: int, spec: BaseSpec | None = None, compute: Compute | None = None
) -> tuple[Run, list[Gate]]:
    """The base run of seed ``seed`` on the checkpoint in ``model_dir``, and its competence gate.

    With ``spec.steps`` = 0 the run holds the checkpoint itself (a link to the directory: nothing
    is copied); otherwise the checkpoint fine-tuned on the clean tasks for ``spec.steps`` steps with
    the data order of ``seed``, through the store (resumable, reused). A failed gate is returned,
    not raised.
    """
    from alignlab.model.text import load_tokenizer
    from alignlab.train.preflight import resolve_device
    from alignlab.train.run import train_run

    spec = spec or BaseSpec()
    compute = compute or Compute()
    if not is_model_dir(model_dir):
        raise ConfigError(f"base model {model_dir!r} is not a model directory with a config.json")
    source = Path(model_dir).expanduser().resolve()
    digest = checkpoint_digest(source)
    recipe = {"base": spec.to_dict(), "base_model": digest}
    if spec.steps:
        cfg = finetune_config(str(source), seed, spec, compute)
        batch_fn = base_batch_fn(spec, load_tokenizer(source))
        run, _ = train_run(
            cfg, store, progress=False, kind="base", recipe=recipe, batch_fn=batch_fn, init_model_dir=source
        )
    else:
        run, _ = store.get_or_create("base", {"base_model": digest, "seed": seed}, recipe=recipe)
        if run.status != "done":
            _link(run.dir / "model", source)
            write_json_atomic(
                run.dir / "summary.json",
                {"run_id": run.id, "base_model": str(source), "digest": digest, "finetune_steps": 0},
            )
            store.set_status(run.id, "done")
            run = store.get(run.id)
    return run, gate_base(store, run, spec, seed, str(resolve_device(compute.device)))


def _link(at: Path, target: Path) -> None:
    """Point ``at`` to ``target`` atomically (a link made beside it, then renamed over it)."""
    tmp = at.with_name(f".{at.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, at)


def study_base_run(
    store: Store, size: str, seed: int, spec: BaseSpec, compute: Compute | None = None
) -> tuple[Run, list[Gate]]:
    """`base_run` for a size of the family, `given_base_run` for a model directory."""
    if size in SIZES:
        return base_run(store, size, seed, spec)
    return given_base_run(store, size, seed, spec, compute)
