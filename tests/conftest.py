"""Shared test setup: offline Hugging Face, one torch thread, tiny model configs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

# Before anything imports transformers / huggingface_hub: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from alignlab.model import ModelConfig, Transformer
from alignlab.store import Store

# The CI machine has 2 cores and other tests spawn worker processes.
torch.set_num_threads(1)

# Tiny configs covering every architecture switch. init_std is large so that a wrong weight
# layout changes the logits by far more than any tolerance used in the tests.
TINY_CFGS: dict[str, ModelConfig] = {
    "neox-parallel": ModelConfig(
        arch="neox", d_model=32, n_layers=2, n_heads=2, n_ctx=32, rotary_pct=0.25, init_std=0.1
    ),
    "neox-sequential": ModelConfig(
        arch="neox",
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_ctx=32,
        rotary_pct=0.5,
        parallel_attn=False,
        rotary_base=1000.0,
        norm_eps=1e-3,
        init_std=0.1,
    ),
    "neox-attn-only": ModelConfig(
        arch="neox", d_model=32, n_layers=2, n_heads=4, n_ctx=32, attn_only=True, init_std=0.1
    ),
    "llama-gqa": ModelConfig(
        arch="llama", d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, n_ctx=32, init_std=0.1
    ),
    "llama-mha": ModelConfig(
        arch="llama",
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_mlp=48,
        n_ctx=32,
        rotary_base=5000.0,
        norm_eps=1e-3,
        init_std=0.1,
    ),
}


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter away from its init (gains off 1, biases off 0), deterministically.

    Zero biases and unit gains would let a wrong layout (e.g. biases of q and k swapped, or a
    missing norm weight) go unnoticed, so parity tests run on perturbed models.
    """
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return model


def make_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """A randomly initialised, perturbed alignlab model in eval mode."""
    model = Transformer(cfg)
    model.init_weights(seed=seed)
    return perturb_(model, seed=seed + 1000).eval()


def random_tokens(batch: int, pos: int, seed: int = 0, vocab: int = 128) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, pos), generator=gen)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


# Rounding budget (for assert_close_rel, in eps × the result's scale) of one float32 forward of a
# tiny test model against another that sums in a different order: SDPA vs explicit attention,
# the fused kernel, a KV-cache step, transformers' modules, another SIMD width. The longest
# reductions are 128 terms (d_vocab, d_mlp) and a reordered sum of n terms is off by at most
# about n·eps of its magnitude; through 2 layers the error stays below that in practice: measured
# up to 28 (ATEN_CPU_CAPABILITY=default, 12 seeds of each tiny config), 23 (avx2) and 12.5
# (avx512, issue 15). A wrong layout, mask or position moves logits by O(scale), ~10^7 eps·scale.
FORWARD_ULPS = 128


def _eps(*xs: object) -> float:
    """Machine epsilon of the least precise floating dtype among ``xs`` (Python floats: float64)."""
    dtypes = [x.dtype for x in xs if isinstance(x, torch.Tensor) and x.dtype.is_floating_point]
    return max((torch.finfo(d).eps for d in dtypes), default=torch.finfo(torch.float64).eps)


def assert_close_rel(
    actual: torch.Tensor | float,
    expected: torch.Tensor | float,
    *,
    ulps: float,
    what: str,
    scale: float | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    """Assert ``max |actual - expected| <= ulps * eps * scale`` (both signs); return the max |Δ|.

    Two float computations of the same quantity in different orders (another SIMD width,
    another kernel, a cache) differ by rounding, and rounding error is relative: each operation
    is off by at most eps times the magnitude it carries. So the bound is a number of machine
    epsilons (``ulps``, justified at each call by the computation's depth) times the quantity's
    scale, and does not depend on which vector extension torch picked
    (``ATEN_CPU_CAPABILITY=default|avx2|avx512``). ``scale`` defaults to max |expected|; pass the
    magnitude of the summands where a result is a cancelling sum; a zero scale demands exact
    equality. ``eps`` is that of ``dtype``, else of the less precise operand. Prints the measured
    and allowed values (seen with ``pytest -s``, and in every failure).
    """
    a, b = (
        x.detach().to(torch.float64) if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.float64)
        for x in (actual, expected)
    )
    if not isinstance(expected, torch.Tensor):  # a number stands for every element
        b = b.expand_as(a)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert a.numel() > 0, f"{what}: nothing to compare"
    assert bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all()), f"{what}: non-finite values"
    eps = torch.finfo(dtype).eps if dtype is not None else _eps(actual, expected)
    if scale is None:
        scale = b.abs().max().item()
    assert scale >= 0, (what, scale)
    diff = (a - b).abs().max().item()
    allowed = ulps * eps * scale  # scale 0 (an all-zero reference): exact equality
    used = diff / (eps * scale) if scale > 0 else (0.0 if diff == 0 else math.inf)
    msg = (
        f"{what}: max|Δ| {diff:.3g} = {used:.1f} eps·scale,"
        f" allowed {ulps:g} ({allowed:.3g}); scale {scale:.3g}, eps {eps:.3g}"
    )
    print(msg)
    assert diff <= allowed, msg
    return diff


@pytest.fixture(scope="session")
def tiny_cfgs() -> dict[str, ModelConfig]:
    return dict(TINY_CFGS)


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``alignlab ARGS`` in-process through the real entry point; ``(exit code, stdout, stderr)``."""
    import sys

    from alignlab.cli import main

    old = sys.argv
    sys.argv = ["alignlab", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


# The backdoor organism every test module shares: al-10k, installed once per session in one store
# and reused through it (run ids are content hashes), loaded fresh per module.
BACKDOOR_INSTALL_STEPS = 250  # al-10k reaches 100% attack success well before this (measured)


def organism_store(factory: pytest.TempPathFactory) -> Store:
    return Store(Path(factory.getbasetemp()) / "organism-store")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Transformer:
    from alignlab import load
    from alignlab.organisms import get_organism, install_config, install_run

    org = get_organism("backdoor")
    cfg = install_config(org, "al-10k", BACKDOOR_INSTALL_STEPS, seed=0)
    run, _ = install_run(org, cfg, organism_store(tmp_path_factory))
    return load(run.dir / "model")


# Seed 1: it passed every install gate under each recipe tried (benchmarks/RESULTS.md,
# installation by fine-tuning), so tests built on it do not move when the recipe is tuned.
COMPETENT_SEED = 1


# A competent base model (the flagship's al-30k, seed 1, default BaseSpec) and the backdoor
# installed into it by fine-tuning, trained once per session in the shared organism store.
def competent_backdoor(factory: pytest.TempPathFactory) -> tuple[Store, Any, Any]:
    """``(store, base_run, install_run)``; both runs are content-addressed, so every module that
    asks gets the same two runs and only the first pays for training."""
    from alignlab.organisms import get_organism, install_on_base
    from alignlab.studies.spec import StudySpec
    from alignlab.train.base_model import base_run

    spec = StudySpec()
    store = organism_store(factory)
    base, _ = base_run(store, "al-30k", COMPETENT_SEED, spec.base)
    org = get_organism("backdoor", **spec.organism_config.to_dict())
    inst, _ = install_on_base(org, "al-30k", base, store, spec.install_steps, spec.install_lr, COMPETENT_SEED)
    return store, base, inst
