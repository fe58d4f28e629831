"""What-if sweeps: plan and simulate every point of a grid, one plain record per point.

``sweep`` takes lists of models, clusters, strategies, keep ratios, micro-batch sizes and
counts, link bandwidths and device counts; every point is planned (``d2ft.plan_step``,
with the speed-aware placement) and simulated against the all-FULL plan on the same
placement. A point that no plan can meet gives a record with an ``error`` and no figures;
the sweep goes on. ``analysis`` turns the records into a DataFrame.

On the analytical path the points that differ only in link bandwidth share their plan (the
placement and the op plan are priced by compute, which links do not change; a
communication budget is in bytes) and their compute tables: each is planned once, and
all its bandwidths are evaluated as one array computation (``Analytical.evaluate_batch`` with
``link_bandwidth``). The records
are the same as planning and simulating every point on its own (tests/test_simulator.py).

``workers`` > 1 shares the grid's plans (each with all its bandwidths) among that many spawned
processes: the same records in the same order, about 1.7x faster on 2 cores.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np

from d2ft.cluster import Cluster
from d2ft.cost import CostModel
from d2ft.loaders import load_cluster, load_model
from d2ft.model import ModelSpec
from d2ft.ops import Op
from d2ft.plan import Plan
from d2ft.planner import plan_step

from .simulate import simulate

RECORD_FIELDS = (
    "model", "cluster", "devices", "link_bandwidth", "strategy", "solver", "keep", "comm_keep", "micro_batches",
    "micro_batch_size", "step_time_s", "full_step_time_s", "speedup", "compute_saving", "comm_saving",
    "compute_flop", "comm_bytes", "max_busy_s", "max_peak_memory_bytes", "status", "objective", "solve_time_s",
    "error",
)
"""Columns of a sweep record; times in s, sizes in B, link_bandwidth in B/s (None: as built)."""


def with_link_bandwidth(cluster: Cluster, bandwidth: float) -> Cluster:
    """A copy of ``cluster`` whose every link carries ``bandwidth`` B/s per direction."""
    return cluster.with_link_bandwidth(bandwidth)


def resized(cluster: Cluster, devices: int) -> Cluster:
    """A star cluster of ``devices`` devices: the coordinator plus copies of the first worker."""
    if devices < 1:
        raise ValueError(f"a cluster needs at least one device, got {devices}")
    coord = cluster.coordinator
    workers = [n for n in cluster.device_names if n != coord]
    hops = cluster.route_links(coord, workers[0]) if workers else []
    if len(cluster.switches) != 1 or len(hops) != 2:
        raise ValueError(f"resizing needs a star cluster (devices on one switch, a worker to copy); "
                         f"{cluster.name!r} is not one")
    template = workers[0]
    devs = [(coord, cluster.device(coord))] + [(f"{template}-{i}", cluster.device(template)) for i in range(devices - 1)]
    return Cluster.star(devs, hops[1][2], coordinator=coord, coordinator_link=hops[0][2], name=f"{cluster.name}x{devices}")


def _check_axes(keeps, comm_keeps, micro_batch_sizes, micro_batches, link_bandwidths, device_counts) -> None:
    problems = [f"keep ratio {k!r} is not in (0, 1]" for k in keeps if not (isinstance(k, (int, float)) and 0 < k <= 1)]
    problems += [f"comm keep ratio {k!r} is not in (0, 1]" for k in comm_keeps
                 if k is not None and not (isinstance(k, (int, float)) and 0 < k <= 1)]
    for name, values in (("micro-batch size", micro_batch_sizes), ("micro-batches", micro_batches),
                         ("device count", device_counts)):
        problems += [f"{name} {v!r} is not a positive integer" for v in values
                     if v is not None and not (isinstance(v, int) and v >= 1)]
    problems += [f"link bandwidth {b!r} is not a positive number of B/s" for b in link_bandwidths
                 if b is not None and not (isinstance(b, (int, float)) and b > 0)]
    if problems:
        raise ValueError("sweep: " + "; ".join(problems))


def sweep(
    models: Sequence[str | ModelSpec],
    clusters: Sequence[str | Cluster],
    strategies: Sequence[str] = ("hybrid",),
    keeps: Sequence[float] = (0.6,),
    micro_batch_sizes: Sequence[int] = (8,),
    micro_batches: Sequence[int] = (4,),
    link_bandwidths: Sequence[float | None] = (None,),
    device_counts: Sequence[int | None] = (None,),
    comm_keeps: Sequence[float | None] = (None,),
    solver: str = "dp",
    path: str = "analytical",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> list[dict]:
    """One record (``RECORD_FIELDS``) per point of the grid; ``progress(done, total)`` after each.

    A value no point could use (a keep ratio outside (0, 1], a non-positive count or bandwidth)
    raises ValueError naming it before anything is planned; a point whose budget no plan meets is
    a record with its ``error``. ``workers`` > 1 plans and simulates the points (on the analytical
    path: each plan with all its bandwidths) in that many processes; the records are the same and in
    the same order."""
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"sweep: workers must be a positive integer, got {workers!r}")
    _check_axes(keeps, comm_keeps, micro_batch_sizes, micro_batches, link_bandwidths, device_counts)
    models = [load_model(m) if isinstance(m, str) else m for m in models]
    clusters = [load_cluster(c) if isinstance(c, str) else c for c in clusters]
    grid = list(itertools.product(models, clusters, device_counts, link_bandwidths, strategies, keeps, comm_keeps,
                                  micro_batches, micro_batch_sizes))
    axes = (models, clusters, device_counts, link_bandwidths, strategies, keeps, comm_keeps, micro_batches,
            micro_batch_sizes)
    if path == "analytical":  # the points of one plan, at every bandwidth, together
        sizes = [len(a) for a in axes]
        groups = list(itertools.product(*(range(n) for n in sizes[:3] + sizes[4:])))
        tasks = [(_points_list, tuple(a[i] for a, i in zip(axes[:3], pos)) + (list(link_bandwidths),)
                  + tuple(a[i] for a, i in zip(axes[4:], pos[3:])) + (solver, seed)) for pos in groups]
        records: list = [None] * len(grid)
        for pos, group in zip(groups, _run_all(tasks, workers, len(grid), progress, each=sizes[3])):
            for j, record in enumerate(group):
                records[_flat_index(pos[:3] + (j,) + pos[3:], sizes)] = record
        return records
    tasks = [(_point, point + (solver, path, seed)) for point in grid]
    return list(_run_all(tasks, workers, len(grid), progress, each=1))


def _run_all(tasks: list, workers: int, total: int, progress, each: int):
    """The results of ``tasks`` ((function, args) pairs), in order: in this process, or in ``workers``
    processes (spawned: the workers import only this package). ``progress(done, total)`` counts
    ``each`` points per task as each task finishes."""
    done = 0
    if workers == 1 or len(tasks) < 2:
        for fn, args in tasks:
            result = fn(*args)
            done += each
            if progress:  # before the result goes out: a consumer that stops after the last never resumes us
                progress(done, total)
            yield result
        return
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                                                mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *args) for fn, args in tasks]
        for future in concurrent.futures.as_completed(futures):
            future.result()  # raise a worker's error here, before waiting on the rest
            done += each
            if progress:
                progress(done, total)
        for future in futures:
            yield future.result()


def _points_list(model, cluster, n_devices, bandwidths, strategy, keep, comm_keep, mbs, b, solver, seed) -> list[dict]:
    """``_points`` as a list (what a worker process returns)."""
    return list(_points(model, cluster, n_devices, bandwidths, strategy, keep, comm_keep, mbs, b, solver, seed))


def _flat_index(index: tuple, sizes: list[int]) -> int:
    """The position of ``index`` in ``itertools.product`` over axes of ``sizes``."""
    flat = 0
    for i, n in zip(index, sizes):
        flat = flat * n + i
    return flat


def _points(model, cluster, n_devices, bandwidths, strategy, keep, comm_keep, mbs, b, solver, seed):
    """The analytical records of one plan at every bandwidth of ``bandwidths`` (``_point``'s figures)."""
    from .analytical import Analytical

    if n_devices is not None:
        cluster = resized(cluster, n_devices)
    planning = cluster if bandwidths[0] is None else with_link_bandwidth(cluster, bandwidths[0])
    first = _point(model, cluster, n_devices=None, bandwidth=bandwidths[0], strategy=strategy, keep=keep,
                   comm_keep=comm_keep, mbs=mbs, b=b, solver=solver, path="analytical", seed=seed, keep_plan=True)
    plan = first.pop("_plan", None)
    yield first
    if len(bandwidths) == 1:
        return
    if plan is None:  # no plan fits: the same error at every bandwidth
        for bw in bandwidths[1:]:
            yield {**first, "link_bandwidth": bw}
        return
    full = Plan.uniform(model, planning, Op.FULL, mbs, b, placement=plan.placement)
    base = Analytical(model, planning, plan.placement, b)
    rest = bandwidths[1:]
    given = np.array([bw for bw in rest if bw is not None], dtype=float)
    steps = {}
    if len(given):  # every bandwidth at once: the plan and the all-FULL plan, one row each per bandwidth
        lv = base.levels([plan, full])
        out = base.evaluate_batch(np.repeat(lv, len(given), axis=0), np.concatenate([given, given]))["step_time_s"]
        steps = dict(zip(given.tolist(), zip(out[:len(given)], out[len(given):])))
    for bw in rest:
        if bw is None:
            an = Analytical(model, cluster, plan.placement, b)
            step, full_step = an.evaluate(plan)["step_time_s"], an.evaluate(full)["step_time_s"]
        else:
            step, full_step = (float(x) for x in steps[float(bw)])
        yield {**first, "link_bandwidth": bw, "step_time_s": step, "full_step_time_s": full_step,
               "speedup": full_step / step if step else None}


def _point(model, cluster, n_devices, bandwidth, strategy, keep, comm_keep, mbs, b, solver, path, seed,
           keep_plan: bool = False) -> dict:
    if n_devices is not None:
        cluster = resized(cluster, n_devices)
    if bandwidth is not None:
        cluster = with_link_bandwidth(cluster, bandwidth)
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(model=model.name, cluster=cluster.name, devices=cluster.num_devices, link_bandwidth=bandwidth,
                  strategy=strategy, solver=solver, keep=keep, comm_keep=comm_keep, micro_batches=mbs,
                  micro_batch_size=b)
    try:
        report = plan_step(model, cluster, strategy, solver, keep=keep, comm_keep=comm_keep, micro_batches=mbs,
                           micro_batch_size=b, seed=seed)
    except ValueError as e:
        record["error"] = str(e)
        return record
    plan = report.plan
    trace = simulate(plan, model, cluster, path=path)
    full = simulate(Plan.uniform(model, cluster, Op.FULL, mbs, b, placement=plan.placement), model, cluster, path=path)
    cost = CostModel(model, cluster).step(plan)
    record.update(
        step_time_s=trace.step_time_s, full_step_time_s=full.step_time_s,
        speedup=full.step_time_s / trace.step_time_s if trace.step_time_s else None,
        compute_saving=cost.compute_saving, comm_saving=cost.comm_saving, compute_flop=cost.compute_flop,
        comm_bytes=cost.comm_bytes, max_busy_s=max(d.busy_s for d in trace.devices.values()),
        max_peak_memory_bytes=max(d.peak_memory_bytes for d in trace.devices.values()),
        status=report.status, objective=report.objective, solve_time_s=report.solve_time_s,
    )
    if keep_plan:
        record["_plan"] = plan
    return record


def parse_list(text: str, kind: Callable = str) -> list:
    """Parses "a,b,c" into a list, converting each item with ``kind``; "none" gives None; for numbers,
    "lo:hi:n" gives n values from lo to hi, evenly spaced on a log scale (a decade-spanning what-if).

    >>> parse_list("1e8:1e10:3,none", float)
    [100000000.0, 1000000000.0, 10000000000.0, None]
    """
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if item.lower() == "none":
            out.append(None)
        elif kind in (int, float) and item.count(":") == 2:
            lo, hi, n = item.split(":")
            lo, hi, n = float(lo), float(hi), int(n)
            if not (0 < lo and 0 < hi and n >= 1):
                raise ValueError(f"{item!r}: a range is lo:hi:n with lo, hi > 0 and n >= 1")
            out += [kind(v) for v in np.geomspace(lo, hi, n).tolist()]
        else:
            out.append(kind(item))
    return out


__all__ = ["RECORD_FIELDS", "parse_list", "resized", "sweep", "with_link_bandwidth"]
