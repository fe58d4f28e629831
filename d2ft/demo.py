"""``d2ft demo``: the whole pipeline on this machine, into one report.

plan -> simulate -> real fine-tuning -> compare -> report, with the project's own data and
backbone (no hub needed):

1. calibrate: measure this machine's ranks (``d2ft calibrate``) into ``profile.json``;
2. plan: D2FT hybrid at keep 0.6 for the shipped backbone (a ViT pre-trained on
   Fashion-MNIST) on 4 local ranks, and simulate its step against all-FULL, with the
   assumed and with the calibrated profile;
3. run: fine-tune the backbone on the 5,000 real MNIST digits on 4 ranks
   (torch.distributed, gloo) with all-FULL, D2FT hybrid and random at keep 0.6, same
   seed and steps, each the ``d2ft run`` command the report lists;
4. fidelity: one more run that executes at least 10 different plans a few steps each,
   measured against the simulator's prediction of each;
5. report: ``report.html`` (self-contained) and ``report.md`` with every table and figure.

This module is the one place that ties runtime, simulator and analysis together; each
step is also a command of its own.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

MARKER = "demo.json"
STRATEGIES = ("full", "hybrid", "random")
FIDELITY_PLANS = [("full", 1.0), ("hybrid", 0.8), ("hybrid", 0.6), ("hybrid", 0.4), ("backward", 0.6),
                  ("shortcut", 0.6), ("shortcut", 0.4), ("random", 0.6), ("freeze", 0.6), ("layerdrop", 0.6),
                  ("layerdrop", 0.4), ("backward", 0.8)]


def run_demo(out: str | Path = "out/demo", quick: bool = False, steps: int | None = None, nproc: int = 4,
             seed: int = 0, log=print) -> Path:
    """Runs the demo into ``out`` (module docstring); returns the HTML report's path."""
    from d2ft.cli import build_parser
    from runtime.calibrate import calibrate
    from runtime.cli import local_cluster, prepare_job, run_command

    out = Path(out)
    _claim(out)
    t_start = time.perf_counter()
    log = _stamped(log, t_start)
    steps = steps or (16 if quick else 200)
    fid_each = 2 if quick else 6
    parser = build_parser()

    # 1. calibrate
    log(f"[1/5] calibrating {nproc} local ranks (the backbone's subnet tasks, copies, point-to-point transfers) ...")
    from runtime.cli import SHIPPED_CHECKPOINT
    from runtime.run import read_metadata

    meta = read_metadata(SHIPPED_CHECKPOINT)
    model_job = {"model": meta["model"], "model_kwargs": {**json.loads(meta["model_kwargs"]), "num_classes": 10},
                 "seed": seed}
    calibrated, raw = calibrate(nproc, model_job, micro_batch_size=16)
    profile = out / "profile.json"
    from d2ft.serial import atomic_write_text, write_json

    atomic_write_text(profile, calibrated.to_json() + "\n")
    write_json(out / "profile.raw.json", raw)
    dev = calibrated.device(0)
    log(f"      {dev.peak_flops / 1e9:.1f} GFLOP/s and {1e3 * dev.task_overhead_s:.2f} ms per subnet task on the "
        f"coordinator, workers at {raw['worker_core_share']:.0%} of that (sharing {raw['cores']} cores); "
        f"link {calibrated.links[0][2].bandwidth / 1e9:.2f} GB/s")

    # 2. plan and simulate
    run_args = ["--nproc", str(nproc), "--keep", "0.6", "--steps", str(steps), "--lr", "2e-3", "--seed", str(seed),
                "--eval-every", "0" if quick else str(max(steps // 4, 1)), "--cluster", str(profile), "--quiet"]
    job = prepare_job(parser.parse_args(["run", *run_args, "--strategy", "hybrid", "--out", str(out / "probe")]))
    spec, plans = _spec(job), {}
    from d2ft.planner import plan_step
    from simulator import simulate

    assumed = local_cluster(nproc)
    log("[2/5] planning and simulating one step of the shipped backbone:")
    for strategy in ("full", "hybrid"):
        report = plan_step(spec, calibrated, strategy, keep=0.6, micro_batches=2, micro_batch_size=16, seed=seed)
        plans[strategy] = report.plan
        t_cal = simulate(report.plan, spec, calibrated).step_time_s
        t_ass = simulate(report.plan, spec, assumed).step_time_s
        log(f"      {strategy:<7} compute saved {report.compute_saving:6.1%}, traffic saved {report.comm_saving:6.1%}; "
            f"predicted step {1e3 * t_cal:.1f} ms (calibrated), {1e3 * t_ass:.1f} ms (assumed)")
    atomic_write_text(out / "plan-hybrid.txt", plans["hybrid"].to_text())

    # 3. real runs
    commands = {}
    for i, strategy in enumerate(STRATEGIES):
        argv = ["run", *run_args, "--strategy", strategy, "--out", str(out / "runs" / strategy),
                "--label", f"[3/5] {strategy}"]
        commands[strategy] = "d2ft " + " ".join(argv)
        log(f"[3/5] fine-tuning on MNIST digits, 4 ranks, {strategy} ({i + 1}/{len(STRATEGIES)}) ...")
        args = parser.parse_args(argv)
        args.quiet = False
        _quietly(run_command, args)

    # 4. fidelity over many plans, one run
    log(f"[4/5] measuring {len(FIDELITY_PLANS)} plans, {fid_each} steps each, against the simulator ...")
    fidelity = measure_fidelity(out / "fidelity", profile, nproc, each=fid_each, seed=seed, assumed=assumed,
                                label="[4/5] plans")
    fidelity.to_csv(out / "fidelity.csv", index=False)

    # 5. report
    log("[5/5] comparing and writing the report ...")
    predicted = _predicted_runs(out / "runs", spec, calibrated)
    sweep = _sweep(quick)
    from analysis.report import write_report

    errors_assumed = (fidelity["assumed_step_time_s"] / fidelity["measured_step_time_s"] - 1).abs()
    errors_cal = (fidelity["predicted_step_time_s"] / fidelity["measured_step_time_s"] - 1).abs()
    notes = [f"Before calibration (assumed figures for this machine) the median step-time error over the "
             f"{len(fidelity)} plans was {100 * errors_assumed.median():.0f}% (worst {100 * errors_assumed.max():.0f}%); "
             f"after `d2ft calibrate` it is {100 * errors_cal.median():.0f}% (worst {100 * errors_cal.max():.0f}%)."]
    html, md = write_report(out / "runs", out, title="d2ft demo: D2FT fine-tuning on 4 local ranks",
                            command="d2ft demo" + (" --quick" if quick else ""), predicted_step_s=predicted,
                            fidelity=fidelity, sweep=sweep, timelines=side_by_side(out / "runs" / "hybrid", calibrated),
                            notes=notes)
    summary = {"seconds": time.perf_counter() - t_start, "quick": quick, "steps": steps, "commands": commands,
               "report": str(html), "markdown": str(md)}
    write_json(out / MARKER, summary)
    log(f"done in {summary['seconds']:.0f} s. Report: {html} (Markdown: {md})")
    return html


def side_by_side(run_dir: Path, cluster=None) -> dict:
    """The simulated and the measured timeline of a run's recorded step ({} when it recorded none).

    ``cluster`` defaults to the run's own (its job.json)."""
    from d2ft.cluster import Cluster
    from d2ft.plan import Plan
    from d2ft.trace import Trace
    from simulator import simulate

    files = sorted(run_dir.glob("timeline-step*.json"), key=lambda p: int(p.stem.removeprefix("timeline-step")))
    job = json.loads((run_dir / "job.json").read_text()) if (run_dir / "job.json").is_file() else {}
    if not files or (cluster is None and "cluster" not in job):
        return {}
    measured = Trace.from_json(files[-1].read_text())
    if cluster is None:
        cluster = Cluster.from_dict(job["cluster"])
        if job.get("slowdown"):
            cluster = cluster.with_slowdown(job["slowdown"])
    spec = _spec(job)
    simulated = simulate(Plan.from_dict(measured.meta["plan"]), spec, cluster)
    step = measured.meta["step"]
    return {f"simulated (step {step}'s plan)": simulated, f"measured (step {step})": measured}


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


def backbone_spec():
    """The ``ModelSpec`` of the shipped backbone with the digits' 10-class head, as ``d2ft run`` builds it."""
    from runtime.cli import SHIPPED_CHECKPOINT
    from runtime.run import read_metadata

    meta = read_metadata(SHIPPED_CHECKPOINT)
    return _spec({"model": meta["model"], "model_kwargs": {**json.loads(meta["model_kwargs"]), "num_classes": 10},
                  "seed": 0})


def _spec(job: dict):
    import torch

    from runtime.run import build_model
    from runtime.spec import model_spec_from_timm

    with torch.device("meta"):
        return model_spec_from_timm(build_model({**job, "checkpoint": None}), name=job["model"])


def _quietly(fn, *args):
    """Runs a command's function with its final summary on stdout kept (the progress bar stays on stderr)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(*args)
    for line in buf.getvalue().splitlines()[1:3]:
        print("     " + line)


def measure_fidelity(run_dir: str | Path, profile: str | Path, nproc: int, plans=FIDELITY_PLANS, each: int = 6,
                     micro_batch_size: int = 16, micro_batches: int = 2, seed: int = 0, assumed=None,
                     label: str | None = None):
    """Measures ``plans`` on ``nproc`` local ranks against the simulator; one row per plan.

    One ``d2ft run`` of the shipped backbone executes each (strategy, keep) of ``plans``
    (planned on the cluster in ``profile``, one placement for all) for ``each`` steps, in
    ``run_dir``; a finished run of the same plans there is read, not repeated. Measured figures
    are medians over each plan's steps but the first (which pays for the change of plan);
    compute is summed over ranks, bytes are those sent by every rank. ``assumed``, a
    second cluster, adds its prediction as ``assumed_step_time_s``.
    """
    import pandas as pd

    from d2ft.cli import build_parser
    from d2ft.cluster import Cluster
    from d2ft.planner import plan_step
    from d2ft.serial import write_json
    from runtime.cli import prepare_job
    from runtime.run import launch
    from simulator import simulate

    run_dir, profile = Path(run_dir), Path(profile)
    calibrated = Cluster.from_json(profile.read_text())
    previous = json.loads((run_dir / "job.json").read_text()) if (run_dir / "job.json").is_file() else {}
    if run_dir.exists() and any(run_dir.iterdir()) and not previous.get("schedule"):
        raise ValueError(f"{run_dir} holds something other than a plan measurement; choose another folder")

    def planned(job):
        spec = _spec(job)
        placement = plan_step(spec, calibrated, "full", micro_batches=micro_batches,
                              micro_batch_size=micro_batch_size, seed=seed).plan.placement
        return spec, [plan_step(spec, calibrated, strategy, keep=keep, micro_batches=micro_batches,
                                micro_batch_size=micro_batch_size, placement=placement, seed=seed).plan
                      for strategy, keep in plans]

    metrics = run_dir / "metrics.jsonl"
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
    if previous and len(lines) >= each * len(plans):  # a finished measurement: reused if of the same plans
        spec, schedule = planned(previous)
        if json.loads(json.dumps([p.to_dict() for p in schedule])) != previous["schedule"].get("plans"):
            lines = []
    if len(lines) < each * len(plans):
        if run_dir.exists():  # a torn measurement, or one of other plans
            shutil.rmtree(run_dir)
        argv = ["run", "--nproc", str(nproc), "--cluster", str(profile), "--seed", str(seed), "--strategy", "full",
                "--micro-batches", str(micro_batches), "--micro-batch-size", str(micro_batch_size),
                "--steps", str(each * len(plans)), "--checkpoint-every", "0", "--out", str(run_dir), "--quiet"]
        job = prepare_job(build_parser().parse_args(argv))
        spec, schedule = planned(job)
        job.update(strategy=None, schedule={"plans": [p.to_dict() for p in schedule], "steps_each": each},
                   plan=schedule[0].to_dict(), progress=label is not None, label=label or "", evaluate=False)
        write_json(run_dir / "job.json", job)
        launch(job, nproc)
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    rows = []
    for i, (plan, (strategy, keep)) in enumerate(zip(schedule, plans)):
        window = lines[i * each + 1:(i + 1) * each] or lines[i * each:(i + 1) * each]
        row = {"plan": f"{strategy} keep {keep:g}" if strategy != "full" else "full", "strategy": strategy,
               "keep": keep, "nproc": nproc, "micro_batch_size": micro_batch_size,
               "predicted_step_time_s": simulate(plan, spec, calibrated).step_time_s,
               "measured_step_time_s": statistics.median(r["step_time_s"] for r in window),
               "predicted_compute_s": window[0]["predicted_compute_s"],
               "measured_compute_s": statistics.median(r["measured_compute_s"] for r in window),
               "predicted_sent_bytes": window[0]["predicted_sent_bytes"],
               "measured_sent_bytes": window[0]["measured_sent_bytes"]}
        if assumed is not None:
            row["assumed_step_time_s"] = simulate(plan, spec, assumed).step_time_s
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
