"""Shared test setup: offline Hugging Face, one torch thread, tiny model configs."""

from __future__ import annotations

import os
from pathlib import Path

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
