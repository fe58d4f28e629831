"""The placement planner: which device holds each subnet, balanced by speed and memory.

Source: method.md, "The multiple knapsack" (placement is a classic multiple knapsack,
solved once per run). All subnets are equal, so a placement is first a count n_k per
device, minimising the slowest device's all-FULL step load

    load_k = fixed_k + n_k t_k + o_k min(n_k, L),     n_k <= memory_k / m_k,    sum n_k = L H

where t_k is one subnet's all-FULL time on k for the step (compute and optimizer),
scaled by the keep ratio the op planner will apply (its budget is fixed work plus keep x
subnet work, knapsack.py), fixed_k the coordinator's own work and o_k the device's
per-task overheads for one block it is active in (the width layout spreads n_k subnets
over min(n_k, L) blocks), scaled alike. ``solver="mip"`` solves this exactly with python-mip; ``greedy``
(water-filling: each next subnet to the device where it finishes first) is the fallback.

Layout: ``width`` (default) spreads each device's subnets evenly over the blocks (stride
order), as the paper's subnet split; ``depth`` gives each device whole consecutive blocks
(a pipeline), balanced by an exact linear-partition dynamic programme.

Not modelled: traffic in the balance (the coordinator's link is shared by all), and the
activation memory of more than one micro-batch.
"""

from __future__ import annotations

import math

from .cost import CostModel, optimizer_bytes_per_param, state_bytes_per_param
from .errors import raise_problems
from .ops import Op
from .plan import Plan, check_plan_size, even_placement
from .units import fmt_bytes

MODES = ("width", "depth")


