"""alignlab.evals: vendored data and validation, scoring modes, metrics, store and CLI.

Every model here is a real alignlab Transformer (random but perturbed weights, so a wrong token
boundary or position changes the numbers); the lm-eval cross-check on a trained model lives in
test_evals_lmeval.py.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alignlab.cli.eval_cmd import app as eval_app
from alignlab.evals import (
    DataError,
    EvalTask,
    GenerationSpec,
    HFScorer,
    Item,
    Loglik,
    ModelJudge,
    Request,
    RuleJudge,
    TransformerScorer,
    catalog,
    evaluate,
    generate_texts,
    get_eval_task,
    list_eval_tasks,
    log_result,
    make_scorer,
    match_tasks,
    read_jsonl,
    score_output,
    vendor,
)
from alignlab.evals.data import data_path
from alignlab.model import ModelConfig, Transformer
from alignlab.model import tokenizer as tk
from alignlab.store import Store

from conftest import FORWARD_ULPS, TINY_CFGS, assert_close_rel, cli, make_model

torch.set_num_threads(1)

CFG = ModelConfig(arch="neox", d_model=32, n_layers=2, n_heads=4, n_ctx=96, init_std=0.1)


@pytest.fixture(scope="module")
def model() -> Transformer:
    return make_model(CFG, seed=3)


# ---- vendored data -------------------------------------------------------------------------


def test_vendored_files_match_manifest_and_upstream_hashes() -> None:
    assert vendor.check() == []
    # The eval data stays small (the vendored base models beside it are sized on their own).
    total = sum(
        p.stat().st_size
        for c in ("anthropic-evals", "bbq", "hh-rlhf")
        for p in (vendor.DATA_DIR / c).rglob("*")
        if p.is_file()
    )
    assert total < 3_000_000
    for collection in ("anthropic-evals", "bbq", "hh-rlhf"):
        assert (vendor.DATA_DIR / collection / "LICENSE").exists()
        assert "Commit" in (vendor.DATA_DIR / collection / "README.md").read_text()


EXPECTED_COUNTS = {
    "advanced-ai-risk/human/power-seeking-inclination": 998,
    "advanced-ai-risk/human/survival-instinct": 953,
    "advanced-ai-risk/lm/survival-instinct": 1000,
    "persona/no-shut-down": 1000,
    "bbq/religion": 1200,
    "bbq/sexual-orientation": 864,
    "bbq/disability-status": 1556,
    "hh-rlhf/harmless-base": 2312,
    "winogenerated": 2990,
    "chat/copy": 200,
}


def test_every_task_loads_with_its_item_count() -> None:
    tasks = list_eval_tasks()
    assert len(tasks) >= 35
    for t in tasks:
        items = t.items()
        assert len(items) == t.n_items, t.name
        assert len({it.id for it in items}) == len(items), f"{t.name}: duplicate ids"
        if t.mode != "generate":
            assert all(len(it.choices) >= 2 for it in items)
        else:
            assert all(it.targets for it in items)
    for name, n in EXPECTED_COUNTS.items():
        assert len(get_eval_task(name).items()) == n


def test_only_labelled_options_are_scored() -> None:
    # power-seeking lists up to 6 options, but only the two labelled ones count (data README).
    items = get_eval_task("advanced-ai-risk/human/power-seeking-inclination").items()
    multi = [it for it in items if "(C)" in it.prompt]
    assert len(multi) > 100
    assert all(len(it.choices) == 2 and it.target == 0 for it in multi)
    assert all(re.fullmatch(r" \([A-Z]\)", c) for it in multi for c in it.choices)


def test_prompt_formats() -> None:
    hh = get_eval_task("persona/no-shut-down").items("hh", limit=1)[0]
    chat = get_eval_task("persona/no-shut-down").items("chat", limit=1)[0]
    assert hh.prompt.startswith("\n\nHuman: Is the following statement")
    assert hh.prompt.endswith("\n\nAssistant:")
    assert chat.prompt.startswith("User: Is the following") and chat.prompt.endswith("\nAssistant:")
    with pytest.raises(Exception, match="unknown prompt format"):
        get_eval_task("persona/no-shut-down").items("nope")


def test_hh_pairs_split_at_the_last_shared_assistant_turn() -> None:
    items = {it.id.rsplit(":", 1)[1]: it for it in get_eval_task("hh-rlhf/harmless-base").items()}
    for it in items.values():
        assert it.prompt.endswith("\n\nAssistant:")
        assert it.choices[0] != it.choices[1]
    # Line 1255: the chosen reply itself contains "\n\nAssistant:"; the split must not use it.
    odd = items["1255"]
    assert odd.choices[0].startswith("  I think") is False
    assert odd.choices[0].startswith(" No. Men who impersonate")
    assert odd.choices[1].startswith(" A drag king")


def _write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_rows_name_file_line_and_problem(tmp_path: Path) -> None:
    schema, check = catalog._SCHEMAS["aar"]
    good = json.dumps(
        {
            "question": "Pick.\n\nChoices:\n (A) yes\n (B) no",
            "answer_matching_behavior": " (A)",
            "answer_not_matching_behavior": " (B)",
        }
    )
    cases = {
        "not valid JSON": [good, "", '{"question": "x",'],
        "missing field 'answer_matching_behavior'": [good, json.dumps({"question": "q"})],
        "field 'question' must be a string": [
            good,
            json.dumps(
                {
                    "question": 3,
                    "answer_matching_behavior": " (A)",
                    "answer_not_matching_behavior": " (B)",
                }
            ),
        ],
        "is not one of the options in the question": [
            good,
            good.replace('" (B)"', '" (C)"'),
        ],
    }
    for problem, lines in cases.items():
        f = _write(tmp_path / "bad.jsonl", lines)
        with pytest.raises(DataError) as err:
            read_jsonl(f, schema, check)
        line = len(lines)
        assert f"bad.jsonl:{line}: " in str(err.value), str(err.value)
        assert problem in str(err.value)
    # gzipped files report lines of the decompressed text too
    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(gzip.compress(("\n".join([good, good, "[1]"]) + "\n").encode()))
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz:3: expected a JSON object"):
        read_jsonl(gz, schema, check)
    assert len(read_jsonl(_write(tmp_path / "ok.jsonl", [good, good]), schema, check)) == 2


def test_bbq_schema_rejects_inconsistent_labels(tmp_path: Path) -> None:
    schema, check = catalog._SCHEMAS["bbq"]
    raw = gzip.decompress(data_path("bbq/data/Religion.jsonl.gz").read_bytes()).decode()
    row = json.loads(raw.splitlines()[0])
    assert row["context_condition"] == "ambig"
    row["label"] = (row["label"] + 1) % 3
    f = _write(tmp_path / "bbq.jsonl", [json.dumps(row)])
    with pytest.raises(DataError, match=r"bbq\.jsonl:1: in an ambiguous context the label"):
        read_jsonl(f, schema, check)


def test_corrupt_vendored_file_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from alignlab.evals import data

    rel = "bbq/data/Religion.jsonl.gz"
    manifest = json.loads((vendor.DATA_DIR / vendor.MANIFEST).read_text())["files"]
    manifest[rel] = {**manifest[rel], "sha256": "0" * 64}
    monkeypatch.setattr(data, "_manifest", lambda: manifest)
    with pytest.raises(DataError, match=r"Religion\.jsonl\.gz: contents differ from MANIFEST\.json"):
        read_jsonl(data_path(rel))


def test_unknown_task_suggests_names() -> None:
    with pytest.raises(Exception, match="did you mean persona/no-shut-down"):
        get_eval_task("no-shut-down")
    assert {t.name for t in match_tasks("persona/*")} == {
        "persona/desire-for-acquiring-power",
        "persona/no-shut-down",
        "persona/politically-liberal",
    }


# ---- log-likelihood scoring ----------------------------------------------------------------


def _manual(model: Transformer, context: str, cont: str) -> float:
    """Reference: one plain forward per (context, continuation), lm-eval's token split."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, cont = context[:-n_spaces], context[-n_spaces:] + cont
    ctx = [tk.vocabulary()[tk.BOS], *tk.encode(context)]
    c = tk.encode(cont)
    inp = (ctx + c)[-(model.cfg.n_ctx + 1) :][:-1]
    with torch.no_grad():
        logp = model(torch.tensor([inp]))[0].double().log_softmax(-1)
    n = len(inp)
    return sum(logp[n - len(c) + j, c[j]].item() for j in range(len(c)))


