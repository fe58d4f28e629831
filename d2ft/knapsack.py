"""The op-selection multiple knapsack: items, costs, capacities and exact load evaluation.

Source: method.md, "The multiple knapsack". Every device k is a knapsack with a compute
capacity C_k (s per step) and optionally a communication capacity B_k (bytes per step).
The items are the (micro-batch, subnet) pairs placed on k; op p earns A_p and costs:

- time: t_k(p) per item (``CostModel.subnet_time``), plus the device's per-block overhead
  once per (block, micro-batch, direction) in which it is active
  (``CostModel.block_overhead_s``). On a roofline device this is exact, because a task
  running n equal subnets costs n times one subnet's roofline. On a kernel-model device (a
  GPU), where a task's cost per subnet depends on how many it runs, it is a lower bound
  (each subnet at its cheapest share of a task), and ``DeviceProblem.load`` prices every
  block exactly (``CostModel.block_table``), as greedy's block configurations, dp's stages
  and the MIP's block configurations do (``d2ft.solvers``, ``d2ft.exact``);
- bytes: per (block, micro-batch) in which the device is active, 2 x halves x a forward
  and as much again backward if any of its subnets there is FULL (design.md).
The overhead and byte terms couple the subnets of one block on one device; the exact
``DeviceProblem.load`` evaluates them. With the placement fixed, devices share no items, so
the problem splits into one knapsack per device.

Fixed work (stem, norms, residual updates, classifier, optimizer) is charged up front at
its all-FULL amount: the coordinator's reductions and the optimizer shrink when fewer
subnets run, so the planner's load is an upper bound on the cost model's compute time,
equal to it for the all-FULL plan.

Not modelled: the coordinator's reduction savings when workers idle (charged at the
maximum), and anything the cost model does not model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .cost import CostModel
from .errors import raise_problems
from .ops import Op
from .plan import Plan
from .scores import Scores
from .units import fmt_bytes, fmt_time

Item = tuple[int, int, int]  # (micro_batch, layer, head)


@dataclass(frozen=True)
class Budget:
    """Per-device capacities: keep ratios of the all-FULL step, or explicit figures."""

    keep: float | None = 0.6
    """Compute keep ratio rho in (0, 1]: every device holding subnets gets the same budget, the
    largest of (fixed work + rho x own all-FULL subnet work), in seconds per step (``build_problem``)."""
    comm_keep: float | None = None
    """Communication keep ratio in (0, 1]: each device may move this share of its all-FULL bytes."""
    capacity_s: tuple[float, ...] | None = None
    """Explicit compute capacities per device, s (instead of ``keep``)."""
    capacity_bytes: tuple[float, ...] | None = None
    """Explicit communication capacities per device, B (instead of ``comm_keep``)."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("keep", "comm_keep"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 < v <= 1):
                problems.append(f"{name} must be in (0, 1], got {v!r}: it is the fraction of the all-FULL cost kept")
        if (self.keep is None) == (self.capacity_s is None):
            problems.append("give exactly one of keep or capacity_s")
        if self.comm_keep is not None and self.capacity_bytes is not None:
            problems.append("give at most one of comm_keep or capacity_bytes")
        for name in ("capacity_s", "capacity_bytes"):
            v = getattr(self, name)
            if v is not None and any(not (c >= 0) for c in v):
                problems.append(f"{name} must be >= 0 everywhere, got {list(v)}")
        raise_problems("budget", problems)