def device_rates(model, cluster, micro_batches: int, micro_batch_size: int, keep: float = 1.0):
    """Per device: (fixed_s, s per subnet, overhead_s per active block, subnet capacity by memory).

    Fixed work is what no op saves: the coordinator's own tasks (with every worker active)
    and each subnet's optimizer update; subnet compute and task overheads count at ``keep``.
    """
    cm = CostModel(model, cluster)
    coord, b = cluster.coordinator_index, micro_batch_size
    probe = Plan.uniform(model, cluster, Op.FULL, micro_batches, b, placement=even_placement(model, cluster))
    tasks, _ = cm.tasks_and_messages(probe)
    coord_fixed = sum(t.time_s for t in tasks if t.device == coord and not t.subnets)
    per_param_mem = sum(state_bytes_per_param(model.weight_bytes, model.optimizer))  # parameter, gradient, state
    subnet_mem = model.subnet.params * per_param_mem + b * model.subnet.saved_bytes
    coord_mem = cm.peak_memory(Plan.uniform(model, cluster, Op.SKIP, 1, b, placement=probe.placement))[coord]
    rates = []
    for k, (_, spec) in enumerate(cluster.devices):
        optimizer = model.subnet.params * optimizer_bytes_per_param(model.weight_bytes, model.optimizer) / spec.mem_bandwidth
        t = keep * micro_batches * cm.subnet_time(k, Op.FULL, b) + optimizer
        optimizer += spec.memory_task_overhead_s / model.depth  # one optimizer task, spread over the blocks
        overhead = (cm.block_overhead_s(k, b, "fwd") + cm.block_overhead_s(k, b, "bwd")) * keep * micro_batches
        free = spec.memory_bytes - (coord_mem if k == coord else spec.framework_bytes)  # coord_mem includes it
        rates.append((coord_fixed if k == coord else 0.0, t, overhead, max(int(free // subnet_mem), 0)))
    return rates


def plan_counts(model, cluster, micro_batches: int = 1, micro_batch_size: int = 1, solver: str = "mip",
                keep: float = 1.0) -> list[int]:
    """Subnets per device that minimise the slowest device's planned load (module docstring)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    rates = device_rates(model, cluster, micro_batches, micro_batch_size, keep)
    total = model.num_subnets
    room = sum(r[3] for r in rates)
    if room < total:
        per = model.subnet.params
        raise ValueError(
            f"the model's {total} subnets do not fit in the cluster's memory: room for {room} "
            f"({fmt_bytes(per * (2 * model.dtype_bytes + 8))} of weights and optimizer state each, plus activations); "
            "use devices with more memory, more devices, a smaller micro-batch or a smaller dtype"
        )
    if solver == "mip":
        counts = _counts_mip(rates, total, model.depth)
        if counts is not None:
            return counts
    elif solver != "greedy":
        raise ValueError(f"unknown placement solver {solver!r}; valid: mip, greedy")
    return _counts_greedy(rates, total, model.depth)


def _load(rate, n: int, depth: int) -> float:
    fixed, t, overhead, _ = rate
    return fixed + n * t + overhead * min(n, depth)


def _counts_greedy(rates, total: int, depth: int) -> list[int]:
    """Water-filling: each next subnet to the device whose load after taking it is least."""
    counts = [0] * len(rates)
    for _ in range(total):
        options = [k for k, r in enumerate(rates) if counts[k] < r[3]]
        k = min(options, key=lambda k: (_load(rates[k], counts[k] + 1, depth), k))
        counts[k] += 1
    return counts


def _counts_mip(rates, total: int, depth: int, time_limit_s: float = 2.0) -> list[int] | None:
    """min Z s.t. load_k <= Z, with o_k min(n_k, L) linearised by a binary u_k = [n_k >= L]."""
    import mip

    model = mip.Model(sense=mip.MINIMIZE, solver_name="CBC")
    model.verbose, model.threads, model.seed = 0, 1, 0
    z = model.add_var(lb=0.0)
    n = [model.add_var(var_type=mip.INTEGER, lb=0, ub=min(r[3], total)) for r in rates]
    u = [model.add_var(var_type=mip.BINARY) for _ in rates]
    blocks = [model.add_var(lb=0.0) for _ in rates]  # = min(n_k, L) at the optimum
    model += mip.xsum(n) == total
    for k, (fixed, t, overhead, cap) in enumerate(rates):
        model += n[k] <= depth + total * u[k]  # u_k = 0 forces n_k <= L ...
        model += blocks[k] >= n[k] - total * u[k]  # ... and then blocks_k >= n_k
        model += blocks[k] >= depth * u[k]  # u_k = 1: blocks_k >= L
        model += fixed + t * n[k] + overhead * blocks[k] <= z
    model.objective = z
    greedy = _counts_greedy(rates, total, depth)
    model.start = ([(v, float(c)) for v, c in zip(n, greedy)] + [(v, float(c > depth)) for v, c in zip(u, greedy)]
                   + [(v, float(min(c, depth))) for v, c in zip(blocks, greedy)])
    status = model.optimize(max_seconds=time_limit_s)
    if status not in (mip.OptimizationStatus.OPTIMAL, mip.OptimizationStatus.FEASIBLE):
        return None
    counts = [int(round(v.x)) for v in n]
    if sum(counts) != total:
        return None
    worst = lambda cs: max(_load(r, c, depth) for r, c in zip(rates, cs))  # noqa: E731
    return counts if worst(counts) <= worst(greedy) else greedy


def plan_placement(model, cluster, mode: str = "width", solver: str = "mip", micro_batches: int = 1,
                   micro_batch_size: int = 1, keep: float = 1.0) -> tuple[tuple[int, ...], ...]:
    """A placement[layer][head] -> device index, balanced by device speed and memory.

    ``keep`` is the compute keep ratio the op planner will use (1 balances all-FULL).
    """
    raise_problems("placement", [f"unknown mode {mode!r}; valid: {', '.join(MODES)}"] if mode not in MODES else [])
    check_plan_size(micro_batches, model.depth, model.heads)
    if mode == "depth":
        return _depth_layout(model, cluster, micro_batches, micro_batch_size, keep)
    counts = plan_counts(model, cluster, micro_batches, micro_batch_size, solver, keep)
    return _width_layout(model, counts)


def _width_layout(model, counts: list[int]) -> tuple[tuple[int, ...], ...]:
    """Device k's n_k slots at evenly spaced positions (j + 1/2) / n_k of the L x H sequence."""
    slots = sorted(((j + 0.5) / n, k) for k, n in enumerate(counts) for j in range(n))
    flat = [k for _, k in slots]
    H = model.heads
    return tuple(tuple(flat[l * H:(l + 1) * H]) for l in range(model.depth))


def _depth_layout(model, cluster, micro_batches: int, micro_batch_size: int, keep: float):
    """Consecutive whole blocks per device, in device order, minimising the slowest device's load."""
    rates = device_rates(model, cluster, micro_batches, micro_batch_size, keep)
    H, L, K = model.heads, model.depth, len(rates)
    block = [(r[1] * H + r[2]) for r in rates]  # one block's subnets and its overheads on device k
    # best[k][j]: the minimal max load placing blocks j.. on devices k..
    best = [[math.inf] * (L + 1) for _ in range(K + 1)]
    cut = [[L] * (L + 1) for _ in range(K + 1)]
    for k in range(K + 1):
        best[k][L] = max((rates[i][0] for i in range(k, K)), default=0.0)
    for k in range(K - 1, -1, -1):
        fixed, _, _, cap_subnets = rates[k]
        for j in range(L - 1, -1, -1):
            for e in range(j, min(L, j + cap_subnets // H) + 1):  # device k takes blocks j..e-1
                load = fixed + (e - j) * block[k]
                value = max(load, best[k + 1][e])
                if value < best[k][j]:
                    best[k][j], cut[k][j] = value, e
    if best[0][0] == math.inf:
        raise ValueError("depth-wise placement: the blocks do not fit in the devices' memory in order")
    placement, j = [], 0
    for k in range(K):
        e = cut[k][j]
        placement += [(k,) * H] * (e - j)
        j = e
    return tuple(placement)
