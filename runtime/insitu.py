"""In-situ calibration: fit each rank's compute to the runtime's own measured steps.

Microbenchmarks (``runtime.calibrate``) time one task at a time, alone, with its weights hot in
cache. In a real step every rank runs hundreds of different tasks between its messages, and the
coordinator adds its own serial work between them, while the microbenchmarks themselves move with
the machine's load. Measured on this machine (2 cores, the shipped backbone, micro-batch 16, 2-4
ranks, 2026-12-01), the runtime's tasks took 0.8-1.8 times the microbenchmark fit.

``fit_in_situ`` runs the all-FULL plan for a few steps on the profile's ranks (the runtime as
``d2ft run`` launches it) at two micro-batch sizes (the calibration's b and 2b, one placement) and
compares the CPU time of each rank's compute (the thread's CPU time between its messages,
``busy_cpu_s`` of metrics.jsonl, by phase) with the cost model's for the same plans (the kernel
model of ``runtime.calibrate``'s profile): the coordinator on its own, the workers pooled. CPU
time, not wall time: where ranks share cores, a rank's wall time also holds the time the OS ran
the others, which the simulator schedules itself (``d2ft.cluster.Host``), and would count twice.
Per role the predicted forward time at each size splits into its fixed part (kernels' and tasks'
fixed times) and its work part (FLOP and bytes over the rates); least squares over the two sizes
of a x fixed + b x work = measured gives a factor a for the fixed times and b for the rate and
bandwidth (``DeviceSpec.scaled(b, fixed=a)``): one size cannot tell a rank that dispatches slowly
from one that computes slowly, and the two differ most at the sizes a user runs below the
calibration's. Then ``backward_efficiency`` is set (by bisection) so that the cost model gives the
measured backward CPU time summed over the sizes. Held out: every other plan and micro-batch size.

Not fitted: the optimizer step and the stem and classifier apart from the phase they fall in,
per task-size differences beyond the two factors (one pair per role, one backward efficiency), and messages (the link comes from the
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


def _without_fixed(cluster: Cluster) -> Cluster:
    """``cluster`` with every fixed time (per kernel, per task) zero: what is left of a prediction is the
    part proportional to the work (FLOP and bytes)."""
    zero = dict(kernel_launch_s=0.0, task_overhead_s=0.0, elementwise_overhead_s=0.0)
    return dataclasses.replace(cluster, devices=tuple((n, dataclasses.replace(s, **zero)) for n, s in cluster.devices))


def _scales(fixed: list[float], work: list[float], measured: list[float], f: float) -> tuple[float, float]:
    """(a, b) with a x fixed + b x work = measured at every calibration size, by least squares: the factors of
    the fixed times and of the work's rate. One size, or no positive solution (noise): ``f`` for both (the
    measured total over the predicted one)."""
    if len(measured) < 2:
        return f, f
    import numpy as np

    (a, b), *_ = np.linalg.lstsq(np.array([fixed, work]).T, np.array(measured), rcond=None)
    return (float(a), float(b)) if a >= 0 and b > 0 else (f, f)


def refit(cluster: Cluster, calibration: list[tuple[Plan, list[dict]]], model) -> tuple[Cluster, list[dict]]:
    """``cluster`` with each role's fixed times and rate scaled to the measured forward times and its
    backward efficiency set to the measured backward times (module docstring); and the ratios.

    ``calibration`` holds (plan, measured) per calibration size, measured per device as ``_measured``. The
    roles are the coordinator's own and one over all workers (their summed times). Per role, the forward
    times at the sizes give a factor for the fixed times and one for the rate (``_scales``); the backward
    efficiency is then found by bisection on the backward times summed over the sizes (the backward time
    falls as it rises); where even 1 leaves the backward slower than measured, it stays at 1."""
    coord = cluster.coordinator_index
    workers = [k for k in range(cluster.num_devices) if k != coord]
    plans = [plan for plan, _ in calibration]

    def total(rows, phase, ks):
        return sum(rows[k][phase] for k in ks)

    def predict(c: Cluster) -> list[list[dict]]:
        return [_predicted(plan, model, c) for plan in plans]

    before, work = predict(cluster), predict(_without_fixed(cluster))
    specs = [spec for _, spec in cluster.devices]
    ratios = [None] * cluster.num_devices
    for ks in ([coord], workers):
        if not ks:
            continue
        measured = [total(m, "fwd", ks) for _, m in calibration]
        proportional = [total(w, "fwd", ks) for w in work]
        f_pred = sum(total(p, "fwd", ks) for p in before)
        f = sum(measured) / f_pred if f_pred > 0 and sum(measured) > 0 else 1.0  # a role with nothing placed: 1
        a, b = _scales([total(p, "fwd", ks) - w for p, w in zip(before, proportional)], proportional, measured, f)
        g_pred = sum(total(p, "bwd", ks) for p in before)
        g = sum(total(m, "bwd", ks) for _, m in calibration) / g_pred if g_pred > 0 else f
        for k in ks:
            specs[k] = dataclasses.replace(specs[k].scaled(b, fixed=a) if (a, b) != (1, 1) else specs[k],
                                           name=cluster.devices[k][1].name + " (fitted in situ)")
            ratios[k] = {"device": cluster.devices[k][0], "fwd": f, "bwd": g, "fixed": a, "rate": b}
        target = sum(total(m, "bwd", ks) for _, m in calibration)
        if target <= 0 or g_pred <= 0:  # nothing measured, or nothing placed to fit
            continue

        def backward(eff):
            trial = [dataclasses.replace(s, backward_efficiency=eff) if k in ks else s for k, s in enumerate(specs)]
            devs = tuple((n, s) for (n, _), s in zip(cluster.devices, trial))
            return sum(total(p, "bwd", ks) for p in predict(dataclasses.replace(cluster, devices=devs)))

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
                sizes: tuple[int, ...] | None = None, log=None) -> tuple[Cluster, dict]:
    """``cluster`` (the microbenchmark profile of ``cluster.num_devices`` local ranks) fitted to the
    runtime's own all-FULL steps of ``model_job``'s model at micro-batch ``sizes`` (default:
    ``micro_batch_size`` and twice it; module docstring); and what was measured."""
    from d2ft.placement import plan_placement
    from d2ft.planner import plan_step

    from .prepare import claimed, prepare, spec_of
    from .run import launch

    log = log or (lambda msg: None)
    nproc = cluster.num_devices
    sizes = tuple(sizes or (micro_batch_size, 2 * micro_batch_size))
    model = spec_of(model_job)
    placement = plan_placement(model, cluster, micro_batches=micro_batches, micro_batch_size=micro_batch_size, keep=0.6)
    recorded = list(range(2, steps))
    calibration = []
    with tempfile.TemporaryDirectory(prefix="d2ft-insitu-") as tmp:
        profile = Path(tmp) / "profile.json"
        profile.write_text(cluster.to_json())
        for b in sizes:
            plan = plan_step(model, cluster, "full", keep=1.0, micro_batches=micro_batches, micro_batch_size=b,
                             placement=placement).plan
            run_dir = Path(tmp) / f"run-b{b}"
            log(f"running {steps} all-FULL steps on {nproc} ranks at micro-batch {b} ...")
            job = prepare(dataclasses.replace(
                model_job, nproc=nproc, cluster=str(profile), strategy=None, plan=plan, micro_batches=micro_batches,
                micro_batch_size=b, steps=steps, checkpoint_every=0, evaluate=False, progress=False,
                out_dir=str(run_dir), data="synthetic"))
            with claimed(job):
                launch(job)
            calibration.append((plan, _measured(run_dir, recorded)))
    fitted, ratios = refit(cluster, calibration, model)
    return fitted, {"plan": "full", "micro_batch_size": micro_batch_size, "sizes": list(sizes),
                    "micro_batches": micro_batches, "steps": recorded,
                    "predicted": [_predicted(plan, model, cluster) for plan, _ in calibration],
                    "measured": [m for _, m in calibration], "ratios": ratios}


__all__ = ["STEPS", "fit_in_situ", "refit"]
