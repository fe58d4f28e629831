"""The analytical path: per-device sums and per-micro-batch chains, no timeline.

For a fixed model, cluster, placement and micro-batch size, ``Analytical`` precomputes
every per-subnet and per-task cost from the cost model; evaluating a plan is then a few
numpy reductions over its op array (micro_batch, layer, head). Per device it gives exactly
the cost model's compute time, FLOP and bytes. The step time:

- ``order="sequential"``: the sum over micro-batches of their chains (for each block half:
  the coordinator's pre task, the slowest active device's message in, task and message
  out, plus the time the coordinator's messages wait for each other on its first hop; the
  coordinator's post task; stem and classifier), plus the optimizer tail (each device's
  update after its last backward task of the last micro-batch);
- ``order="interleaved"``: the lower bound max(busiest device, busiest link direction,
  longest micro-batch chain).

Either way the step is at least each host's total work over its cores, for hosts that
limit their devices' cores (``d2ft.cluster.Host``): ranks sharing a machine cannot finish
sooner than its cores can do their work, which includes copying the messages between two of
its devices (each holds a core as long as it holds its route: graph.py). Not modelled beyond
that bound: when in the step the cores are short (the graph path schedules them).

``evaluate_batch`` evaluates N plans of one placement at once, the same formulas over an
(N, micro_batch, layer, head) array (batched.py): what-if sweeps over many plans pay numpy's
overhead once, not per plan.

Where it differs from the graph path: without contention (one device; or one worker with
one micro-batch) the two agree. With several workers, the analytical path charges the
fan-out queue on the coordinator's first hop as if every message waited for all the
others, while the graph path lets early replies overlap later sends, and queues on other
shared hops too; with interleaved micro-batches the graph path schedules the overlap the
lower bound only brackets. Not modelled beyond that: see
graph.py.
"""

from __future__ import annotations

import numpy as np

from d2ft.cost import CostModel, optimizer_bytes_per_param
from d2ft.ops import Op
from d2ft.plan import Plan
from d2ft.schedule import Compute
from d2ft.trace import DeviceStats, Trace

_PHASES = ("fwd", "bwd")
_LEVELS = np.zeros(256, dtype=np.int8)  # op character -> level
for _op in Op:
    _LEVELS[ord(_op.value)] = _op.level


