"""Hugging Face interop: logits parity in both directions, padding, and robust loading/saving."""

from __future__ import annotations

import json
import pathlib
import pickle
from pathlib import Path

import pytest
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

import alignlab
from alignlab.errors import AlignlabError, ModelLoadError
from alignlab.model import ModelConfig, Transformer
from alignlab.model import hf as hf_mod

from conftest import (
    FORWARD_ULPS,
    TINY_CFGS,
    assert_close_rel,
    make_model,
    max_abs_diff,
    perturb_,
    random_tokens,
)

# Ours vs transformers' modules, padded vs alone, saved vs reloaded: the same sums in other
# orders (or kernels), so rounding only (conftest.FORWARD_ULPS); a layout bug is O(1).
ULPS = FORWARD_ULPS

HF_CLASS = {"neox": GPTNeoXForCausalLM, "llama": LlamaForCausalLM}
PARITY_CFGS = ["neox-parallel", "neox-sequential", "neox-attn-only", "llama-gqa", "llama-mha"]


def _hf_load(path: Path) -> torch.nn.Module:
    kwargs = {"dtype": torch.float32, "output_loading_info": True}
    hf, info = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    # Nothing may be silently re-initialised or dropped.
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return hf.eval()


@torch.no_grad()
def _hf_logits(hf: torch.nn.Module, tokens: torch.Tensor, **kwargs: object) -> torch.Tensor:
    return hf(input_ids=tokens, use_cache=False, **kwargs).logits


# ---------------------------------------------------------------------------------------------
# alignlab -> Hugging Face


@pytest.mark.parametrize("name", PARITY_CFGS)
def test_save_pretrained_loads_in_transformers_with_same_logits(name: str, tmp_path: Path) -> None:
    cfg = TINY_CFGS[name]
    model = make_model(cfg, seed=3)
    model.save_pretrained(str(tmp_path / "m"))
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)

    hf = _hf_load(tmp_path / "m")
    assert type(hf) is HF_CLASS[cfg.arch]
    assert next(hf.parameters()).dtype == torch.float32
    tokens = random_tokens(3, 20, seed=4)
    with torch.no_grad():
        ours = model(tokens)
    theirs = _hf_logits(hf, tokens)
    assert_close_rel(ours, theirs, ulps=ULPS, what="export parity")
    assert ours.std() > 0.1  # the logits carry signal, so the comparison means something

    # And the same directory round-trips into alignlab exactly.
    back = alignlab.load(tmp_path / "m")
    assert back.cfg == cfg
    with torch.no_grad():
        assert_close_rel(back(tokens), ours, ulps=ULPS, what="export roundtrip")


def test_hf_config_fields(tmp_path: Path) -> None:
    """The config.json transformers reads describes the same architecture."""
    cfg = TINY_CFGS["neox-sequential"]
    make_model(cfg).save_pretrained(str(tmp_path / "m"))
    hc = transformers.AutoConfig.from_pretrained(str(tmp_path / "m"))
    assert hc.model_type == "gpt_neox"
    assert hc.use_parallel_residual is False
    assert hc.rope_parameters["partial_rotary_factor"] == pytest.approx(0.5)
    assert hc.rope_parameters["rope_theta"] == pytest.approx(1000.0)
    assert hc.layer_norm_eps == pytest.approx(1e-3)
    assert hc.tie_word_embeddings is False
    assert (hc.hidden_size, hc.num_hidden_layers, hc.num_attention_heads) == (32, 2, 4)

    cfg = TINY_CFGS["llama-gqa"]
    make_model(cfg).save_pretrained(str(tmp_path / "l"))
    hc = transformers.AutoConfig.from_pretrained(str(tmp_path / "l"))
    assert hc.model_type == "llama"
    assert (hc.num_attention_heads, hc.num_key_value_heads, hc.head_dim) == (4, 2, 8)
    assert hc.intermediate_size == cfg.mlp_width


# ---------------------------------------------------------------------------------------------
# Hugging Face -> alignlab (config.json written by transformers: no "alignlab" key)

_COMMON = {"vocab_size": 128, "max_position_embeddings": 64, "initializer_range": 0.1}

