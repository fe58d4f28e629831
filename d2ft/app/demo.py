"""``d2ft demo``: the whole pipeline on this machine, into one report.

plan -> simulate -> real fine-tuning -> compare -> report, with the project's own data and
backbone (no hub needed):

1. calibrate: measure this machine's ranks (``d2ft calibrate``) into ``profile.json``;
2. plan: D2FT hybrid at keep 0.6 for the shipped backbone (a ViT pre-trained on
   Fashion-MNIST classes 0-4) on 4 local ranks, and simulate its step against all-FULL, with the
   assumed and with the calibrated profile;
3. run: fine-tune the backbone on its unseen classes 5-9 (5,000 shipped images) on 4 ranks
   (torch.distributed, gloo) with all-FULL, D2FT hybrid and random at keep 0.6, same
   seed and steps, each a ``runtime.job.Job`` whose ``d2ft run`` command the report lists;
4. fidelity: one more run that executes at least 10 different plans a few steps each,
   measured against the simulator's prediction of each;
5. report: ``report.html`` (self-contained) and ``report.md`` with every table and figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import shutil
import statistics
import time
from pathlib import Path

from .. import rundir
from ..cluster import Cluster
from ..placement import plan_placement
from ..planner import plan_step
from ..serial import atomic_write_text, write_json
from . import flags
from .report import side_by_side
from .runs import command_line, format_summary

MARKER = "demo.json"
STRATEGIES = ("full", "hybrid", "random")
FIDELITY_PLANS = [("full", 1.0), ("hybrid", 0.8), ("hybrid", 0.6), ("hybrid", 0.4), ("backward", 0.6),
                  ("shortcut", 0.6), ("shortcut", 0.4), ("random", 0.6), ("freeze", 0.6), ("layerdrop", 0.6),
                  ("layerdrop", 0.4), ("backward", 0.8)]


def backbone_job(**fields):
    """A ``Job`` of the shipped backbone with its task's 5-class head (as ``d2ft run`` builds it)."""
    from runtime.job import Job
    from runtime.prepare import resolve_model

    name, kwargs, checkpoint = resolve_model(None, {"num_classes": 5}, None)
    return Job(**{"model": name, "model_kwargs": kwargs, "checkpoint": checkpoint, **fields})


def backbone_spec(**fields):
    """The ``ModelSpec`` of the shipped backbone with its task's 5-class head (as a job of ``fields`` trains it)."""
    from runtime.prepare import spec_of

    return spec_of(backbone_job(**fields))