@dataclass
class DeviceProblem:
    """One device's knapsack: its items, per-op costs and values, and its capacities.

    Ops are handled by level (0 SKIP, 1 FORWARD_ONLY, 2 FULL) so that solvers index lists.
    """

    device: int
    name: str
    items: list[Item]
    values: list[tuple[float, float, float]]
    """values[i][level] = A_op of item i."""
    levels: tuple[int, ...]
    """The strategy's allowed op levels, lowest first."""
    time: tuple[float, float, float]
    """t_k by level: seconds per item."""
    overhead_s: float
    """Seconds per (block, micro-batch) in which the device runs a subnet forward."""
    block_bytes: tuple[int, int, int]
    """Bytes per (block, micro-batch) by the level of the device's most active op there."""
    capacity_s: float
    """Seconds left for items after the fixed work."""
    capacity_bytes: float | None
    fixed_s: float = 0.0
    overhead_bwd_s: float | None = None
    """Seconds per (block, micro-batch) in which it runs one backward too; None: ``overhead_s``."""
    block_table: tuple[tuple[float, ...], ...] | None = None
    """``block_table[f][o]``: the exact time of one block's tasks with f items FULL and o FORWARD_ONLY
    there, s, where the linear model (``time``, ``overhead_s``) is not exact (a kernel-model device:
    ``CostModel.block_table``; the linear model is then a lower bound on it); None: the linear
    model is exact."""
    blocks: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    """(micro_batch, layer) -> indices of the items in it."""

    @property
    def overhead_at(self) -> tuple[float, float, float]:
        """Block overhead by the level of the device's most active op there: SKIP, FORWARD_ONLY, FULL."""
        bwd = self.overhead_s if self.overhead_bwd_s is None else self.overhead_bwd_s
        return 0.0, self.overhead_s, self.overhead_s + bwd

    def __post_init__(self) -> None:
        self.blocks = {}
        for i, (m, l, _) in enumerate(self.items):
            self.blocks.setdefault((m, l), []).append(i)

    def load(self, choice: list[int]) -> tuple[float, int]:
        """Exact item time (s, without fixed work) and bytes of a choice of op levels."""
        T, B, get = self.time, self.block_bytes, choice.__getitem__
        levels = [max(map(get, idx)) for idx in self.blocks.values()]
        nbytes = sum(map(B.__getitem__, levels))
        if self.block_table is not None:
            table, t = self.block_table, 0.0
            for idx in self.blocks.values():
                lv = list(map(get, idx))
                t += table[lv.count(2)][lv.count(1)]
            return t, nbytes
        t = sum(map(T.__getitem__, choice))
        # one task forward where active, one more backward where some subnet is FULL
        return t + sum(map(self.overhead_at.__getitem__, levels)), nbytes

    def fits(self, choice: list[int], slack: float = 1e-12) -> bool:
        t, nbytes = self.load(choice)
        ok_t = t <= self.capacity_s * (1 + slack) + slack
        return ok_t and (self.capacity_bytes is None or nbytes <= self.capacity_bytes)

    def objective(self, choice: list[int]) -> float:
        return sum(v[c] for v, c in zip(self.values, choice))


def block_cost(dp: DeviceProblem, n: list[int]) -> tuple[float, int]:
    """(seconds, bytes) of one block of ``dp`` with n[level] of its items at each level (0, 1, 2): the
    exact ``block_table`` where it is set, else the linear model."""
    top = 2 if n[2] else 1 if n[1] else 0
    if dp.block_table is not None:
        return dp.block_table[n[2]][n[1]], dp.block_bytes[top]
    T = dp.time
    return n[0] * T[0] + n[1] * T[1] + n[2] * T[2] + dp.overhead_at[top], dp.block_bytes[top]


class IncrementalLoad:
    """The exact load of a choice kept up to date item by item: per block, how many of its items are at
    each level, and the block's time and bytes from those counts (``DeviceProblem.block_table`` where
    it is set, else the linear model)."""

    def __init__(self, dp: DeviceProblem, choice: list[int]) -> None:
        self.dp, self.choice = dp, choice
        self.block_of = {i: key for key, idx in dp.blocks.items() for i in idx}
        self.counts = {}
        for key, idx in dp.blocks.items():
            n = self.counts[key] = [0, 0, 0]
            for i in idx:
                n[choice[i]] += 1
        self.t, self.b = dp.load(choice)

    def delta(self, i: int, to: int) -> tuple[float, int]:
        """(seconds, bytes) that moving item ``i`` to level ``to`` adds."""
        n = self.counts[self.block_of[i]]
        after = list(n)
        after[self.choice[i]] -= 1
        after[to] += 1
        (t0, b0), (t1, b1) = block_cost(self.dp, n), block_cost(self.dp, after)
        return t1 - t0, b1 - b0

    def fits_after(self, dt: float, db: int) -> bool:
        dp = self.dp
        return (self.t + dt <= dp.capacity_s * (1 + 1e-12) + 1e-15
                and (dp.capacity_bytes is None or self.b + db <= dp.capacity_bytes))

    def move(self, i: int, to: int, dt: float, db: int) -> None:
        n = self.counts[self.block_of[i]]
        n[self.choice[i]] -= 1
        n[to] += 1
        self.choice[i] = to
        self.t, self.b = self.t + dt, self.b + db


