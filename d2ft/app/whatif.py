"""The what-if commands: ``list``, ``cost``, ``plan``, ``simulate``, ``sweep``, ``whatif``.

Each is a thin layer over the Python API (``d2ft.CostModel``, ``d2ft.plan_step``,
``simulator.simulate`` and ``sweep``); none imports torch. Every one
prints a readable table by default and one JSON object with --json. Units: seconds (s),
bytes (B), FLOP; a keep ratio is a fraction in (0, 1].
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import catalogue
from ..cost import CostModel
from ..loaders import load_cluster, load_model, load_plan
from ..ops import Op
from ..plan import Plan
from ..serial import atomic_write_text, read_json
from ..trace import Trace
from ..units import fmt_bytes, fmt_time
from ..planner import DEFAULT_BACKEND, MIP_BACKENDS
from ..zoo import timm_names
from . import flags
from .progress import progress_bar
from .tables import memory_by_dtype, memory_table, plan_table, step_record, step_table


def _model_and_cluster(args: argparse.Namespace):
    overrides = {}
    if args.heads_only:
        overrides["split_mlp"] = False
    if args.dtype_bytes:
        overrides["dtype_bytes"] = args.dtype_bytes
    if getattr(args, "autocast", False):
        overrides["autocast"] = True
    if getattr(args, "optimizer", None):
        overrides["optimizer"] = args.optimizer
    if getattr(args, "message_dtype", None):
        overrides["message_dtype_bytes"] = 4 if args.message_dtype == "fp32" else 2
    if getattr(args, "lora_rank", None):
        overrides.update(lora_rank=args.lora_rank,
                         lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()))
    return load_model(args.model, **overrides), load_cluster(args.cluster)


def _plan_from_args(args: argparse.Namespace, model, cluster, op: Op, mode: str | None = None) -> Plan:
    """The --plan file, or every subnet running ``op`` (on the balanced ``mode`` placement when given,
    else the round-robin one)."""
    if args.plan:
        return load_plan(args.plan)
    placement = None
    if mode is not None:
        from ..placement import plan_placement

        placement = plan_placement(model, cluster, mode, micro_batches=args.micro_batches,
                                   micro_batch_size=args.micro_batch_size)
    return Plan.uniform(model, cluster, op, args.micro_batches, args.micro_batch_size, placement=placement)


def _from_run(args: argparse.Namespace):
    """(model, cluster, plan) of step ``--step`` (default: the last) of the run in ``--run``."""
    from .. import rundir

    run = Path(args.run)
    for name in (rundir.MODEL_FILE, rundir.CLUSTER_FILE):
        if not (run / name).is_file():
            raise FileNotFoundError(f"--run {run}: no {name} there (a run writes it when it starts); give a run "
                                    "directory of `d2ft run`")
    step, plan = rundir.plan_at(run, args.step)
    model = load_model(str(run / rundir.MODEL_FILE))
    if (args.heads_only or args.dtype_bytes or getattr(args, "autocast", False) or getattr(args, "optimizer", None)
            or getattr(args, "message_dtype", None) or getattr(args, "lora_rank", None)):
        raise ValueError("--run simulates the run's own model: leave out --heads-only, --dtype-bytes, --autocast, "
                         "--optimizer, --message-dtype and --lora-rank")
    return model, load_cluster(str(run / rundir.CLUSTER_FILE)), Plan.from_dict(plan)


def emit(args: argparse.Namespace, obj: dict, text: str) -> None:
    """Prints ``obj`` as one JSON line with --json, else ``text``."""
    print(json.dumps(obj) if args.json else text)


def cmd_list(args: argparse.Namespace) -> int:
    """List the timm models, catalogue devices and links, and cluster presets."""
    items = {
        "models": {n: f"{m.params / 1e6:.1f} M params, {m.depth}x{m.heads} subnets"
                   for n in timm_names() for m in [load_model(n)]},
        "devices": {k: f"{d.name}: {d.peak_flops / 1e12:g} TFLOPS 16-bit, {d.mem_bandwidth / 1e9:g} GB/s, "
                       f"{fmt_bytes(d.memory_bytes)}; {_pricing_text(d)}" for k, d in catalogue.DEVICES.items()},
        "links": {k: f"{l.name}: {l.bandwidth / 1e9:g} GB/s, {fmt_time(l.latency_s)}" for k, l in catalogue.LINKS.items()},
        "clusters": {k: ", ".join(f"{n}={s.name}" for n, s in catalogue.cluster_preset(k).devices)
                     + _hosts_text(catalogue.cluster_preset(k)) for k in catalogue.PRESETS},
    }[args.what]
    emit(args, items, "\n".join(f"{k:<34} {v}" for k, v in items.items()))
    return 0


def _pricing_text(spec) -> str:
    """How the cost model prices the device's tasks (d2ft.cost): kernel by kernel, or one roofline each."""
    if spec.kernel_model:
        return (f"kernel model: {spec.sm_count} SMs, {spec.efficiency:.0%} of peak, "
                f"{fmt_time(spec.kernel_launch_s)} per kernel, {fmt_bytes(spec.framework_bytes)} framework memory")
    return f"roofline: {spec.efficiency:.0%} of peak, {fmt_time(spec.task_overhead_s)} per task"