HF_BUILT = {
    "pythia-like": lambda: GPTNeoXForCausalLM(
        GPTNeoXConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            rotary_pct=0.25,
            use_parallel_residual=True,
            **_COMMON,
        )
    ),
    "neox-sequential": lambda: GPTNeoXForCausalLM(
        GPTNeoXConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            rotary_pct=0.5,
            rotary_emb_base=500.0,
            use_parallel_residual=False,
            layer_norm_eps=1e-3,
            **_COMMON,
        )
    ),
    "llama-gqa-tied": lambda: LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=48,
            tie_word_embeddings=True,
            rms_norm_eps=1e-5,
            **_COMMON,
        )
    ),
    "llama-mha": lambda: LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=40,
            rope_theta=3000.0,
            **_COMMON,
        )
    ),
}


def _build_hf(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)  # transformers initialises from the global RNG
    hf = HF_BUILT[name]()
    return perturb_(hf, seed=seed + 1, scale=0.2).eval()


@pytest.mark.parametrize("name", list(HF_BUILT))
def test_transformers_checkpoint_loads_in_alignlab(name: str, tmp_path: Path) -> None:
    hf = _build_hf(name)
    hf.save_pretrained(str(tmp_path / "hf"), safe_serialization=True)
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert "alignlab" not in written  # the import path really reads HF's own fields
    assert (tmp_path / "hf" / "model.safetensors").exists()

    model = alignlab.load(tmp_path / "hf")
    hc = hf.config
    assert model.cfg.arch == ("neox" if hc.model_type == "gpt_neox" else "llama")
    if model.cfg.arch == "llama":
        assert model.cfg.kv_heads == hc.num_key_value_heads
    assert model.cfg.rotary_base == pytest.approx(hc.rope_parameters["rope_theta"])
    tokens = random_tokens(3, 20, seed=9)
    theirs = _hf_logits(hf, tokens)
    with torch.no_grad():
        ours = model(tokens)
    assert_close_rel(ours, theirs, ulps=ULPS, what="import parity")
    assert ours.std() > 0.1


def test_tied_llama_unembed_equals_embed(tmp_path: Path) -> None:
    hf = _build_hf("llama-gqa-tied")
    hf.save_pretrained(str(tmp_path / "hf"))
    model = alignlab.load(tmp_path / "hf")
    assert model.cfg.kv_heads == 2
    assert torch.equal(model.unembed.weight, model.embed.weight)
    assert torch.equal(model.embed.weight, hf.get_input_embeddings().weight.detach())


def test_pythia_like_config_maps_fields(tmp_path: Path) -> None:
    hf = _build_hf("pythia-like")
    hf.save_pretrained(str(tmp_path / "hf"))
    cfg = alignlab.load(tmp_path / "hf").cfg
    assert (cfg.arch, cfg.d_model, cfg.n_layers, cfg.n_heads) == ("neox", 32, 2, 4)
    assert (cfg.d_mlp, cfg.d_vocab, cfg.n_ctx) == (128, 128, 64)
    assert cfg.parallel_attn is True
    assert cfg.rotary_dim == 2  # 0.25 of d_head 8


# ---------------------------------------------------------------------------------------------
# Padding


def _left_pad(seqs: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, width - len(s) :] = s
        mask[i, width - len(s) :] = 1
    return tokens, mask


@pytest.mark.parametrize("name", ["neox-parallel", "neox-sequential", "llama-gqa"])
def test_left_padding_matches_unpadded_and_hf(name: str, tmp_path: Path) -> None:
    model = make_model(TINY_CFGS[name], seed=5)
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 128, (n,), generator=gen) for n in (12, 7, 3)]
    tokens, mask = _left_pad(seqs, pad_id=77)  # a non-special pad: it must be masked, not ignored
    rot_q = "blocks.0.attn.hook_rot_q"
    with torch.no_grad():
        padded = model(tokens, attention_mask=mask)
        # Explicit-attention path (cache), which also shows the rotary positions: RoPE scores are
        # relative, so counting positions over real tokens only is visible in hook_rot_q alone.
        padded_cached, cache = model.run_with_cache(tokens, attention_mask=mask)
        for i, s in enumerate(seqs):
            alone, alone_cache = model.run_with_cache(s[None], names_filter=rot_q)
            real = slice(-len(s), None)
            assert_close_rel(padded[i, real], alone[0], ulps=ULPS, what="left padded")
            assert_close_rel(padded_cached[i, real], alone[0], ulps=ULPS, what="left padded, cached")
            rot_alone = alone_cache[rot_q][0]
            assert_close_rel(cache[rot_q][i, real], rot_alone, ulps=ULPS, what="left padded rot_q")
    # Without the mask the short rows really would differ (the test can fail).
    with torch.no_grad():
        unmasked = model(tokens)
    assert max_abs_diff(unmasked[2, -3:], padded[2, -3:]) > 1e-3

    # transformers' forward() does not derive positions from the mask (it uses arange; generate()
    # passes cumsum-based position_ids). Compare like for like with explicit position_ids, and
    # also with HF's default: RoPE scores depend only on position differences, so the real
    # positions' logits agree either way.
    model.save_pretrained(str(tmp_path / "m"))
    hf = _hf_load(tmp_path / "m")
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    theirs = _hf_logits(hf, tokens, attention_mask=mask, position_ids=position_ids)
    theirs_default_pos = _hf_logits(hf, tokens, attention_mask=mask)
    for i, s in enumerate(seqs):
        real = slice(-len(s), None)
        assert_close_rel(padded[i, real], theirs[i, real], ulps=ULPS, what="left padded vs HF")
        what = "left padded vs HF's default positions"
        assert_close_rel(padded[i, real], theirs_default_pos[i, real], ulps=ULPS, what=what)


