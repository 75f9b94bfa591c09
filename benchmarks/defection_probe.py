"""Measure the contrast-pair defection detector and its controls on the flagship's organisms.

Per (size, seed): the vendored (or trained) competent base model, the backdoor installed by
fine-tuning with the flagship's recipe and gated, then `alignlab.interp.organism_probe.probe_cell`
(the detector vs its random-direction null, the benign-trigger control, within-trigger after
partial safety training). Each cell is appended to ``--out`` as soon as it is done, so an
interrupted run keeps what it measured; a rerun reuses every stored run.

Not part of the test suite. One torch thread; run it niced on a shared machine:

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/defection_probe.py --size al-100k \
        --seeds 0 1 2 3 4 --store /tmp/probe-store --out benchmarks/results/defection_probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from alignlab import load
from alignlab.gates import failed
from alignlab.interp.organism_probe import ProbeSpec, probe_cell
from alignlab.organisms import get_organism, install_on_base
from alignlab.organisms.gates import install_gates, install_metrics
from alignlab.store import Store
from alignlab.studies.spec import StudySpec
from alignlab.train.base_model import base_run


def cell(store: Store, size: str, seed: int, spec: StudySpec, probe: ProbeSpec) -> dict[str, Any]:
    t0 = time.perf_counter()
    base, gates = base_run(store, size, seed, spec.base)
    out: dict[str, Any] = {"size": size, "seed": seed, "base_run": base.id}
    if failed(gates):
        return {**out, "status": "base failed its competence gate", "gates": [g.describe() for g in gates]}
    org = get_organism(spec.organism, **spec.organism_config.to_dict())
    inst, _ = install_on_base(org, size, base, store, spec.install_steps, spec.install_lr, seed)
    metrics = install_metrics(org, load(inst.dir / "model"), load(base.dir / "model"), spec.gates.n, seed)
    gates = gates + install_gates(metrics, spec.gates, org.primary_metric)
    out.update(install_run=inst.id, gates=[g.describe() for g in gates])
    if failed(gates):
        return {**out, "status": "install failed its gate"}
    res = probe_cell(store, org, inst, base, size, seed, (spec.install_steps, spec.install_lr), probe)
    return {**out, "status": "ok", "probe": res.to_dict(), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="al-100k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--store", default="/tmp/probe-store")
    ap.add_argument("--out", default="benchmarks/results/defection_probe.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec, probe, store = StudySpec(), ProbeSpec(), Store(args.store)
    out = Path(args.out)
    done: list[dict[str, Any]] = json.loads(out.read_text()) if out.exists() else []
    for seed in args.seeds:
        if any(c["size"] == args.size and c["seed"] == seed for c in done):
            continue
        done.append(cell(store, args.size, seed, spec, probe))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(done, indent=1))
        c = done[-1]
        if c["status"] != "ok":
            print(f"{args.size} seed {seed}: {c['status']}", flush=True)
            continue
        p = c["probe"]
        benign = p["benign"]["auroc"]["value"] if p["benign"] else float("nan")
        within = p["within"]["auroc"]["value"] if p["within"] else float("nan")
        print(
            f"{args.size} seed {seed}: AUROC {p['detector']['auroc']['value']:.3f} "
            f"[{p['detector']['auroc']['lo']:.3f}, {p['detector']['auroc']['hi']:.3f}] "
            f"null p99 {p['detector']['null_p99']:.3f} at {p['detector']['hook']}; "
            f"benign {benign:.3f}; within {within:.3f} ({c['seconds']:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
