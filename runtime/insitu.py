"""In-situ calibration: fit each rank's compute to the runtime's own measured steps.

Microbenchmarks (``runtime.calibrate``) time one task at a time, alone, with its weights hot in
cache. In a real step every rank runs hundreds of different tasks between its messages, and the
coordinator adds its own serial work between them, while the microbenchmarks themselves move with
the machine's load. Measured on this machine (2 cores, the shipped backbone, micro-batch 16, 2-4
ranks, 2026-12-01), the runtime's tasks took 0.8-1.8 times the microbenchmark fit.

``fit_in_situ`` runs the all-FULL plan for a few steps on the profile's ranks (the runtime as
``d2ft run`` launches it) and compares the CPU time of each rank's compute (the thread's CPU
time between its messages, ``busy_cpu_s`` of metrics.jsonl, by phase) with the cost model's for
the same plan (the kernel model of ``runtime.calibrate``'s profile): the coordinator on its own,
the workers pooled. CPU time, not wall time: where ranks share cores, a rank's wall time also
holds the time the OS ran the others, which the simulator schedules itself
(``d2ft.cluster.Host``), and would count twice. Each device's spec is then scaled by its role's
forward ratio f (``DeviceSpec.scaled``: rate and bandwidth divided, every kernel's fixed time
multiplied), and its ``backward_efficiency`` set (by bisection) so that the cost model gives the
measured forward and backward CPU time on the calibration plan. Held out: every other plan and
micro-batch size.

Not fitted: the optimizer step and the stem and classifier apart from the phase they fall in,
per task-size differences (one ratio per role and phase), and messages (the link comes from the
ping-pong of ``runtime.calibrate``).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from pathlib import Path

from d2ft import rundir
from d2ft.cluster import Cluster
from d2ft.cost import CostModel
from d2ft.plan import Plan

STEPS = 8
"""Steps of the calibration run; the first two (warm-up, first plan) are not used."""


def _predicted(plan: Plan, model, cluster: Cluster) -> list[dict[str, float]]:
    """Per device, the cost model's forward and backward compute time of one step of ``plan``, s."""
    out = [{"fwd": 0.0, "bwd": 0.0} for _ in range(cluster.num_devices)]
    for task in CostModel(model, cluster).tasks_and_messages(plan)[0]:
        if task.phase in out[task.device]:
            out[task.device][task.phase] += task.time_s
    return out


def _measured(run_dir: Path, steps: list[int]) -> list[dict[str, float]]:
    """Per device, the median over ``steps`` of its compute's thread CPU time in forward and backward, s."""
    lines = [line for line in rundir.read_jsonl(run_dir / rundir.METRICS_FILE) if line["step"] in steps]
    devices = range(len(lines[0]["devices"]))
    return [{p: statistics.median(line["devices"][k]["busy_cpu_s"].get(p, 0.0) for line in lines)
             for p in ("fwd", "bwd")} for k in devices]


def refit(cluster: Cluster, predicted: list[dict], measured: list[dict], plan: Plan,
          model) -> tuple[Cluster, list[dict]]:
    """``cluster`` with each device's forward time scaled to the measured one and its backward
    efficiency set so that its backward time is the measured one (module docstring); and the ratios.

    The ratios are pooled by role: the coordinator's own, and one over all workers (their summed
    measured time over their summed predicted time). The backward efficiency is found by bisection
    on ``plan`` (the backward time falls as it rises); where even 1 leaves the backward slower than
    measured, it stays at 1."""
    coord = cluster.coordinator_index
    workers = [k for k in range(cluster.num_devices) if k != coord]
    roles = [ks for ks in ([coord], workers) if ks]

    def total(rows, phase, ks):
        return sum(rows[k][phase] for k in ks)

    specs = [spec for _, spec in cluster.devices]
    ratios = [None] * cluster.num_devices
    for ks in roles:
        p, m = total(predicted, "fwd", ks), total(measured, "fwd", ks)
        f = m / p if p > 0 and m > 0 else 1.0
        g = total(measured, "bwd", ks) / total(predicted, "bwd", ks) if total(predicted, "bwd", ks) > 0 else f
        for k in ks:
            specs[k] = dataclasses.replace(specs[k].scaled(f) if f != 1 else specs[k],
                                           name=cluster.devices[k][1].name + " (fitted in situ)")
            ratios[k] = {"device": cluster.devices[k][0], "fwd": f, "bwd": g}
        target = total(measured, "bwd", ks)
        if target <= 0:
            continue

        def backward(eff):
            trial = [dataclasses.replace(s, backward_efficiency=eff) if k in ks else s for k, s in enumerate(specs)]
            devs = tuple((n, s) for (n, _), s in zip(cluster.devices, trial))
            return total(_predicted(plan, model, dataclasses.replace(cluster, devices=devs)), "bwd", ks)

        lo, hi = 1e-3, 1.0
        if backward(hi) < target:
            for _ in range(40):
                mid = (lo * hi) ** 0.5
                lo, hi = (mid, hi) if backward(mid) > target else (lo, mid)
        for k in ks:
            specs[k] = dataclasses.replace(specs[k], backward_efficiency=hi)
    devices = tuple((n, s) for (n, _), s in zip(cluster.devices, specs))
    return dataclasses.replace(cluster, devices=devices), ratios


def fit_in_situ(cluster: Cluster, model_job, micro_batch_size: int, micro_batches: int = 2, steps: int = STEPS,
                log=None) -> tuple[Cluster, dict]:
    """``cluster`` (the microbenchmark profile of ``cluster.num_devices`` local ranks) fitted to the
    runtime's own all-FULL steps of ``model_job``'s model (module docstring); and what was measured."""
    from d2ft.placement import plan_placement
    from d2ft.planner import plan_step

    from .prepare import claimed, prepare, spec_of
    from .run import launch

    log = log or (lambda msg: None)
    nproc = cluster.num_devices
    model = spec_of(model_job)
    placement = plan_placement(model, cluster, micro_batches=micro_batches, micro_batch_size=micro_batch_size, keep=0.6)
    plan = plan_step(model, cluster, "full", keep=1.0, micro_batches=micro_batches, micro_batch_size=micro_batch_size,
                     placement=placement).plan
    recorded = list(range(2, steps))
    with tempfile.TemporaryDirectory(prefix="d2ft-insitu-") as tmp:
        profile = Path(tmp) / "profile.json"
        profile.write_text(cluster.to_json())
        run_dir = Path(tmp) / "run"
        log(f"running {steps} all-FULL steps on {nproc} ranks at micro-batch {micro_batch_size} ...")
        job = prepare(dataclasses.replace(
            model_job, nproc=nproc, cluster=str(profile), strategy=None, plan=plan, micro_batches=micro_batches,
            micro_batch_size=micro_batch_size, steps=steps, checkpoint_every=0, evaluate=False, progress=False,
            out_dir=str(run_dir), data="synthetic"))
        with claimed(job):
            launch(job)
        measured = _measured(run_dir, recorded)
    predicted = _predicted(plan, model, cluster)
    fitted, ratios = refit(cluster, predicted, measured, plan, model)
    return fitted, {"plan": "full", "micro_batch_size": micro_batch_size, "micro_batches": micro_batches,
                    "steps": recorded, "predicted": predicted, "measured": measured, "ratios": ratios}


__all__ = ["STEPS", "fit_in_situ", "refit"]
