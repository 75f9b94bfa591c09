"""Hugging Face interop: alignlab models save as, and load from, GPT-NeoX / Llama directories.

The directory alignlab writes is an ordinary Hugging Face checkpoint (config.json,
model.safetensors, tokenizer files), so transformers, lm-eval, Inspect and TRL load it unchanged;
``config.json`` also carries the alignlab config under the key ``"alignlab"`` for an exact round
trip. Weights are read only from safetensors: pickle files can execute code on load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from alignlab._weights import check_weights
from alignlab.errors import ModelLoadError
from alignlab.model.config import ModelConfig
from alignlab.model.transformer import Transformer

_HF_ARCH = {"neox": ("gpt_neox", "GPTNeoXForCausalLM"), "llama": ("llama", "LlamaForCausalLM")}


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """Hugging Face config.json for an alignlab config (readable by old and new transformers)."""
    from alignlab.model import tokenizer as tk

    vocab = tk.vocabulary()
    special = {}
    if cfg.d_vocab == tk.VOCAB_SIZE:
        special = {"bos_token_id": vocab[tk.BOS], "eos_token_id": vocab[tk.EOS]}
        special["pad_token_id"] = vocab[tk.PAD]
    model_type, arch = _HF_ARCH[cfg.arch]
    rope_pct = cfg.rotary_dim / cfg.d_head
    out: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [arch],
        "vocab_size": cfg.d_vocab,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        # attention-only models export a zero MLP of width 1: exactly the same function.
        "intermediate_size": 1 if cfg.attn_only else cfg.mlp_width,
        "max_position_embeddings": cfg.n_ctx,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rotary_base,
            "partial_rotary_factor": rope_pct,
        },
        **special,
    }
    if cfg.arch == "neox":
        out |= {
            "hidden_act": "gelu",
            "layer_norm_eps": cfg.norm_eps,
            "use_parallel_residual": cfg.parallel_attn,
            "rotary_pct": rope_pct,
            "rotary_emb_base": cfg.rotary_base,
            "attention_bias": True,
        }
    else:
        out |= {
            "hidden_act": "silu",
            "rms_norm_eps": cfg.norm_eps,
            "num_key_value_heads": cfg.kv_heads,
            "head_dim": cfg.d_head,
            "rope_theta": cfg.rotary_base,
            "attention_bias": False,
            "mlp_bias": False,
        }
    out["alignlab"] = cfg.to_dict()
    return out


def to_hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """alignlab's fused weights -> Hugging Face parameter names and layouts."""
    cfg = model.cfg
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    H, KV, hd, d = cfg.n_heads, cfg.kv_heads, cfg.d_head, cfg.d_model
    out: dict[str, torch.Tensor] = {}
    if cfg.arch == "neox":
        pre = "gpt_neox."
        out[pre + "embed_in.weight"] = sd["embed.weight"]
        for i in range(cfg.n_layers):
            a, h = f"blocks.{i}.", f"{pre}layers.{i}."
            out[h + "input_layernorm.weight"] = sd[a + "ln1.weight"]
            out[h + "input_layernorm.bias"] = sd[a + "ln1.bias"]
            # HF interleaves per head: [head, (q|k|v), d_head]; we store [(q|k|v), head, d_head].
            w = sd[a + "attn.W_QKV.weight"].view(3, H, hd, d).transpose(0, 1).reshape(3 * H * hd, d)
            b = sd[a + "attn.W_QKV.bias"].view(3, H, hd).transpose(0, 1).reshape(-1)
            out[h + "attention.query_key_value.weight"] = w.contiguous()
            out[h + "attention.query_key_value.bias"] = b.contiguous()
            out[h + "attention.dense.weight"] = sd[a + "attn.W_O.weight"]
            out[h + "attention.dense.bias"] = sd[a + "attn.W_O.bias"]
            if cfg.attn_only:
                out[h + "post_attention_layernorm.weight"] = torch.ones(d)
                out[h + "post_attention_layernorm.bias"] = torch.zeros(d)
                out[h + "mlp.dense_h_to_4h.weight"] = torch.zeros(1, d)
                out[h + "mlp.dense_h_to_4h.bias"] = torch.zeros(1)
                out[h + "mlp.dense_4h_to_h.weight"] = torch.zeros(d, 1)
                out[h + "mlp.dense_4h_to_h.bias"] = torch.zeros(d)
            else:
                out[h + "post_attention_layernorm.weight"] = sd[a + "ln2.weight"]
                out[h + "post_attention_layernorm.bias"] = sd[a + "ln2.bias"]
                out[h + "mlp.dense_h_to_4h.weight"] = sd[a + "mlp.W_in.weight"]
                out[h + "mlp.dense_h_to_4h.bias"] = sd[a + "mlp.W_in.bias"]
                out[h + "mlp.dense_4h_to_h.weight"] = sd[a + "mlp.W_out.weight"]
                out[h + "mlp.dense_4h_to_h.bias"] = sd[a + "mlp.W_out.bias"]
        out[pre + "final_layer_norm.weight"] = sd["ln_final.weight"]
        out[pre + "final_layer_norm.bias"] = sd["ln_final.bias"]
        out["embed_out.weight"] = sd["unembed.weight"]
    else:
        out["model.embed_tokens.weight"] = sd["embed.weight"]
        for i in range(cfg.n_layers):
            a, h = f"blocks.{i}.", f"model.layers.{i}."
            out[h + "input_layernorm.weight"] = sd[a + "ln1.weight"]
            q, k, v = sd[a + "attn.W_QKV.weight"].split((H * hd, KV * hd, KV * hd))
            out[h + "self_attn.q_proj.weight"] = q.contiguous()
            out[h + "self_attn.k_proj.weight"] = k.contiguous()
            out[h + "self_attn.v_proj.weight"] = v.contiguous()
            out[h + "self_attn.o_proj.weight"] = sd[a + "attn.W_O.weight"]
            if cfg.attn_only:
                out[h + "post_attention_layernorm.weight"] = torch.ones(d)
                out[h + "mlp.gate_proj.weight"] = torch.zeros(1, d)
                out[h + "mlp.up_proj.weight"] = torch.zeros(1, d)
                out[h + "mlp.down_proj.weight"] = torch.zeros(d, 1)
            else:
                out[h + "post_attention_layernorm.weight"] = sd[a + "ln2.weight"]
                gate, up = sd[a + "mlp.W_in.weight"].chunk(2)
                out[h + "mlp.gate_proj.weight"] = gate.contiguous()
                out[h + "mlp.up_proj.weight"] = up.contiguous()
                out[h + "mlp.down_proj.weight"] = sd[a + "mlp.W_out.weight"]
        out["model.norm.weight"] = sd["ln_final.weight"]
        out["lm_head.weight"] = sd["unembed.weight"]
    return out


