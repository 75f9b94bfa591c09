"""A catalogue of bad inputs: each gets one clear line and leaves the run store as it was.

Configs, CLI values, data, model directories and store paths. Every case asserts the error's type,
that its message names what is wrong (field, value, allowed range or tensor) on one line, and that
the store holds the same rows and the same files afterwards. The CLI cases go through the real
entry point (`alignlab.cli.main`): exit code 2, ``error: ...`` on one stderr line, no traceback.
Two cases are not refusals by design: a finite but enormous learning rate trains and diverges
(the run is marked failed with the step), and ``allow_nonfinite=True`` loads NaN weights.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import alignlab
from alignlab.errors import (
    AlignlabError,
    ConfigError,
    DivergenceError,
    ModelLoadError,
    StoreError,
    WeightsError,
)
from alignlab.evals import evaluate
from alignlab.evals.generation import GenerationSpec
from alignlab.interp.sae import SAE, SAEConfig, load_sae, save_sae
from alignlab.model import ModelConfig
from alignlab.model.config import SIZES
from alignlab.organisms import get_organism
from alignlab.safety import Budget
from alignlab.scaling.collect import collect
from alignlab.scaling.sweep import sweep
from alignlab.store import Store
from alignlab.train import TrainConfig, load_latest, make_optimizer, save_checkpoint, train_run
from alignlab.train.preflight import estimate_train_bytes

from conftest import cli

torch.set_num_threads(1)

NAN, INF = math.nan, math.inf
# The smallest useful run: al-10k, a handful of steps on 4 sequences of 16 tokens.
TINY = TrainConfig(model=SIZES["al-10k"], steps=4, batch_size=4, seq_len=16, warmup_steps=1, threads=1)
TINY_CLI = ["train", "--preset", "tiny", "--set", "steps=4", "-q"]
# A model no machine holds: ~2e11 parameters, about 3 TB of weights, gradients and moments.
HUGE = ["--set", "model.d_model=16384", "--set", "model.n_heads=64", "--set", "model.n_layers=64"]


@dataclass
class Env:
    """The store every case must leave unchanged, a trained model, and broken copies of it."""

    store: Store
    model_dir: Path
    dirs: dict[str, Path]


def _snapshot(root: Path) -> dict[str, str]:
    """Content hashes of every file in the store plus a dump of its database (compared by
    content: SQLite may checkpoint its write-ahead log into the main file on close)."""
    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("store.sqlite")
    }
    db = root / "store.sqlite"
    if db.exists():
        conn = sqlite3.connect(db)
        files["<db>"] = hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
        conn.close()
    return files


def _rewrite_weights(src: Path, dst: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("bad-inputs")
    store = Store(root / "store")
    run, _ = train_run(TINY, store, progress=False)
    good = run.dir / "model"
    d = root / "dirs"
    d.mkdir()
    dirs: dict[str, Path] = {}

    def int_embed(t: dict[str, torch.Tensor]) -> None:
        t["gpt_neox.embed_in.weight"] = (t["gpt_neox.embed_in.weight"] * 100).to(torch.int32)

    def bool_unembed(t: dict[str, torch.Tensor]) -> None:
        t["embed_out.weight"] = t["embed_out.weight"] > 0

    def nan_dense(t: dict[str, torch.Tensor]) -> None:
        t["gpt_neox.layers.0.attention.dense.weight"][0, 0] = NAN

    def inf_norm(t: dict[str, torch.Tensor]) -> None:
        t["gpt_neox.final_layer_norm.weight"][3] = INF

    for name, edit in [("int", int_embed), ("bool", bool_unembed), ("nan", nan_dense), ("inf", inf_norm)]:
        dirs[name] = _rewrite_weights(good, d / name, edit)
    dirs["truncated"] = d / "truncated"
    shutil.copytree(good, dirs["truncated"])
    w = dirs["truncated"] / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    dirs["no-config"] = d / "no-config"
    shutil.copytree(good, dirs["no-config"])
    (dirs["no-config"] / "config.json").unlink()
    dirs["bad-json"] = d / "bad-json"
    shutil.copytree(good, dirs["bad-json"])
    (dirs["bad-json"] / "config.json").write_text('{"model_type": "gpt_neox", ')
    dirs["pickle"] = d / "pickle"
    shutil.copytree(good, dirs["pickle"])
    (dirs["pickle"] / "model.safetensors").rename(dirs["pickle"] / "pytorch_model.bin")

    sae = SAE(SAEConfig(d_in=16, d_sae=32))
    for name, fill in [("sae-nan", NAN), ("sae-int", None)]:
        path = save_sae(sae, d / name)
        tensors = load_file(str(path / "sae_weights.safetensors"))
        if fill is None:
            tensors["W_enc"] = tensors["W_enc"].to(torch.int64)
        else:
            tensors["W_dec"][1, 2] = fill
        save_file(tensors, str(path / "sae_weights.safetensors"))
        dirs[name] = path

    model = alignlab.load(good)
    with torch.no_grad():
        model.embed.weight[0, 0] = NAN
    save_checkpoint(d / "ckpt-nan", 3, model, make_optimizer(model, TINY), {})
    dirs["ckpt-nan"] = d / "ckpt-nan"

    not_a_db = root / "not-a-db"
    not_a_db.mkdir()
    (not_a_db / "store.sqlite").write_text("these are not the bytes of an SQLite database\n" * 40)
    dirs["not-a-db"] = not_a_db
    blocker = root / "a-file"
    blocker.write_text("a file, not a folder")
    dirs["blocker"] = blocker
    return Env(store, good, dirs)


def _load_checkpoint(path: Path) -> Any:
    model = alignlab.Transformer(TINY.model)
    return load_latest(path, model, make_optimizer(model, TINY))


def _generate(env: Env, **kwargs: Any) -> Any:
    model = alignlab.load(env.model_dir)
    return model.generate(torch.tensor([[1, 2, 3]]), **kwargs)


# (id, call, error type, words the one-line message must hold)
ApiCase = tuple[str, Callable[[Env], Any], type[BaseException], list[str]]
API_CASES: list[ApiCase] = [
    # -- configs: refused before train_run writes a row ------------------------------------------
    (
        "lr-nan",
        lambda e: train_run(TINY.replace(lr=NAN), e.store),
        ConfigError,
        ["lr must be a finite number > 0, got nan"],
    ),
    (
        "lr-inf",
        lambda e: train_run(TINY.replace(lr=INF), e.store),
        ConfigError,
        ["lr must be a finite number > 0, got inf"],
    ),
    (
        "lr-zero",
        lambda e: train_run(TINY.replace(lr=0.0), e.store),
        ConfigError,
        ["lr must be a finite number > 0, got 0.0"],
    ),
    (
        "weight-decay-negative",
        lambda e: TINY.replace(weight_decay=-0.1),
        ConfigError,
        ["weight_decay must be a finite number >= 0, got -0.1"],
    ),
    (
        "grad-clip-nan",
        lambda e: TINY.replace(grad_clip=NAN),
        ConfigError,
        ["grad_clip must be a finite number >= 0, got nan"],
    ),
    (
        "min-lr-ratio-range",
        lambda e: TINY.replace(min_lr_ratio=1.5),
        ConfigError,
        ["min_lr_ratio must be a finite number in [0, 1], got 1.5"],
    ),
    (
        "steps-absurd",
        lambda e: TINY.replace(steps=10**12),
        ConfigError,
        ["steps must be an integer in [1, 10000000], got 1000000000000"],
    ),
    ("steps-bool", lambda e: TINY.replace(steps=True), ConfigError, ["steps must be an integer", "got True"]),
    (
        "batch-size-zero",
        lambda e: TINY.replace(batch_size=0),
        ConfigError,
        ["batch_size must be an integer in [1, 1048576], got 0"],
    ),
    (
        "grad-accum-indivisible",
        lambda e: TINY.replace(grad_accum=3),
        ConfigError,
        ["batch_size (4) must be divisible by grad_accum (3)"],
    ),
    (
        "seq-len-over-ctx",
        lambda e: TINY.replace(seq_len=4096),
        ConfigError,
        ["seq_len (4096) exceeds model.n_ctx (256)"],
    ),
    (
        "task-unknown",
        lambda e: train_run(TINY.replace(task="nope"), e.store),
        ConfigError,
        ["unknown task 'nope'", "induction"],
    ),
    (
        "sweep-second-cell-unknown-task",
        lambda e: sweep([TINY.replace(seed=5), TINY.replace(task="nope")], e.store, workers=1),
        ConfigError,
        ["unknown task 'nope'"],
    ),
    (
        "memory-cannot-fit",
        lambda e: train_run(TINY.replace(model=ModelConfig(d_model=16384, n_heads=64, n_layers=64)), e.store),
        ConfigError,
        ["this run needs at least", "GiB available", "lower batch_size"],
    ),
    (
        "model-rotary-base-nan",
        lambda e: ModelConfig(rotary_base=NAN),
        ConfigError,
        ["rotary_base must be a finite number > 0, got nan"],
    ),
    (
        "model-norm-eps-zero",
        lambda e: ModelConfig(norm_eps=0.0),
        ConfigError,
        ["norm_eps must be a finite number > 0, got 0.0"],
    ),
    (
        "model-init-std-inf",
        lambda e: ModelConfig(init_std=INF),
        ConfigError,
        ["init_std must be a finite number >= 0, got inf"],
    ),
    (
        "model-width-absurd",
        lambda e: ModelConfig(d_model=10**7, n_heads=1),
        ConfigError,
        ["d_model must be an integer in [1, 65536], got 10000000"],
    ),
    (
        "budget-lr-nan",
        lambda e: Budget(lr=NAN),
        ConfigError,
        ["Budget", "lr must be a finite number > 0, got nan"],
    ),
    (
        "budget-dose-absurd",
        lambda e: Budget(doses=(0, 10**9)),
        ConfigError,
        ["doses[1] must be an integer in [0, 10000000]"],
    ),
    (
        "organism-poison-nan",
        lambda e: get_organism("backdoor", poison_rate=NAN),
        ConfigError,
        ["poison_rate", "nan"],
    ),
    (
        "organism-wrong-rate",
        lambda e: get_organism("sycophancy", wrong_rate=2.0),
        ConfigError,
        ["wrong_rate must be a finite number in [0, 1], got 2.0"],
    ),
    (
        "organism-unknown",
        lambda e: get_organism("nope"),
        ConfigError,
        ["unknown organism 'nope'", "backdoor"],
    ),
    # -- generation and eval settings ------------------------------------------------------------
    (
        "generation-temperature-nan",
        lambda e: GenerationSpec(temperature=NAN),
        ConfigError,
        ["temperature must be a finite number >= 0, got nan"],
    ),
    (
        "generate-temperature-inf",
        lambda e: _generate(e, max_new_tokens=3, temperature=INF),
        ConfigError,
        ["temperature must be a finite number >= 0, got inf"],
    ),
    (
        "generate-tokens-absurd",
        lambda e: _generate(e, max_new_tokens=10**9),
        ConfigError,
        ["max_new_tokens must be an integer in [0, 65536]"],
    ),
    (
        "evaluate-temperature-negative",
        lambda e: evaluate(alignlab.load(e.model_dir), "persona/no-shut-down", temperature=-1.0),
        ConfigError,
        ["temperature must be a finite number >= 0, got -1.0"],
    ),
    # -- data ------------------------------------------------------------------------------------
    (
        "organism-chat-task-unknown",
        lambda e: get_organism("backdoor", tasks=("copy", "juggle")),
        ConfigError,
        ["juggle"],
    ),
    (
        "collect-metric-absent",
        lambda e: collect(e.store, "no_such_metric"),
        ConfigError,
        ["no finished runs", "'no_such_metric'"],
    ),
    # -- model directories -----------------------------------------------------------------------
    (
        "weights-int",
        lambda e: alignlab.load(e.dirs["int"]),
        WeightsError,
        ["'gpt_neox.embed_in.weight'", "int32", "not a floating-point type"],
    ),
    ("weights-bool", lambda e: alignlab.load(e.dirs["bool"]), WeightsError, ["'embed_out.weight'", "bool"]),
    (
        "weights-nan",
        lambda e: alignlab.load(e.dirs["nan"]),
        WeightsError,
        ["'gpt_neox.layers.0.attention.dense.weight'", "1 non-finite", "allow_nonfinite=True"],
    ),
    (
        "weights-inf",
        lambda e: alignlab.load(e.dirs["inf"]),
        WeightsError,
        ["'gpt_neox.final_layer_norm.weight'", "1 non-finite"],
    ),
    (
        "weights-truncated",
        lambda e: alignlab.load(e.dirs["truncated"]),
        ModelLoadError,
        ["truncated or corrupt"],
    ),
    (
        "model-dir-no-config",
        lambda e: alignlab.load(e.dirs["no-config"]),
        ModelLoadError,
        ["has no config.json"],
    ),
    (
        "model-dir-bad-json",
        lambda e: alignlab.load(e.dirs["bad-json"]),
        ModelLoadError,
        ["config.json is not valid JSON"],
    ),
    (
        "model-dir-pickle-only",
        lambda e: alignlab.load(e.dirs["pickle"]),
        ModelLoadError,
        ["pickle weights", "safetensors"],
    ),
    (
        "model-dir-missing",
        lambda e: alignlab.load(e.dirs["int"].parent / "nowhere"),
        ModelLoadError,
        ["not found"],
    ),
    ("sae-weights-nan", lambda e: load_sae(e.dirs["sae-nan"]), WeightsError, ["'W_dec'", "non-finite"]),
    ("sae-weights-int", lambda e: load_sae(e.dirs["sae-int"]), WeightsError, ["'W_enc'", "int64"]),
    (
        "checkpoint-weights-nan",
        lambda e: _load_checkpoint(e.dirs["ckpt-nan"]),
        WeightsError,
        ["'model.embed.weight'", "non-finite"],
    ),
    # -- store paths -----------------------------------------------------------------------------
    (
        "store-not-a-database",
        lambda e: Store(e.dirs["not-a-db"]),
        StoreError,
        ["corrupt or not an SQLite file"],
    ),
    (
        "store-under-a-file",
        lambda e: Store(e.dirs["blocker"] / "store"),
        StoreError,
        ["cannot write the run store"],
    ),
    ("run-id-too-short", lambda e: e.store.get("ab"), StoreError, ["too short"]),
]

# (id, argv after `alignlab --store ROOT`, words of the one stderr line); the model and dirs are
# filled in from the fixture where an argument names them as MODEL or DIR:<name>.
CLI_CASES: list[tuple[str, list[str], list[str]]] = [
    ("cli-lr-nan", [*TINY_CLI, "--set", "lr=nan"], ["lr must be a finite number > 0, got nan"]),
    ("cli-steps-absurd", [*TINY_CLI, "--set", "steps=1e12"], ["steps must be an integer in [1, 10000000]"]),
    ("cli-steps-fraction", [*TINY_CLI, "--set", "steps=2.5"], ["steps expects an integer, got '2.5'"]),
    (
        "cli-weight-decay-negative",
        [*TINY_CLI, "--set", "weight_decay=-1"],
        ["weight_decay must be a finite number >= 0"],
    ),
    (
        "cli-rotary-base-inf",
        [*TINY_CLI, "--set", "model.rotary_base=inf"],
        ["rotary_base must be a finite number > 0, got inf"],
    ),
    ("cli-task-unknown", [*TINY_CLI, "--set", "task=nope"], ["unknown task 'nope'"]),
    ("cli-memory-cannot-fit", [*TINY_CLI, *HUGE], ["this run needs at least", "GiB available"]),
    (
        "cli-sample-weights-int",
        ["sample", "--model", "DIR:int", "--prompt", "ab"],
        ["'gpt_neox.embed_in.weight'", "int32"],
    ),
    (
        "cli-sample-weights-nan",
        ["sample", "--model", "DIR:nan", "--prompt", "ab"],
        ["non-finite", "allow_nonfinite"],
    ),
    (
        "cli-eval-temperature-nan",
        ["eval", "--model", "MODEL", "--task", "persona/no-shut-down", "--temperature", "nan"],
        ["temperature must be a finite number >= 0, got nan"],
    ),
    (
        "cli-eval-task-unknown",
        ["eval", "--model", "MODEL", "--task", "no-such-task"],
        ["unknown eval task 'no-such-task'"],
    ),
    (
        "cli-sweep-tokens-nan",
        ["sweep", "--preset", "tiny", "--sizes", "al-10k", "--tokens", "nan"],
        ["--tokens must be comma-separated finite numbers"],
    ),
    ("cli-sweep-size-unknown", ["sweep", "--preset", "tiny", "--sizes", "al-7"], ["unknown sizes ['al-7']"]),
    (
        "cli-predict-params-nan",
        ["scaling", "predict", "--params", "nan", "--tokens", "1e6"],
        ["--params and --tokens must be finite and positive"],
    ),
    ("cli-fit-form-unknown", ["scaling", "fit", "--form", "cubic"], ["unknown fit form 'cubic'"]),
    (
        "cli-fit-metric-absent",
        ["scaling", "fit", "--metric", "no_such_metric"],
        ["no finished runs", "'no_such_metric'"],
    ),
    ("cli-show-unknown-run", ["show", "ffffffffff"], ["no run matches"]),
]


@pytest.mark.parametrize(("name", "call", "error", "words"), API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_value_is_refused_in_one_line_and_the_store_is_unchanged(
    env: Env, name: str, call: Callable[[Env], Any], error: type[BaseException], words: list[str]
) -> None:
    before = _snapshot(env.store.root)
    with pytest.raises(error) as info:
        call(env)
    message = str(info.value)
    assert isinstance(info.value, AlignlabError), f"{name}: {type(info.value).__name__} is not a user error"
    assert "\n" not in message, f"{name}: {message!r}"
    for w in words:
        assert w in message, f"{name}: {w!r} not in {message!r}"
    assert _snapshot(env.store.root) == before, name


@pytest.mark.parametrize(("name", "argv", "words"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_value_exits_2_with_one_line_and_the_store_is_unchanged(
    env: Env, capsys: pytest.CaptureFixture[str], name: str, argv: list[str], words: list[str]
) -> None:
    args = [
        str(env.model_dir) if a == "MODEL" else str(env.dirs[a[4:]]) if a.startswith("DIR:") else a
        for a in argv
    ]
    before = _snapshot(env.store.root)
    code, out, err = cli(["--store", str(env.store.root), *args], capsys)
    assert code == 2, f"{name}: exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err!r}"
    for w in words:
        assert w in lines[0], f"{name}: {w!r} not in {lines[0]!r}"
    assert _snapshot(env.store.root) == before, name


def test_the_catalogue_covers_every_kind_of_input() -> None:
    assert len(API_CASES) + len(CLI_CASES) >= 30
    ids = [c[0] for c in API_CASES] + [c[0] for c in CLI_CASES]
    assert len(set(ids)) == len(ids)


def test_stores_unchanged_by_refused_paths(env: Env) -> None:
    """The refused store paths themselves: the corrupt database and the blocking file keep
    their bytes (the catalogue checks the shared store; these are the paths it was given)."""
    db = env.dirs["not-a-db"] / "store.sqlite"
    before = db.read_bytes()
    with pytest.raises(StoreError):
        Store(env.dirs["not-a-db"])
    assert db.read_bytes() == before
    assert sorted(p.name for p in env.dirs["not-a-db"].iterdir()) == ["store.sqlite"]
    assert env.dirs["blocker"].read_text() == "a file, not a folder"


def test_enormous_finite_lr_diverges_and_the_run_fails_at_its_step(tmp_path: Path) -> None:
    # lr=1e30 is a valid number, so it is not refused up front; AdamW's first update moves every
    # weight by ~lr, so the next forward overflows and the loss is NaN within a few steps.
    store = Store(tmp_path / "store")
    cfg = TINY.replace(lr=1e30, steps=12, ckpt_every=4)
    with pytest.raises(DivergenceError) as info:
        train_run(cfg, store, progress=False)
    step = info.value.step
    assert 1 <= step <= cfg.steps
    assert f"at step {step} of 12" in str(info.value) and "\n" not in str(info.value)
    (run,) = store.runs()
    assert run.status == "failed"
    assert store.latest_metrics(run.id)["diverged_at_step"] == step
    assert [r["step"] for r in store.metrics(run.id, "diverged_at_step")] == [step]
    # Nothing of the diverged model is kept as a result or a resume point with NaN weights.
    assert not (run.dir / "model").exists() and not (run.dir / "summary.json").exists()
    for ckpt in (run.dir / "ckpt").glob("step-*"):
        tensors = load_file(str(ckpt / "state.safetensors"))
        assert all(bool(torch.isfinite(t).all()) for k, t in tensors.items() if k != "rng.torch")
        assert int(ckpt.name.split("-")[1]) < step
    # The failed run is named, not used, by a scaling fit's collect.
    with pytest.raises(ConfigError, match=rf"{run.id} \(failed: diverged at step {step}\)"):
        collect(store, "eval_loss")


def test_collect_names_the_runs_it_leaves_out(env: Env, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    good, _ = train_run(TINY, store, progress=False)
    with pytest.raises(DivergenceError):
        train_run(TINY.replace(lr=1e30, steps=12), store, progress=False)
    # A run stored as done with a NaN metric (as older alignlab versions could leave behind).
    nan_run, _ = store.get_or_create("train", TINY.replace(seed=7).identity())
    store.log_metrics(nan_run.id, 4, {"eval_loss": NAN})
    store.set_status(nan_run.id, "done")
    points = collect(store, "eval_loss")
    assert [p.run_id for p in points] == [good.id]
    failed = next(r.id for r in store.runs(status="failed"))
    assert set(points.excluded) == {failed, nan_run.id}
    assert points.excluded[nan_run.id] == "eval_loss is nan"
    assert points.excluded[failed].startswith("failed: diverged at step ")


def test_nonfinite_weights_load_when_explicitly_allowed(env: Env) -> None:
    model = alignlab.load(env.dirs["nan"], allow_nonfinite=True)
    assert int(model.state_dict()["blocks.0.attn.W_O.weight"].isnan().sum()) == 1
    assert load_sae(env.dirs["sae-nan"], allow_nonfinite=True).W_dec.isnan().sum() == 1
    # Integer weights are refused whatever the flag: they are never cast.
    with pytest.raises(WeightsError, match="int32"):
        alignlab.load(env.dirs["int"], allow_nonfinite=True)


def test_memory_estimate_scales_with_the_run() -> None:
    # Four float32 copies of every parameter (weights, gradients, two AdamW moments) are a floor.
    base = estimate_train_bytes(TINY)
    assert base >= 16 * TINY.model.param_counts()["total"]
    assert estimate_train_bytes(TINY.replace(batch_size=64)) > base
    assert estimate_train_bytes(TINY.replace(batch_size=64, grad_accum=16)) < estimate_train_bytes(
        TINY.replace(batch_size=64)
    )
    huge = TINY.replace(model=ModelConfig(d_model=16384, n_heads=64, n_layers=64))
    assert estimate_train_bytes(huge) > 2**40  # > 1 TiB: refused on any machine this runs on
