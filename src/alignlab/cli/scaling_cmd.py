"""``alignlab sweep`` and ``alignlab scaling fit|predict``."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from alignlab.cli._common import JsonOpt, SetOpt, StoreOpt, group, open_store
from alignlab.errors import ConfigError

app = group("Scaling laws and emergence for any metric in the store.")

FitForm = Literal["kaplan", "power", "sigmoid", "chinchilla"]
XAxisName = Literal["params", "non_embedding", "tokens", "flops"]


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = [math.nan]
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{what} must be comma-separated finite numbers, e.g. 1e5,1e6; got {text!r}")
    return values


def register(root: typer.Typer) -> None:
    """Mount the ``scaling`` group and the top-level ``sweep`` command on the ``alignlab`` app."""
    root.add_typer(app, name="scaling")

    @root.command()
    def sweep(
        preset: Annotated[str, typer.Option("--preset", "-p", help="Base training preset.")] = "induction",
        sizes: Annotated[str, typer.Option(help="Comma-separated sizes.")] = "al-10k,al-30k,al-100k",
        tokens: Annotated[
            str, typer.Option(help="Comma-separated token budgets (default: the preset's steps).")
        ] = "",
        seeds: Annotated[int, typer.Option(min=1, help="Seeds per cell.")] = 1,
        backend: Annotated[
            str,
            typer.Option(
                help="process (default) or ray. Ray without --ray-address starts a private instance "
                "on this machine that listens on 127.0.0.1 only and requires a fresh Ray token."
            ),
        ] = "process",
        ray_address: Annotated[
            str | None,
            typer.Option(
                help="Address of a Ray cluster you started (its servers listen on every interface: "
                "start it with RAY_AUTH_MODE=token; see the README, Ray)."
            ),
        ] = None,
        workers: Annotated[int, typer.Option(min=0, help="Parallel runs; 0 = automatic.")] = 0,
        set_: SetOpt = None,
        store: StoreOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Train sizes x data budgets x seeds over a preset, reusing finished runs."""
        from alignlab.cli.train import build_config
        from alignlab.scaling.sweep import grid
        from alignlab.scaling.sweep import sweep as run_sweep
        from alignlab.train.run import run_summary

        if backend not in ("process", "ray"):
            raise ConfigError(f"unknown backend {backend!r}; use process or ray")
        base = build_config(preset, set_)
        size_list = [s.strip() for s in sizes.split(",") if s.strip()]
        configs = grid(base, size_list, _floats(tokens, "--tokens"), seeds)
        st = open_store(store)
        t0 = time.time()
        runs = run_sweep(
            configs,
            st,
            workers=workers or None,
            backend=backend,  # type: ignore[arg-type]
            ray_address=ray_address,
        )
        rows = []
        for cfg, run in zip(configs, runs, strict=True):
            summary = run_summary(run)
            rows.append(
                {
                    "run_id": run.id,
                    "params": cfg.model.param_counts()["total"],
                    "tokens": cfg.steps * cfg.batch_size * cfg.seq_len,
                    "seed": cfg.seed,
                    **{k: v for k, v in summary.get("final", {}).items()},
                }
            )
        if json_:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(
            "run", "params", "tokens", "seed", "eval_loss", title=f"sweep ({time.time() - t0:.0f} s)"
        )
        for r in rows:
            table.add_row(
                r["run_id"], f"{r['params']:,}", f"{r['tokens']:,}", str(r["seed"]), f"{r['eval_loss']:.4f}"
            )
        Console().print(table)