def from_hf_state_dict(cfg: ModelConfig, hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face parameter names and layouts -> alignlab's state dict."""
    H, hd, d = cfg.n_heads, cfg.d_head, cfg.d_model
    out: dict[str, torch.Tensor] = {}

    def get(name: str) -> torch.Tensor:
        try:
            return hf[name]
        except KeyError:
            raise ModelLoadError(f"checkpoint is missing the tensor {name!r}") from None

    if cfg.arch == "neox":
        pre = "gpt_neox."
        out["embed.weight"] = get(pre + "embed_in.weight")
        for i in range(cfg.n_layers):
            a, h = f"blocks.{i}.", f"{pre}layers.{i}."
            out[a + "ln1.weight"] = get(h + "input_layernorm.weight")
            out[a + "ln1.bias"] = get(h + "input_layernorm.bias")
            w = get(h + "attention.query_key_value.weight").view(H, 3, hd, d).transpose(0, 1)
            b = get(h + "attention.query_key_value.bias").view(H, 3, hd).transpose(0, 1)
            out[a + "attn.W_QKV.weight"] = w.reshape(3 * H * hd, d).contiguous()
            out[a + "attn.W_QKV.bias"] = b.reshape(-1).contiguous()
            out[a + "attn.W_O.weight"] = get(h + "attention.dense.weight")
            out[a + "attn.W_O.bias"] = get(h + "attention.dense.bias")
            if not cfg.attn_only:
                out[a + "ln2.weight"] = get(h + "post_attention_layernorm.weight")
                out[a + "ln2.bias"] = get(h + "post_attention_layernorm.bias")
                out[a + "mlp.W_in.weight"] = get(h + "mlp.dense_h_to_4h.weight")
                out[a + "mlp.W_in.bias"] = get(h + "mlp.dense_h_to_4h.bias")
                out[a + "mlp.W_out.weight"] = get(h + "mlp.dense_4h_to_h.weight")
                out[a + "mlp.W_out.bias"] = get(h + "mlp.dense_4h_to_h.bias")
        out["ln_final.weight"] = get(pre + "final_layer_norm.weight")
        out["ln_final.bias"] = get(pre + "final_layer_norm.bias")
        out["unembed.weight"] = get("embed_out.weight")
    else:
        out["embed.weight"] = get("model.embed_tokens.weight")
        for i in range(cfg.n_layers):
            a, h = f"blocks.{i}.", f"model.layers.{i}."
            out[a + "ln1.weight"] = get(h + "input_layernorm.weight")
            out[a + "attn.W_QKV.weight"] = torch.cat([get(h + f"self_attn.{n}_proj.weight") for n in "qkv"])
            out[a + "attn.W_O.weight"] = get(h + "self_attn.o_proj.weight")
            if not cfg.attn_only:
                out[a + "ln2.weight"] = get(h + "post_attention_layernorm.weight")
                out[a + "mlp.W_in.weight"] = torch.cat(
                    [get(h + "mlp.gate_proj.weight"), get(h + "mlp.up_proj.weight")]
                )
                out[a + "mlp.W_out.weight"] = get(h + "mlp.down_proj.weight")
        out["ln_final.weight"] = get("model.norm.weight")
        # Tied checkpoints (e.g. Llama 3.2 1B) have no lm_head tensor.
        out["unembed.weight"] = hf.get("lm_head.weight", out["embed.weight"])
    return out


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Map a Hugging Face config.json (GPT-NeoX or Llama) to a ModelConfig."""
    if not isinstance(hf, dict):
        raise ModelLoadError(f"config.json must hold a JSON object, not {type(hf).__name__}")
    if isinstance(hf.get("alignlab"), dict):
        return ModelConfig.from_dict(hf["alignlab"])
    mt = hf.get("model_type")
    if mt not in ("gpt_neox", "llama"):
        raise ModelLoadError(
            f"unsupported model_type {mt!r}; alignlab loads 'gpt_neox' (Pythia) and 'llama' checkpoints"
        )
    rope: dict[str, Any] = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ModelLoadError(f"unsupported rope scaling {rope!r}; only default RoPE is supported")
    theta = rope.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    common = {
        "d_model": hf["hidden_size"],
        "n_layers": hf["num_hidden_layers"],
        "n_heads": hf["num_attention_heads"],
        "d_mlp": hf["intermediate_size"],
        "d_vocab": hf["vocab_size"],
        "n_ctx": hf.get("max_position_embeddings", 2048),
        "rotary_base": float(theta if theta is not None else 10000.0),
    }
    if mt == "gpt_neox":
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ModelLoadError(f"unsupported GPT-NeoX activation {hf['hidden_act']!r}")
        if hf.get("attention_bias", True) is False:
            raise ModelLoadError("GPT-NeoX checkpoints without attention biases are unsupported")
        pct = rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))
        return ModelConfig(
            arch="neox",
            rotary_pct=float(pct if pct is not None else 0.25),
            parallel_attn=bool(hf.get("use_parallel_residual", True)),
            norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
            **common,
        )
    if mt == "llama":
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ModelLoadError("Llama checkpoints with attention/MLP biases are unsupported")
        head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
        if head_dim * hf["num_attention_heads"] != hf["hidden_size"]:
            raise ModelLoadError("Llama checkpoints with head_dim * n_heads != hidden_size are unsupported")
        return ModelConfig(
            arch="llama",
            n_kv_heads=hf.get("num_key_value_heads"),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            **common,
        )
    raise ModelLoadError(
        f"unsupported model_type {mt!r}; alignlab loads 'gpt_neox' (Pythia) and 'llama' checkpoints"
    )


def save_pretrained(model: Transformer, path: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``model`` as a Hugging Face directory, atomically (a reader never sees half a model).

    Args:
        model: the alignlab model.
        path: target directory; an existing alignlab/HF model there is replaced in one rename.
        tokenizer: a transformers tokenizer; defaults to the model's own, or alignlab's
            character tokenizer when the vocabulary matches it.

    Example:
        >>> model.save_pretrained("out/my-model")
        >>> transformers.AutoModelForCausalLM.from_pretrained("out/my-model")
    """
    from alignlab.model import tokenizer as tk

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not (target / "config.json").exists() and any(target.iterdir()):
        raise ModelLoadError(f"{target} exists and is not a model directory; choose an empty path")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file(to_hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(model.cfg), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps({"do_sample": False}))
        tok: Any = tokenizer or model.tokenizer
        if tok is None and model.cfg.d_vocab == tk.VOCAB_SIZE:
            tok = tk.hf_tokenizer()
        if tok is not None:
            tok.save_pretrained(str(tmp))
        _fsync_dir(tmp)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _replace_dir(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    try:
        if single.exists():
            return load_file(str(single))
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(load_file(str(path / shard)))
            return out
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ModelLoadError(
            f"cannot read weights in {path}: {e} (the safetensors file is truncated or corrupt; "
            "re-export or re-download the model)"
        ) from None
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        raise ModelLoadError(
            f"{path} has only pickle weights (*.bin/*.pt); alignlab loads safetensors only because "
            "unpickling can run arbitrary code. Convert a trusted checkpoint with "
            "transformers' save_pretrained(..., safe_serialization=True)."
        )
    raise ModelLoadError(f"{path} has no model.safetensors; is it a model directory?")


def _resolve(path_or_id: str | os.PathLike[str]) -> Path:
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelLoadError(f"model directory {text!r} not found")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            text, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
        )
    except Exception as e:
        raise ModelLoadError(
            f"{text!r} is not a local directory and could not be fetched from the Hugging Face Hub "
            f"({type(e).__name__}); check the id, or the network / HF_HUB_OFFLINE setting"
        ) from None
    return Path(local)


def load(
    path_or_id: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    tokenizer: bool = True,
    *,
    allow_nonfinite: bool = False,
) -> Transformer:
    """Load an alignlab model from an alignlab or Hugging Face directory, or a Hub id.

    Supports GPT-NeoX (Pythia) and Llama checkpoints stored as safetensors. Remote code is never
    executed.

    Args:
        path_or_id: a model directory, or a Hub id such as ``EleutherAI/pythia-70m``.
        device: where the model is placed.
        tokenizer: also load the tokenizer saved beside the weights.
        allow_nonfinite: load weights holding NaN or inf (e.g. to inspect a diverged model);
            by default they are refused.

    Raises:
        ModelLoadError: the directory is missing, incomplete or corrupt.
        WeightsError: a weight is not floating point (integer and boolean tensors are never cast)
            or, unless ``allow_nonfinite``, holds NaN or inf; the message names the tensor.

    Example:
        >>> model = alignlab.load("alignlab-runs/runs/3f2a9c.../model")
        >>> model = alignlab.load("EleutherAI/pythia-70m")  # where the network allows
    """
    path = _resolve(path_or_id)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise ModelLoadError(f"{path} has no config.json; is it a model directory?")
    try:
        hf = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{cfg_file} is not valid JSON ({e}); the directory is corrupt") from None
    try:
        cfg = config_from_hf(hf)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"{cfg_file} is not a usable model config: {e}") from None
    weights = _read_weights(path)
    check_weights(weights, str(path), allow_nonfinite=allow_nonfinite)
    model = Transformer(cfg)
    try:
        # Converting layouts (the fused-QKV view, torch.cat) already fails on wrong shapes.
        state = from_hf_state_dict(cfg, weights)
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:2]
        raise ModelLoadError(f"weights in {path} do not match config.json: {' '.join(first)}") from None
    if tokenizer and any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        try:
            model.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        except Exception as e:  # a model without a usable tokenizer is still a model
            raise ModelLoadError(f"cannot load the tokenizer in {path}: {e}") from None
    return model.to(device).eval()