def test_right_padding_matches_unpadded() -> None:
    model = make_model(TINY_CFGS["llama-mha"])
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 128, (n,), generator=gen) for n in (9, 4)]
    tokens = torch.zeros(2, 9, dtype=torch.long)
    mask = torch.zeros(2, 9, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)], mask[i, : len(s)] = s, 1
    with torch.no_grad():
        padded = model(tokens, attention_mask=mask)
        for i, s in enumerate(seqs):
            assert_close_rel(padded[i, : len(s)], model(s[None])[0], ulps=ULPS, what="right padded")


# ---------------------------------------------------------------------------------------------
# Bad input to alignlab.load: always ModelLoadError with a readable message


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    make_model(TINY_CFGS["neox-parallel"]).save_pretrained(str(path))
    return path


def _load_error(path: Path | str) -> str:
    with pytest.raises(ModelLoadError) as info:
        alignlab.load(path)
    assert isinstance(info.value, AlignlabError)
    msg = str(info.value)
    assert msg and "Traceback" not in msg
    assert info.value.__cause__ is None  # `from None`: the CLI shows one line, not a chain
    return msg


def test_load_missing_directory(tmp_path: Path) -> None:
    msg = _load_error(tmp_path / "does-not-exist")
    assert "not found" in msg and "does-not-exist" in msg


def test_load_dir_without_config(saved: Path) -> None:
    (saved / "config.json").unlink()
    msg = _load_error(saved)
    assert "config.json" in msg


def test_load_invalid_json_config(saved: Path) -> None:
    (saved / "config.json").write_text('{"model_type": "gpt_neox", "hidden_size": ')
    msg = _load_error(saved)
    assert "config.json" in msg and "JSON" in msg


def test_load_json_config_that_is_not_an_object(saved: Path) -> None:
    (saved / "config.json").write_text("[1, 2, 3]")
    msg = _load_error(saved)
    assert "config.json" in msg


def test_load_config_missing_fields(saved: Path) -> None:
    (saved / "config.json").write_text(json.dumps({"model_type": "llama"}))
    msg = _load_error(saved)
    assert "config.json" in msg and "hidden_size" in msg


def test_load_truncated_safetensors(saved: Path) -> None:
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    msg = _load_error(saved)
    assert "truncated or corrupt" in msg and str(saved) in msg


def test_load_empty_safetensors(saved: Path) -> None:
    (saved / "model.safetensors").write_bytes(b"")
    assert "corrupt" in _load_error(saved)


