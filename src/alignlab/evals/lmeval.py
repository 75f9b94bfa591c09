"""lm-eval interop: YAML tasks over the vendored data, and lm-eval's `HFLM` on alignlab exports.

lm-eval is an optional dependency (``pip install 'alignlab[evals]'``) and is imported lazily.

- `write_lm_eval_tasks` writes lm-eval task YAML files whose data files are the vendored JSONL
  files (absolute paths into the installed package), so ``lm_eval --include_path DIR`` runs them.
- `hflm` builds lm-eval's `HFLM` on an exported alignlab directory with a BOS-prefixing
  tokenizer, the way alignlab models are trained and scored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignlab.errors import ConfigError
from alignlab.evals.data import data_path
from alignlab.evals.registry import PROMPT_FORMATS, EvalTask, list_eval_tasks

PREFIX = "alignlab_"
_BEHAVIOUR_CHOICES = "{{[answer_matching_behavior, answer_not_matching_behavior]}}"
_BBQ_CHOICES = '{{[" " + ans0, " " + ans1, " " + ans2]}}'


def lm_eval_task_name(name: str) -> str:
    """The lm-eval name of an alignlab task: ``persona/no-shut-down`` -> ``alignlab_persona_no_shut_down``."""
    return PREFIX + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def _q(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: newlines and quotes stay escaped.
    return json.dumps(text)


def _jinja(fmt: str, fields: str) -> str:
    # ``fields`` is the jinja text that stands where the question goes.
    return PROMPT_FORMATS[fmt].replace("{question}", fields)


def _yaml_for(task: EvalTask, fmt: str) -> str | None:
    if not task.source or task.mode == "generate":
        return None
    path = data_path(task.source).resolve()
    head = [
        f"task: {lm_eval_task_name(task.name)}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {_q(str(path))}",
        "test_split: test",
        "output_type: multiple_choice",
        # Choices already carry their leading space (" (A)", " Yes"), as in the data.
        'target_delimiter: ""',
    ]
    if task.name.startswith(("advanced-ai-risk/", "persona/")):
        body = [
            f"doc_to_text: {_q(_jinja(fmt, '{{question}}'))}",
            f"doc_to_choice: {_q(_BEHAVIOUR_CHOICES)}",
            "doc_to_target: 0",
        ]
    elif task.name.startswith("bbq/"):
        body = [
            f"doc_to_text: {_q(_jinja(fmt, '{{context}}' + chr(10) + '{{question}}'))}",
            f"doc_to_choice: {_q(_BBQ_CHOICES)}",
            "doc_to_target: label",
        ]
    elif task.name == "hh-rlhf/harmless-base":
        body = [
            f"process_docs: !function utils.{'hh_docs_chat' if fmt == 'chat' else 'hh_docs'}",
            'doc_to_text: "{{context}}"',
            'doc_to_choice: "{{[chosen_reply, rejected_reply]}}"',
            "doc_to_target: 0",
        ]
    else:
        return None
    tail = [
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
        f"  alignlab_task: {_q(task.name)}",
        f"  prompt_format: {fmt}",
    ]
    return "\n".join(head + body + tail) + "\n"


_UTILS = '''"""process_docs helpers for alignlab's lm-eval tasks (written by alignlab.evals.lmeval)."""

from alignlab.evals.lmeval import hh_docs, hh_docs_chat  # noqa: F401
'''


def write_lm_eval_tasks(
    out_dir: str | Path, names: Sequence[str] | None = None, fmt: str = "hh"
) -> list[str]:
    """Write lm-eval YAML tasks for the vendored log-likelihood tasks into ``out_dir``.

    Args:
        out_dir: folder for the YAML files (pass it to lm-eval's ``--include_path``).
        names: alignlab task names; default every task that has an lm-eval form.
        fmt: prompt format (``"hh"`` or ``"chat"``).

    Returns:
        The lm-eval task names written.

    Example:
        >>> write_lm_eval_tasks("/tmp/al-tasks")[:1]
        ['alignlab_advanced_ai_risk_human_coordinate_itself']
        $ lm_eval --model hf --model_args pretrained=DIR --include_path /tmp/al-tasks \\
              --tasks alignlab_persona_no_shut_down
    """
    if fmt not in PROMPT_FORMATS:
        raise ConfigError(f"unknown prompt format {fmt!r}; choose one of {', '.join(PROMPT_FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(names) if names is not None else None
    written = []
    for task in list_eval_tasks():
        if wanted is not None and task.name not in wanted:
            continue
        text = _yaml_for(task, fmt)
        if text is None:
            if wanted is not None:
                raise ConfigError(f"task {task.name!r} has no lm-eval form (log-likelihood tasks only)")
            continue
        name = lm_eval_task_name(task.name)
        (out / f"{name}.yaml").write_text(text)
        written.append(name)
    (out / "utils.py").write_text(_UTILS)
    return written


def _hh_map(doc: dict[str, Any], chat: bool) -> dict[str, str]:
    from alignlab.evals.catalog import _hh_split, _to_chat

    split = _hh_split(doc["chosen"], doc["rejected"])
    if isinstance(split, str):
        raise ConfigError(f"malformed HH-RLHF pair: {split}")
    ctx, chosen, rejected = (_to_chat(s) for s in split) if chat else split
    return {"context": ctx, "chosen_reply": chosen, "rejected_reply": rejected}


def hh_docs(dataset: Any) -> Any:
    """lm-eval ``process_docs`` for HH-RLHF: the shared context and the two final replies."""
    return dataset.map(lambda d: _hh_map(d, chat=False))


def hh_docs_chat(dataset: Any) -> Any:
    """`hh_docs` in alignlab's chat format."""
    return dataset.map(lambda d: _hh_map(d, chat=True))


def bos_tokenizer(model_dir: str | Path) -> Any:
    """The directory's tokenizer, made to prepend BOS when special tokens are added.

    alignlab models are trained and scored with BOS first. lm-eval's `HFLM` adds special tokens
    when encoding (``add_bos_token=True``), so a tokenizer whose post-processor adds BOS makes
    lm-eval see exactly the tokens alignlab does. A tokenizer that already adds BOS is returned
    unchanged.
    """
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    probe = tok.encode("a", add_special_tokens=True)
    if tok.bos_token_id is None or (probe and probe[0] == tok.bos_token_id):
        return tok
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_token_id)]
    )
    if tok.encode("a", add_special_tokens=True)[:1] != [tok.bos_token_id]:
        raise ConfigError(f"could not make the tokenizer in {model_dir} prepend BOS")
    return tok


def hflm(model_dir: str | Path, batch_size: int = 16, device: str = "cpu") -> Any:
    """lm-eval's `HFLM` on an exported alignlab (or any GPT-NeoX/Llama) directory, BOS first."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=str(model_dir),
        tokenizer=bos_tokenizer(model_dir),
        add_bos_token=True,
        batch_size=batch_size,
        device=device,
        dtype="float32",
    )


def lm_eval_logliks(lm: Any, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
    """lm-eval's ``loglikelihood`` on (context, continuation) pairs: [(logprob, is_greedy)]."""
    from lm_eval.api.instance import Instance

    insts = [
        Instance(request_type="loglikelihood", doc={}, arguments=(c, x), idx=i)
        for i, (c, x) in enumerate(requests)
    ]
    return [(float(ll), bool(g)) for ll, g in lm.loglikelihood(insts, disable_tqdm=True)]
