"""SAELens's on-disk format: ``cfg.json`` + ``sae_weights.safetensors`` (W_enc, W_dec, b_enc, b_dec)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save

from alignlab._io import write_bytes_atomic, write_json_atomic
from alignlab._weights import check_weights
from alignlab.errors import ModelLoadError
from alignlab.interp.sae.model import SAE, SAEConfig

WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"


def saelens_cfg(sae: SAE, model_name: str = "") -> dict[str, Any]:
    """The ``cfg.json`` SAELens 6 writes for a standard/TopK SAE of this shape."""
    cfg = sae.cfg
    out: dict[str, Any] = {
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"hook_name": cfg.hook_name, "model_name": model_name},
    }
    if cfg.architecture == "topk":
        out["k"] = cfg.k
    return out


def save_sae(sae: SAE, path: str | Path, model_name: str = "") -> Path:
    """Write ``sae`` as a SAELens directory.

    Example:
        >>> save_sae(sae, "out/sae")  # then sae_lens.SAE.load_from_disk("out/sae")
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().float() for k, v in sae.state_dict().items()}
    write_bytes_atomic(out / WEIGHTS, save(tensors))
    write_json_atomic(out / CONFIG, saelens_cfg(sae, model_name), indent=2)
    return out


def load_sae(path: str | Path, *, allow_nonfinite: bool = False) -> SAE:
    """Read a SAELens directory written by `save_sae` (or by SAELens, for standard/TopK SAEs).

    Raises:
        ModelLoadError: the directory is incomplete, its files are corrupt, or the weights do not
            match ``cfg.json``.
        WeightsError: a weight is not floating point or (unless ``allow_nonfinite``) not finite.
    """
    p = Path(path)
    if not (p / CONFIG).exists() or not (p / WEIGHTS).exists():
        raise ModelLoadError(f"{p} is not an SAE directory (needs {CONFIG} and {WEIGHTS})")
    try:
        raw = json.loads((p / CONFIG).read_text())
        arch = raw.get("architecture", "standard")
        if arch not in ("standard", "topk"):
            raise ModelLoadError(f"unsupported SAE architecture {arch!r} in {p / CONFIG}")
        hook = raw.get("metadata", {}).get("hook_name", raw.get("hook_name", ""))
        cfg = SAEConfig(int(raw["d_in"]), int(raw["d_sae"]), arch, int(raw.get("k", 0) or 0), hook)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{p / CONFIG} is not a usable SAE config ({type(e).__name__}: {e})") from None
    try:
        tensors = load_file(str(p / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise ModelLoadError(f"cannot read {p / WEIGHTS}: {e} (truncated or corrupt)") from None
    check_weights(tensors, str(p / WEIGHTS), allow_nonfinite=allow_nonfinite)
    sae = SAE(cfg)
    try:
        sae.load_state_dict(tensors)
    except RuntimeError as e:
        first = " ".join(str(e).splitlines()[:2])
        raise ModelLoadError(f"weights in {p / WEIGHTS} do not match {CONFIG}: {first}") from None
    return sae.eval()
