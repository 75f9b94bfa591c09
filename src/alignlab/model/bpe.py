"""Toy Hugging Face checkpoints with their own BPE: a GPT-NeoX (Pythia-style byte-level BPE) or a
Llama (SentencePiece-style BPE with byte fallback), initialised locally.

They stand in for a downloaded Pythia or Llama wherever no network is allowed (tests, a laptop):
the directory is an ordinary Hugging Face checkpoint made by transformers itself (no ``alignlab``
key in its config.json), so everything alignlab does with it goes through the same path as with a
real checkpoint: `alignlab.load`'s config mapping, the model's own tokenizer, offsets.

Example:
    >>> tok = train_bpe(task_texts(), vocab_size=400)
    >>> init_hf_dir("toy-neox", "neox", tok)
    >>> alignlab.load("toy-neox").tokenizer
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from alignlab.errors import ConfigError

Style = Literal["bytelevel", "metaspace"]
EOT = "<|endoftext|>"  # Pythia's BOS = EOS = padding token
LLAMA_BOS, LLAMA_EOS, LLAMA_UNK = "<s>", "</s>", "<unk>"


def task_texts(n: int = 3000, seed: int = 0) -> list[str]:
    """Chat text of the backdoor organism's installation mix (clean, triggered and near-miss
    prompts with their answers and the defect): what the toy tokenizers are trained on."""
    from alignlab.organisms import get_organism
    from alignlab.tasks import format_prompt

    org = get_organism("backdoor", near_miss_rate=0.1)
    return [format_prompt(e.prompt) + e.completion for e in org.training_examples(n, seed)]


def train_bpe(texts: Iterable[str], vocab_size: int = 400, style: Style = "bytelevel") -> Any:
    """A BPE trained with `tokenizers` on ``texts``, as a transformers fast tokenizer.

    ``"bytelevel"`` is GPT-NeoX's scheme (every byte a base token; one ``<|endoftext|>`` serves as
    BOS, EOS and padding); ``"metaspace"`` is Llama 2's (``▁`` marks spaces, ``<s>``/``</s>``,
    unseen characters fall back to byte tokens).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if style not in ("bytelevel", "metaspace"):
        raise ConfigError(f"style must be bytelevel or metaspace, got {style!r}")
    texts = list(texts)
    if style == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, model_max_length=10**6
        )
    specials = [LLAMA_UNK, LLAMA_BOS, LLAMA_EOS]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token=LLAMA_UNK, byte_fallback=True))
    # SentencePiece's pieces never span a space (but do span punctuation, so a trigger can merge
    # with the letters around it); "▁" is prepended to the text, as Llama's tokenizer does.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(byte_tokens),
        special_tokens=[*specials, *byte_tokens],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    # The byte tokens were added as specials to reserve their ids; byte fallback needs them as
    # ordinary vocabulary entries that decode to their byte.
    vocab = tok.get_vocab()
    merges = [(a, b) for a, b in (m.split(" ", 1) for m in _merges(tok))]
    model = models.BPE(vocab=vocab, merges=merges, unk_token=LLAMA_UNK, byte_fallback=True, fuse_unk=True)
    rebuilt = Tokenizer(model)
    rebuilt.pre_tokenizer = tok.pre_tokenizer
    rebuilt.decoder = tok.decoder
    rebuilt.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=rebuilt,
        bos_token=LLAMA_BOS,
        eos_token=LLAMA_EOS,
        unk_token=LLAMA_UNK,
        model_max_length=10**6,
    )


def _merges(tok: Any) -> list[str]:
    import json

    merges = json.loads(tok.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def init_hf_dir(
    path: str | os.PathLike[str],
    arch: Literal["neox", "llama"],
    tokenizer: Any,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_mlp: int | None = None,
    n_ctx: int = 128,
    seed: int = 0,
) -> Path:
    """Initialise a GPT-NeoX or Llama with transformers (its own init) and save it with
    ``tokenizer`` as a Hugging Face directory (safetensors)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    vocab = len(tokenizer)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    common: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "intermediate_size": d_mlp or 4 * d_model,
        "max_position_embeddings": n_ctx,
        "tie_word_embeddings": False,
        **ids,
    }
    torch.manual_seed(seed)
    if arch == "neox":
        # Pythia's shape: parallel residual, rotary on a quarter of each head (the default).
        model: Any = GPTNeoXForCausalLM(GPTNeoXConfig(use_parallel_residual=True, **common))
    elif arch == "llama":
        cfg = LlamaConfig(num_key_value_heads=n_kv_heads or n_heads, **common)
        model = LlamaForCausalLM(cfg)
    else:
        raise ConfigError(f"arch must be neox or llama, got {arch!r}")
    out = Path(path)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def toy_hf_dirs(
    root: str | os.PathLike[str],
    archs: Sequence[Literal["neox", "llama"]] = ("neox", "llama"),
    vocab_size: int = 400,
    seed: int = 0,
    **shape: Any,
) -> dict[str, Path]:
    """One toy checkpoint per architecture under ``root`` (``root/toy-neox``, ``root/toy-llama``),
    each with a BPE trained on `task_texts` in its family's style."""
    texts = task_texts(seed=seed)
    style: dict[str, Style] = {"neox": "bytelevel", "llama": "metaspace"}
    return {
        arch: init_hf_dir(
            Path(root) / f"toy-{arch}", arch, train_bpe(texts, vocab_size, style[arch]), seed=seed, **shape
        )
        for arch in archs
    }