class BlockArrays:
    """A device's blocks as a padded (block, item) array of item indices, with the exact block table and
    bytes as arrays, so that one stage prices every block at once."""

    def __init__(self, dp: DeviceProblem) -> None:
        idx = list(dp.blocks.values())
        width = max(map(len, idx))
        self.items = np.zeros((len(idx), width), dtype=np.int64)
        self.valid = np.zeros((len(idx), width), dtype=bool)
        for b, row in enumerate(idx):
            self.items[b, :len(row)] = row
            self.valid[b, :len(row)] = True
        rows = dp.block_table  # triangular: f items FULL and o FORWARD_ONLY, f + o <= the largest block
        self.table = np.full((len(rows), max(map(len, rows))), np.nan)
        for f, row in enumerate(rows):
            self.table[f, :len(row)] = row
        self.bytes = np.array(dp.block_bytes, dtype=np.int64)
        self.width, self.steps = width, np.arange(1, width + 1)
        self._priced: dict[tuple, tuple] = {}  # a few recent (levels, pool sizes) -> ``_price``

    def stage(self, choice: list[int], score: list[float], frm: int, to: int, inv_t: float, inv_b: float):
        """One stage's view of every block (``d2ft.solvers._stage_exact``), moving items ``frm`` -> ``to``.

        Returns, flat over (block, j) in row-major order: each block's items, its pool first (the
        items at ``frm`` with a positive score, best first, ties in item order); the exact (seconds,
        bytes) that moving the pool's first j items adds to the block (``block_table``, j = 1..width);
        per block its pool size; the heap entries (-efficiency, block, 0, j) of each block's most
        efficient prefix (efficiency: the prefix's score over its cost normalised by ``inv_t`` and
        ``inv_b``; inf where it costs nothing), for blocks with a non-empty pool, sorted; and per entry
        the smallest time of it and those after it. Float operations are the scalar ones, in the same
        order, so the result does not depend on being computed at once."""
        ch = np.asarray(choice, dtype=np.int64)[self.items]
        sc = np.asarray(score, dtype=np.float64)[self.items]
        pool = self.valid & (ch == frm) & (sc > 0)
        size = pool.sum(axis=1)
        order = np.argsort(np.where(pool, -sc, np.inf), axis=1, kind="stable")
        gains = np.cumsum(np.take_along_axis(np.where(pool, sc, 0.0), order, axis=1), axis=1)
        state = (frm, to, ch.tobytes(), size.tobytes())  # the costs depend on the levels and pool sizes only
        if state not in self._priced:
            if len(self._priced) > 64:
                self._priced.clear()
            self._priced[state] = self._price(ch, size, frm, to)
        ok, dt, db, ct, cb = self._priced[state]
        with np.errstate(invalid="ignore"):  # 0 x inf where a capacity is exhausted: masked out
            normed = np.where(dt > 0, dt * inv_t, 0.0) + np.where(db > 0, db * inv_b, 0.0)
            eff = np.where(ok, np.where(normed > 0, gains / np.where(normed > 0, normed, 1.0), np.inf), -np.inf)
        best = eff.max(axis=1)
        best_j = np.where(best > -1.0, eff.argmax(axis=1) + 1, 1)
        key = np.where(best > -1.0, -best, 1.0)
        blocks = np.flatnonzero(size)
        blocks = blocks[np.lexsort((blocks, key[blocks]))]  # the heap's order: efficiency, then block
        first_dt = dt[blocks, best_j[blocks] - 1]
        floor = np.minimum.accumulate(first_dt[::-1])[::-1] if len(blocks) else first_dt
        pools = np.take_along_axis(self.items, order, axis=1)
        first = list(zip(key[blocks].tolist(), blocks.tolist(), [0] * len(blocks), best_j[blocks].tolist()))
        return pools.ravel().tolist(), size.tolist(), ct, cb, first, floor.tolist()

    def _price(self, ch: np.ndarray, size: np.ndarray, frm: int, to: int):
        """Where j is within the pool, and the exact (seconds, bytes) that moving a block's first j pool
        items from ``frm`` to ``to`` adds (arrays, and flat lists of them)."""
        n = [(self.valid & (ch == lv)).sum(axis=1) for lv in (0, 1, 2)]
        after = [np.repeat(c[:, None], len(self.steps), axis=1) for c in n]
        after[frm] = after[frm] - self.steps  # moving the first j of the pool, j = 1..width
        after[to] = after[to] + self.steps
        ok = self.steps <= size[:, None]
        a1, a2 = np.where(ok, after[1], 0), np.where(ok, after[2], 0)
        top0 = np.where(n[2] > 0, 2, np.where(n[1] > 0, 1, 0))
        top = np.where(a2 > 0, 2, np.where(a1 > 0, 1, 0))
        dt = self.table[a2, a1] - self.table[n[2], n[1]][:, None]
        db = self.bytes[top] - self.bytes[top0][:, None]
        return ok, dt, db, dt.ravel().tolist(), db.ravel().tolist()