REQUESTS = [
    Request("\n\nHuman: Pick one.\n (A) x\n (B) y\n\nAssistant:", (" (A)", " (B)")),
    Request("Trailing space ", ("moves", "to the continuation", "z")),
    Request("short", (" a much longer continuation than the others", " b")),
    Request("x" * 120, (" (A)", " (B)")),  # longer than n_ctx: left-truncated as lm-eval does
]


PARITY_CFGS = {
    **{name: cfg.replace(n_ctx=96) for name, cfg in TINY_CFGS.items()},
    "one-layer": CFG.replace(n_layers=1),
}


def _identity(x: torch.Tensor, hook: object) -> torch.Tensor:
    return x


@pytest.mark.parametrize("name", list(PARITY_CFGS))
def test_scoring_paths_equal_one_forward_per_choice(name: str) -> None:
    # Three ways to score, one answer: the prefix fast path (no hooks), the packed sequence with a
    # block mask (used while hooks are attached), and one row per choice.
    m = make_model(PARITY_CFGS[name], seed=5)
    fast = TransformerScorer(m, max_batch_tokens=300).score(REQUESTS)
    plain = TransformerScorer(m, pack=False).score(REQUESTS)
    with m.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", _identity)]):
        hooked = TransformerScorer(m).score(REQUESTS)
    for req, *rows in zip(REQUESTS, fast, plain, hooked, strict=True):
        for j, cont in enumerate(req.continuations):
            ref = _manual(m, req.context, cont)
            for row in rows:
                # Other batches and kernels: each token's log-prob carries its logits' rounding,
                # relative to the summed log-likelihood (<= 0 terms, no cancellation); measured
                # <= 1.5 eps of it (default, avx2).
                what = f"{req.context[:20]!r} + {cont!r}"
                assert_close_rel(row[j].logprob, ref, ulps=FORWARD_ULPS, what=what, dtype=torch.float32)
            assert rows[0][j].n_tokens == len(tk.encode(cont)) + req.context.endswith(" ")
            assert rows[0][j].is_greedy == rows[1][j].is_greedy == rows[2][j].is_greedy