def run_demo(out: str | Path = "out/demo", quick: bool = False, steps: int | None = None, nproc: int = 4,
             seed: int = 0, log=print, progress: bool = True) -> Path:
    """Runs the demo into ``out`` (module docstring); returns the HTML report's path. ``log`` takes each
    line of its account; ``progress`` draws the runs' progress bars (on stderr)."""
    from runtime.calibrate import calibrate
    from runtime.prepare import local_cluster

    out = Path(out)
    _claim(out)
    t_start = time.perf_counter()
    log = _stamped(log, t_start)
    steps = steps or (16 if quick else 200)
    fid_each = 2 if quick else 6

    log(f"[1/5] calibrating {nproc} local ranks (the backbone's subnet tasks, copies, point-to-point transfers) ...")
    calibrated, raw = calibrate(nproc, backbone_job(seed=seed, checkpoint="none"), micro_batch_size=16)
    profile = out / "profile.json"
    atomic_write_text(profile, calibrated.to_json() + "\n")
    write_json(out / "profile.raw.json", raw)
    dev = calibrated.device(0)
    log(f"      {dev.peak_flops / 1e9:.1f} GFLOP/s and {1e6 * dev.kernel_launch_s:.0f} us per matrix-product kernel on a "
        f"rank, the {nproc} ranks sharing {raw.get('cores', 1)} usable cores; "
        f"link {calibrated.links[0][2].bandwidth / 1e9:.2f} GB/s")

    assumed = local_cluster(nproc)
    spec = backbone_spec()
    log("[2/5] planning and simulating one step of the shipped backbone:")
    _plan_and_simulate(out, spec, calibrated, assumed, seed, log)

    commands = {}
    for i, strategy in enumerate(STRATEGIES):
        job = backbone_job(nproc=nproc, cluster=str(profile), strategy=strategy, keep=0.6, steps=steps, lr=2e-3,
                           seed=seed, eval_every=0 if quick else max(steps // 4, 1),
                           out_dir=str(out / "runs" / strategy), label=f"[3/5] {strategy}", progress=progress)
        commands[strategy] = command_line(job)
        log(f"[3/5] fine-tuning on Fashion-MNIST classes 5-9, 4 ranks, {strategy} ({i + 1}/{len(STRATEGIES)}) ...")
        summary = _run(job)
        for line in format_summary(summary).splitlines()[1:3]:
            log("     " + line)

    log(f"[4/5] measuring {len(FIDELITY_PLANS)} plans, {fid_each} steps each, against the simulator ...")
    fidelity = measure_fidelity(out / "fidelity", profile, nproc, each=fid_each, seed=seed, assumed=assumed,
                                label="[4/5] plans" if progress else None)
    fidelity.to_csv(out / "fidelity.csv", index=False)

    log("[5/5] comparing and writing the report ...")
    html, md = _report(out, spec, calibrated, fidelity, quick)
    summary = {"seconds": time.perf_counter() - t_start, "quick": quick, "steps": steps, "commands": commands,
               "report": str(html), "markdown": str(md)}
    write_json(out / MARKER, summary)
    log(f"done in {summary['seconds']:.0f} s. Report: {html} (Markdown: {md})")
    return html


def _plan_and_simulate(out: Path, spec, calibrated: Cluster, assumed: Cluster, seed: int, log) -> None:
    from simulator import simulate

    for strategy in ("full", "hybrid"):
        report = plan_step(spec, calibrated, strategy, keep=0.6, micro_batches=2, micro_batch_size=16, seed=seed)
        t_cal = simulate(report.plan, spec, calibrated).step_time_s
        t_ass = simulate(report.plan, spec, assumed).step_time_s
        log(f"      {strategy:<7} compute saved {report.compute_saving:6.1%}, traffic saved {report.comm_saving:6.1%}; "
            f"predicted step {1e3 * t_cal:.1f} ms (calibrated), {1e3 * t_ass:.1f} ms (assumed)")
        if strategy == "hybrid":
            atomic_write_text(out / "plan-hybrid.txt", report.plan.to_text())


def _report(out: Path, spec, calibrated: Cluster, fidelity, quick: bool):
    from analysis.report import write_report

    predicted = _predicted_runs(out / "runs", spec, calibrated)
    errors_assumed = (fidelity["assumed_step_time_s"] / fidelity["measured_step_time_s"] - 1).abs()
    errors_cal = (fidelity["predicted_step_time_s"] / fidelity["measured_step_time_s"] - 1).abs()
    notes = [f"Before calibration (assumed figures for this machine) the median step-time error over the "
             f"{len(fidelity)} plans was {100 * errors_assumed.median():.0f}% (worst {100 * errors_assumed.max():.0f}%); "
             f"after `d2ft calibrate` it is {100 * errors_cal.median():.0f}% (worst {100 * errors_cal.max():.0f}%)."]
    caveats = ["These runs come from `d2ft demo --quick`: a few steps each, far from converged, so their top-1 "
               "figures test the pipeline and say nothing about accuracy."] if quick else []
    return write_report(out / "runs", out, title="d2ft demo: D2FT fine-tuning on 4 local ranks",
                        command="d2ft demo" + (" --quick" if quick else ""), predicted_step_s=predicted,
                        fidelity=fidelity, sweep=_sweep(quick),
                        timelines=side_by_side(out / "runs" / "hybrid", calibrated), notes=notes, caveats=caveats)


def _run(job) -> dict:
    """Prepares and runs ``job`` with its progress bar on stderr; returns its summary."""
    from runtime.run import run

    with contextlib.redirect_stdout(io.StringIO()):
        return run(job, command=shlex.split(command_line(job)))


def _stamped(log, t0: float):
    """``log`` with the seconds since ``t0`` in front of each line."""
    return lambda msg: log(f"{time.perf_counter() - t0:5.0f} s  {msg}")


def _claim(out: Path) -> None:
    """The demo's folder: new, or a previous demo's (which it replaces); never anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists() and not (out / "profile.json").exists():
            raise ValueError(f"{out} exists and is not a d2ft demo folder; choose another --out or remove it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def measure_fidelity(run_dir: str | Path, profile: str | Path, nproc: int, plans=FIDELITY_PLANS, each: int = 6,
                     micro_batch_size: int = 16, micro_batches: int = 2, seed: int = 0, assumed=None,
                     label: str | None = None, slowdown: list[float] | None = None, lora=None,
                     order: str = "sequential"):
    """Measures ``plans`` on ``nproc`` local ranks against the simulator; one row per plan.

    One run of the shipped backbone executes each (strategy, keep) of ``plans`` (planned on
    the cluster in ``profile``, one placement for all) for ``each`` steps, in ``run_dir``; a
    finished run of the same plans there is read, not repeated. Measured figures are medians
    over each plan's steps but the first (which pays for the change of plan); compute is
    summed over ranks, bytes are those sent by every rank; per rank, its compute and its wait,
    the part of the step it is not computing (``rank_*`` lists, rank order). ``assumed``, a second cluster, adds its prediction as
    ``assumed_step_time_s`` (a dict of clusters adds ``{name}_step_time_s`` per entry). ``slowdown``
    (one factor per rank) emulates a heterogeneous cluster: the ranks run that much slower, and the
    profile (and ``assumed``) is planned and simulated slowed alike. ``lora`` (a ``runtime.job.LoraSpec``)
    runs every plan with LoRA adapters, planned and simulated as LoRA (``ModelSpec.lora_rank``). ``order``
    ("sequential" or "interleaved") is how the ranks execute a step's micro-batches and how it is simulated.
    """
    from runtime.prepare import claimed, prepare
    from runtime.run import launch

    run_dir, profile = Path(run_dir), Path(profile)
    calibrated = Cluster.from_json(profile.read_text())
    others = assumed if isinstance(assumed, dict) else {} if assumed is None else {"assumed": assumed}
    if slowdown:
        calibrated = calibrated.with_slowdown(slowdown)
        others = {name: c.with_slowdown(slowdown) for name, c in others.items()}
    previous = rundir.read_job(run_dir) if (run_dir / rundir.JOB_FILE).is_file() else {}
    if run_dir.exists() and any(run_dir.iterdir()) and not previous.get("schedule"):
        raise ValueError(f"{run_dir} holds something other than a plan measurement; choose another folder")
    spec = backbone_spec(lora=lora)
    placement = plan_placement(spec, calibrated, micro_batches=micro_batches, micro_batch_size=micro_batch_size,
                               keep=0.6)
    schedule = [plan_step(spec, calibrated, strategy, keep=keep, micro_batches=micro_batches,
                          micro_batch_size=micro_batch_size, placement=placement, seed=seed).plan
                for strategy, keep in plans]
    lines = rundir.read_jsonl(run_dir / rundir.METRICS_FILE)
    if previous and json.loads(json.dumps([p.to_dict() for p in schedule])) != previous["schedule"]:  # other plans
        lines = []
    if len(lines) < each * len(plans):
        if run_dir.exists():  # a torn measurement, or one of other plans
            shutil.rmtree(run_dir)
        job = prepare(backbone_job(nproc=nproc, cluster=str(profile), seed=seed, strategy=None, plan=schedule[0],
                                   schedule=schedule, schedule_steps_each=each, micro_batches=micro_batches,
                                   micro_batch_size=micro_batch_size, steps=each * len(plans), checkpoint_every=0,
                                   evaluate=False, progress=label is not None, label=label or "",
                                   out_dir=str(run_dir), slowdown=tuple(slowdown) if slowdown else None,
                                   lora=lora, order=order))
        with claimed(job):
            launch(job)
        lines = rundir.read_jsonl(run_dir / rundir.METRICS_FILE)
    return _fidelity_rows(lines, schedule, plans, each, spec, calibrated, nproc, micro_batch_size, others, order)


def _fidelity_rows(lines, schedule, plans, each, spec, calibrated, nproc, micro_batch_size, others, order):
    import pandas as pd

    from simulator import simulate

    rows = []
    for i, (plan, (strategy, keep)) in enumerate(zip(schedule, plans)):
        window = lines[i * each + 1:(i + 1) * each] or lines[i * each:(i + 1) * each]
        trace = simulate(plan, spec, calibrated, order=order)
        names = list(trace.devices)
        row = {"plan": f"{strategy} keep {keep:g}" if strategy != "full" else "full", "strategy": strategy,
               "keep": keep, "nproc": nproc, "micro_batch_size": micro_batch_size,
               "predicted_step_time_s": trace.step_time_s,
               "rank_predicted_compute_s": [trace.devices[n].busy_s for n in names],
               "rank_measured_compute_s": [statistics.median(r["devices"][k]["busy_s"] for r in window)
                                           for k in range(len(names))] if "devices" in window[0] else None,
               # a rank's wait: the part of the step it is not computing (messages and waiting for them)
               # the same compute as its thread's CPU time (without the time the OS gave its core to others)
               "rank_measured_compute_cpu_s": [statistics.median(sum(r["devices"][k]["busy_cpu_s"].values())
                                                                 for r in window) for k in range(len(names))]
               if "busy_cpu_s" in window[0].get("devices", [{}])[0] else None,
               "rank_predicted_wait_s": [trace.step_time_s - trace.devices[n].busy_s for n in names],
               "rank_measured_wait_s": [statistics.median(r["devices"][k]["wall_s"] - r["devices"][k]["busy_s"]
                                                          for r in window) for k in range(len(names))]
               if "devices" in window[0] else None,
               "measured_step_time_s": statistics.median(r["step_time_s"] for r in window),
               "predicted_compute_s": window[0]["predicted_compute_s"],
               "measured_compute_s": statistics.median(r["measured_compute_s"] for r in window),
               "predicted_sent_bytes": window[0]["predicted_sent_bytes"],
               "measured_sent_bytes": window[0]["measured_sent_bytes"]}
        for name, cluster in others.items():
            row[f"{name}_step_time_s"] = simulate(plan, spec, cluster, order=order).step_time_s
        rows.append(row)
    return pd.DataFrame(rows)


def _predicted_runs(folder: Path, spec, cluster) -> dict[str, float]:
    """Per run, the simulator's median step time over (up to 20 of) the plans the run used."""
    from analysis.runs import find_runs
    from simulator import simulate

    out = {}
    for run in find_runs(folder):
        plans = [p for _, p in run.plans]
        sample = plans[:: max(len(plans) // 20, 1)]
        out[run.label] = statistics.median(simulate(p, spec, cluster).step_time_s for p in sample)
    return out


def _sweep(quick: bool):
    """What-if: ViT-B/16 on the edge cluster preset against the link bandwidth, per strategy (simulated)."""
    import pandas as pd

    from simulator import sweep

    bandwidths = [1e6, 1e7, 1e8, 1e9] if quick else [1e6, 3e6, 1e7, 3e7, 1e8, 3e8, 1e9, 1e10]
    return pd.DataFrame(sweep(["vit_base_patch16_224"], ["edge-orin-wifi"], ["full", "hybrid", "shortcut", "backward"],
                              link_bandwidths=bandwidths))


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline on this machine: calibrate, plan, simulate, fine-tune on 4 ranks, compare, report."""
    import sys

    quiet = args.quiet or args.json
    log = (lambda msg: None) if quiet else print
    run_demo(args.out, quick=args.quick, steps=args.steps, seed=args.seed, log=log, progress=not quiet)
    if args.json:
        print(json.dumps(json.loads((Path(args.out) / MARKER).read_text())))
    elif quiet:
        print(f"report: {Path(args.out) / 'report.html'}", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    """The parser of ``demo``."""
    p = flags.command(sub, "demo", cmd_demo)
    p.add_argument("--quick", action="store_true", help="16 steps per run instead of 200: the same pipeline in under "
                                                       "2 minutes")
    p.add_argument("--steps", type=flags.positive_int, help="training steps per run (default: 200, or 16 with --quick)")
    flags.add_seed(p, "runs")
    p.add_argument("--out", default="out/demo", help="folder for everything the demo writes (default: %(default)s; "
                                                     "a previous demo there is replaced)")
    flags.add_quiet(p, "no account of the steps and no progress bars")
    flags.add_json(p, "one JSON object at the end: seconds, the runs' commands, the report's paths")