def _hosts_text(cluster) -> str:
    """"; hosts: name (n devices, C cores)" for a cluster whose hosts hold several devices or limit cores."""
    hosts = [f"{h.name} ({len(h.devices)} devices" + (f", {h.cores} cores shared)" if h.cores else ")")
             for h in cluster.hosts]
    return f"; hosts: {', '.join(hosts)}" if hosts else "; one host per device"


def cmd_cost(args: argparse.Namespace) -> int:
    """Analytical cost of one step: a plan file, or every subnet running one op."""
    model, cluster = _model_and_cluster(args)
    plan = _plan_from_args(args, model, cluster, Op.from_char(args.op))
    cost = CostModel(model, cluster).step(plan, inference=args.inference)
    if args.trace:
        atomic_write_text(args.trace, Trace.from_cost(cost, meta=plan.meta).to_json())
    memory = memory_by_dtype(model, cluster, plan, inference=args.inference)
    record = {**step_record(cost), "memory_bytes": memory, "inference": args.inference}
    text = step_table(cost) + "\n\n" + memory_table(memory, [n for n, _ in cluster.devices], cluster, model.optimizer,
                                                      model.autocast)
    if args.inference:
        record["images_per_s"] = plan.batch_size / cost.max_compute_s if cost.max_compute_s else None
        text = (f"inference: the forward pass of {plan.batch_size} images ({plan.micro_batches} micro-batches of "
                f"{plan.micro_batch_size}), no backward or optimizer; about {record['images_per_s']:,.0f} images/s "
                "if compute bounds it (the messages not counted: `d2ft simulate` adds them)\n" + text)
    emit(args, record, text)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Plan one step's ops with a D2FT strategy (or a baseline) under a compute/communication budget."""
    from ..placement import plan_placement
    from ..planner import plan_step
    from ..scores import Scores

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
    emit(args, report.to_dict(), plan_table(report) + (f"\nplan written to {args.out}" if args.out else ""))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate one step of a plan: timeline (graph path) or sums (analytical path), and its bottleneck."""
    from simulator import simulate

    if args.run:
        model, cluster, plan = _from_run(args)
    else:
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
    emit(args, record, "\n".join(rows))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Plan and simulate every point of a grid of what-ifs; one CSV row per point."""
    import csv
    import io

    from simulator.sweep import RECORD_FIELDS, parse_list, sweep

    bar = None if args.quiet or args.json else progress_bar("point")
    records = sweep(
        parse_list(args.models), parse_list(args.clusters), strategies=parse_list(args.strategies),
        keeps=parse_list(args.keeps, float), micro_batch_sizes=parse_list(args.micro_batch_sizes, int),
        micro_batches=parse_list(args.micro_batches, int), link_bandwidths=parse_list(args.link_bandwidths, float),
        device_counts=parse_list(args.devices, int), comm_keeps=parse_list(args.comm_keeps, float),
        solver=args.solver, path=args.path, seed=args.seed, progress=bar, workers=args.workers,
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RECORD_FIELDS)
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(args.out, buf.getvalue())
    failed = sum(1 for r in records if r["error"])
    emit(args, {"out": args.out, "points": len(records), "infeasible": failed},
         f"{len(records)} points written to {args.out}" + (f" ({failed} with no feasible plan)" if failed else ""))
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    """What-if: one fine-tuning step of a model on several clusters, per D2FT strategy and baseline."""
    from ..planner import plan_step

    model = load_model(args.model)
    rows = []
    for preset in args.clusters.split(","):
        cluster = load_cluster(preset)
        for strategy in ("full", "backward", "shortcut", "hybrid", "random", "freeze", "layerdrop"):
            r = plan_step(model, cluster, strategy, args.solver, keep=args.keep, comm_keep=args.comm_keep,
                          micro_batches=args.micro_batches, micro_batch_size=args.micro_batch_size, seed=args.seed)
            c = r.plan.summary()
            rows.append({"cluster": preset, "strategy": strategy, "step_compute_s": max(r.load_s),
                         "compute_saving": r.compute_saving, "comm_saving": r.comm_saving,
                         "ops": {"F": c["F"], "O": c["O"], "S": c["S"]}})
    if args.json:
        print(json.dumps({"model": model.name, "params": model.params, "keep": args.keep, "comm_keep": args.comm_keep,
                          "micro_batches": args.micro_batches, "micro_batch_size": args.micro_batch_size,
                          "rows": rows}))
        return 0
    print(f"{model.name}: {model.params:,} parameters, {model.forward_macs / 1e9:.2f} G multiply-adds per image "
          f"forward, {model.depth} x {model.heads} subnets")
    comm = f" and {args.comm_keep:.0%} of its traffic" if args.comm_keep else ""
    print(f"step: {args.micro_batches} micro-batches of {args.micro_batch_size} images; budget: keep "
          f"{args.keep:.0%} of each device's subnet compute{comm}; solver {args.solver}; analytical cost model\n")
    header = f"{'cluster':<15} {'strategy':<10} {'step compute':>12} {'compute saved':>13} {'traffic saved':>13} {'ops F/O/S':>16}"
    print(header)
    print("-" * len(header))
    for i, r in enumerate(rows):
        o = r["ops"]
        print(f"{r['cluster']:<15} {r['strategy']:<10} {fmt_time(r['step_compute_s']):>12} {r['compute_saving']:>13.1%} "
              f"{r['comm_saving']:>13.1%} {o['F']:>6}/{o['O']}/{o['S']}")
        if i + 1 == len(rows) or rows[i + 1]["cluster"] != r["cluster"]:
            print()
    print("step compute: the busiest device's planned compute time (no overlap with communication).")
    print("Next: `d2ft plan --help` to plan one configuration, `d2ft cost --help` to price a plan file.")
    return 0




