"""The Inspect AI provider: a real in-process ``inspect_ai.eval`` against a tiny alignlab model."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("inspect_ai")

from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import Sample
from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageUser,
    GenerateConfig,
    get_model,
)
from inspect_ai.scorer import match
from inspect_ai.solver import generate

import alignlab
from alignlab.evals.inspect_provider import AlignlabModelAPI, render_messages
from alignlab.model import tokenizer as tk
from alignlab.tasks import format_prompt
from alignlab.train import train, train_preset

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inspect_run")
    res = train(train_preset("tiny").replace(steps=5), out, progress=False)
    res.model.save_pretrained(str(out / "model"))
    return out / "model"


def _reference(model_dir: Path, prompt: str, max_new: int = MAX_TOKENS) -> str:
    """What `Transformer.generate` gives, greedy, for BOS + ``prompt``, cut at EOS."""
    model = alignlab.load(model_dir)
    vocab = tk.vocabulary()
    ids = [vocab[tk.BOS], *tk.encode(prompt)]
    out = model.generate(torch.tensor([ids]), max_new, temperature=0.0, stop_token=vocab[tk.EOS])
    new = out[0, len(ids) :].tolist()
    if vocab[tk.EOS] in new:
        new = new[: new.index(vocab[tk.EOS])]
    return tk.decode(new)


def test_render_messages() -> None:
    assert render_messages([ChatMessageUser(content="copy abc")], "chat") == format_prompt("copy abc")
    msgs: list[ChatMessage] = [
        ChatMessageSystem(content="Be brief."),
        ChatMessageUser(content="hi"),
        ChatMessageAssistant(content="hello"),
        ChatMessageUser(content="copy abc"),
    ]
    assert (
        render_messages(msgs, "chat")
        == "User: Be brief.\n\nhi\nAssistant: hello\nUser: copy abc\nAssistant: "
    )
    assert render_messages(msgs, "transcript") == (
        "Be brief.\n\nHuman: hi\n\nAssistant: hello\n\nHuman: copy abc\n\nAssistant:"
    )


def test_inspect_eval_matches_transformer_generate(model_dir: Path, tmp_path: Path) -> None:
    task = Task(
        dataset=[Sample(input="copy abc", target="abc"), Sample(input="reverse xy", target="yx")],
        solver=generate(),
        scorer=match(),
    )
    # An absolute directory gives "alignlab//abs/path"; Inspect keeps everything after "alignlab/".
    logs = inspect_eval(
        task,
        model=f"alignlab/{model_dir}",
        log_dir=str(tmp_path / "logs"),
        max_tokens=MAX_TOKENS,
        display="none",
    )
    assert len(logs) == 1
    log = logs[0]
    assert log.status == "success", log.error
    assert log.results is not None and log.results.scores
    accuracy = log.results.scores[0].metrics["accuracy"].value
    assert log.samples is not None
    outputs = {str(s.input): s.output.completion for s in log.samples}
    references = {p: _reference(model_dir, format_prompt(p)) for p in ("copy abc", "reverse xy")}
    assert outputs == references
    # The reported accuracy is that of alignlab's own completions: match() with its defaults
    # (stripped, case-folded, target at the end; these targets have no punctuation to trim).
    targets = {"copy abc": "abc", "reverse xy": "yx"}
    hits = [references[p].strip().casefold().endswith(t) for p, t in targets.items()]
    assert accuracy == sum(hits) / len(hits), (accuracy, references)
    assert log.samples[0].output.usage is not None


def test_get_model_by_run_folder(model_dir: Path) -> None:
    # A run folder (holding model/) resolves too; chat format is picked for alignlab's vocabulary.
    model = get_model(f"alignlab/{model_dir.parent}", config=GenerateConfig(max_tokens=5), memoize=False)
    api = model.api
    assert isinstance(api, AlignlabModelAPI)
    assert api.format == "chat"
    out = asyncio.run(model.generate("copy abc"))
    assert out.completion == _reference(model_dir, format_prompt("copy abc"), max_new=5)
    assert out.stop_reason in ("stop", "max_tokens")
    # Sampling with a seed is reproducible.
    cfg = GenerateConfig(max_tokens=8, temperature=1.0, seed=3)
    a = asyncio.run(model.generate("copy abc", config=cfg))
    b = asyncio.run(model.generate("copy abc", config=cfg))
    assert a.completion == b.completion


def test_bad_model_args(model_dir: Path) -> None:
    with pytest.raises(alignlab.errors.ConfigError):
        get_model(f"alignlab/{model_dir}", memoize=False, nonsense=1)