@app.command()
def fit(
    metric: Annotated[str, typer.Option(help="Metric name in the store, e.g. eval_loss.")] = "eval_loss",
    form: Annotated[str, typer.Option(help="kaplan, power, sigmoid or chinchilla.")] = "kaplan",
    x: Annotated[str, typer.Option(help="params, non_embedding, tokens or flops.")] = "non_embedding",
    task: Annotated[str | None, typer.Option(help="Only runs of this task.")] = None,
    runs: Annotated[list[str] | None, typer.Option("--runs", help="Only these run ids.")] = None,
    n_boot: Annotated[int, typer.Option(min=50, help="Bootstrap refits.")] = 500,
    store: StoreOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Fit a scaling law to a metric across runs; write PNG/SVG/JSON into the store."""
    from alignlab.scaling.collect import collect, describe_excluded

    if form not in ("kaplan", "power", "sigmoid", "chinchilla"):
        raise ConfigError(f"unknown fit form {form!r}; use kaplan, power, sigmoid or chinchilla")
    if x not in ("params", "non_embedding", "tokens", "flops"):
        raise ConfigError(f"unknown x axis {x!r}; use params, non_embedding, tokens or flops")
    st = open_store(store)
    points = collect(st, metric, task=task, run_ids=runs)
    out_dir = Path(st.root) / "scaling" / f"{metric}-{form}-{x}"
    result = fit_points(points, metric, form, x, n_boot, out_dir)  # type: ignore[arg-type]
    if json_:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    console = Console()
    table = Table("parameter", "estimate [95% CI]", title=f"{metric} vs {x} ({form}, {len(points)} runs)")
    for name, est in result["params"].items():
        table.add_row(name, f"{est['value']:.4g} [{est['lo']:.4g}, {est['hi']:.4g}]")
    console.print(table)
    for line in result["statements"]:
        console.print(line)
    if result["excluded"]:
        console.print(f"left out: {describe_excluded(result['excluded'])}", highlight=False)
    console.print(f"files: {out_dir}")


def fit_points(
    points: list[Any], metric: str, form: FitForm, x_axis: XAxisName, n_boot: int, out_dir: Path
) -> dict[str, Any]:
    """Fit, test for trend and emergence, hold out the largest x, and save plots + JSON."""
    import numpy as np

    from alignlab.scaling import (
        detect_emergence,
        fit_chinchilla,
        fit_kaplan,
        fit_power,
        fit_sigmoid,
        holdout_predict,
        save_fit,
        trend_test,
        write_json,
    )

    xs = np.array([p.x(x_axis) for p in points], dtype=float)
    ys = np.array([p.value for p in points], dtype=float)
    statements: list[str] = []
    # Runs collect left out (failed, diverged, non-finite), named in the JSON and the output.
    excluded: dict[str, str] = dict(getattr(points, "excluded", {}))
    extra: dict[str, Any] = {"runs": [p.run_id for p in points], "excluded": excluded}
    if form == "chinchilla":
        n = np.array([p.non_embedding for p in points], dtype=float)
        d = np.array([p.tokens for p in points], dtype=float)
        cfit = fit_chinchilla(n, d, ys, n_boot=n_boot)
        out_dir.mkdir(parents=True, exist_ok=True)
        data = {"fit": cfit.to_dict(), "points": {"n": n.tolist(), "d": d.tolist(), "y": ys.tolist()}}
        write_json({**data, "extra": extra}, out_dir / "fit.json")
        params = {k: v.to_dict() for k, v in cfit.params.items()}
        fit_file = [str(out_dir / "fit.json")]
        return {"params": params, "statements": statements, "files": fit_file, "excluded": excluded}
    fitter = {"kaplan": fit_kaplan, "power": fit_power, "sigmoid": fit_sigmoid}[form]
    curve = fitter(xs, ys, n_boot=n_boot)
    trend = trend_test(xs, ys, metric=metric)
    statements.append(str(trend.get("statement", trend.get("verdict"))))
    extra["trend"] = trend
    if len(set(xs.tolist())) >= 5:
        emergence = detect_emergence(xs, ys, n_boot=min(n_boot, 300))
        extra["emergence"] = emergence.to_dict() if hasattr(emergence, "to_dict") else str(emergence)
        statements.append(
            f"sudden change: {'yes' if emergence.emergent else 'no'} "
            f"(ΔBIC {emergence.delta_bic:.1f}, threshold {emergence.threshold:g})"
        )
    distinct = sorted(set(xs.tolist()))
    if len(distinct) >= 4 and form in ("kaplan", "power"):
        hold = holdout_predict(xs, ys, fit="power" if form == "kaplan" else "offset_power", n_boot=n_boot)
        extra["holdout"] = hold.to_dict() if hasattr(hold, "to_dict") else str(hold)
        statements.append(
            f"held-out largest size: predicted {hold.predicted}, observed {hold.observed:.4g}, "
            f"error {hold.abs_error:.3g} ({'inside' if hold.inside else 'outside'} the interval)"
        )
    files = save_fit(curve, xs, ys, out_dir, "fit", xlabel=x_axis, ylabel=metric, extra=extra)
    by_x: dict[float, list[float]] = defaultdict(list)
    for xv, yv in zip(xs, ys, strict=True):
        by_x[float(xv)].append(float(yv))
    return {
        "params": {k: v.to_dict() for k, v in curve.params.items()},
        "r2": curve.r2,
        "statements": statements,
        "files": {k: str(v) for k, v in files.items()},
        "points": {str(k): v for k, v in sorted(by_x.items())},
        "excluded": excluded,
    }


@app.command()
def predict(
    params: Annotated[float, typer.Option("--params", help="Non-embedding parameters N.")],
    tokens: Annotated[float, typer.Option("--tokens", help="Training tokens D.")],
    metric: Annotated[str, typer.Option(help="Loss metric to fit.")] = "eval_loss",
    task: Annotated[str | None, typer.Option(help="Only runs of this task.")] = None,
    n_boot: Annotated[int, typer.Option(min=50)] = 200,
    store: StoreOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Fit L(N, D) = E + A/N^a + B/D^b to the store's runs and predict the loss at (N, D), with
    the compute-optimal split of the same FLOPs (C = 6ND)."""
    import numpy as np

    from alignlab.scaling import fit_chinchilla
    from alignlab.scaling.collect import collect, describe_excluded

    if not (math.isfinite(params) and math.isfinite(tokens) and params > 0 and tokens > 0):
        raise ConfigError(f"--params and --tokens must be finite and positive, got {params:g} and {tokens:g}")
    points = collect(open_store(store), metric, task=task)
    if len({p.tokens for p in points}) < 2 or len({p.non_embedding for p in points}) < 2:
        raise ConfigError(
            "predict needs runs at >= 2 sizes and >= 2 token budgets; run e.g. "
            "`alignlab sweep --sizes al-10k,al-30k,al-100k --tokens 2e5,8e5`"
        )
    n = np.array([p.non_embedding for p in points], dtype=float)
    d = np.array([p.tokens for p in points], dtype=float)
    y = np.array([p.value for p in points], dtype=float)
    cfit = fit_chinchilla(n, d, y, n_boot=n_boot)
    pred = cfit.predict(params, tokens, noise=True)
    optimal = cfit.compute_optimal(6.0 * params * tokens)
    out = {
        "prediction": pred.to_dict(),
        "compute_optimal": optimal.to_dict(),
        "n_runs": len(points),
        "excluded": points.excluded,
    }
    if json_:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    typer.echo(f"predicted {metric} at N={params:.3g}, D={tokens:.3g}: {pred}")
    typer.echo(f"compute-optimal at C={6 * params * tokens:.3g} FLOPs: {optimal.to_dict()}")
    if points.excluded:
        typer.echo(f"left out: {describe_excluded(points.excluded)}")
