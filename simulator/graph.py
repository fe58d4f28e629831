"""The task graph of one training step, and its schedule over devices and links.

``step_graph`` turns the cost model's execution stream (``CostModel.stream``) into a
networkx DiGraph. Node attributes:

- ``kind``: "compute" (a device task) or "transfer" (a message);
- ``resources``: what the node holds: ("dev", name) for a compute task, and one core of its
  host's pool, ("cores", host, C), where its host limits its devices' cores
  (``d2ft.cluster.Host``); for a transfer each link direction on its route, ("link", u, v)
  (or ("link", {u, v}) for a half-duplex medium such as Wi-Fi, whose directions share the air),
  and one core of the pool when both ends are on one core-limited host (the copy is the cores'
  work: loopback TCP);
- ``hold_s``: how long it holds its resources, s; ``duration_s``: until it completes, s
  (a transfer adds its route latency after releasing the links: cut-through);
- ``order``: its place in the list every resource serves in; ``item``: the Task or Message.

Edges are data dependencies of the execution model (design.md): a block half's pre task
(norm forward, residual backward) precedes the messages to the active devices, their
tasks, their replies, then the post task; micro-batches are independent of each other.

``schedule`` is list scheduling with a static priority list: every resource (a device's
compute, a link direction) serves its nodes one at a time in list order, and a host's pool
of C cores serves C at a time (each node takes the core that frees first); a node starts
when its dependencies have completed and each of its resources has finished the node
before it in the list. ``order="sequential"`` lists micro-batches one after another, as
the runtime executes them; ``"interleaved"`` lists the same step (block half, role) of
every micro-batch together, so micro-batches overlap as far as resources allow. Concurrent transfers share a
link by taking turns at its full bandwidth (the same throughput as fair sharing). With a
fixed list, the schedule is a longest-path computation, so a faster device or link, or less
work, never lengthens the step (fair processor sharing can: a transfer finishing earlier
may slow another on the critical path).

A host's cores are held at full speed by at most C tasks at once, which waits where the
machine would time-slice (processor sharing): the same total work per core, a different
order. Messages between two devices of such a host take a core too, for as long as they hold
their links: on 4 ranks sharing 2 cores here that took the median step-time error of 12 plans
from -37% to -12% (``benchmarks/fidelity.py``, group r4-b16, 2026-12-01). More cores never
lengthen the step (the pool's free times only move earlier), and a host of one device changes
nothing (its device already runs one task at a time, and it sends to no device of its own).

Not modelled: fair-share interleaving of bytes on a link (transfers take turns), processor
sharing of a host's cores (tasks wait for a core instead), compute and communication
contending for memory bandwidth, the cores that waiting takes and that messaging takes beyond
one per message within a host (none across hosts), network protocol overhead, stragglers and
jitter, and memory over time (peak memory comes from the cost model).
"""

from __future__ import annotations

import networkx as nx

from d2ft.cost import CostModel
from d2ft.schedule import Task

ORDERS = ("sequential", "interleaved")
MODES = ("width", "depth")


class Flat:
    """The task graph as flat lists indexed by node (what ``schedule_flat`` reads): a node's ``item``, ``kind``,
    ``resources``, ``hold_s``, ``duration_s``, ``order`` key and predecessors, as ``step_graph``'s node
    attributes and edges hold them."""

    __slots__ = ("item", "kind", "resources", "hold_s", "duration_s", "order", "preds", "pools")

    def __init__(self, pools: dict) -> None:
        self.item, self.kind, self.resources, self.hold_s, self.duration_s, self.order = [], [], [], [], [], []
        self.preds: list[list[int]] = []
        self.pools = pools

    def add_node(self, n: int, kind: str, item, resources: tuple, hold_s: float, duration_s: float) -> None:
        """Node ``n``, the next one (nodes are numbered in the order they are added)."""
        self.item.append(item)
        self.kind.append(kind)
        self.resources.append(resources)
        self.hold_s.append(hold_s)
        self.duration_s.append(duration_s)
        self.order.append(None)
        self.preds.append([])

    def add_edge(self, a: int, b: int) -> None:
        if a not in self.preds[b]:  # as networkx: one edge per pair
            self.preds[b].append(a)

    def to_networkx(self) -> nx.DiGraph:
        """The same graph as a networkx DiGraph (node attributes as the module docstring lists)."""
        g = nx.DiGraph(pools=self.pools)
        for n, item in enumerate(self.item):
            g.add_node(n, kind=self.kind[n], item=item, resources=self.resources[n], hold_s=self.hold_s[n],
                       duration_s=self.duration_s[n], order=self.order[n])
        for n, preds in enumerate(self.preds):
            for d in preds:
                g.add_edge(d, n)
        return g


