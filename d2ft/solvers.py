"""Solvers for one device's op-selection knapsack: ``greedy``, ``dp`` and the exact ``mip``.

Each takes a ``DeviceProblem`` and returns a ``DeviceSolution`` whose choice fits every
capacity under the exact load (``DeviceProblem.fits``). Where the linear model is exact (every
roofline device) they search it directly; where it is not (``DeviceProblem.block_table`` set: a
kernel-model GPU, whose tasks cost more per subnet the fewer subnets they run), block
configurations and single-item upgrades are priced by the exact load, and a solution that fits
only the linear model is repaired (downgrades until it fits, then upgrades that still fit):

- ``greedy``: value per cost, first fit. Starting from every item at the strategy's
  cheapest op, it repeatedly takes the upgrade with the highest value per unit of
  normalised cost, with exact marginal costs (the block overhead and bytes of a device
  are paid by the first subnet that activates the block), skipping upgrades that no
  longer fit. This is the greedy for the multiple-choice knapsack (Sinha & Zoltners,
  Operations Research 27(3), 1979) extended to the block coupling.
- ``dp``: the paper's two-stage heuristic. Stage 1 picks which items run (0/1 knapsack by
  dynamic programming over discretised cost, value s_fwd plus a share of s_bwd); stage 2
  picks which of those also run backward (value s_bwd). Costs are charged as if every
  item paid its own block's overhead and bytes (an upper bound, so the result fits); a
  greedy pass then spends what the shared blocks left over. Items of equal cost, which
  is every item on one device here, reduce each stage to top-k by value. Where blocks are
  priced exactly (a kernel-model GPU), each stage takes a block's items at their exact
  marginal costs instead (``_stage_exact``).
- ``mip`` (``d2ft.exact``): the exact multiple-choice knapsack with indicator variables for a device's
  activity per block, in python-mip (CBC or HiGHS), warm-started from ``dp``, one thread,
  fixed seed; stopping at the time limit with a gap is a valid result. On a kernel-model
  device each block instead chooses one configuration (how many items FULL, how many
  FORWARD_ONLY) priced by ``block_table``, so the MIP is exact there too.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

from .knapsack import BlockArrays, DeviceProblem, IncrementalLoad


@dataclass(frozen=True)
class DeviceSolution:
    choice: list[int]
    """Op level per item (0 SKIP, 1 FORWARD_ONLY, 2 FULL)."""
    objective: float
    bound: float | None
    """Upper bound on the objective where known (mip), else None."""
    status: str
    """"optimal", "feasible" (mip stopped with a gap) or "heuristic"."""


# ---- greedy -------------------------------------------------------------------------------
def greedy(dp: DeviceProblem) -> DeviceSolution:
    """Value per cost over whole blocks, then single items (module docstring)."""
    return DeviceSolution(*_fill(dp, _block_hull(dp)), None, "heuristic")


def _block_configs(dp: DeviceProblem, idx: list[int]) -> list[tuple[float, float, int, tuple]]:
    """The configurations of one block: (time, value, bytes, (FULL items, FORWARD_ONLY items)).

    For each count of FULL and FORWARD_ONLY items, FULL goes to the items with the largest
    A_F (or the largest A_F - A_O; whichever mix is worth more) and FORWARD_ONLY to the
    best remaining by A_O. Every op mix is there, so the block's overhead and bytes are
    weighed against all they enable.
    """
    V, T, lo, O, B = dp.values, dp.time, dp.levels[0], dp.overhead_at, dp.block_bytes
    r = len(idx)
    can_f, can_o = 2 in dp.levels, 1 in dp.levels and lo == 0
    base_v = sum(V[i][lo] for i in idx)
    base_t = r * T[lo]
    orders = [sorted(idx, key=lambda i: V[i][lo] - V[i][2])] if can_f else [[]]
    if can_f and can_o:
        orders.append(sorted(idx, key=lambda i: V[i][1] - V[i][2]))
    configs: dict[tuple[int, int], tuple[float, float, int, tuple]] = {}
    for nf in range(r + 1 if can_f else 1):
        for order in orders:
            full = order[:nf]
            gain_f = sum(V[i][2] - V[i][lo] for i in full)
            rest = sorted((i for i in idx if i not in full), key=lambda i: V[i][lo] - V[i][1]) if can_o else []
            gain_o = 0.0
            for no in range(len(rest) + 1 if can_o else 1):
                if no:
                    gain_o += V[rest[no - 1]][1] - V[rest[no - 1]][lo]
                value = base_v + gain_f + gain_o
                if (nf, no) in configs and configs[nf, no][1] >= value:
                    continue
                top = 2 if nf else (1 if no else lo)
                if dp.block_table is not None:  # exact: the items left at ``lo`` run at that level
                    rest_n = r - nf - no
                    time = dp.block_table[nf + rest_n * (lo == 2)][no + rest_n * (lo == 1)]
                else:
                    time = base_t + nf * (T[2] - T[lo]) + no * (T[1] - T[lo]) + O[top]
                configs[nf, no] = (time, value, B[top], (tuple(full), tuple(rest[:no])))
    return list(configs.values())


def _block_hull(dp: DeviceProblem) -> list[int]:
    """Multiple-choice knapsack over blocks by convex-hull increments (Sinha & Zoltners 1979)."""
    cap_t, cap_b = dp.capacity_s, dp.capacity_bytes
    choice = [dp.levels[0]] * len(dp.items)
    base_t, base_b = dp.load(choice)
    used_t, used_b = base_t, base_b
    increments = []  # (-efficiency, block, step, dt, db, levels)
    for key, idx in dp.blocks.items():
        configs = _block_configs(dp, idx)
        t0, v0, b0, _ = min(configs, key=lambda c: (c[0], -c[1]))
        hull = [(t0, v0, b0, None)]
        for t, v, b, lv in sorted(configs, key=lambda c: (_cost(c[0] - t0, c[2] - b0, cap_t, cap_b), -c[1])):
            if v <= hull[-1][1]:
                continue
            while len(hull) >= 2 and _eff(hull[-2], hull[-1], cap_t, cap_b) <= _eff(hull[-1], (t, v, b), cap_t, cap_b):
                hull.pop()
            hull.append((t, v, b, lv))
        for step, (prev, cur) in enumerate(zip(hull, hull[1:])):
            increments.append((-_eff(prev, cur, cap_t, cap_b), key, step, cur[0] - prev[0], cur[2] - prev[2], cur[3]))
    increments.sort(key=lambda x: x[:3])
    blocked = set()
    for _, key, _, dt, db, levels in increments:
        if key in blocked:
            continue
        if used_t + dt <= cap_t * (1 + 1e-12) + 1e-15 and (cap_b is None or used_b + db <= cap_b):
            used_t, used_b = used_t + dt, used_b + db
            full, fwd = levels
            for i in dp.blocks[key]:
                choice[i] = 2 if i in full else 1 if i in fwd else dp.levels[0]
        else:
            blocked.add(key)  # later increments of this block build on this one
    return choice


def _cost(dt: float, db: float, cap_t: float, cap_b: float | None) -> float:
    c = _share(dt, cap_t) if dt > 0 else 0.0
    if cap_b is not None and db > 0:
        c += _share(db, cap_b)
    return c


def _eff(a, b, cap_t, cap_b) -> float:
    c = _cost(b[0] - a[0], b[2] - a[2], cap_t, cap_b)
    return (b[1] - a[1]) / c if c > 0 else math.inf


def _fill(dp: DeviceProblem, start: list[int]) -> tuple[list[int], float]:
    """Single-item upgrades by value per marginal cost, first fit, until nothing more fits (marginal
    costs exact: ``IncrementalLoad``)."""
    load = IncrementalLoad(dp, list(start))
    choice, V = load.choice, dp.values
    cap_t, cap_b = dp.capacity_s, dp.capacity_bytes
    heap = []
    for i in range(len(choice)):
        for to in dp.levels:
            if to > choice[i] and V[i][to] > V[i][choice[i]]:
                dt, db = load.delta(i, to)
                c = _cost(dt, db, cap_t, cap_b)
                heap.append((-((V[i][to] - V[i][choice[i]]) / c) if c > 0 else -math.inf, i, to))
    heapq.heapify(heap)
    while heap:
        _, i, to = heapq.heappop(heap)
        if to <= choice[i] or V[i][to] <= V[i][choice[i]]:
            continue
        dt, db = load.delta(i, to)
        if load.fits_after(dt, db):
            load.move(i, to, dt, db)
    return choice, dp.objective(choice)


# ---- dp ------------------------------------------------------------------------------------
def dp_two_stage(dp: DeviceProblem, shares: int = 4, refine: int = 1) -> DeviceSolution:
    """The paper's two-stage heuristic.

    Stage 1 picks which items run at all (value s_fwd plus a share f of s_bwd, within a
    share 1 - f of the capacity), stage 2 which running items also run backward (value
    s_bwd, the rest of the capacity); ``shortcut`` and ``backward`` have one stage. f is
    searched on a grid of ``shares`` + 1 points, then ``refine`` times around the best
    (two more points at half the spacing each time). Each stage is a knapsack whose groups
    are blocks (see ``_stage``). A repair pass then downgrades the least valuable items per
    unit of time until the exact load fits, and single-item upgrades spend what is left.
    """
    lo, n, V = dp.levels[0], len(dp.items), dp.values
    if n == 0:
        return DeviceSolution([], 0.0, None, "heuristic")
    two = lo == 0 and dp.levels == (0, 1, 2)
    top = dp.levels[-1]
    start = [lo] * n
    used0 = dp.load(start)
    cache: dict = {}  # shared by every stage of this device (``_stage_exact``)
    frm = 1 if two else lo  # stage 2: which running items also run backward (or the only stage)
    fwd, bwd = [v[1] - v[0] for v in V], [v[top] - v[frm] for v in V]

    after_stage1: dict[tuple, list[int]] = {}  # stage 2 depends on frac only through stage 1's choice

    def run(frac: float) -> list[int]:
        choice, used = start[:], used0
        if two:  # stage 1: which items run
            used = _stage(dp, choice, used, 0, 1, [f + frac * b for f, b in zip(fwd, bwd)], 1 - frac, cache)
        key = tuple(choice)
        if key not in after_stage1:
            _stage(dp, choice, used, frm, top, bwd, 1.0, cache)
            after_stage1[key] = choice
        return after_stage1[key]

    tried, objective = {}, {}
    grid = [j / shares for j in range(shares + 1)] if two else [0.0]
    step = 1 / shares
    for _ in range(refine + 1 if two else 1):
        for frac in grid:
            if 0 <= frac <= 1 and frac not in tried:
                tried[frac] = run(frac)
                objective[frac] = dp.objective(tried[frac])
        best_frac = max(tried, key=objective.__getitem__)
        step /= 2
        grid = [best_frac - step, best_frac + step]
    choice, value = _fill(dp, _repair(dp, tried[best_frac]))
    return DeviceSolution(choice, value, None, "heuristic")


def _stage(dp: DeviceProblem, choice: list[int], used: tuple[float, int], frm: int, to: int, score: list[float],
           share: float, cache: dict) -> tuple[float, int]:
    """Moves items from level ``frm`` to ``to``, best ``score`` per cost first, within ``share`` of
    the capacity left; in place. ``used`` is the exact load of ``choice`` (``DeviceProblem.load``);
    returns the load after the moves. ``cache`` keeps what the stages of one device share.

    A group knapsack over blocks: taking the j best items of a block costs j times the item
    cost plus, once, the block's extra overhead and bytes. All items of a device cost the
    same, so each block's options are the prefixes of its items by score; their upper
    convex hull is one increment that activates the block with its most efficient prefix,
    then one item at a time. Taking hull increments by efficiency (the LP greedy of Sinha &
    Zoltners, Operations Research 27(3), 1979) is within one block's value of the optimum;
    without block costs it is exactly top-k by score, the equal-weight fast path.
    """
    used_t, used_b = used
    left_t = (dp.capacity_s - used_t) * share
    left_b = (dp.capacity_bytes - used_b) * share if dp.capacity_bytes is not None else None
    inv_t = 1 / left_t if left_t > 0 else math.inf
    inv_b = 0.0 if left_b is None else (1 / left_b if left_b > 0 else math.inf)
    if dp.block_table is not None:
        taken_t, taken_b = _stage_exact(dp, choice, frm, to, score, left_t, left_b, inv_t, inv_b, cache)
        return used_t + taken_t, used_b + taken_b
    c_item = dp.time[to] - dp.time[frm]
    c_one = c_item * inv_t if c_item > 0 else 0.0
    O, B = dp.overhead_at, dp.block_bytes
    increments = []  # (-efficiency, order, key, items, dt, db)
    for key, idx in dp.blocks.items():
        pool = [i for i in idx if choice[i] == frm and score[i] > 0]
        if not pool:
            continue
        if len(pool) > 1:
            pool.sort(key=score.__getitem__, reverse=True)
        lv = max(map(choice.__getitem__, idx))
        act_t = O[to] - O[lv] if to > lv else 0.0
        act_b = B[to] - B[lv] if to > lv else 0
        fixed = (act_t * inv_t if act_t > 0 else 0.0) + (act_b * inv_b if act_b > 0 else 0.0)
        best_j, best_eff, gain = 1, -1.0, 0.0
        for j, i in enumerate(pool, 1):
            gain += score[i]
            c = j * c_one + fixed
            eff = gain / c if c > 0 else math.inf
            if eff > best_eff:
                best_j, best_eff = j, eff
        increments.append((-best_eff, len(increments), key, pool[:best_j], best_j * c_item + act_t, act_b))
        for i in pool[best_j:]:
            increments.append((-(score[i] / c_one) if c_one > 0 else -math.inf, len(increments), key, [i], c_item, 0))
    increments.sort(key=lambda x: x[:2])
    blocked = set()
    for _, _, key, items, dt, db in increments:
        if key in blocked:
            continue
        if dt <= left_t * (1 + 1e-12) + 1e-15 and (left_b is None or db <= left_b):
            left_t -= dt
            used_t, used_b = used_t + dt, used_b + db
            if left_b is not None:
                left_b -= db
            for i in items:
                choice[i] = to
        else:
            blocked.add(key)
    return used_t, used_b


def _stage_exact(dp: DeviceProblem, choice: list[int], frm: int, to: int, score: list[float], left_t: float,
                 left_b: float | None, inv_t: float, inv_b: float, cache: dict) -> tuple[float, int]:
    """``_stage`` where blocks are priced exactly (``dp.block_table``): a block's j-th item costs what
    moving it adds to the block's exact time, so its increments (the most efficient prefix, then one item
    at a time, in score order) are taken through a heap, each block's next one only after the last.
    Every block's pool, costs and best prefix are computed at once over a (block, item) array
    (``BlockArrays``, kept in ``cache`` across the stages of one device). Returns the (seconds, bytes)
    taken."""
    arr = cache.get("blocks") or cache.setdefault("blocks", BlockArrays(dp))
    pools, sizes, ct, cb, first, floor = arr.stage(choice, score, frm, to, inv_t, inv_b)
    width = arr.width

    def norm(dt: float, db: int) -> float:
        return (dt * inv_t if dt > 0 else 0.0) + (db * inv_b if db > 0 else 0.0)

    # The heap is the sorted first increments merged with a heap of the later ones (pushed as blocks
    # take their first), which pops in the same order as one heap of both.
    pos, end, pushed = 0, len(first), []
    taken_t, taken_b = 0.0, 0
    while pos < end or pushed:
        if pushed and (pos == end or pushed[0] < first[pos]):
            _, b, done, upto = heapq.heappop(pushed)
        else:
            _, b, done, upto = first[pos]
            pos += 1
        row = b * width  # the block's row in the flat per-(block, j) lists
        dt = ct[row + upto - 1] - (ct[row + done - 1] if done else 0.0)
        db = cb[row + upto - 1] - (cb[row + done - 1] if done else 0)
        if not (dt <= left_t * (1 + 1e-12) + 1e-15 and (left_b is None or db <= left_b)):
            if not pushed and pos < end and floor[pos] > left_t * (1 + 1e-12) + 1e-15:
                break  # no increment left is small enough
            continue  # this block takes nothing more
        left_t -= dt
        taken_t, taken_b = taken_t + dt, taken_b + db
        if left_b is not None:
            left_b -= db
        for i in pools[row + done:row + upto]:
            choice[i] = to
        if upto < sizes[b]:  # the block's next item, at its exact marginal cost
            c = norm(ct[row + upto] - ct[row + upto - 1], cb[row + upto] - cb[row + upto - 1])
            heapq.heappush(pushed, (-(score[pools[row + upto]] / c) if c > 0 else -math.inf, b, upto, upto + 1))
    return taken_t, taken_b


def _repair(dp: DeviceProblem, choice: list[int]) -> list[int]:
    """Downgrades items one level at a time, least value lost per share of capacity freed (by the linear
    model) first, until the choice fits the exact load (``IncrementalLoad``)."""
    load = IncrementalLoad(dp, list(choice))
    choice, lo, V, T = load.choice, dp.levels[0], dp.values, dp.time
    if load.fits_after(0.0, 0):
        return choice

    def entry(i: int) -> tuple[float, int, int]:
        c = choice[i]
        down = max(l for l in dp.levels if l < c)
        freed = _share(T[c] - T[down], dp.capacity_s)
        return ((V[i][c] - V[i][down]) / freed if freed > 0 else math.inf), i, c

    heap = [entry(i) for i, c in enumerate(choice) if c != lo]
    heapq.heapify(heap)
    while heap and not load.fits_after(0.0, 0):
        _, i, c = heapq.heappop(heap)
        if choice[i] != c:
            continue
        down = max(l for l in dp.levels if l < c)
        load.move(i, down, *load.delta(i, down))
        if down != lo:
            heapq.heappush(heap, entry(i))
    return choice


def _share(x: float, capacity: float) -> float:
    if capacity > 0:
        return x / capacity
    return math.inf if x > 0 else 0.0


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call, by the monotonic performance counter."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0