def add_parsers(sub) -> None:
    """The what-if commands' parsers."""
    _add_list(sub)
    _add_cost(sub)
    _add_plan(sub)
    _add_simulate(sub)
    _add_sweep(sub)
    _add_whatif(sub)


def _add_list(sub) -> None:
    p = flags.command(sub, "list", cmd_list)
    p.add_argument("what", choices=("models", "devices", "links", "clusters"))
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_cost(sub) -> None:
    p = flags.command(sub, "cost", cmd_cost)
    flags.add_model_cluster(p)
    p.add_argument("--plan", help="plan file (.json, or a text grid); default: a uniform plan of --op")
    p.add_argument("--op", default="F", help="op of every subnet without --plan: F, O or S (default: F)")
    p.add_argument("--inference", action="store_true",
                   help="price the forward pass only (evaluation or serving): no backward, no optimizer; F and O "
                        "both run forward, S skips; memory without gradients or optimizer state")
    flags.add_step_shape(p)
    p.add_argument("--trace", help="also write the step as a d2ft Trace JSON to this path")
    p.add_argument("--json", action="store_true", help="print one JSON object (times in s, sizes in B)")


def _add_plan(sub) -> None:
    p = flags.command(sub, "plan", cmd_plan)
    flags.add_model_cluster(p)
    flags.add_budget(p)
    flags.add_step_shape(p)
    p.add_argument("--scores", help="scores JSON {\"forward\": [[...]], \"backward\": [[...]]} per [layer][head] "
                                    "or [micro_batch][layer][head]; default: synthetic scores from --seed")
    p.add_argument("--placement", choices=("width", "depth"), default="width",
                   help="subnets spread over devices per block (width) or whole blocks per device (depth)")
    flags.add_seed(p)
    p.add_argument("--time-limit", type=flags.positive_float, default=5.0, help="mip time limit, s (default: 5)")
    p.add_argument("--gap", type=flags.checked(float, lambda v: 0 <= v < 1, "a relative gap in [0, 1)"), default=0.01,
                   help="mip relative gap to stop at, a fraction (default: 0.01)")
    p.add_argument("--backend", choices=MIP_BACKENDS, default=DEFAULT_BACKEND, help="mip backend (default: %(default)s)")
    p.add_argument("--out", help="write the plan here (.json, or any other extension for the text grid)")
    p.add_argument("--json", action="store_true", help="print one JSON object (times in s, sizes in B)")