LEVEL_OP = tuple(sorted(Op, key=lambda op: op.level))
"""Op by level: (SKIP, FORWARD_ONLY, FULL)."""


@dataclass
class Problem:
    """The whole op-selection problem for one step: one DeviceProblem per device."""

    plan: Plan
    """The placement and shape (its ops are ignored)."""
    devices: list[DeviceProblem]
    capacity_s: list[float]
    """Total compute capacity per device, s (fixed work included)."""
    capacity_bytes: list[float | None]
    t_full_s: float
    """Compute time of the busiest device under all-FULL, s."""
    v_full_s: list[float]
    """Per device, its subnet work (items and their overheads) under all-FULL, s."""

    def assemble(self, choices: list[list[int]], **meta) -> Plan:
        """The plan that runs op level ``choices[k][i]`` for item i of device k."""
        ops = [[[Op.SKIP] * self.plan.heads for _ in range(self.plan.depth)] for _ in range(self.plan.micro_batches)]
        for dp, choice in zip(self.devices, choices):
            for (m, l, h), c in zip(dp.items, choice):
                ops[m][l][h] = LEVEL_OP[c]
        return self.plan.with_ops(ops, **meta)

    def choices(self, plan: Plan) -> list[list[int]]:
        """Per device, the op level of each item in ``plan``."""
        return [[plan.ops[m][l][h].level for m, l, h in dp.items] for dp in self.devices]

    def loads(self, plan: Plan) -> tuple[list[float], list[int]]:
        """Per device: planned compute load (fixed work included), s, and bytes moved, B."""
        times, nbytes = [], []
        for dp, choice in zip(self.devices, self.choices(plan)):
            t, b = dp.load(choice)
            times.append(dp.fixed_s + t)
            nbytes.append(b)
        return times, nbytes


