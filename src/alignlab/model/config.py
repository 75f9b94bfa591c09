"""Model configuration and the size family (Pythia-style suite)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from alignlab._validate import check_choice, check_int, check_real, raise_problems
from alignlab.errors import ConfigError

Arch = Literal["neox", "llama"]

# Far above any model this CPU-scale lab trains or loads (Llama 3's vocabulary is 128,256 and its
# context 131,072), so only a typo reaches them; what fits in memory is checked per run.
_MAX_WIDTH = 1 << 16
_MAX_LAYERS = 1024
_MAX_VOCAB = 1 << 22
_MAX_CTX = 1 << 22
_MAX_MLP = 1 << 20


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an alignlab transformer.

    Attributes:
        arch: "neox" (GPT-NeoX/Pythia: LayerNorm, GELU MLP, partial rotary, biases) or "llama"
            (RMSNorm, SwiGLU, grouped-query attention, no biases).
        d_model: residual stream width.
        n_layers: number of transformer blocks.
        n_heads: query heads per block.
        n_kv_heads: key/value heads (grouped-query attention); ``None`` means ``n_heads``.
        d_mlp: hidden width of the MLP; 0 means ``4 * d_model`` (neox) or ``8/3 * d_model`` rounded
            up to a multiple of 8 (llama).
        d_vocab: vocabulary size.
        n_ctx: maximum context length.
        rotary_pct: fraction of each head's dims that are rotated (Pythia uses 0.25).
        rotary_base: RoPE base frequency.
        parallel_attn: attention and MLP read the same residual (GPT-J/NeoX); llama is always
            sequential, and sequential blocks expose ``hook_resid_mid``.
        attn_only: no MLPs (for induction-head studies, Olsson et al. 2022).
        norm_eps: epsilon of LayerNorm / RMSNorm.
        init_std: std of the normal initialisation of weight matrices.
    """

    arch: Arch = "neox"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_mlp: int = 0
    d_vocab: int = 128
    n_ctx: int = 256
    rotary_pct: float = 0.25
    rotary_base: float = 10000.0
    parallel_attn: bool = True
    attn_only: bool = False
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        problems = [
            check_choice("arch", self.arch, ("neox", "llama")),
            check_int("d_model", self.d_model, lo=1, hi=_MAX_WIDTH),
            check_int("n_layers", self.n_layers, lo=1, hi=_MAX_LAYERS),
            check_int("n_heads", self.n_heads, lo=1, hi=_MAX_WIDTH),
            check_int("d_vocab", self.d_vocab, lo=1, hi=_MAX_VOCAB),
            check_int("n_ctx", self.n_ctx, lo=1, hi=_MAX_CTX),
            check_int("d_mlp", self.d_mlp, lo=0, hi=_MAX_MLP),
            check_real("rotary_pct", self.rotary_pct, lo=0.0, hi=1.0),
            check_real("rotary_base", self.rotary_base, lo=0.0, lo_open=True),
            check_real("norm_eps", self.norm_eps, lo=0.0, lo_open=True),
            check_real("init_std", self.init_std, lo=0.0),
            check_choice("parallel_attn", self.parallel_attn, (True, False)),
            check_choice("attn_only", self.attn_only, (True, False)),
        ]
        if self.n_kv_heads is not None:
            problems.append(check_int("n_kv_heads", self.n_kv_heads, lo=1, hi=_MAX_WIDTH))
        raise_problems("ModelConfig", problems)
        # Relations between fields, checked once each field is a valid number.
        relations = []
        if self.d_model % self.n_heads:
            relations.append(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            relations.append(
                f"n_kv_heads ({self.n_kv_heads}) must be positive and divide n_heads ({self.n_heads})"
            )
        if self.arch == "neox" and self.n_kv_heads not in (None, self.n_heads):
            relations.append("grouped-query attention (n_kv_heads) needs arch='llama'")
        raise_problems("ModelConfig", relations)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def mlp_width(self) -> int:
        if self.d_mlp:
            return self.d_mlp
        if self.arch == "llama":
            return -(-(8 * self.d_model // 3) // 8) * 8
        return 4 * self.d_model

    @property
    def rotary_dim(self) -> int:
        rot = self.d_head if self.arch == "llama" else int(self.d_head * self.rotary_pct)
        return rot - rot % 2

    @property
    def sequential(self) -> bool:
        return self.arch == "llama" or not self.parallel_attn

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def param_counts(self) -> dict[str, int]:
        """Exact parameter counts: ``{"total", "non_embedding", "embedding"}``.

        Embedding counts the token embedding and the (untied) unembedding, as Pythia's tables do
        not; Kaplan et al. (2020) fit scaling laws to the non-embedding count, so we report both.
        """
        d, L = self.d_model, self.n_layers
        hd, kvh = self.d_head, self.kv_heads
        bias = self.arch == "neox"
        norm = 2 * d if self.arch == "neox" else d
        attn = d * (self.n_heads * hd + 2 * kvh * hd) + self.n_heads * hd * d
        if bias:
            attn += self.n_heads * hd + 2 * kvh * hd + d
        if self.attn_only:
            mlp, n_norms = 0, 1
        elif self.arch == "llama":
            mlp, n_norms = 3 * d * self.mlp_width, 2
        else:
            mlp, n_norms = 2 * d * self.mlp_width + self.mlp_width + d, 2
        per_layer = attn + mlp + n_norms * norm
        non_embedding = L * per_layer + norm  # + final norm
        embedding = 2 * self.d_vocab * d
        return {
            "total": non_embedding + embedding,
            "non_embedding": non_embedding,
            "embedding": embedding,
        }


def _neox(d: int, layers: int, heads: int) -> ModelConfig:
    return ModelConfig(arch="neox", d_model=d, n_layers=layers, n_heads=heads)


# The size family: roughly x3 apart in total parameters, like Pythia's suite but 10^4 times
# smaller, so a whole family trains on a laptop CPU. Counts are exact (see `param_counts`).
SIZES: dict[str, ModelConfig] = {
    "al-10k": _neox(16, 2, 2),
    "al-30k": _neox(32, 2, 4),
    "al-100k": _neox(48, 3, 4),
    "al-300k": _neox(80, 4, 4),
    "al-1m": _neox(128, 5, 8),
    "al-3m": _neox(192, 6, 8),
    "al-10m": _neox(320, 8, 8),
}

# Variants used by specific studies.
VARIANTS: dict[str, ModelConfig] = {
    # Two wide heads: with 8 heads of width 8 no induction head formed within 800 steps, with 2
    # heads of width 32 one forms reliably in ~350 (measured; see tests/test_interp_induction.py).
    "attn-only-1l": ModelConfig(d_model=64, n_layers=1, n_heads=2, attn_only=True),
    "attn-only-2l": ModelConfig(d_model=64, n_layers=2, n_heads=2, attn_only=True),
    "llama-tiny": ModelConfig(arch="llama", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2),
}

MODEL_PRESETS: dict[str, ModelConfig] = {**SIZES, **VARIANTS}


def model_preset(name: str) -> ModelConfig:
    """Look up a model preset by name, with a helpful error."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}"
        ) from None