def _add_simulate(sub) -> None:
    p = flags.command(sub, "simulate", cmd_simulate)
    flags.add_model_cluster(p)
    p.add_argument("--plan", help="plan file (.json or text grid); default: all-FULL on the balanced placement")
    p.add_argument("--run", metavar="RUN_DIR", help="simulate a step of this run: its model, cluster and the plan it "
                                                     "executed (overrides --model, --cluster and --plan)")
    p.add_argument("--step", type=int, help="with --run: the step (default: the run's last; compare with its "
                                            "timeline-stepN.json)")
    flags.add_step_shape(p)
    p.add_argument("--path", choices=("graph", "analytical"), default="graph",
                   help="graph: full timeline; analytical: per-device sums, fast (default: graph)")
    p.add_argument("--order", choices=("sequential", "interleaved"), default="sequential",
                   help="micro-batches one after another (as the runtime runs them) or overlapping")
    p.add_argument("--mode", choices=("width", "depth"), default="width",
                   help="subnets spread over devices per block, or whole blocks per device (a pipeline)")
    p.add_argument("--trace", help="write the d2ft Trace JSON here (analysis reads it)")
    p.add_argument("--chrome-trace", help="write the timeline in Chrome trace-event JSON (ui.perfetto.dev)")
    p.add_argument("--json", action="store_true", help="print one JSON object (times in s, sizes in B)")


def _add_sweep(sub) -> None:
    p = flags.command(sub, "sweep", cmd_sweep)
    p.add_argument("--models", default="vit_base_patch16_224", help="comma-separated timm names or model.json files")
    p.add_argument("--clusters", default="lan-4x3090", help="comma-separated presets or cluster.json files")
    p.add_argument("--strategies", default="full,hybrid", help="comma-separated strategies and baselines")
    p.add_argument("--keeps", default="0.6", help="comma-separated compute keep ratios in (0, 1]")
    p.add_argument("--comm-keeps", default="none", help="comma-separated communication keep ratios, or none")
    p.add_argument("--micro-batches", default="4", help="comma-separated micro-batches per step")
    p.add_argument("--micro-batch-sizes", default="8", help="comma-separated images per micro-batch")
    p.add_argument("--link-bandwidths", default="none",
                   help="comma-separated bandwidths for every link, B/s (1.25e9 = 10 Gb/s), or none: as built; "
                        "lo:hi:n gives n log-spaced values (1e8:1e11:1000)")
    p.add_argument("--devices", default="none", help="comma-separated device counts (star clusters), or none")
    p.add_argument("--solver", default="dp", help=f"{flags.SOLVER_HELP} (default: %(default)s)")
    p.add_argument("--path", choices=("graph", "analytical"), default="analytical", help="simulator path")
    p.add_argument("--workers", type=flags.positive_int, default=1,
                   help="processes that plan and simulate points at once (default: 1; the records are the same)")
    flags.add_seed(p, "synthetic scores")
    p.add_argument("--out", required=True, help="CSV file to write (atomically)")
    flags.add_quiet(p)
    flags.add_json(p, "one JSON object: the CSV's path and how many points (and how many had no feasible plan)")


def _add_whatif(sub) -> None:
    p = flags.command(sub, "whatif", cmd_whatif)
    p.add_argument("--model", default="vit_base_patch16_224", help="timm name or model.json (default: %(default)s)")
    p.add_argument("--clusters", default="lan-4x3090,mixed-4,edge-orin-wifi",
                   help="comma-separated cluster presets (default: %(default)s)")
    flags.add_budget(p, strategy=False, comm_keep=0.5)
    flags.add_seed(p, "synthetic scores")
    flags.add_step_shape(p)
    flags.add_json(p, "one JSON object: per cluster and strategy the busiest device's compute (s), savings, op counts")