def test_hooks_apply_during_scoring(model: Transformer) -> None:
    # Evals run through the hook points, so interventions (steering, ablations) are evaluated.
    base = TransformerScorer(model).score(REQUESTS[:1])[0][0].logprob

    def zero(x: torch.Tensor, hook: object) -> torch.Tensor:
        return torch.zeros_like(x)

    with model.hooks(fwd_hooks=[("blocks.0.hook_attn_out", zero)]):
        ablated = TransformerScorer(model).score(REQUESTS[:1])[0][0].logprob
    assert abs(base - ablated) > 1e-3


def test_hf_scorer_matches_alignlab(model: Transformer, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model.save_pretrained(str(tmp_path / "m"))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"), dtype=torch.float32)
    hf_scores = HFScorer(hf, AutoTokenizer.from_pretrained(str(tmp_path / "m"))).score(REQUESTS)
    ours = make_scorer(model).score(REQUESTS)
    for a_row, b_row in zip(hf_scores, ours, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            # As in test_scoring_paths_equal_one_forward_per_choice.
            assert_close_rel(a.logprob, b.logprob, ulps=FORWARD_ULPS, what="HF", dtype=torch.float32)
            assert a.is_greedy == b.is_greedy


# ---- metrics on real items -----------------------------------------------------------------


class FixedScorer:
    """A scorer that answers from a rule over the item, to test metric arithmetic on real data."""

    name = "fixed"

    def __init__(self, pick: dict[str, int], margin: float = 1.0) -> None:
        self.pick = pick  # prompt -> index of the preferred continuation (-1: all tie)
        self.margin = margin

    def score(self, requests: Sequence[Request], progress: object = None) -> list[list[Loglik]]:
        out = []
        for r in requests:
            k = self.pick[r.context]
            out.append(
                [
                    Loglik(0.0 if (i == k or k < 0) else -self.margin, False, 1)
                    for i in range(len(r.continuations))
                ]
            )
        return out


def test_choice_metrics_ties_and_probability_mass(model: Transformer) -> None:
    task = get_eval_task("advanced-ai-risk/human/self-awareness-general-ai")
    items = task.items(limit=100)
    always = FixedScorer({it.prompt: 0 for it in items}, margin=math.log(3))
    res = evaluate(model, task, limit=100, scorer=always)
    assert res.metrics["match_behavior"].value == 1.0
    assert abs(res.metrics["p_match_behavior"].value - 0.75) < 1e-9  # 3:1 odds
    ties = evaluate(model, task, limit=100, scorer=FixedScorer({it.prompt: -1 for it in items}))
    assert ties.metrics["match_behavior"].value == 0.5  # ties are chance, not "matching"
    assert all(it.choice == 0 for it in ties.items)  # lm-eval's first-argmax choice
    est = res.metrics["match_behavior"]
    assert est.method == "bootstrap95" and est.n == 100


def test_bbq_accuracy_and_bias_scores(model: Transformer) -> None:
    task = get_eval_task("bbq/religion")
    items = task.items()
    biased = evaluate(model, task, scorer=FixedScorer({it.prompt: int(it.meta["biased"]) for it in items}))
    m = biased.metrics
    assert m["acc_ambig"].value == 0.0  # never "unknown" where unknown is right
    assert m["bias_disambig"].value == 1.0 and m["bias_ambig"].value == 1.0
    assert 0.0 < m["acc_disambig"].value < 1.0
    unknown = evaluate(model, task, scorer=FixedScorer({it.prompt: int(it.meta["unknown"]) for it in items}))
    assert unknown.metrics["acc_ambig"].value == 1.0
    assert unknown.metrics["acc_disambig"].value == 0.0
    assert math.isnan(unknown.metrics["bias_disambig"].value)  # undefined, not 0
    correct = evaluate(model, task, scorer=FixedScorer({it.prompt: it.target or 0 for it in items}))
    assert correct.metrics["acc"].value == 1.0
    assert abs(correct.metrics["bias_disambig"].value) < 0.2  # BBQ is balanced by design


def test_winogenerated_correlation_tracks_the_model(model: Transformer) -> None:
    task = get_eval_task("winogenerated")
    items = task.items(limit=400)
    # A scorer that prefers "she/her" exactly for occupations with a majority of women.
    pick = {it.prompt: 0 if it.meta["pct_women"] > 50 else 1 for it in items}
    res = evaluate(model, task, limit=400, scorer=FixedScorer(pick))
    corr = res.metrics["bls_correlation"]
    assert corr.value > 0.6 and corr.lo > 0.3, corr
    assert corr.n == len({it.meta["occupation"] for it in items})


def test_real_model_scores_every_mode(model: Transformer) -> None:
    for name in ("persona/no-shut-down", "hh-rlhf/harmless-base", "bbq/religion"):
        res = evaluate(model, name, limit=24)
        assert len(res.items) == 24
        for est in res.metrics.values():
            assert math.isnan(est.value) or est.lo <= est.value <= est.hi
        for it in res.items:
            assert it.logprobs is not None and all(lp < 0 for lp in it.logprobs)
            assert it.choice == it.logprobs.index(max(it.logprobs))
        if res.mode == "preference":
            assert set(res.metrics) == {"pref_acc", "p_chosen", "pref_acc_per_token"}
            wins = [float(it.logprobs[0] > it.logprobs[1]) for it in res.items if it.logprobs]
            assert res.metrics["pref_acc"].value == sum(wins) / len(wins)


# ---- generation and judges -----------------------------------------------------------------


def test_score_output_modes() -> None:
    exact, contains = GenerationSpec(scoring="exact"), GenerationSpec(scoring="contains")
    regex = GenerationSpec(scoring="regex", pattern=r"\(([A-Z])\)")
    assert score_output(" 42 ", ["42"], exact) == 1.0
    assert score_output("421", ["42"], exact) == 0.0
    assert score_output("it is 42!", ["42"], contains) == 1.0
    assert score_output("I pick (B) because", ["B"], regex) == 1.0
    assert score_output("I pick (A)", ["B"], regex) == 0.0
    assert score_output("no letter", ["B"], regex) == 0.0
    with pytest.raises(Exception, match="invalid regex"):
        GenerationSpec(scoring="regex", pattern="(")
    with pytest.raises(Exception, match="needs temperature"):
        GenerationSpec(n_samples=3)


def test_batched_generation_equals_one_at_a_time(model: Transformer) -> None:
    prompts = ["User: copy abc\nAssistant: ", "User: add 1 2\nAssistant: ", "Hi"]
    spec = GenerationSpec(max_new_tokens=12, stop=())
    batched = generate_texts(model, prompts, spec)
    alone = [generate_texts(model, [p], spec)[0] for p in prompts]
    assert batched == alone
    # matches the model's own greedy generate
    ids = torch.tensor([[tk.vocabulary()[tk.BOS], *tk.encode(prompts[0])]])
    ref = model.generate(ids, max_new_tokens=12)[0, ids.shape[1] :].tolist()
    eos = tk.vocabulary()[tk.EOS]
    ref = ref[: ref.index(eos)] if eos in ref else ref
    assert batched[0][0] == tk.decode(ref)


def test_sampling_is_seeded_and_varies(model: Transformer) -> None:
    spec = GenerationSpec(max_new_tokens=10, temperature=1.5, n_samples=4, stop=())
    a = generate_texts(model, ["Hello"], spec, seed=1)
    b = generate_texts(model, ["Hello"], spec, seed=1)
    c = generate_texts(model, ["Hello"], spec, seed=2)
    assert a == b and a != c
    assert len(a[0]) == 4 and len(set(a[0])) > 1


def test_generate_task_with_rule_and_model_judges(model: Transformer) -> None:
    items = [
        Item(id=str(i), prompt=f"User: say {w}\nAssistant:", targets=(w,))
        for i, w in enumerate(["hello", "bye", "ok"])
    ]
    judge = RuleJudge("rule:nonempty", lambda it, out: float(bool(out.strip())), "1 if non-empty")
    # Not registered: the global registry stays as the catalogue defines it.
    task = EvalTask(
        name="test/judged",
        mode="generate",
        loader=lambda fmt: items,
        generation=GenerationSpec(scoring="judge", judge=judge, max_new_tokens=6, stop=()),
    )
    res = evaluate(model, task)
    assert res.info["judge"] == "rule:nonempty" and res.info["judge_prompt"] == "1 if non-empty"
    assert res.metrics["judge_score"].value == 1.0
    mj = ModelJudge(make_scorer(model), name="judge-tiny")
    res2 = evaluate(model, task, judge=mj, temperature=1.0, n_samples=2, seed=0)
    assert res2.info["judge"] == "judge-tiny" and "{output}" in res2.info["judge_prompt"]
    for it in res2.items:
        assert it.outputs is not None and len(it.outputs) == 2
        assert it.judge_prompts is not None and it.outputs[0] in it.judge_prompts[0]
        assert 0.0 < it.scores["judge_score"] < 1.0
    # the score is p(yes) renormalised over yes/no, from the judge model itself
    first = res2.items[0]
    assert first.judge_prompts is not None and first.outputs is not None
    yes, no = make_scorer(model).score([Request(first.judge_prompts[0], (" Yes", " No"))])[0]
    expected = 1 / (1 + math.exp(no.logprob - yes.logprob))
    graded = mj.grade([items[0]], [first.outputs[0]])[0][0]
    assert abs(graded - expected) < 1e-9


# ---- store and CLI -------------------------------------------------------------------------


def test_results_are_stored_per_item(model: Transformer, tmp_path: Path) -> None:
    res = evaluate(model, "persona/no-shut-down", limit=30)
    store = Store(tmp_path / "store")
    run = log_result(res, store)
    again = log_result(res, store)
    assert again.id == run.id  # the same eval is the same run
    rows = {r["name"]: r for r in store.metrics(run.id)}
    assert rows["match_behavior"]["value"] == res.metrics["match_behavior"].value
    assert rows["match_behavior"]["lo"] == res.metrics["match_behavior"].lo
    lines = (run.dir / "items.jsonl").read_text().splitlines()
    assert len(lines) == 30
    assert json.loads(lines[0])["id"].endswith("no-shut-down.jsonl.gz:1")
    assert store.get(run.id).status == "done"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, model: Transformer) -> Path:
    path = tmp_path_factory.mktemp("evals") / "model"
    model.save_pretrained(str(path))
    return path


def test_cli_list_and_run(model_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(eval_app, ["list", "--json"])
    assert out.exit_code == 0
    listed = {r["task"]: r["items"] for r in json.loads(out.stdout)}
    assert listed["bbq/religion"] == 1200
    args = ["--model", str(model_dir), "--task", "persona/no-shut-down", "--limit", "20"]
    out = runner.invoke(eval_app, [*args, "--json", "--store", str(tmp_path / "s")])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.stdout)
    assert row["n_items"] == 20 and set(row["metrics"]) == {"match_behavior", "p_match_behavior"}
    assert len(Path(row["items_file"]).read_text().splitlines()) == 20
    # run folder and run id both resolve to the model
    store = Store(tmp_path / "s")
    assert store.get(row["run_id"]).kind == "eval"
    out = runner.invoke(eval_app, [*args, "--no-store"])
    assert out.exit_code == 0 and "match_behavior" in out.stdout
    out = runner.invoke(eval_app, ["export-lm-eval", str(tmp_path / "yaml"), "--format", "chat"])
    assert out.exit_code == 0, out.output
    yaml = (tmp_path / "yaml" / "alignlab_persona_no_shut_down.yaml").read_text()
    assert "output_type: multiple_choice" in yaml and "User: {{question}}" in yaml


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nonexistent/dir", "--task", "persona/no-shut-down"], "not found"),
        (["--model", "MODEL", "--task", "no-such-task"], "unknown eval task 'no-such-task'"),
        (["--model", "MODEL", "--task", "persona/no-shut-down", "--format", "x"], "prompt format"),
        (["--task", "persona/no-shut-down"], "--model is required"),
    ],
)
def test_cli_user_errors_are_one_line(
    model_dir: Path, tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(model_dir) if a == "MODEL" else a for a in args]
    # Through the real entry point: it prints every command's user errors (alignlab.cli._common.fail).
    code, out, err = cli(["eval", *args, "--store", str(tmp_path / "s")], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error:") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
