"""The token bookkeeping of greedy and sampled decoding, shared by `Transformer.generate` and the
stacked models' `alignlab.train.StackedModel.generate` (their forward passes differ; this does not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Stopping:
    """Which rows have emitted a stop token; a stopped row keeps emitting the first one, so every
    row of a batch stays the same length (what `Transformer.generate` documents)."""

    def __init__(self, stop_token: int | Sequence[int] | None, rows: int, device: torch.device) -> None:
        if stop_token is None:
            ids = []
        elif isinstance(stop_token, Sequence):
            ids = [int(t) for t in stop_token]
        else:
            ids = [int(stop_token)]
        self.stops = torch.tensor(ids, dtype=torch.long, device=device) if ids else None
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)

    def append(self, out: Tensor, mask: Tensor | None, nxt: Tensor) -> tuple[Tensor, Tensor | None]:
        """``out`` and ``mask`` with each row's next token (a stopped row's first stop token)."""
        if self.stops is not None:
            nxt = torch.where(self.done, self.stops[0], nxt)
            self.done |= torch.isin(nxt, self.stops)
        out = torch.cat([out, nxt[:, None]], dim=1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        return out, mask

    @property
    def all_done(self) -> bool:
        """Every row has stopped (never, without stop tokens)."""
        return self.stops is not None and bool(self.done.all())
