"""A tiny character-level English model trained in seconds on the vendored HH-RLHF dialogues.

Used by the lm-eval cross-check test and the eval throughput benchmark: the model must be real (its
log-likelihoods depend on the text, so a wrong token boundary or a missing BOS shows up), yet cheap
enough to train inside a test.
"""

from __future__ import annotations

import gzip
import json

import torch

from alignlab.evals.data import data_path
from alignlab.model import ModelConfig, Transformer
from alignlab.model import tokenizer as tk

TINY_TEXT_CONFIG = ModelConfig(arch="neox", d_model=64, n_layers=2, n_heads=4, n_ctx=1024)


def hh_text() -> str:
    """The chosen transcripts of the vendored HH-RLHF harmless-base split, one long string."""
    raw = gzip.decompress(data_path("hh-rlhf/harmless-base/test.jsonl.gz").read_bytes())
    return "".join(json.loads(line)["chosen"] for line in raw.splitlines() if line.strip())


def train_tiny_text_model(
    steps: int = 200,
    seed: int = 0,
    cfg: ModelConfig = TINY_TEXT_CONFIG,
    batch_size: int = 8,
    seq_len: int = 128,
    lr: float = 3e-3,
) -> Transformer:
    """Train a small model (plain AdamW loop) on random windows of HH-RLHF text, BOS first.

    Example:
        >>> model = train_tiny_text_model()   # about 10 s of one CPU core; ~2.3 nats/char
        >>> model.save_pretrained("/tmp/tiny-hh")      # a Hugging Face GPT-NeoX directory
    """
    torch.manual_seed(seed)
    ids = torch.tensor(tk.encode(hh_text()))
    bos = tk.vocabulary()[tk.BOS]
    model = Transformer(cfg)
    model.init_weights(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=gen)
        windows = torch.stack([ids[s : s + seq_len - 1] for s in starts.tolist()])
        tokens = torch.cat([torch.full((batch_size, 1), bos), windows], dim=1)
        for group in opt.param_groups:  # linear decay: a smoother end point than a constant lr
            group["lr"] = lr * (1 - step / steps)
        loss = model(tokens, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval()