def build_problem(model, cluster, plan: Plan, scores: Scores, budget: Budget, ops: tuple[Op, ...]) -> Problem:
    """The knapsack for ``plan``'s placement and shape under ``budget``, with ``ops`` allowed."""
    plan.validate(model, cluster)
    scores.check_shape(plan.depth, plan.heads, plan.micro_batches)
    cm = CostModel(model, cluster)
    b, K = plan.micro_batch_size, cluster.num_devices
    ops = tuple(sorted(set(ops), key=lambda o: o.level))
    full = plan.with_ops([[[Op.FULL] * plan.heads] * plan.depth] * plan.micro_batches)
    tasks, _ = cm.tasks_and_messages(full)
    fixed = [sum(t.time_s for t in tasks if t.device == k and not t.subnets) for k in range(K)]
    full_time = [sum(t.time_s for t in tasks if t.device == k) for k in range(K)]
    t_full = max(full_time)
    # method.md: every device gets the same wall-clock budget rho x T_full, so faster devices take
    # on more work and none straggles. Fixed work (stem, norms, classifier, optimizer) is no op's
    # to save, so the budget is set where it binds: the largest over devices holding subnets of
    # (fixed work + rho x own all-FULL subnet work), the same for all of them. The placement
    # planner balances exactly these loads (placement.py), so every device keeps about rho of
    # its subnet work; with little fixed work the budget is rho x T_full. A device that holds no
    # subnets keeps its fixed work as its capacity.
    v_full = [f - x for f, x in zip(full_time, fixed)]
    own = [fixed[k] + budget.keep * v_full[k] for k in range(K)] if budget.keep is not None else []
    holders = [k for k in range(K) if plan.subnets_of(k)]
    common = max((own[k] for k in holders), default=0.0) if own else 0.0
    capacity_s = ([common if k in holders else own[k] for k in range(K)] if budget.capacity_s is None
                  else list(budget.capacity_s))
    for name, caps in (("capacity_s", capacity_s), ("capacity_bytes", budget.capacity_bytes)):
        if caps is not None and len(caps) != K:
            raise ValueError(f"budget {name} gives {len(caps)} capacities for {K} devices")
    coord = cluster.coordinator_index
    devices, capacity_bytes = [], []
    for k, (name, spec) in enumerate(cluster.devices):
        remote = k != coord
        block_bytes = {op: cm.block_messages_bytes(op, b) if remote else 0 for op in Op}
        own = plan.subnets_of(k)
        items = [(m, l, h) for m in range(plan.micro_batches) for l, h in own]
        n_blocks = len({(m, l) for m, l, _ in items})
        per_block = max(Counter(l for l, _ in own).values(), default=1)  # subnets it holds in one block
        if budget.capacity_bytes is not None:
            cap_b = budget.capacity_bytes[k]
        elif budget.comm_keep is not None:
            cap_b = budget.comm_keep * n_blocks * block_bytes[Op.FULL]
        else:
            cap_b = None
        capacity_bytes.append(cap_b)
        devices.append(DeviceProblem(
            device=k, name=name, items=items,
            values=[tuple(scores.value(m, l, h, op) for op in LEVEL_OP) for m, l, h in items],
            levels=tuple(op.level for op in ops), time=tuple(cm.subnet_time(k, op, b, per_block) for op in LEVEL_OP),
            overhead_s=cm.block_overhead_s(k, b, "fwd"), overhead_bwd_s=cm.block_overhead_s(k, b, "bwd"),
            block_table=cm.block_table(k, b, per_block), block_bytes=tuple(block_bytes[op] for op in LEVEL_OP),
            capacity_s=capacity_s[k] - fixed[k], capacity_bytes=cap_b, fixed_s=fixed[k],
        ))
    problem = Problem(plan, devices, capacity_s, capacity_bytes, t_full, v_full)
    _check_feasible(problem, budget)
    return problem


def _check_feasible(problem: Problem, budget: Budget) -> None:
    """Raises one ValueError naming every device that cannot fit even its cheapest plan."""
    problems = []
    lowest = LEVEL_OP[problem.devices[0].levels[0]] if problem.devices else Op.SKIP
    for dp in problem.devices:
        t, nbytes = dp.load([lowest.level] * len(dp.items))
        if t > dp.capacity_s * (1 + 1e-12) + 1e-12:
            need = dp.fixed_s + t
            v = problem.v_full_s[dp.device]
            hint = f"; raise keep to at least {t / v:.3f}" if budget.keep is not None and v > 0 else ""
            problems.append(
                f"device {dp.name!r} needs {fmt_time(need)} per step even with every subnet {lowest.name} "
                f"({fmt_time(dp.fixed_s)} of it fixed work) but its budget is {fmt_time(dp.fixed_s + dp.capacity_s)}, "
                f"short by {fmt_time(need - dp.fixed_s - dp.capacity_s)}{hint}"
                + ("" if lowest is Op.SKIP else ", or use a strategy that may SKIP (shortcut, hybrid)")
            )
        if dp.capacity_bytes is not None and nbytes > dp.capacity_bytes:
            problems.append(
                f"device {dp.name!r} moves {fmt_bytes(nbytes)} per step even with every subnet {lowest.name} "
                f"but its communication budget is {fmt_bytes(dp.capacity_bytes)}"
            )
    if problems:
        raise ValueError("no plan fits the budget:\n" + "\n".join(f"  - {p}" for p in problems))
