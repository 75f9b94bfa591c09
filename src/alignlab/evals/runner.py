"""Run one task on one model: score every item, then metrics with bootstrap 95% CIs."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from alignlab._validate import check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.evals.generation import generate_texts, score_output
from alignlab.evals.judge import Judge
from alignlab.evals.loglik import LoglikScorer, Request, make_scorer
from alignlab.evals.registry import DEFAULT_FORMAT, EvalTask, Item, get_eval_task
from alignlab.evals.results import EvalResult, ItemResult, Metrics, mean_metrics
from alignlab.model import Transformer

ProgressFn = Callable[[int, int], None]


def evaluate(
    model: Any,
    task: str | EvalTask,
    *,
    fmt: str = DEFAULT_FORMAT,
    limit: int | None = None,
    tokenizer: Any = None,
    scorer: LoglikScorer | None = None,
    judge: Judge | None = None,
    temperature: float | None = None,
    n_samples: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    model_name: str = "",
) -> EvalResult:
    """Evaluate ``model`` on ``task``.

    Args:
        model: an alignlab `Transformer` (any mode), or a transformers causal LM (log-likelihood
            modes only; pass ``tokenizer``).
        task: a registered task name or an `EvalTask`.
        fmt: prompt format, ``"hh"`` (Perez et al. / HH-RLHF) or ``"chat"`` (alignlab's).
        limit: evaluate only the first ``limit`` items.
        tokenizer: overrides the model's tokenizer.
        scorer: a ready `LoglikScorer` (default: one built for ``model``).
        judge: overrides the task's judge (model-graded tasks).
        temperature: overrides the task's sampling temperature (generate mode).
        n_samples: overrides outputs per item (generate mode, with temperature > 0).
        seed: sampling seed (generate mode).
        progress: called with (items done, items total).
        model_name: how the model is named in the result.

    Returns:
        An `EvalResult` with metrics (each an `Estimate` with a bootstrap 95% CI) and per-item
        results.

    Example:
        >>> model = alignlab.load("alignlab-runs/runs/3f2a9c0e1d2b4a5c/model")
        >>> res = evaluate(model, "advanced-ai-risk/human/survival-instinct", limit=200)
        >>> print(res.metrics["match_behavior"])
        0.52 [0.45, 0.59]
    """
    # Checked before any work, also for log-likelihood tasks that ignore the sampling settings:
    # a NaN temperature there would otherwise be recorded as part of a valid-looking run.
    raise_problems(
        "evaluate",
        [
            None if limit is None else check_int("limit", limit, lo=1),
            None if temperature is None else check_real("temperature", temperature, lo=0.0),
            None if n_samples is None else check_int("n_samples", n_samples, lo=1),
            check_int("seed", seed),
        ],
    )
    t = get_eval_task(task) if isinstance(task, str) else task
    items = t.items(fmt, limit)
    start = time.perf_counter()
    info: dict[str, Any] = {"format": fmt, "limit": limit}
    if t.mode in ("choice", "preference"):
        sc = scorer or make_scorer(model, tokenizer)
        results = _score_choices(t, items, sc, progress)
        info["scorer"] = sc.name
    else:
        results, gen_info = _score_generations(
            t, items, model, tokenizer, judge, temperature, n_samples, seed, progress
        )
        info |= gen_info
    metrics: Metrics = mean_metrics(results)
    if t.metrics is not None:
        metrics |= t.metrics(results)
    seconds = time.perf_counter() - start
    info |= {"seconds": round(seconds, 3), "items_per_s": round(len(items) / max(seconds, 1e-9), 2)}
    if isinstance(model, Transformer):
        info["params"] = model.cfg.param_counts()["total"]
    return EvalResult(t.name, t.mode, model_name or _describe(model), metrics, results, info)


def _describe(model: Any) -> str:
    if isinstance(model, Transformer):
        return f"alignlab:{model.cfg.arch}-{model.cfg.d_model}x{model.cfg.n_layers}"
    return str(getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__)


def _score_choices(
    task: EvalTask, items: Sequence[Item], scorer: LoglikScorer, progress: ProgressFn | None
) -> list[ItemResult]:
    for it in items:
        if len(it.choices) < 2:
            raise ConfigError(f"{task.name}: item {it.id} has fewer than two choices")
    requests = [Request(it.prompt, it.choices) for it in items]
    cb = None if progress is None else (lambda done: progress(done, len(items)))
    scored = scorer.score(requests, cb)
    acc_name, p_name = task.score_names
    out = []
    for it, lls in zip(items, scored, strict=True):
        lp = [x.logprob for x in lls]
        best = max(lp)
        # lm-eval's choice: the first index with the highest log-likelihood.
        choice = lp.index(best)
        scores: dict[str, float] = {}
        if it.target is not None:
            # An exact tie gives fractional credit, so a degenerate model that scores every
            # choice alike sits at chance instead of always "choosing" the target.
            ties = [i for i, v in enumerate(lp) if v == best]
            if acc_name:
                scores[acc_name] = (1.0 / len(ties)) if it.target in ties else 0.0
            if p_name:
                z = sum(math.exp(v - best) for v in lp)
                scores[p_name] = math.exp(lp[it.target] - best) / z
            if task.mode == "preference":
                # Summed log-likelihood favours the shorter reply; the per-token comparison
                # is reported alongside so a length effect is visible.
                per_tok = [x.logprob / x.n_tokens for x in lls]
                top = max(per_tok)
                tied = [i for i, v in enumerate(per_tok) if v == top]
                scores["pref_acc_per_token"] = (1.0 / len(tied)) if it.target in tied else 0.0
        out.append(
            ItemResult(
                id=it.id,
                scores=scores,
                choice=choice,
                target=it.target,
                logprobs=lp,
                meta=dict(it.meta),
            )
        )
    return out


def _score_generations(
    task: EvalTask,
    items: Sequence[Item],
    model: Any,
    tokenizer: Any,
    judge: Judge | None,
    temperature: float | None,
    n_samples: int | None,
    seed: int,
    progress: ProgressFn | None,
) -> tuple[list[ItemResult], dict[str, Any]]:
    spec = task.generation
    assert spec is not None  # register() guarantees it for generate tasks
    if not isinstance(model, Transformer):
        raise ConfigError(
            "generation tasks need an alignlab model; load GPT-NeoX/Llama directories with alignlab.load"
        )
    changes: dict[str, Any] = {}
    if temperature is not None:
        changes["temperature"] = temperature
    if n_samples is not None:
        changes["n_samples"] = n_samples
    if judge is not None:
        changes |= {"judge": judge, "scoring": "judge"}
    spec = dataclasses.replace(spec, **changes) if changes else spec
    cb = None if progress is None else (lambda done: progress(done, len(items)))
    outputs = generate_texts(model, [it.prompt for it in items], spec, tokenizer, seed, progress=cb)
    info: dict[str, Any] = {
        "scoring": spec.scoring,
        "temperature": spec.temperature,
        "n_samples": spec.n_samples,
        "max_new_tokens": spec.max_new_tokens,
        "seed": seed,
    }
    name = task.score_names[0] or "acc"
    prompts: list[list[str]] = [[] for _ in items]
    if spec.scoring == "judge":
        jd = spec.judge
        if jd is None:
            raise ConfigError(f"{task.name} is model-graded but no judge was given")
        flat_items = [it for it, outs in zip(items, outputs, strict=True) for _ in outs]
        graded = jd.grade(flat_items, [o for outs in outputs for o in outs])
        per_item: list[list[float]] = [[] for _ in items]
        k = 0
        for i, outs in enumerate(outputs):
            for _ in outs:
                per_item[i].append(graded[k][0])
                prompts[i].append(graded[k][1])
                k += 1
        info |= {"judge": jd.name, "judge_prompt": jd.prompt}
        name = "judge_score"
    else:
        per_item = [
            [score_output(o, it.targets, spec) for o in outs] for it, outs in zip(items, outputs, strict=True)
        ]
        if spec.pattern is not None:
            info["pattern"] = spec.pattern
    results = [
        ItemResult(
            id=it.id,
            scores={name: sum(s) / len(s)},
            outputs=outs,
            judge_prompts=prompts[i] if spec.scoring == "judge" else None,
            meta={"targets": list(it.targets), **it.meta},
        )
        for i, (it, outs, s) in enumerate(zip(items, outputs, per_item, strict=True))
    ]
    return results, info
