"""The d2ft command line: a thin layer over the Python API.

Every command prints a readable table by default and one JSON object with --json.
Units: seconds (s), bytes (B), FLOP; a "keep ratio" is a fraction in (0, 1].
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from . import catalogue
from .cost import CostModel, StepCost
from .loaders import load_cluster, load_model, load_plan
from .ops import Op
from .plan import Plan
from .serial import atomic_write_text, read_json
from .trace import Trace
from .units import fmt_bytes, fmt_flop, fmt_time
from .zoo import timm_names

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


# ---- shared arguments ------------------------------------------------------------------
def _add_model_cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_base_patch16_224",
                   help="timm model name (see `d2ft list models`) or a model.json file (default: %(default)s)")
    p.add_argument("--cluster", default="lan-4x3090",
                   help="cluster preset (see `d2ft list clusters`) or a cluster.json file (default: %(default)s)")
    p.add_argument("--heads-only", action="store_true",
                   help="subnets are attention heads only; the MLP stays whole on the coordinator")
    p.add_argument("--dtype-bytes", type=int, choices=(2, 4), default=None,
                   help="bytes per element: 2 (bf16/fp16) or 4 (fp32); default: the model's (4)")


def _add_step_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--micro-batches", type=_positive_int, default=4, help="micro-batches per step (default: 4)")
    p.add_argument("--micro-batch-size", type=_positive_int, default=8, help="images per micro-batch (default: 8)")


def _model_and_cluster(args: argparse.Namespace):
    overrides = {}
    if args.heads_only:
        overrides["split_mlp"] = False
    if args.dtype_bytes:
        overrides["dtype_bytes"] = args.dtype_bytes
    return load_model(args.model, **overrides), load_cluster(args.cluster)


def _plan_from_args(args: argparse.Namespace, model, cluster, op: Op, mode: str | None = None) -> Plan:
    """The --plan file, or every subnet running ``op`` (on the balanced ``mode`` placement when given,
    else the round-robin one)."""
    if args.plan:
        return load_plan(args.plan)
    placement = None
    if mode is not None:
        from .placement import plan_placement

        placement = plan_placement(model, cluster, mode, micro_batches=args.micro_batches,
                                   micro_batch_size=args.micro_batch_size)
    return Plan.uniform(model, cluster, op, args.micro_batches, args.micro_batch_size, placement=placement)


def _emit(args: argparse.Namespace, obj: dict, text: str) -> None:
    print(json.dumps(obj) if args.json else text)


def step_record(cost: StepCost) -> dict:
    """A StepCost as a plain JSON-ready dict (units in the key names)."""
    return {
        "compute_flop": cost.compute_flop,
        "comm_bytes": cost.comm_bytes,
        "compute_saving": cost.compute_saving,
        "comm_saving": cost.comm_saving,
        "max_compute_s": cost.max_compute_s,
        "devices": {
            d.name: {
                "compute_s": d.compute_s, "flop": d.flop, "mem_bytes": d.mem_bytes,
                "sent_bytes": d.sent_bytes, "recv_bytes": d.recv_bytes,
                "peak_memory_bytes": d.peak_memory_bytes, "fits_memory": d.fits_memory,
            }
            for d in cost.devices
        },
    }


def step_table(cost: StepCost) -> str:
    rows = [f"{'device':<10} {'compute':>10} {'FLOP':>12} {'sent':>11} {'received':>11} {'peak mem':>11}  fits"]
    for d in cost.devices:
        rows.append(
            f"{d.name:<10} {fmt_time(d.compute_s):>10} {fmt_flop(d.flop):>12} {fmt_bytes(d.sent_bytes):>11} "
            f"{fmt_bytes(d.recv_bytes):>11} {fmt_bytes(d.peak_memory_bytes):>11}  {'yes' if d.fits_memory else 'NO'}"
        )
    rows.append(
        f"total: {fmt_flop(cost.compute_flop)} compute ({cost.compute_saving:+.1%} saved), "
        f"{fmt_bytes(cost.comm_bytes)} communication ({cost.comm_saving:+.1%} saved); "
        f"busiest device {fmt_time(cost.max_compute_s)}"
    )
    return "\n".join(rows)


# ---- commands --------------------------------------------------------------------------
@command
def cmd_list(args: argparse.Namespace) -> int:
    """List the timm models, catalogue devices and links, and cluster presets."""
    items = {
        "models": {n: f"{m.params / 1e6:.1f} M params, {m.depth}x{m.heads} subnets"
                   for n in timm_names() for m in [load_model(n)]},
        "devices": {k: f"{d.name}: {d.peak_flops / 1e12:g} TFLOPS 16-bit, {d.mem_bandwidth / 1e9:g} GB/s, "
                       f"{fmt_bytes(d.memory_bytes)}" for k, d in catalogue.DEVICES.items()},
        "links": {k: f"{l.name}: {l.bandwidth / 1e9:g} GB/s, {fmt_time(l.latency_s)}" for k, l in catalogue.LINKS.items()},
        "clusters": {k: ", ".join(f"{n}={s.name}" for n, s in catalogue.cluster_preset(k).devices)
                     for k in catalogue.PRESETS},
    }[args.what]
    _emit(args, items, "\n".join(f"{k:<34} {v}" for k, v in items.items()))
    return 0


@command
def cmd_cost(args: argparse.Namespace) -> int:
    """Analytical cost of one step: a plan file, or every subnet running one op."""
    model, cluster = _model_and_cluster(args)
    plan = _plan_from_args(args, model, cluster, Op.from_char(args.op))
    cost = CostModel(model, cluster).step(plan)
    if args.trace:
        atomic_write_text(args.trace, Trace.from_cost(cost, meta=plan.meta).to_json())
    _emit(args, step_record(cost), step_table(cost))
    return 0


@command
def cmd_plan(args: argparse.Namespace) -> int:
    """Plan one step's ops with a D2FT strategy (or a baseline) under a compute/communication budget."""
    from .placement import plan_placement
    from .planner import plan_step
    from .scores import Scores

    model, cluster = _model_and_cluster(args)
    scores = Scores.from_dict(read_json(args.scores, "scores file")) if args.scores else None
    placement = plan_placement(model, cluster, args.placement, micro_batches=args.micro_batches,
                               micro_batch_size=args.micro_batch_size, keep=args.keep)
    report = plan_step(
        model, cluster, args.strategy, args.solver, keep=args.keep, comm_keep=args.comm_keep,
        micro_batches=args.micro_batches, micro_batch_size=args.micro_batch_size, scores=scores,
        placement=placement, seed=args.seed, time_limit_s=args.time_limit, gap=args.gap, backend=args.backend,
    )
    if args.out:
        text = report.plan.to_json() if args.out.endswith(".json") else report.plan.to_text()
        atomic_write_text(args.out, text + ("" if text.endswith("\n") else "\n"))
    _emit(args, report.to_dict(), plan_table(report) + (f"\nplan written to {args.out}" if args.out else ""))
    return 0


