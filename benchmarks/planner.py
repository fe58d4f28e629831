"""Planner benchmark: solve time and quality of the op-selection solvers, one JSON line per case.

Suites (all seeded; times are medians of --repeat runs, from time.perf_counter):
  speed    ViT-B/16 on 8 A100s with 8 micro-batches (hybrid, keep 0.6): dp, greedy, and mip with
           CBC and HiGHS at a 1% gap; ViT-L/16 on 16 A100s with 16 micro-batches: dp and greedy.
  quality  100 random instances of ViT-S/16 and ViT-B/16 size (cluster preset, micro-batches,
           keep ratio, strategy and scores drawn from seeds 0, 1, ...; a draw no plan can meet,
           such as `backward` below its FORWARD_ONLY floor, is skipped): dp and greedy
           objective as a fraction of the best (smallest) mip bound of CBC and HiGHS, and each
           backend's time and gap.
The last line of each suite is a summary record ("case": "summary").

    .venv/bin/python benchmarks/planner.py --suite speed
    .venv/bin/python benchmarks/planner.py --suite quality --instances 100
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from d2ft import Cluster, ModelSpec, Op, Plan
from d2ft.catalogue import PRESETS, cluster_preset, device, link
from d2ft.knapsack import Budget, build_problem
from d2ft.placement import plan_placement
from d2ft.planner import STRATEGIES
from d2ft.scores import synthetic
from d2ft.exact import mip_exact
from d2ft.solvers import dp_two_stage, greedy


def problem(model, cluster, micro_batches, keep, strategy, seed, micro_batch_size=8):
    placement = plan_placement(model, cluster, micro_batches=micro_batches, micro_batch_size=micro_batch_size, keep=keep)
    skeleton = Plan.uniform(model, cluster, Op.FULL, micro_batches, micro_batch_size, placement=placement)
    scores = synthetic(model.depth, model.heads, seed=seed, micro_batches=micro_batches)
    return build_problem(model, cluster, skeleton, scores, Budget(keep=keep), STRATEGIES[strategy])


def solve(pr, solver, backend="HiGHS", time_limit_s=10.0, gap=0.01):
    """(objective, bound or None, seconds) over all devices of a problem."""
    t0 = time.perf_counter()
    if solver == "dp":
        sols = [dp_two_stage(d) for d in pr.devices]
    elif solver == "greedy":
        sols = [greedy(d) for d in pr.devices]
    else:
        total = sum(len(d.items) for d in pr.devices) or 1
        sols = []
        for d in pr.devices:
            warm = max((dp_two_stage(d), greedy(d)), key=lambda s: s.objective).choice
            sols.append(mip_exact(d, time_limit_s * len(d.items) / total, gap, backend, warm=warm))
    seconds = time.perf_counter() - t0
    bounds = [s.bound for s in sols]
    return sum(s.objective for s in sols), (sum(bounds) if None not in bounds else None), seconds


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def suite_speed(repeat: int) -> None:
    a100 = device("a100-sxm4-80gb")
    cases = [
        ("vit_base_patch16_224", cluster_preset("dgx-a100"), 8, ["dp", "greedy", "mip-CBC", "mip-HiGHS"]),
        ("vit_large_patch16_224", Cluster.star([(f"gpu{i}", a100) for i in range(16)], link("infiniband-ndr"),
                                               name="16xa100-ndr"), 16, ["dp", "greedy"]),
    ]
    summary = {}
    for name, cluster, mbs, solvers in cases:
        pr = problem(ModelSpec.from_timm(name), cluster, mbs, 0.6, "hybrid", seed=0)
        items = sum(len(d.items) for d in pr.devices)
        for solver in solvers:
            kind, _, backend = solver.partition("-")
            runs = [solve(pr, kind, backend or "HiGHS", time_limit_s=10.0, gap=0.01) for _ in range(repeat)]
            objective, bound, _ = runs[-1]
            median = statistics.median(r[2] for r in runs)
            rec = dict(case="speed", model=name, cluster=cluster.name, devices=cluster.num_devices,
                       micro_batches=mbs, items=items, solver=solver, median_s=median,
                       runs_s=[r[2] for r in runs], objective=objective, bound=bound,
                       gap=(bound - objective) / bound if bound else None)
            emit(rec)
            summary[f"{name}/{solver}"] = {"median_s": median, "gap": rec["gap"]}
    emit(dict(case="summary", suite="speed", **summary))


def suite_quality(instances: int, time_limit_s: float) -> None:
    presets = sorted(PRESETS)
    ratios = {"dp": [], "greedy": []}
    backend_stats = {"CBC": [], "HiGHS": []}
    seed = -1
    while len(ratios["dp"]) < instances:
        seed += 1
        rng = random.Random(seed)
        name = rng.choice(["vit_small_patch16_224", "vit_base_patch16_224"])
        cluster = cluster_preset(rng.choice(presets))
        mbs, keep = rng.choice([2, 4, 8]), round(rng.uniform(0.3, 0.9), 3)
        strategy = rng.choice(["hybrid", "hybrid", "backward", "shortcut"])
        try:
            pr = problem(ModelSpec.from_timm(name), cluster, mbs, keep, strategy, seed)
        except ValueError as e:  # e.g. backward below its FORWARD_ONLY floor
            emit(dict(case="quality", seed=seed, skipped=str(e).splitlines()[0]))
            continue
        dp_obj, _, dp_s = solve(pr, "dp")
        gr_obj, _, gr_s = solve(pr, "greedy")
        mips = {b: solve(pr, "mip", b, time_limit_s=time_limit_s, gap=1e-4) for b in backend_stats}
        best_bound = min(m[1] for m in mips.values())
        for b, (obj, bound, secs) in mips.items():
            backend_stats[b].append((secs, (bound - obj) / bound if bound else 0.0))
        ratios["dp"].append(dp_obj / best_bound)
        ratios["greedy"].append(gr_obj / best_bound)
        emit(dict(case="quality", seed=seed, model=name, cluster=cluster.name, micro_batches=mbs, keep=keep,
                  strategy=strategy, best_bound=best_bound, dp=dp_obj / best_bound, greedy=gr_obj / best_bound,
                  dp_s=dp_s, greedy_s=gr_s,
                  **{f"mip_{b}_s": m[2] for b, m in mips.items()},
                  **{f"mip_{b}_gap": (m[1] - m[0]) / m[1] if m[1] else 0.0 for b, m in mips.items()}))
    summary = dict(case="summary", suite="quality", instances=len(ratios["dp"]))
    for s, r in ratios.items():
        summary[f"{s}_median"] = statistics.median(r)
        summary[f"{s}_min"] = min(r)
    for b, stats in backend_stats.items():
        summary[f"mip_{b}_median_s"] = statistics.median(s for s, _ in stats)
        summary[f"mip_{b}_median_gap"] = statistics.median(g for _, g in stats)
        summary[f"mip_{b}_max_gap"] = max(g for _, g in stats)
    emit(summary)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("speed", "quality"), default="speed")
    p.add_argument("--repeat", type=int, default=5, help="runs per speed case (median reported)")
    p.add_argument("--instances", type=int, default=100, help="random instances in the quality suite")
    p.add_argument("--time-limit", type=float, default=10.0, help="mip time limit per instance, s")
    args = p.parse_args(argv)
    if args.suite == "speed":
        suite_speed(args.repeat)
    else:
        suite_quality(args.instances, args.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