class Analytical:
    """Fast step estimates for plans sharing one placement and micro-batch size."""

    def __init__(self, model, cluster, placement, micro_batch_size: int, order: str = "sequential"):
        if order not in ("sequential", "interleaved"):
            raise ValueError(f"unknown order {order!r}; valid: sequential, interleaved")
        self.model, self.cluster, self.order = model, cluster, order
        self.b = micro_batch_size
        cm = CostModel(model, cluster)
        self.cost = cm
        K, L, H = cluster.num_devices, model.depth, model.heads
        c = self.coord = cluster.coordinator_index
        self.names = cluster.device_names
        self.placement = tuple(tuple(r) for r in placement)
        self.onehot = np.zeros((L, H, K))
        for l, row in enumerate(self.placement):
            for h, k in enumerate(row):
                self.onehot[l, h, k] = 1.0
        halves = len(cm.halves)
        self.halves = halves
        a = self.a = model.activation_bytes(micro_batch_size)  # in memory (the reductions)
        wire = model.message_size(micro_batch_size)  # on the links
        specs = [s for _, s in cluster.devices]
        # Per device and phase: one subnet's FLOP and bytes over all its halves, and the time of a
        # task of n = 0..heads subnets per half (the cost model's: n roofline times plus the task
        # overhead, or the task's kernels on a kernel-model device).
        one = Plan.uniform(model, cluster, Op.FULL, 1, micro_batch_size, placement=[[0] * H] * L)
        t_task = np.zeros((K, halves, 2, H + 1))  # device, half, phase, subnets in the task
        self.flop_sub = np.zeros(2)
        self.bytes_sub = np.zeros(2)
        n = np.arange(1, H + 1)
        for p, phase in enumerate(_PHASES):
            for j, half in enumerate(cm.halves):
                for k, spec in enumerate(specs):
                    t = cm.price(Compute(k, phase, half, 0, 0, cm.half_work(half), samples=micro_batch_size))
                    if spec.kernel_model:
                        t_task[k, j, p, 1:] = [cm.task_time(k, phase, half, i, micro_batch_size) for i in n]
                    else:
                        slope = spec.roofline_s(t.flop, t.bytes_moved, model.dtype_bytes, backward=phase == "bwd")
                        t_task[k, j, p, 1:] = n * slope + spec.task_overhead_s
                self.flop_sub[p] += t.flop
                self.bytes_sub[p] += t.bytes_moved
        # Flat tables for the lookups of _task_times: entry k * (H + 1) + n, per (half, phase) and with
        # half None both halves summed.
        self._offset = np.arange(K) * (H + 1)
        self.t_task = t_task  # (device, half, phase, subnets in the task): a task's time, s
        self._batched = None  # evaluate_batch's tables and work arrays (batched.py)
        both = t_task.sum(1)
        self._flat = {(None, p): both[:, p].ravel() for p in range(2)}
        self._flat.update({(j, p): t_task[:, j, p].ravel() for j in range(halves) for p in range(2)})
        # Coordinator tasks of one micro-batch, with no device active: embed, head, norms, adds.
        tasks, _ = cm.tasks_and_messages(one.with_ops([[[Op.SKIP] * H] * L]))
        chain = [t for t in tasks if t.micro_batch == 0]
        self.coord_fixed = sum(t.time_s for t in chain)
        self.coord_flop = sum(t.flop for t in chain)
        self.coord_bytes = sum(t.bytes_moved for t in chain)
        bw_c = specs[c].mem_bandwidth
        self.reduce_s = a / bw_c  # one more partial sum read by the coordinator's reduction
        self._init_messages(cluster, K, c, wire)
        self.wire = wire
        self.params_sub = model.subnet.trained_params  # those that get a gradient (LoRA: the adapters)
        self.opt_per_param = optimizer_bytes_per_param(model.dtype_bytes, model.optimizer)
        self.coord_params = model.coordinator_work.trained_params
        # Hosts sharing cores: (cores, 0/1 mask of their devices, 0/1 mask of the workers whose messages
        # with the coordinator are copies by those cores: both ends on the host) per host.
        self.pools = []
        for _, cores, ks in cluster.core_pools():
            mask = np.isin(np.arange(K), ks).astype(float)
            self.pools.append((cores, mask, mask * self.remote * mask[c]))

    def _init_messages(self, cluster, K: int, c: int, a: float) -> None:
        """Per device: message times to and from the coordinator, link hold times, the fan-out queue."""
        # Messages: time from the coordinator to k and back, with nothing else on the route.
        self.msg = np.array([0.0 if k == c else cluster.transfer_time(self.names[c], self.names[k], a)
                             for k in range(K)])
        self.msg_back = np.array([0.0 if k == c else cluster.transfer_time(self.names[k], self.names[c], a)
                                  for k in range(K)])
        self.remote = np.array([0.0 if k == c else 1.0 for k in range(K)])
        # One message to k and one back, without latency: how long each holds its route (and, on one
        # core-limited host, a core: graph.py).
        self.copy_s = np.array([0.0 if k == c else a / cluster.bottleneck_bandwidth(self.names[c], self.names[k])
                                + a / cluster.bottleneck_bandwidth(self.names[k], self.names[c]) for k in range(K)])
        # The same with every link at one bandwidth B (evaluate_batch's link_bandwidth): latency + a / B.
        self.latency = np.array([0.0 if k == c else cluster.latency(self.names[c], self.names[k])
                                 + cluster.latency(self.names[k], self.names[c]) for k in range(K)])
        # Link load: hold time of one message on each link direction of k's routes (and how many of k's
        # messages cross it, for a uniform bandwidth).
        self.link_hold: dict[tuple, np.ndarray] = {}
        self.link_uses: dict[tuple, np.ndarray] = {}
        for k in range(K):
            if k == c:
                continue
            for src, dst, direction in ((c, k, 0), (k, c, 1)):
                hops = cluster.route_links(self.names[src], self.names[dst])
                bw = min(l.bandwidth for _, _, l in hops)
                for u, v, link in hops:
                    key = (u, v) if link.duplex else frozenset((u, v))
                    self.link_hold.setdefault(key, np.zeros((K, 2)))[k, direction] += a / bw
                    self.link_uses.setdefault(key, np.zeros((K, 2)))[k, direction] += 1
        # Fan-out: the coordinator's messages of one block half take turns on its first hop.
        self.fan_hold = np.zeros(K)
        self.fan_factor = 1.0
        for k in range(K):
            if k != c:
                u, v, link = cluster.route_links(self.names[c], self.names[k])[0]
                self.fan_hold[k] = a / link.bandwidth
                self.fan_factor = max(self.fan_factor, 1.0 if link.duplex else 2.0)  # replies share a half-duplex hop

    def _levels(self, plan: Plan) -> np.ndarray:
        if tuple(tuple(r) for r in plan.placement) != self.placement or plan.micro_batch_size != self.b:
            raise ValueError("plan placement or micro-batch size differs from the one this Analytical was built for")
        chars = "".join(op._value_ for grid in plan.ops for row in grid for op in row).encode("ascii")
        levels = _LEVELS[np.frombuffer(chars, dtype=np.uint8)]
        return levels.reshape(plan.micro_batches, plan.depth, plan.heads)

    def evaluate(self, plan: Plan) -> dict:
        """Per-device arrays and the step time of ``plan`` (see ``trace`` for a Trace)."""
        lv = self._levels(plan)
        M = lv.shape[0]
        c, hv = self.coord, self.halves
        n_f = np.einsum("mlh,lhk->mlk", (lv >= 1).astype(float), self.onehot)  # subnets running forward
        n_b = np.einsum("mlh,lhk->mlk", (lv == 2).astype(float), self.onehot)  # ... and backward
        act_f, act_b = n_f > 0, n_b > 0
        # Compute per device: its subnet tasks (one per half and phase).
        task_f, task_b = self._task_times(n_f, 0), self._task_times(n_b, 1)
        busy = task_f.sum((0, 1)) + task_b.sum((0, 1))
        flop = n_f.sum((0, 1)) * self.flop_sub[0] + n_b.sum((0, 1)) * self.flop_sub[1]
        mem = n_f.sum((0, 1)) * self.bytes_sub[0] + n_b.sum((0, 1)) * self.bytes_sub[1]
        active_f, active_b = act_f.sum(2), act_b.sum(2)  # (M, L) devices taking part
        reduce = (active_f + active_b) * hv * self.reduce_s
        busy[c] += M * self.coord_fixed + reduce.sum()
        flop[c] += M * self.coord_flop
        mem[c] += M * self.coord_bytes + (active_f + active_b).sum() * hv * self.a
        full_any = (lv == 2).any(0).astype(float)  # (L, H)
        trained_params = np.einsum("lh,lhk->k", full_any, self.onehot) * self.params_sub
        trained_params[c] += self.coord_params
        specs = [s for _, s in self.cluster.devices]
        opt = np.array([s.compute_time(0.0, p * self.opt_per_param, self.model.dtype_bytes) if p else 0.0
                        for s, p in zip(specs, trained_params)])
        busy += opt
        mem += trained_params * self.opt_per_param
        # Bytes: every active worker receives and returns a per half and phase.
        acts = act_f.sum((0, 1)) + act_b.sum((0, 1))  # per device: (micro-batch, block, phase)s it takes part in
        msgs = acts * hv * self.wire * self.remote
        sent = msgs.copy()
        sent[c] = msgs.sum()
        recv = sent.copy()
        # Chains: per micro-batch, per block half, the slowest active device's round trip.
        leg = self.msg + self.msg_back
        blocks_f = self._legs(n_f, act_f, 0, leg)  # (M, L): slowest round trips, both halves
        blocks_b = self._legs(n_b, act_b, 1, leg)
        chains = self.coord_fixed + reduce.sum(1) + blocks_f.sum(1) + blocks_b.sum(1)
        if self.order == "sequential":
            step = chains.sum() + self._tail(act_b, blocks_b, opt, chains)
        else:
            links = max((np.einsum("k,kd->d", (acts * hv).astype(float), h).max()
                         for h in self.link_hold.values()), default=0.0)
            step = max(busy.max(), links, chains.max() + opt.max())
        copies = acts * hv * self.copy_s  # per worker: its messages' hold, s
        step = max([step] + [float(busy @ mask + copies @ copied) / cores for cores, mask, copied in self.pools])
        return dict(step_time_s=float(step), busy_s=busy, flop=flop, mem_bytes=mem, sent_bytes=sent,
                    recv_bytes=recv, chains_s=chains, optimizer_s=opt)

    def levels(self, plans) -> np.ndarray:
        """The op levels (0 SKIP, 1 FORWARD_ONLY, 2 FULL) of ``plans`` as one (N, micro_batch, layer, head) array."""
        return np.stack([self._levels(p) for p in plans])

    def evaluate_batch(self, levels: np.ndarray, link_bandwidth=None) -> dict:
        """``evaluate`` of N plans at once, as array computations over ``levels`` (N, micro_batch, layer, head)
        (``levels(plans)``; every plan has this placement and micro-batch size). The same figures as
        ``evaluate`` per plan (to rounding), with a leading plan axis: step_time_s (N,), busy_s, flop,
        mem_bytes, sent_bytes, recv_bytes, optimizer_s (N, K), chains_s (N, M).

        ``link_bandwidth`` (N,), B/s: plan i is evaluated with every link at ``link_bandwidth[i]``, as an
        ``Analytical`` of ``cluster.with_link_bandwidth(link_bandwidth[i])`` would (a what-if over
        bandwidth in one array computation that shares the compute tables). How: batched.py. Not
        thread-safe: the work arrays are kept per instance."""
        if self._batched is None:
            from .batched import Batched

            self._batched = Batched(self)
        return self._batched.evaluate(levels, link_bandwidth)

    def _task_times(self, n: np.ndarray, phase: int, half: int | None = None) -> np.ndarray:
        """Per (..., device): the time of the device's task of n[..., k] subnets in ``phase``, both halves
        or one."""
        idx = n.astype(np.intp)
        idx += self._offset
        return np.take(self._flat[half, phase], idx)

    def _legs(self, n, active, phase: int, leg) -> np.ndarray:
        """Per (micro-batch, block): the sum over halves of the slowest active device's message in,
        task and message out; 0 for a half with no device active."""
        total = 0.0
        queued = active * self.fan_hold  # (M, L, K)
        fan = self.fan_factor * (queued.sum(-1) - queued.max(-1))  # waiting behind the other messages
        for j in range(self.halves):
            task = self._task_times(n, phase, j)
            total = total + np.where(active, task + leg, 0.0).max(-1) + fan
        return total

    def _tail(self, act_b, blocks_b, opt, chains) -> float:
        """Optimizer tail after the last micro-batch: each device starts its update after its last
        backward task there. The backward chain runs blocks L-1..0, so what follows a device's last
        FULL block l is at least the legs of blocks below l (coordinator tasks left out: the tail is
        an upper bound)."""
        c = self.coord
        last_full = act_b[-1]  # (L, K)
        after = np.concatenate(([0.0], np.cumsum(blocks_b[-1])[:-1]))  # legs of blocks 0..l-1
        tail = opt[c]
        for k in range(len(opt)):
            if k == c or not opt[k]:
                continue
            blocks = np.nonzero(last_full[:, k])[0]
            slack = after[blocks.min()] if len(blocks) else chains[-1]
            tail = max(tail, opt[k] - slack)
        return float(tail)

    def trace(self, plan: Plan) -> Trace:
        """The analytical estimate of ``plan`` as an untimed Trace."""
        r = self.evaluate(plan)
        peak = self.cost.peak_memory(plan)
        devices = {
            name: DeviceStats(busy_s=float(r["busy_s"][k]), sent_bytes=int(r["sent_bytes"][k]),
                              recv_bytes=int(r["recv_bytes"][k]), peak_memory_bytes=peak[k],
                              flop=float(r["flop"][k]), wait_s=max(r["step_time_s"] - float(r["busy_s"][k]), 0.0))
            for k, name in enumerate(self.names)
        }
        return Trace("simulator", r["step_time_s"], devices,
                     meta={**dict(plan.meta), "path": "analytical", "order": self.order})
