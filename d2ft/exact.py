"""The exact op-selection knapsack in python-mip (``mip_exact``; ``d2ft.solvers`` describes all three
solvers): on the linear model, block-activity indicators; where ``DeviceProblem.block_table`` prices
blocks exactly (a kernel-model GPU), one configuration per block."""

from __future__ import annotations

from .knapsack import DeviceProblem
from .solvers import DeviceSolution, dp_two_stage


def mip_exact(dp: DeviceProblem, time_limit_s: float = 5.0, gap: float = 1e-4, backend: str = "CBC",
              seed: int = 0, warm: list[int] | None = None) -> DeviceSolution:
    """The exact knapsack in python-mip: block-activity indicators on the linear model, block configurations
    where ``dp.block_table`` prices blocks exactly (module docstring)."""
    import mip

    warm = warm if warm is not None else dp_two_stage(dp).choice
    if not dp.items:
        return DeviceSolution([], 0.0, 0.0, "optimal")
    model = mip.Model(sense=mip.MAXIMIZE, solver_name=backend)
    model.verbose, model.threads, model.seed = 0, 1, seed
    model.max_mip_gap = gap
    L = dp.levels
    x = [{lv: model.add_var(var_type=mip.BINARY) for lv in L} for _ in dp.items]
    for i, xi in enumerate(x):
        model += mip.xsum(xi.values()) == 1
    # Constraints in units of their capacity, so the solver's absolute tolerances (1e-6) are relative.
    st = 1 / dp.capacity_s if dp.capacity_s > 0 else 1.0
    sb = 1 / dp.capacity_bytes if dp.capacity_bytes else 1.0
    start = [(x[i][lv], 1.0 if warm[i] == lv else 0.0) for i in range(len(x)) for lv in L]
    if dp.block_table is None:
        time_expr, bytes_expr = _linear_block_terms(model, dp, x, warm, st, sb, start)
    else:
        time_expr, bytes_expr = _exact_block_terms(model, dp, x, warm, st, sb, start)
    model += time_expr <= dp.capacity_s * st
    if dp.capacity_bytes is not None:
        model += bytes_expr <= dp.capacity_bytes * sb
    model.objective = mip.xsum(dp.values[i][lv] * x[i][lv] for i in range(len(x)) for lv in L)
    model.start = start
    status = model.optimize(max_seconds=max(time_limit_s, 0.01))
    warm_value = dp.objective(warm)
    if status not in (mip.OptimizationStatus.OPTIMAL, mip.OptimizationStatus.FEASIBLE):
        return DeviceSolution(list(warm), warm_value, None, "heuristic")
    choice = [max(L, key=lambda lv: x[i][lv].x) for i in range(len(x))]
    value = dp.objective(choice)
    if not dp.fits(choice) or value < warm_value:  # within the solver's tolerance only: keep the warm start
        choice, value = list(warm), warm_value
    bound = max(model.objective_bound, value)
    tol = max(gap, 1e-6) * max(abs(bound), 1e-12)  # the solver proves optimality to its own tolerance
    optimal = status == mip.OptimizationStatus.OPTIMAL and bound - value <= tol
    return DeviceSolution(choice, value, bound, "optimal" if optimal else "feasible")


def _linear_block_terms(model, dp: DeviceProblem, x, warm, st: float, sb: float, start: list):
    """Time and bytes of the linear model: item costs plus block-activity indicators (forward, backward)."""
    import mip

    L = dp.levels
    ya = {key: model.add_var(var_type=mip.BINARY) for key in dp.blocks}  # active forward
    yf = {key: model.add_var(var_type=mip.BINARY) for key in dp.blocks}  # active backward (some FULL)
    for key, idx in dp.blocks.items():
        for i in idx:
            run = [x[i][lv] for lv in L if lv >= 1]
            if run:
                model += ya[key] >= mip.xsum(run)
            if 2 in L:
                model += yf[key] >= x[i][2]
        lvl = max(warm[i] for i in idx)
        start += [(ya[key], float(lvl >= 1)), (yf[key], float(lvl >= 2))]
    _, of, ob = dp.overhead_at
    time_expr = (mip.xsum(dp.time[lv] * st * x[i][lv] for i in range(len(x)) for lv in L)
                 + mip.xsum(of * st * ya[k] + (ob - of) * st * yf[k] for k in dp.blocks))
    bo, bf = dp.block_bytes[1] * sb, dp.block_bytes[2] * sb
    return time_expr, mip.xsum(bo * ya[k] + (bf - bo) * yf[k] for k in dp.blocks)


def _exact_block_terms(model, dp: DeviceProblem, x, warm, st: float, sb: float, start: list):
    """Time and bytes priced exactly (``dp.block_table``): per block, one configuration (f items FULL, o
    FORWARD_ONLY, the rest SKIP) chosen by an indicator, the item counts tied to it."""
    import mip

    L, T, B = dp.levels, dp.block_table, dp.block_bytes
    time_terms, byte_terms = [], []
    for key, idx in dp.blocks.items():
        r = len(idx)
        configs = [(f, o) for f in range(r + 1) for o in range(r + 1 - f)
                   if (f == 0 or 2 in L) and (o == 0 or 1 in L) and (f + o == r or 0 in L)]
        z = {c: model.add_var(var_type=mip.BINARY) for c in configs}
        model += mip.xsum(z.values()) == 1
        for lv, part in ((2, 0), (1, 1)):
            if lv in L:
                model += mip.xsum(x[i][lv] for i in idx) == mip.xsum(c[part] * v for c, v in z.items())
        counts = (sum(warm[i] == 2 for i in idx), sum(warm[i] == 1 for i in idx))
        start += [(v, 1.0 if c == counts else 0.0) for c, v in z.items()]
        time_terms += [T[f][o] * st * v for (f, o), v in z.items()]
        byte_terms += [B[2 if f else 1 if o else 0] * sb * v for (f, o), v in z.items()]
    return mip.xsum(time_terms), mip.xsum(byte_terms)


__all__ = ["mip_exact"]
