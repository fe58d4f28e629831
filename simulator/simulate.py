"""``simulate``: predict one training step of a plan as a ``d2ft.Trace``.

Two paths:
- ``"graph"`` builds the task graph and schedules it (graph.py): a timeline of every
  task and transfer, the makespan, busy and idle time per device, bytes per link, and the
  critical path.
- ``"analytical"`` sums per device and per micro-batch chain without a timeline
  (analytical.py), fast enough for sweeps.

Both return the same Trace type the runtime returns. Peak memory comes from the cost
model (one micro-batch's activations at a time). Not modelled: see graph.py and
analytical.py, and the cost model (d2ft/cost.py).
"""

from __future__ import annotations

import contextlib
import gc
from collections import defaultdict

from d2ft.cost import CostModel
from d2ft.errors import expect
from d2ft.plan import Plan
from d2ft.trace import DeviceStats, Event, Trace

from .graph import Flat, flat_step_graph, schedule_flat

PATHS = ("graph", "analytical")


def simulate(plan, model, cluster, path: str = "graph", order: str = "sequential", mode: str = "width") -> Trace:
    """Predicts one step of ``plan`` for ``model`` on ``cluster`` (module docstring).

    ``mode="depth"`` simulates whole blocks per device as a pipeline (graph path only).
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")
    CostModel(model, cluster)  # TypeError naming the argument when model or cluster is of the wrong type
    expect(plan, Plan, "plan", "read one with Plan.from_dict or Plan.from_json")
    _check_cluster(cluster)
    plan.validate(model, cluster)
    if path == "analytical":
        if mode != "width":
            raise ValueError("the analytical path models width-wise placement only; use path='graph' for depth")
        from .analytical import Analytical

        return Analytical(model, cluster, plan.placement, plan.micro_batch_size, order).trace(plan)
    with _acyclic():
        cost = CostModel(model, cluster)
        g = flat_step_graph(plan, model, cluster, order, cost, mode)
        sched = schedule_flat(g)
        if mode == "depth":
            from .pipeline import pipeline_peak_memory

            peak = pipeline_peak_memory(plan, model, cluster)
        else:
            peak = cost.peak_memory(plan)
        return _trace(g, sched, plan, cluster, peak, order, mode)


@contextlib.contextmanager
def _acyclic():
    """Python's cyclic garbage collector paused: a step's tens of thousands of tasks, nodes and events are
    tuples without cycles that reference counting frees, and the collector's passes over them took a third
    of a graph simulation (ViT-B/16, 8 devices, 8 micro-batches: 85 ms with it, 53 ms without, on this
    project's benchmark machine). Restored on the way out, to what it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _check_cluster(cluster) -> None:
    for a, b, link in cluster.links:
        if not link.bandwidth > 0:
            raise ValueError(f"link {a}-{b} has bandwidth {link.bandwidth!r} B/s: every link needs a positive bandwidth")


def _trace(g: Flat, sched, plan, cluster, peak: list[float], order: str, mode: str) -> Trace:
    names = cluster.device_names
    start, end = sched["start"], sched["end"]
    busy = defaultdict(float)
    flop = defaultdict(float)
    sent = defaultdict(int)
    recv = defaultdict(int)
    comm_intervals = defaultdict(list)
    links = defaultdict(int)
    events = []
    hops: dict[tuple[str, str], list[str]] = {}
    labels: dict[tuple, str] = {}  # (phase, part or half, layer) -> an event's name: the same in every micro-batch
    for n in sorted(range(len(g.item)), key=start.__getitem__):  # a stable sort: ties in node order
        item = g.item[n]
        if g.kind[n] == "compute":
            dev = names[item.device]
            busy[dev] += g.duration_s[n]
            flop[dev] += item.flop
            key = (item.phase, item.part, item.layer)
            if key not in labels:
                labels[key] = f"{item.phase} {item.part}" + (f" L{item.layer}" if item.layer >= 0 else "")
            kind = "optimizer" if item.part == "optimizer" else "compute"
            events.append(Event(dev, kind, labels[key], start[n], end[n], item.micro_batch, item.layer, 0, item.flop))
        else:
            src, dst = names[item.src], names[item.dst]
            sent[src] += item.nbytes
            recv[dst] += item.nbytes
            comm_intervals[src].append((start[n], end[n]))
            comm_intervals[dst].append((start[n], end[n]))
            if (src, dst) not in hops:
                hops[src, dst] = [f"{u}->{v}" for u, v, _ in cluster.route_links(src, dst)] + [f"{src}->{dst}"]
            route = hops[src, dst]
            for hop in route[:-1]:
                links[hop] += item.nbytes
            key = (item.phase, item.half, item.layer, None)
            if key not in labels:
                labels[key] = f"{item.phase} {item.half} L{item.layer}"
            events.append(Event(route[-1], "transfer", labels[key], start[n], end[n], item.micro_batch, item.layer,
                                item.nbytes))
    makespan = sched["makespan_s"]
    devices = {
        name: DeviceStats(
            busy_s=busy[name], sent_bytes=sent[name], recv_bytes=recv[name], peak_memory_bytes=peak[k],
            flop=flop[name], comm_s=_union(comm_intervals[name]), wait_s=max(makespan - busy[name], 0.0),
        )
        for k, name in enumerate(names)
    }
    critical = [_label(g, n, names) for n in sched["critical_path"]]
    return Trace("simulator", makespan, devices, links=dict(links), events=events, meta={
        **dict(plan.meta), "path": "graph", "order": order, "mode": mode, "critical_path": critical,
        "bottleneck": bottleneck(g, sched, names),
    })


def _label(g: Flat, n: int, names) -> str:
    item = g.item[n]
    if g.kind[n] == "compute":
        return f"{names[item.device]}: {item.phase} {item.part} L{item.layer} mb{item.micro_batch}"
    return f"{names[item.src]}->{names[item.dst]}: {item.phase} {item.half} L{item.layer} mb{item.micro_batch}"


def bottleneck(g: Flat, sched, names) -> dict:
    """The resource holding the critical path longest: {"resource", "kind", "share"} of the makespan."""
    held, keys = defaultdict(float), {}
    for n in sched["critical_path"]:
        item = g.item[n]
        if g.kind[n] == "compute":
            held[names[item.device]] += g.duration_s[n]
        else:
            rs = g.resources[n]
            if rs not in keys:
                keys[rs] = "link " + " + ".join(f"{r[1]}-{r[2]}" if len(r) == 3 else "-".join(sorted(r[1])) for r in rs)
            held[keys[rs]] += g.duration_s[n]
    if not held or sched["makespan_s"] <= 0:
        return {"resource": None, "kind": None, "share": 0.0}
    resource = max(held, key=held.get)
    return {"resource": resource, "kind": "link" if resource.startswith("link ") else "device",
            "share": held[resource] / sched["makespan_s"]}


def _union(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by a set of intervals, s."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0.0)
