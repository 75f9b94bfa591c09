"""An Inspect AI model provider for alignlab models: ``inspect eval task.py --model alignlab/RUN_OR_DIR``.

Optional: needs ``inspect-ai`` (the ``inspect`` extra). Inspect finds the provider through the
``inspect_ai`` entry point, which imports this module; importing it registers the ``alignlab``
model API.

``RUN_OR_DIR`` is anything `alignlab.evals.resolve_model` accepts: a model directory, a run folder
holding ``model/``, or a run id (or unique prefix) in the run store. An absolute path gives two
slashes: ``--model alignlab//abs/path/model``.

Model args (``-M key=value`` on the command line, ``model_args=`` in Python):

- ``device``: torch device, default ``"cpu"``.
- ``store``: run store folder for run ids (default ``$ALIGNLAB_STORE``, else ``./alignlab-runs``).
- ``prompt_format``: ``"auto"`` (default), ``"chat"`` or ``"transcript"``. ``"chat"`` renders
  messages in alignlab's assistant format (``User: ...\\nAssistant: `` via
  `alignlab.tasks.format_prompt`), what models on alignlab's character tokenizer are trained on;
  ``"transcript"`` renders a plain ``Human:`` / ``Assistant:`` transcript (alignlab's ``hh``
  format) for models with their own (Hugging Face) tokenizer. ``"auto"`` picks ``"chat"`` when
  the vocabulary is alignlab's.

Generation is `Transformer.generate` on BOS + the rendered prompt, greedy unless the config asks
for a temperature; `GenerateConfig` ``max_tokens``, ``temperature``, ``seed`` and ``stop_seqs`` are
honoured (other sampling options are ignored, tool calls are not supported). Inspect has no
log-likelihood multiple choice, so its ``multiple_choice()`` solver works by generation here too;
for alignlab's log-likelihood scoring use `alignlab.evals.evaluate`.

Example:
    >>> from inspect_ai import Task, eval
    >>> from inspect_ai.dataset import Sample
    >>> from inspect_ai.scorer import match
    >>> from inspect_ai.solver import generate
    >>> task = Task(dataset=[Sample(input="copy abc", target="abc")], solver=generate(), scorer=match())
    >>> eval(task, model="alignlab/alignlab-runs/runs/3f2a9c0e1d2b4a5c/model")
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal

import anyio
import torch
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from alignlab.errors import ConfigError
from alignlab.evals.generation import _cut, _decoder
from alignlab.evals.loglik import _tokenizer_fns
from alignlab.evals.storage import resolve_model
from alignlab.model import Transformer
from alignlab.model import tokenizer as tk
from alignlab.model.hf import load
from alignlab.store import Store
from alignlab.tasks.chat import format_prompt

PromptFormat = Literal["auto", "chat", "transcript"]
DEFAULT_MAX_TOKENS = 128

__all__ = ["AlignlabModelAPI", "render_messages"]


def render_messages(messages: list[ChatMessage], fmt: Literal["chat", "transcript"]) -> str:
    """The prompt text (without BOS) for a conversation, ending where the assistant speaks.

    ``"chat"``: alignlab's format; system text is prepended to the first user turn, earlier
    assistant turns follow their ``Assistant: `` on the same line::

        User: {system}\\n\\n{user 1}\\nAssistant: {assistant 1}\\nUser: {user 2}\\nAssistant:␣

    A single user message gives exactly ``format_prompt(message)``. ``"transcript"``: alignlab's
    ``hh`` layout, ``\\n\\nHuman: ...\\n\\nAssistant: ...`` ending in ``\\n\\nAssistant:``, system
    text first.
    """
    system = "\n\n".join(m.text for m in messages if isinstance(m, ChatMessageSystem))
    turns = [m for m in messages if not isinstance(m, ChatMessageSystem)]
    if fmt == "transcript":
        parts = [system] if system else []
        for m in turns:
            role = "Assistant" if isinstance(m, ChatMessageAssistant) else "Human"
            parts.append(f"\n\nHuman: {m.text}" if role == "Human" else f"\n\nAssistant: {m.text}")
        return "".join(parts) + "\n\nAssistant:"
    out: list[str] = []
    pending: list[str] = [system] if system else []
    for m in turns:
        if isinstance(m, ChatMessageAssistant):
            out.append(format_prompt("\n\n".join(pending)) + m.text + "\n")
            pending = []
        else:  # user and tool messages are what the assistant answers
            pending.append(m.text)
    return "".join(out) + format_prompt("\n\n".join(pending))


class AlignlabModelAPI(ModelAPI):
    """Inspect model API serving an alignlab `Transformer` (see the module docstring)."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),  # noqa: B008 (Inspect's own signature)
        device: str = "cpu",
        store: str | None = None,
        prompt_format: PromptFormat = "auto",
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        if model_args:
            raise ConfigError(
                f"unknown model args {sorted(model_args)} for alignlab; use device, store or prompt_format"
            )
        if prompt_format not in ("auto", "chat", "transcript"):
            raise ConfigError(f"prompt_format must be auto, chat or transcript, not {prompt_format!r}")
        model_dir, self.label = resolve_model(model_name, Store(store) if store else None)
        self.model_dir = Path(model_dir)
        self.model: Transformer = load(self.model_dir, device=device)
        self.format: Literal["chat", "transcript"] = (
            ("chat" if self.model.cfg.d_vocab == tk.VOCAB_SIZE else "transcript")
            if prompt_format == "auto"
            else prompt_format
        )
        self._encode, self._bos = _tokenizer_fns(self.model.tokenizer, self.model.cfg.d_vocab)
        self._decode, self._eos, _ = _decoder(self.model.tokenizer)
        # One forward pass at a time: concurrent samples queue here rather than thrash the CPU.
        self._lock = threading.Lock()

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        return 1

    def collapse_user_messages(self) -> bool:
        return True

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        """Token ids the model is given for ``messages``: BOS + the rendered prompt."""
        bos = [] if self._bos is None else [self._bos]
        return bos + self._encode(render_messages(messages, self.format))

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        if tools:
            raise ConfigError("alignlab models do not support tool calls")
        ids = self.prompt_ids(input)
        start = time.monotonic()
        new_ids = await anyio.to_thread.run_sync(self._generate_ids, ids, config)
        stopped = self._eos in new_ids
        if stopped:
            new_ids = new_ids[: new_ids.index(self._eos)]
        text = self._decode(new_ids)
        stops = tuple(config.stop_seqs or ())
        cut = _cut(text, stops)
        stop_reason: Literal["stop", "max_tokens"] = "stop" if stopped or cut != text else "max_tokens"
        message = ChatMessageAssistant(content=cut, model=self.model_name, source="generate")
        return ModelOutput(
            model=self.model_name,
            choices=[ChatCompletionChoice(message=message, stop_reason=stop_reason)],
            usage=ModelUsage(
                input_tokens=len(ids), output_tokens=len(new_ids), total_tokens=len(ids) + len(new_ids)
            ),
            time=time.monotonic() - start,
        )

    def _generate_ids(self, ids: list[int], config: GenerateConfig) -> list[int]:
        """New token ids (EOS included when emitted) from `Transformer.generate`."""
        max_new = config.max_tokens if config.max_tokens is not None else DEFAULT_MAX_TOKENS
        temperature = config.temperature if config.temperature is not None else 0.0
        device = self.model.device
        generator = None
        if temperature > 0 and config.seed is not None:
            generator = torch.Generator(device=device).manual_seed(config.seed)
        tokens = torch.tensor([ids], dtype=torch.long, device=device)
        with self._lock, torch.no_grad():
            out = self.model.generate(
                tokens, max_new, temperature=temperature, stop_token=self._eos, generator=generator
            )
        return [int(t) for t in out[0, len(ids) :].tolist()]


@modelapi(name="alignlab")
def alignlab_provider() -> type[ModelAPI]:
    """Register `AlignlabModelAPI` as Inspect's ``alignlab`` model API (runs at import)."""
    return AlignlabModelAPI
