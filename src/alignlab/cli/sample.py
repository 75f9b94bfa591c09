"""``alignlab sample``: continue a prompt with a trained model (a quick look at behaviour)."""

from __future__ import annotations

from typing import Annotated

import torch
import typer

from alignlab.cli._common import StoreOpt, resolve_model_dir
from alignlab.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command()
    def sample(
        model: Annotated[str, typer.Option("--model", "-m", help="Model directory or run id.")],
        prompt: Annotated[str, typer.Option("--prompt", help="Text to continue.")] = "",
        chat: Annotated[bool, typer.Option(help="Wrap the prompt in the assistant format.")] = False,
        max_new_tokens: Annotated[int, typer.Option(min=1, max=4096)] = 64,
        temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
        seed: Annotated[int, typer.Option()] = 0,
        store: StoreOpt = None,
    ) -> None:
        """Generate a continuation of PROMPT (greedy by default)."""
        from alignlab import load
        from alignlab.model import tokenizer as tk
        from alignlab.tasks import format_prompt

        m = load(resolve_model_dir(model, store))
        # The model's own tokenizer (saved beside it); alignlab's character tokenizer otherwise.
        tok = m.tokenizer if m.tokenizer is not None else tk.hf_tokenizer()
        text = format_prompt(prompt) if chat else prompt
        ids = tok.encode(text, add_special_tokens=False)
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        if not ids:
            raise ConfigError("empty prompt and the tokenizer has no BOS token; pass --prompt")
        out = m.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop_token=tok.eos_token_id,
            generator=torch.Generator().manual_seed(seed),
        )
        typer.echo(tok.decode(out[0, len(ids) :].tolist(), skip_special_tokens=True))
