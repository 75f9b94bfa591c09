"""Sparse autoencoders with SAELens's parameter names and conventions.

``encode(x) = act((x - b_dec) @ W_enc + b_enc)``, ``decode(f) = f @ W_dec + b_dec`` with
``W_enc: [d_in, d_sae]``, ``W_dec: [d_sae, d_in]`` — the layout of SAELens's standard and TopK
SAEs (``apply_b_dec_to_input=True``), so weights load there unchanged.

- "standard": ReLU features, L1 sparsity penalty (Bricken et al. 2023, "Towards Monosemanticity"),
  trained as in Anthropic's April 2024 update (see `alignlab.interp.sae.train`).
- "topk": only the ``k`` largest pre-activations survive (Gao et al. 2024, "Scaling and evaluating
  sparse autoencoders"); sparsity is set directly, no L1 needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

Architecture = Literal["standard", "topk"]


@dataclass(frozen=True)
class SAEConfig:
    """Shape and kind of an SAE.

    Attributes:
        d_in: activation width.
        d_sae: number of features.
        architecture: "standard" (ReLU + L1) or "topk".
        k: active features per input (TopK only).
        hook_name: where the activations come from (recorded in SAELens's metadata).
    """

    d_in: int
    d_sae: int
    architecture: Architecture = "standard"
    k: int = 0
    hook_name: str = ""

    def __post_init__(self) -> None:
        if self.architecture not in ("standard", "topk"):
            raise ValueError(f"architecture must be 'standard' or 'topk', got {self.architecture!r}")
        if self.architecture == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"a topk SAE needs 0 < k <= d_sae, got k={self.k}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SAE(nn.Module):
    """A sparse autoencoder.

    Example:
        >>> sae = SAE(SAEConfig(d_in=64, d_sae=512, architecture="topk", k=8))
        >>> feats = sae.encode(acts)          # [n, 512], at most 8 non-zero per row
        >>> recon = sae.decode(feats)         # [n, 64]
    """

    def __init__(self, cfg: SAEConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Tied initialisation (encoder = decoder transpose) speeds up early training
        # (Conerly et al. 2024, Anthropic's "April update").
        self.W_enc = nn.Parameter(w_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    def pre_acts(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n f"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n f"]:
        pre = self.pre_acts(x)
        return self.topk(pre) if self.cfg.architecture == "topk" else pre.relu()

    def topk(self, pre: Float[Tensor, "n f"]) -> Float[Tensor, "n f"]:
        """Keep the ``k`` largest pre-activations (ReLU'd), zero the rest."""
        top = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, f: Float[Tensor, "n f"]) -> Float[Tensor, "n d"]:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        return self.decode(self.encode(flat)).reshape(shape)

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Unit-norm decoder rows (TopK training renormalises after every step, as Gao et al. 2024
        do; a standard SAE's L1 is weighted by the row norms instead and folded in at the end)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))
