"""Evaluation harness: vendored safety evals, log-likelihood / generation / judge scoring, CIs.

Example:
    >>> import alignlab
    >>> from alignlab.evals import evaluate, list_eval_tasks
    >>> model = alignlab.load("alignlab-runs/runs/3f2a9c0e1d2b4a5c/model")
    >>> res = evaluate(model, "persona/no-shut-down", limit=300)
    >>> res.metrics["match_behavior"]        # an Estimate with a bootstrap 95% CI
    >>> [t.name for t in list_eval_tasks()][:3]
"""

from alignlab.evals.data import DataError, Field, Row, data_path, read_jsonl
from alignlab.evals.generation import GenerationSpec, generate_ids, generate_texts, left_pad, score_output
from alignlab.evals.judge import REFUSAL_JUDGE, Judge, ModelJudge, RuleJudge
from alignlab.evals.loglik import (
    HFScorer,
    Loglik,
    LoglikScorer,
    Request,
    TransformerScorer,
    make_scorer,
)
from alignlab.evals.registry import (
    EVAL_TASKS,
    PROMPT_FORMATS,
    EvalTask,
    Item,
    eval_task,
    format_question,
    get_eval_task,
    list_eval_tasks,
    match_tasks,
    register,
)
from alignlab.evals.results import EvalResult, ItemResult, mean_estimate
from alignlab.evals.runner import evaluate
from alignlab.evals.storage import log_result, resolve_model

__all__ = [
    "EVAL_TASKS",
    "PROMPT_FORMATS",
    "REFUSAL_JUDGE",
    "DataError",
    "EvalResult",
    "EvalTask",
    "Field",
    "GenerationSpec",
    "HFScorer",
    "Item",
    "ItemResult",
    "Judge",
    "Loglik",
    "LoglikScorer",
    "ModelJudge",
    "Request",
    "Row",
    "RuleJudge",
    "TransformerScorer",
    "data_path",
    "eval_task",
    "evaluate",
    "format_question",
    "generate_ids",
    "generate_texts",
    "get_eval_task",
    "left_pad",
    "list_eval_tasks",
    "log_result",
    "make_scorer",
    "match_tasks",
    "mean_estimate",
    "read_jsonl",
    "register",
    "resolve_model",
    "score_output",
]
