"""Simulator benchmark: seconds per simulated step (graph path) and plan evaluations per
second (analytical path), one JSON line per case, then a summary line.

Case: ViT-B/16 on dgx-a100 (8 devices), 8 micro-batches of 8, the all-FULL plan and a
hybrid plan at keep 0.6 (dp), both on the speed-aware placement. ``graph_median_s`` is
``simulate`` (flat lists, ``schedule_flat``, and the trace); ``graph_networkx_median_s`` the
networkx graph and its reference scheduler alone, timed in the same loop. Medians of --repeat
runs, from time.perf_counter; the analytical path is timed over --evals evaluations
after building its precomputed tables once (that build is reported separately), and
batched (``Analytical.evaluate_batch``) over --batch plans of the same placement at once
(median of 3), printed as ``batched_evals_per_s`` beside ``analytical_evals_per_s``.

Case ``sweep``: ``simulator.sweep`` over --sweep-points points of the same model and cluster,
hybrid at 10 keep ratios x 4 micro-batch counts x as many link bandwidths (1e8 to 1e11 B/s,
log-spaced) as make up the points: its wall time and points per second (one run).

    .venv/bin/python benchmarks/simulator.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# This script shares its name with the ``simulator`` package: keep its own folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import numpy as np  # noqa: E402

from d2ft import ModelSpec, Op, Plan, plan_step  # noqa: E402
from d2ft.catalogue import cluster_preset  # noqa: E402
from simulator import Analytical, schedule, simulate, step_graph  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=7, help="graph-path runs per plan (median reported)")
    p.add_argument("--evals", type=int, default=2000, help="analytical evaluations per plan")
    p.add_argument("--batch", type=int, default=10_000,
                   help="plans per batched analytical evaluation (seeded random ops on the case's placement)")
    p.add_argument("--sweep-points", type=int, default=100_000,
                   help="points of the sweep case (10 keeps x 4 micro-batch counts x bandwidths); 0: skip it")
    args = p.parse_args(argv)
    model, cluster = ModelSpec.from_timm("vit_base_patch16_224"), cluster_preset("dgx-a100")
    hybrid = plan_step(model, cluster, "hybrid", "dp", keep=0.6, micro_batches=8, micro_batch_size=8).plan
    full = Plan.uniform(model, cluster, Op.FULL, 8, 8, placement=hybrid.placement)
    summary = {}
    for name, plan in (("full", full), ("hybrid", hybrid)):
        runs, reference = [], []
        for _ in range(args.repeat):  # the flat scheduler simulate runs, and the networkx one beside it
            t0 = time.perf_counter()
            trace = simulate(plan, model, cluster)
            runs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            schedule(step_graph(plan, model, cluster))
            reference.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        an = Analytical(model, cluster, plan.placement, plan.micro_batch_size)
        build = time.perf_counter() - t0
        per_eval = []
        for _ in range(args.evals):
            t0 = time.perf_counter()
            estimate = an.evaluate(plan)["step_time_s"]
            per_eval.append(time.perf_counter() - t0)
        rng = np.random.default_rng(0)  # the batch: the case's plan, then random ops on its placement
        levels = np.concatenate([an.levels([plan]), rng.integers(0, 3, (args.batch - 1, *an.levels([plan]).shape[1:]))])
        batched = []
        for _ in range(3):
            t0 = time.perf_counter()
            together = an.evaluate_batch(levels)
            batched.append(time.perf_counter() - t0)
        assert abs(together["step_time_s"][0] - estimate) <= 1e-9 * estimate  # the same figures as one at a time
        rec = dict(case=name, model=model.name, cluster=cluster.name, devices=cluster.num_devices, micro_batches=8,
                   events=len(trace.events), graph_median_s=statistics.median(runs), graph_runs_s=runs,
                   graph_networkx_median_s=statistics.median(reference),
                   analytical_evals_per_s=1 / statistics.median(per_eval),
                   batched_evals_per_s=args.batch / statistics.median(batched), batch=args.batch,
                   analytical_build_s=build,
                   graph_step_time_s=trace.step_time_s, analytical_step_time_s=estimate,
                   relative_difference=(estimate - trace.step_time_s) / trace.step_time_s)
        print(json.dumps(rec), flush=True)
        summary[name] = {k: rec[k] for k in ("graph_median_s", "graph_networkx_median_s", "analytical_evals_per_s",
                                             "batched_evals_per_s",
                                             "relative_difference")}
    if args.sweep_points:
        from simulator import sweep

        keeps, counts = [0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0], [1, 2, 4, 8]
        bandwidths = list(np.geomspace(1e8, 1e11, max(1, args.sweep_points // (len(keeps) * len(counts)))))
        t0 = time.perf_counter()
        records = sweep([model], [cluster], strategies=["hybrid"], keeps=keeps, micro_batches=counts,
                        micro_batch_sizes=[8], link_bandwidths=bandwidths)
        seconds = time.perf_counter() - t0
        rec = dict(case="sweep", model=model.name, cluster=cluster.name, points=len(records),
                   plans=len(keeps) * len(counts), errors=sum(r["error"] is not None for r in records),
                   seconds=seconds, points_per_s=len(records) / seconds)
        print(json.dumps(rec), flush=True)
        summary["sweep"] = {k: rec[k] for k in ("points", "seconds", "points_per_s")}
    print(json.dumps({"case": "summary", **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