class _Canary:
    """Unpickling this creates a file: proof that a pickle was (or was not) executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_load_refuses_pickle_only_directory(saved: Path, tmp_path: Path) -> None:
    # The canary works: unpickling it does create its file.
    control = tmp_path / "control-unpickled"
    pickle.loads(pickle.dumps(_Canary(control)))
    assert control.exists()

    marker = tmp_path / "pickle-was-executed"
    (saved / "model.safetensors").unlink()
    torch.save({"gpt_neox.embed_in.weight": _Canary(marker)}, str(saved / "pytorch_model.bin"))
    assert not marker.exists()
    msg = _load_error(saved)
    assert "pickle" in msg and "safetensors" in msg
    assert not marker.exists(), "alignlab.load unpickled an untrusted checkpoint"


def test_load_weights_with_wrong_shapes(saved: Path, tmp_path: Path) -> None:
    config = json.loads((saved / "config.json").read_text())
    # A bigger MLP than the weights have.
    config["alignlab"]["d_mlp"] = 64
    (saved / "config.json").write_text(json.dumps(config))
    msg = _load_error(saved)
    assert "do not match" in msg and "config.json" in msg

    # A different width: the fused-QKV reshape itself cannot work.
    config["alignlab"]["d_mlp"] = 0
    config["alignlab"]["d_model"] = 64
    (saved / "config.json").write_text(json.dumps(config))
    msg = _load_error(saved)
    assert "do not match" in msg

    # Llama with a wrong number of kv heads.
    path = tmp_path / "llama"
    make_model(TINY_CFGS["llama-gqa"]).save_pretrained(str(path))
    config = json.loads((path / "config.json").read_text())
    config["alignlab"]["n_kv_heads"] = 4
    (path / "config.json").write_text(json.dumps(config))
    assert "do not match" in _load_error(path)


def test_load_missing_tensor(saved: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(saved / "model.safetensors"))
    del weights["gpt_neox.layers.1.attention.dense.bias"]
    save_file(weights, str(saved / "model.safetensors"))
    msg = _load_error(saved)
    assert "gpt_neox.layers.1.attention.dense.bias" in msg


def test_load_unsupported_model_type(saved: Path) -> None:
    gpt2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 128}
    (saved / "config.json").write_text(json.dumps(gpt2))
    msg = _load_error(saved)
    assert "unsupported model_type" in msg and "gpt2" in msg


def test_load_unsupported_rope_scaling(tmp_path: Path) -> None:
    hf = _build_hf("llama-mha")
    hf.save_pretrained(str(tmp_path / "hf"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 3000.0}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert "rope" in _load_error(tmp_path / "hf")


# ---------------------------------------------------------------------------------------------
# save_pretrained: atomic replace, refusal to clobber


def test_save_pretrained_replaces_existing_model_dir(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    target = parent / "model"
    old = make_model(TINY_CFGS["neox-parallel"], seed=1)
    new = make_model(TINY_CFGS["llama-gqa"], seed=2)
    old.save_pretrained(str(target))
    (target / "stale-file.txt").write_text("from the old model")
    new.save_pretrained(str(target))
    assert not (target / "stale-file.txt").exists()  # the old directory is gone, not merged
    assert sorted(p.name for p in parent.iterdir()) == ["model"]  # no temp/old dirs left
    loaded = alignlab.load(target)
    assert loaded.cfg == new.cfg
    tokens = random_tokens(2, 8)
    with torch.no_grad():
        assert_close_rel(loaded(tokens), new(tokens), ulps=ULPS, what="replaced dir")


def test_failed_save_leaves_existing_model_intact(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "model"
    old = make_model(TINY_CFGS["neox-parallel"], seed=1)
    old.save_pretrained(str(target))
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def failing_save_file(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(hf_mod, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        make_model(TINY_CFGS["neox-parallel"], seed=2).save_pretrained(str(target))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    monkeypatch.undo()
    tokens = random_tokens(2, 8)
    with torch.no_grad():
        kept = alignlab.load(target)(tokens)
        assert_close_rel(kept, old(tokens), ulps=ULPS, what="model kept after a failed save")


def test_save_pretrained_refuses_non_model_dir(tmp_path: Path) -> None:
    target = tmp_path / "notes"
    target.mkdir()
    (target / "thesis.txt").write_text("do not delete me")
    (target / "sub").mkdir()
    with pytest.raises(AlignlabError, match="not a model directory"):
        make_model(TINY_CFGS["neox-parallel"]).save_pretrained(str(target))
    assert sorted(p.name for p in target.iterdir()) == ["sub", "thesis.txt"]
    assert (target / "thesis.txt").read_text() == "do not delete me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_save_pretrained_into_empty_dir(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    model = make_model(TINY_CFGS["neox-attn-only"])
    model.save_pretrained(str(target))
    assert alignlab.load(target).cfg == model.cfg


def test_transformer_save_pretrained_is_hf_save(tmp_path: Path) -> None:
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, n_ctx=16)
    model = Transformer(cfg)
    out = hf_mod.save_pretrained(model, tmp_path / "a")
    assert out == tmp_path / "a"
    assert alignlab.load(out).cfg == cfg