def plan_table(report) -> str:
    rows = [f"{'device':<10} {'load':>10} {'capacity':>10} {'use':>6} {'traffic':>11} {'comm cap':>11}"]
    for n, l, c, b, cb in zip(report.device_names, report.load_s, report.capacity_s, report.comm_bytes,
                              report.capacity_bytes):
        rows.append(f"{n:<10} {fmt_time(l):>10} {fmt_time(c):>10} {l / c if c else 0:>6.1%} {fmt_bytes(b):>11} "
                    f"{fmt_bytes(cb) if cb is not None else '-':>11}")
    bound = f"{report.bound:.4f} (gap {report.gap:.2%})" if report.bound is not None else "-"
    rows.append(
        f"{report.strategy}/{report.solver}: status {report.status}, objective {report.objective:.4f}, bound {bound}, "
        f"solved in {fmt_time(report.solve_time_s)}"
    )
    rows.append(f"ops {report.plan.summary()}; compute {report.compute_saving:.1%} saved, "
                f"communication {report.comm_saving:.1%} saved (cost model, against all-FULL)")
    return "\n".join(rows)


@command
def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate one step of a plan: timeline (graph path) or sums (analytical path), and its bottleneck."""
    from simulator import simulate

    model, cluster = _model_and_cluster(args)
    plan = _plan_from_args(args, model, cluster, Op.FULL, mode=args.mode)
    trace = simulate(plan, model, cluster, path=args.path, order=args.order, mode=args.mode)
    cost = CostModel(model, cluster).step(plan)
    if args.trace:
        atomic_write_text(args.trace, trace.to_json())
    if args.chrome_trace:
        atomic_write_text(args.chrome_trace, json.dumps(trace.to_chrome()))
    record = {
        "step_time_s": trace.step_time_s, "compute_flop": cost.compute_flop, "comm_bytes": trace.comm_bytes,
        # depth-wise traffic is the residual stream between stages: no op saves it
        "compute_saving": cost.compute_saving, "comm_saving": cost.comm_saving if args.mode == "width" else 0.0,
        "bottleneck": trace.meta.get("bottleneck"), "path": args.path, "order": args.order, "mode": args.mode,
        "devices": {n: {"busy_s": d.busy_s, "comm_s": d.comm_s, "wait_s": d.wait_s, "sent_bytes": d.sent_bytes,
                        "recv_bytes": d.recv_bytes, "peak_memory_bytes": d.peak_memory_bytes}
                    for n, d in trace.devices.items()},
    }
    rows = [f"{'device':<10} {'busy':>10} {'comm':>10} {'idle':>10} {'sent':>11} {'received':>11} {'peak mem':>11}"]
    for n, d in trace.devices.items():
        rows.append(f"{n:<10} {fmt_time(d.busy_s):>10} {fmt_time(d.comm_s):>10} {fmt_time(d.wait_s):>10} "
                    f"{fmt_bytes(d.sent_bytes):>11} {fmt_bytes(d.recv_bytes):>11} {fmt_bytes(d.peak_memory_bytes):>11}")
    b = trace.meta.get("bottleneck")
    rows.append(f"step time {fmt_time(trace.step_time_s)} ({args.path} path, {args.order} micro-batches, {args.mode}-wise)")
    if b and b.get("resource"):
        rows.append(f"bottleneck: {b['resource']} holds {b['share']:.0%} of the critical path")
    rows.append(f"against all-FULL: compute {cost.compute_saving:.1%} saved, communication "
                f"{record['comm_saving']:.1%} saved")
    _emit(args, record, "\n".join(rows))
    return 0


@command
def cmd_sweep(args: argparse.Namespace) -> int:
    """Plan and simulate every point of a grid of what-ifs; one CSV row per point."""
    import csv
    import io

    from simulator.sweep import RECORD_FIELDS, parse_list, sweep

    bar = _progress_bar()
    records = sweep(
        parse_list(args.models), parse_list(args.clusters), strategies=parse_list(args.strategies),
        keeps=parse_list(args.keeps, float), micro_batch_sizes=parse_list(args.micro_batch_sizes, int),
        micro_batches=parse_list(args.micro_batches, int), link_bandwidths=parse_list(args.link_bandwidths, float),
        device_counts=parse_list(args.devices, int), comm_keeps=parse_list(args.comm_keeps, float),
        solver=args.solver, path=args.path, seed=args.seed, progress=bar,
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RECORD_FIELDS)
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(args.out, buf.getvalue())
    failed = sum(1 for r in records if r["error"])
    print(f"{len(records)} points written to {args.out}" + (f" ({failed} with no feasible plan)" if failed else ""))
    return 0


def _progress_bar():
    """A progress callback drawing a tqdm bar on stderr (silent where tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    state = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, unit="point", file=sys.stderr)
        state["bar"].update(1)
        if done == total:
            state["bar"].close()
    return update


