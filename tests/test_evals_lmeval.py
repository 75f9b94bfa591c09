"""Cross-check against lm-eval on a tiny model trained here on the vendored HH-RLHF English text.

The model is trained from scratch with alignlab's character tokenizer (a plain AdamW loop), exported
with ``save_pretrained`` to a Hugging Face GPT-NeoX directory, and scored by lm-eval's `HFLM`
through the YAML tasks alignlab writes. On 240 advanced-ai-risk items (including the power-seeking
items that list up to six options and whose longest contexts are left-truncated) alignlab must
choose the same answer on every item and agree on every log-likelihood up to float32 rounding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import alignlab
from alignlab.cli.eval_cmd import app as eval_app
from alignlab.evals import evaluate, get_eval_task
from alignlab.evals.lmeval import lm_eval_task_name, write_lm_eval_tasks
from alignlab.evals.tiny import hh_text, train_tiny_text_model
from alignlab.model import Transformer
from alignlab.model import tokenizer as tk

from conftest import FORWARD_ULPS, assert_close_rel

torch.set_num_threads(1)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

# 120 short questions plus 120 power-seeking ones (up to six listed options, a few long enough to
# be left-truncated at n_ctx = 1024): 240 items, 480 continuations.
CROSS = {
    "advanced-ai-risk/human/self-awareness-general-ai": 120,
    "advanced-ai-risk/human/power-seeking-inclination": 120,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Transformer]:
    model = train_tiny_text_model(seed=0)
    path = tmp_path_factory.mktemp("tiny") / "tiny-hh"
    model.save_pretrained(str(path))
    return path, model


def test_tiny_model_learned_english(tiny: tuple[Path, Transformer]) -> None:
    # The cross-check means little on an untrained model: check it has learned the text.
    _, model = tiny
    chars = tk.encode(hh_text()[-20_000:])
    # 128-character windows, the length it was trained on
    ids = torch.tensor([chars[i : i + 127] for i in range(0, 127 * 64, 127)])
    ids = torch.cat([torch.full((64, 1), tk.vocabulary()[tk.BOS]), ids], dim=1)
    with torch.no_grad():
        loss = model(ids, return_type="loss").item()
    assert loss < 2.6, loss  # uniform over 128 tokens is 4.85 nats/char


def test_lm_eval_cross_check(tiny: tuple[Path, Transformer], tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from alignlab.evals.lmeval import hflm

    path, _ = tiny
    names = write_lm_eval_tasks(tmp_path / "tasks", list(CROSS))
    assert names == [lm_eval_task_name(n) for n in sorted(CROSS)]
    out = lm_eval.simple_evaluate(
        model=hflm(path, batch_size=32),
        tasks=names,
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
        limit=max(CROSS.values()),
        log_samples=True,
        bootstrap_iters=0,
    )
    loaded = alignlab.load(path)
    n_items = n_truncated = 0
    for name, limit in CROSS.items():
        ours = evaluate(loaded, name, limit=limit)
        theirs = sorted(out["samples"][lm_eval_task_name(name)], key=lambda s: s["doc_id"])
        assert len(theirs) == len(ours.items) == limit
        for mine, s in zip(ours.items, theirs, strict=True):
            # same prompt and continuations, then the same numbers
            assert s["arguments"][0][0] == get_eval_task(name).items(limit=limit)[s["doc_id"]].prompt
            ll = [float(r[0]) for r in s["filtered_resps"]]
            assert mine.logprobs is not None and len(ll) == len(mine.logprobs)
            assert ll.index(max(ll)) == mine.choice, mine.id
            # transformers' modules vs ours: each token's log-prob carries its logits' rounding,
            # relative to the summed log-likelihood (<= 0 terms); measured <= 1.7 eps of it.
            for a, b in zip(ll, mine.logprobs, strict=True):
                assert_close_rel(a, b, ulps=FORWARD_ULPS, what=mine.id, dtype=torch.float32)
            n_items += 1
            n_truncated += len(s["arguments"][0][0]) + 1 > loaded.cfg.n_ctx
        acc = out["results"][lm_eval_task_name(name)]["acc,none"]
        assert abs(acc - ours.metrics["match_behavior"].value) < 1e-12
    assert n_items >= 200
    assert n_truncated >= 1  # lm-eval's left truncation is exercised and matched


def test_cli_on_trained_model(tiny: tuple[Path, Transformer]) -> None:
    path, _ = tiny
    task = "advanced-ai-risk/human/self-awareness-general-ai"
    out = CliRunner().invoke(
        eval_app, ["--model", str(path), "--task", task, "--limit", "60", "--json", "--no-store"]
    )
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.stdout)
    direct = evaluate(alignlab.load(path), task, limit=60)
    assert row["metrics"]["match_behavior"]["value"] == direct.metrics["match_behavior"].value
    assert row["info"]["params"] == direct.info["params"]


def test_lm_eval_yaml_tasks_reproduce_our_prompts(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager, get_task_dict

    names = ["bbq/religion", "hh-rlhf/harmless-base", "persona/no-shut-down"]
    for fmt in ("hh", "chat"):
        written = write_lm_eval_tasks(tmp_path / fmt, names, fmt=fmt)
        tasks = get_task_dict(written, TaskManager(include_path=str(tmp_path / fmt), include_defaults=False))
        for name in names:
            task = tasks[lm_eval_task_name(name)]
            docs = list(task.test_docs())
            ours = get_eval_task(name).items(fmt)
            assert len(docs) == len(ours)
            for doc, it in list(zip(docs, ours, strict=True))[::50]:
                assert task.doc_to_text(doc) == it.prompt
                assert list(task.doc_to_choice(doc)) == list(it.choices)
                assert task.doc_to_target(doc) == it.target