def step_graph(plan, model, cluster, order: str = "sequential", cost: CostModel | None = None,
               mode: str = "width") -> nx.DiGraph:
    """The task graph of one step of ``plan`` as a networkx DiGraph (module docstring), to inspect or export;
    ``mode="depth"``: pipeline.py. ``simulate`` schedules the same graph from flat lists (``flat_step_graph``)."""
    return flat_step_graph(plan, model, cluster, order, cost, mode).to_networkx()


def flat_step_graph(plan, model, cluster, order: str = "sequential", cost: CostModel | None = None,
                    mode: str = "width") -> Flat:
    """The task graph of one step of ``plan`` as a ``Flat`` (``step_graph`` is its networkx view)."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; valid: {', '.join(ORDERS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "depth":
        from .pipeline import pipeline_stream

        return _chain_graph(pipeline_stream(plan, model, cluster), cluster, order)
    cost = cost or CostModel(model, cluster)
    coord = cluster.coordinator_index
    g = Flat(_pools(cluster))
    last = None  # the coordinator's latest chain task
    pending: list[int] = []  # replies the next coordinator task waits for
    inbox: dict[int, int] = {}  # device -> its latest incoming message
    latest: dict[int, int] = {}  # device -> its latest subnet task
    routes: dict = {}
    stage: dict[int, int] = {}  # micro-batch -> coordinator chain tasks so far (present whatever the ops)
    for n, item in enumerate(cost.stream(plan)):
        _add_node(g, n, item, cluster, routes)
        mb = item.micro_batch
        if isinstance(item, Task):
            if item.part == "optimizer":
                deps, rank = [], (1 << 30, 0, item.device)
            elif item.subnets and item.device != coord:
                deps, rank = [inbox[item.device]], (stage[mb], 2, item.device)
                latest[item.device] = n
            elif item.subnets:  # a subnet on the coordinator itself
                deps, rank = [last], (stage[mb], 2, item.device)
                pending.append(n)
            else:
                if item.part == "embed" and item.phase == "fwd":  # a micro-batch starts: independent
                    deps, pending = [], []
                else:  # coordinator chain: after the replies it reduces, or its previous task
                    deps = pending or [last]
                last, pending = n, []
                stage[mb] = stage.get(mb, -1) + 1
                rank = (stage[mb], 0, coord)
            for d in deps:
                g.add_edge(d, n)
        elif item.src == coord:
            g.add_edge(last, n)
            inbox[item.dst] = n
            rank = (stage[mb], 1, item.dst)
        else:
            g.add_edge(latest[item.src], n)
            pending.append(n)
            rank = (stage[mb], 3, item.src)
        # sequential: stream order; interleaved: the same step of every micro-batch together. Both
        # keys stay put when other nodes come or go, so less work never reorders the list.
        g.order[n] = (n,) if order == "sequential" else (rank[0], rank[1], mb, rank[2])
    return g


def _chain_graph(stream, cluster, order: str) -> Flat:
    """A graph in which every node of a micro-batch follows the one before it (pipeline mode).

    Every node of the pipeline stream is there whatever the ops, so its position within its
    micro-batch is a stable interleaving key."""
    g = Flat(_pools(cluster))
    routes: dict = {}
    seen: dict[int, int] = {}
    previous: dict[int, int] = {}
    for n, item in enumerate(stream):
        _add_node(g, n, item, cluster, routes)
        mb = item.micro_batch
        if mb >= 0:
            if mb in previous:
                g.add_edge(previous[mb], n)
            previous[mb] = n
        _set_order(g, n, item, order, seen)
    return g


def _pools(cluster) -> dict[int, tuple]:
    """Device index -> the ("cores", host, C) pool its compute tasks take a core of (hosts that limit cores)."""
    return {k: ("cores", host, cores) for host, cores, ks in cluster.core_pools() for k in ks}


def _add_node(g: Flat, n: int, item, cluster, routes: dict) -> None:
    """Adds ``item`` as node ``n``; ``routes`` caches each device's and each route's resources."""
    if isinstance(item, Task):
        held = routes.get(item.device)
        if held is None:
            pool = g.pools.get(item.device)
            held = routes[item.device] = (("dev", cluster.device_names[item.device]),) + ((pool,) if pool else ())
        g.add_node(n, "compute", item, held, item.time_s, item.time_s)
        return
    key = (item.src, item.dst)
    if key not in routes:
        links, latency, bandwidth = _route(cluster, cluster.device_names[item.src], cluster.device_names[item.dst])
        pool = g.pools.get(item.src)
        # Between two devices of one core-limited host the message is a copy by the host's own cores
        # (loopback TCP: the kernel copies the bytes in and out), so it also holds one of them.
        routes[key] = (links + ((pool,) if pool is not None and pool == g.pools.get(item.dst) else ()), latency,
                       bandwidth)
    held, latency, bandwidth = routes[key]
    hold = item.nbytes / bandwidth
    g.add_node(n, "transfer", item, held, hold, hold + latency)


def _set_order(g: Flat, n: int, item, order: str, seen: dict) -> None:
    """sequential: stream order; interleaved: the k-th node of every micro-batch together, optimizers last."""
    mb = item.micro_batch
    seen[mb] = seen.get(mb, -1) + 1
    g.order[n] = (n,) if order == "sequential" else ((seen[mb], mb) if mb >= 0 else (1 << 60, n))


def _route(cluster, a: str, b: str) -> tuple[tuple, float, float]:
    """(link resources, latency s, bottleneck bandwidth B/s) of the route from a to b."""
    hops = cluster.route_links(a, b)
    resources = tuple(("link", u, v) if link.duplex else ("link", frozenset((u, v))) for u, v, link in hops)
    return resources, sum(l.latency_s for _, _, l in hops), min(l.bandwidth for _, _, l in hops)


def schedule_flat(g: Flat) -> dict:
    """``schedule`` over a ``Flat`` graph: the same list scheduling with lists indexed by node, resources
    numbered once, a pool's cores in a plain list. Returns the same dict, with lists for start and end."""
    n_nodes = len(g.item)
    ids: dict = {}
    res = [[ids.setdefault(r, len(ids)) for r in rs] for rs in g.resources]
    pool_size = {ids[r]: r[2] for rs in g.resources for r in rs if r[0] == "cores"}
    free_t = [0.0] * len(ids)
    free_n: list = [None] * len(ids)
    cores = {i: ([0.0] * c, [None] * c) for i, c in pool_size.items()}
    start, end, why = [0.0] * n_nodes, [0.0] * n_nodes, [None] * n_nodes
    order = sorted(range(n_nodes), key=g.order.__getitem__)
    preds, duration, hold = g.preds, g.duration_s, g.hold_s
    for n in order:
        t, cause = 0.0, None
        for d in preds[n]:
            if end[d] > t:
                t, cause = end[d], d
        taken = None
        for r in res[n]:
            if r in cores:
                times, holders = cores[r]
                i = times.index(min(times))  # the core that frees first (the lowest such, as ``schedule``)
                taken = (r, i)
                if times[i] > t:
                    t, cause = times[i], holders[i]
            elif free_t[r] > t and free_n[r] is not None:
                t, cause = free_t[r], free_n[r]
        start[n], end[n], why[n] = t, t + duration[n], cause
        release = t + hold[n]
        for r in res[n]:
            if taken is not None and r == taken[0]:
                cores[r][0][taken[1]], cores[r][1][taken[1]] = release, n
            else:
                free_t[r], free_n[r] = release, n
    makespan = max(end, default=0.0)
    path = []
    n = max(range(n_nodes), key=end.__getitem__) if n_nodes else None
    while n is not None:
        path.append(n)
        n = why[n]
    return {"start": start, "end": end, "makespan_s": makespan, "critical_path": path[::-1]}