@command
def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline on this machine: calibrate, plan, simulate, fine-tune on 4 ranks, compare, report."""
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, steps=args.steps, seed=args.seed)
    return 0


@command
def cmd_report(args: argparse.Namespace) -> int:
    """One HTML page (figures embedded) and a Markdown summary of a run directory or a folder of runs."""
    import pandas as pd

    from analysis.report import write_report

    sweep = None
    if args.sweep:
        try:
            sweep = pd.read_csv(args.sweep)
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ValueError(f"--sweep {args.sweep!r}: cannot read it as a `d2ft sweep` CSV ({e})") from None
        if not {"strategy", "step_time_s"} <= set(sweep.columns):
            raise ValueError(f"--sweep {args.sweep!r} is not a `d2ft sweep` CSV (no strategy and step_time_s columns)")
    from pathlib import Path

    from .demo import side_by_side

    folder = Path(args.run_dir)
    runs = [folder] if (folder / "metrics.jsonl").is_file() else \
        sorted(p for p in folder.iterdir() if (p / "metrics.jsonl").is_file()) if folder.is_dir() else []
    recorded = [p for p in runs if any(p.glob("timeline-step*.json"))]
    # One step side by side: of a D2FT run where there is one (its plan is the interesting one), else any.
    pick = next((p for p in recorded if read_json(p / "job.json", "job file").get("strategy") in
                 ("hybrid", "backward", "shortcut")), recorded[0] if recorded else None)
    timelines = side_by_side(pick) if pick is not None else {}
    html, md = write_report(args.run_dir, args.out, sweep=sweep, timelines=timelines,
                            command="d2ft " + " ".join(sys.argv[1:]))
    _emit(args, {"html": str(html), "markdown": str(md)}, f"report: {html}\nsummary: {md}")
    return 0


@command
def cmd_compare(args: argparse.Namespace) -> int:
    """Predicted against measured: two Trace JSON files (e.g. `d2ft simulate --trace` and a run's
    timeline-stepN.json), per device and quantity, with absolute and relative errors."""
    from analysis import compare

    predicted, measured = (Trace.from_dict(read_json(path, "trace file")) for path in (args.predicted, args.measured))
    frame = compare(predicted, measured)
    if args.json:
        print(json.dumps({"rows": frame.to_dict(orient="records")}, default=float))
        return 0
    units = {"step_time_s": fmt_time, "busy_s": fmt_time, "sent_bytes": fmt_bytes, "recv_bytes": fmt_bytes}
    print(f"{'device':<10} {'quantity':<12} {'predicted':>11} {'measured':>11} {'error':>8}")
    for r in frame.itertuples(index=False):
        fmt = units[r.quantity]
        err = "-" if r.rel_error != r.rel_error else f"{100 * r.rel_error:+.1f}%"
        print(f"{r.device:<10} {r.quantity:<12} {fmt(r.predicted):>11} {fmt(r.measured):>11} {err:>8}")
    return 0


@command
def cmd_whatif(args: argparse.Namespace) -> int:
    """What-if: one fine-tuning step of a model on several clusters, per D2FT strategy and baseline."""
    from .planner import plan_step

    model = load_model(args.model)
    print(f"{model.name}: {model.params:,} parameters, {model.forward_macs / 1e9:.2f} G multiply-adds per image "
          f"forward, {model.depth} x {model.heads} subnets")
    comm = f" and {args.comm_keep:.0%} of its traffic" if args.comm_keep else ""
    print(f"step: {args.micro_batches} micro-batches of {args.micro_batch_size} images; budget: keep "
          f"{args.keep:.0%} of each device's subnet compute{comm}; solver {args.solver}; analytical cost model\n")
    header = f"{'cluster':<15} {'strategy':<10} {'step compute':>12} {'compute saved':>13} {'traffic saved':>13} {'ops F/O/S':>16}"
    print(header)
    print("-" * len(header))
    for preset in args.clusters.split(","):
        cluster = load_cluster(preset)
        for strategy in ("full", "backward", "shortcut", "hybrid", "random", "freeze", "layerdrop"):
            r = plan_step(model, cluster, strategy, args.solver, keep=args.keep, comm_keep=args.comm_keep,
                          micro_batches=args.micro_batches, micro_batch_size=args.micro_batch_size, seed=args.seed)
            c = r.plan.summary()
            print(f"{preset:<15} {strategy:<10} {fmt_time(max(r.load_s)):>12} {r.compute_saving:>13.1%} "
                  f"{r.comm_saving:>13.1%} {c['F']:>6}/{c['O']}/{c['S']}")
        print()
    print("step compute: the busiest device's planned compute time (no overlap with communication).")
    print("Next: `d2ft plan --help` to plan one configuration, `d2ft cost --help` to price a plan file.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d2ft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help=cmd_list.__doc__, description=cmd_list.__doc__)
    p.add_argument("what", choices=("models", "devices", "links", "clusters"))
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("cost", help=cmd_cost.__doc__, description=cmd_cost.__doc__)
    _add_model_cluster(p)
    p.add_argument("--plan", help="plan file (.json, or a text grid); default: a uniform plan of --op")
    p.add_argument("--op", default="F", help="op of every subnet without --plan: F, O or S (default: F)")
    _add_step_shape(p)
    p.add_argument("--trace", help="also write the step as a d2ft Trace JSON to this path")
    p.add_argument("--json", action="store_true", help="print one JSON object (times in s, sizes in B)")

    p = sub.add_parser("plan", help=cmd_plan.__doc__, description=cmd_plan.__doc__)
    _add_model_cluster(p)
    p.add_argument("--strategy", default="hybrid",
                   help="backward (F/O), shortcut (F/S), hybrid (F/O/S), or a baseline: full, random, freeze, "
                        "layerdrop (default: %(default)s)")
    p.add_argument("--solver", default="dp", help="mip (exact), dp (two-stage heuristic) or greedy (default: %(default)s)")
    p.add_argument("--keep", type=_fraction, default=0.6,
                   help="compute keep ratio in (0, 1]: each device gets its fixed work plus this share of its "
                        "all-FULL subnet time; the placement balances these budgets (default: %(default)s)")
    p.add_argument("--comm-keep", type=_fraction, default=None,
                   help="communication keep ratio in (0, 1]: each device's bytes per step vs all-FULL (default: none)")
    _add_step_shape(p)
    p.add_argument("--scores", help="scores JSON {\"forward\": [[...]], \"backward\": [[...]]} per [layer][head] "
                                    "or [micro_batch][layer][head]; default: synthetic scores from --seed")
    p.add_argument("--placement", choices=("width", "depth"), default="width",
                   help="subnets spread over devices per block (width) or whole blocks per device (depth)")
    p.add_argument("--seed", type=int, default=0, help="seed for synthetic scores and random baselines (default: 0)")
    p.add_argument("--time-limit", type=float, default=5.0, help="mip time limit, s (default: 5)")
    p.add_argument("--gap", type=float, default=0.01, help="mip relative gap to stop at (default: 0.01)")
    p.add_argument("--backend", choices=("CBC", "HiGHS"), default="HiGHS", help="mip backend (default: HiGHS)")
    p.add_argument("--out", help="write the plan here (.json, or any other extension for the text grid)")
    p.add_argument("--json", action="store_true", help="print one JSON object (times in s, sizes in B)")

    p = sub.add_parser("simulate", help=cmd_simulate.__doc__, description=cmd_simulate.__doc__)
    _add_model_cluster(p)
    p.add_argument("--plan", help="plan file (.json or text grid); default: all-FULL on the balanced placement")
    _add_step_shape(p)
    p.add_argument("--path", choices=("graph", "analytical"), default="graph",
                   help="graph: full timeline; analytical: per-device sums, fast (default: graph)")
    p.add_argument("--order", choices=("sequential", "interleaved"), default="sequential",
                   help="micro-batches one after another (as the runtime runs them) or overlapping")
    p.add_argument("--mode", choices=("width", "depth"), default="width",
                   help="subnets spread over devices per block, or whole blocks per device (a pipeline)")
    p.add_argument("--trace", help="write the d2ft Trace JSON here (analysis reads it)")
    p.add_argument("--chrome-trace", help="write the timeline in Chrome trace-event JSON (ui.perfetto.dev)")
    p.add_argument("--json", action="store_true", help="print one JSON object (times in s, sizes in B)")

    p = sub.add_parser("sweep", help=cmd_sweep.__doc__, description=cmd_sweep.__doc__)
    p.add_argument("--models", default="vit_base_patch16_224", help="comma-separated timm names or model.json files")
    p.add_argument("--clusters", default="lan-4x3090", help="comma-separated presets or cluster.json files")
    p.add_argument("--strategies", default="full,hybrid", help="comma-separated strategies and baselines")
    p.add_argument("--keeps", default="0.6", help="comma-separated compute keep ratios in (0, 1]")
    p.add_argument("--comm-keeps", default="none", help="comma-separated communication keep ratios, or none")
    p.add_argument("--micro-batches", default="4", help="comma-separated micro-batches per step")
    p.add_argument("--micro-batch-sizes", default="8", help="comma-separated images per micro-batch")
    p.add_argument("--link-bandwidths", default="none",
                   help="comma-separated bandwidths for every link, B/s (1.25e9 = 10 Gb/s), or none: as built")
    p.add_argument("--devices", default="none", help="comma-separated device counts (star clusters), or none")
    p.add_argument("--solver", default="dp", help="mip, dp or greedy (default: dp)")
    p.add_argument("--path", choices=("graph", "analytical"), default="analytical", help="simulator path")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic scores (default: 0)")
    p.add_argument("--out", required=True, help="CSV file to write (atomically)")

    _add_runtime_parsers(sub)

    p = sub.add_parser("demo", help=cmd_demo.__doc__, description=cmd_demo.__doc__)
    p.add_argument("--quick", action="store_true", help="16 steps per run instead of 200: the same pipeline in under "
                                                       "2 minutes")
    p.add_argument("--steps", type=_positive_int, help="training steps per run (default: 200, or 16 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of the runs (default: 0)")
    p.add_argument("--out", default="out/demo", help="folder for everything the demo writes (default: %(default)s; "
                                                     "a previous demo there is replaced)")

    p = sub.add_parser("report", help=cmd_report.__doc__, description=cmd_report.__doc__)
    p.add_argument("run_dir", help="a run directory (`d2ft run --out`) or a folder of them (e.g. out/demo/runs)")
    p.add_argument("--sweep", help="a `d2ft sweep` CSV to draw as what-if curves")
    p.add_argument("--out", help="folder for report.html, report.md and figures/ (default: RUN_DIR)")
    p.add_argument("--json", action="store_true", help="print the paths as one JSON object")

    p = sub.add_parser("compare", help=cmd_compare.__doc__, description=cmd_compare.__doc__)
    p.add_argument("predicted", help="Trace JSON of the prediction (`d2ft simulate --trace FILE`)")
    p.add_argument("measured", help="Trace JSON of the measurement (a run's timeline-stepN.json)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (s, B; rel_error a fraction)")

    p = sub.add_parser("whatif", help=cmd_whatif.__doc__, description=cmd_whatif.__doc__)
    p.add_argument("--model", default="vit_base_patch16_224", help="timm name or model.json (default: %(default)s)")
    p.add_argument("--clusters", default="lan-4x3090,mixed-4,edge-orin-wifi",
                   help="comma-separated cluster presets (default: %(default)s)")
    p.add_argument("--keep", type=_fraction, default=0.6, help="compute keep ratio in (0, 1] (default: 0.6)")
    p.add_argument("--comm-keep", type=_fraction, default=0.5,
                   help="communication keep ratio in (0, 1] (default: 0.5)")
    p.add_argument("--solver", default="dp", help="mip, dp or greedy (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic scores (default: 0)")
    _add_step_shape(p)
    return parser


def _add_runtime_parsers(sub) -> None:
    """Commands served by the runtime package (torch is imported only when one of them runs)."""
    try:
        from runtime.cli import add_parser
    except ImportError:  # pragma: no cover - the runtime ships with the distribution
        return
    add_parser(sub)


def cmd_run(args: argparse.Namespace) -> int:
    from runtime.cli import run_command

    return run_command(args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from runtime.cli import calibrate_command

    return calibrate_command(args)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from runtime.cli import pretrain_command

    return pretrain_command(args)


COMMANDS["pretrain"] = cmd_pretrain
COMMANDS["run"] = cmd_run
COMMANDS["calibrate"] = cmd_calibrate


def _checked(parse, ok, expected: str):
    """An argparse type: ``parse`` the text, then require ``ok(value)``, else say what was ``expected``."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return convert


_fraction = _checked(float, lambda v: 0 < v <= 1, "a number in (0, 1] (the share of the all-FULL cost kept)")
_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``d2ft`` console script. Errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, KeyError, OSError, IndexError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"d2ft {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