def schedule(g: nx.DiGraph) -> dict:
    """Start and end times of every node, and the critical path (module docstring).

    Returns {"start": {n: s}, "end": {n: s}, "makespan_s": s, "critical_path": [n, ...]}. The reference
    implementation over a networkx graph; ``simulate`` runs ``schedule_flat``, which must agree with it
    event for event (tests/test_simulator.py).
    """
    start, end, why = {}, {}, {}
    free: dict = {}  # resource -> (time it is free, node that held it last); a pool -> one such per core
    data = dict(g.nodes(data=True))
    preds = g.pred
    for n in sorted(data, key=lambda n: data[n]["order"]):
        node = data[n]
        t, cause = 0.0, None
        for d in preds[n]:
            if end[d] > t:
                t, cause = end[d], d
        taken = {}
        for r in node["resources"]:
            if r[0] == "cores":  # the core of the host's pool that frees first
                cores = free.setdefault(r, [(0.0, None)] * r[2])
                taken[r] = min(range(len(cores)), key=lambda i: cores[i][0])
                held = cores[taken[r]]
            else:
                held = free.get(r)
            if held is not None and held[0] > t:
                t, cause = held
        start[n], end[n], why[n] = t, t + node["duration_s"], cause
        release = t + node["hold_s"]
        for r in node["resources"]:
            if r in taken:
                free[r][taken[r]] = (release, n)
            else:
                free[r] = (release, n)
    makespan = max(end.values(), default=0.0)
    path = []
    n = max(end, key=end.get) if end else None
    while n is not None:
        path.append(n)
        n = why[n]
    return {"start": start, "end": end, "makespan_s": makespan, "critical_path": path[::-1]}
