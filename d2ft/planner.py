"""The op planner: strategies, baselines and solvers by name, and ``plan_step``.

Strategies (method.md, "The three selection strategies") choose ops with a knapsack
solver under a budget: ``backward`` (F, O), ``shortcut`` (F, S), ``hybrid`` (F, O, S).
Baselines under the same budget: ``full`` (every subnet FULL, unbudgeted), ``random``
(the hybrid knapsack solved with seeded random scores instead of contribution scores:
which subnets train, skip or only run forward is left to chance, and the budget is used
as fully as D2FT uses it), ``freeze`` (the lowest blocks FORWARD_ONLY, like layer freezing),
``layerdrop`` (whole blocks skipped at random per micro-batch).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from .cost import CostModel
from .errors import expect, unknown_name
from .model import ModelSpec
from .knapsack import Budget, Problem, build_problem
from .ops import Op
from .plan import Plan, check_plan_size, even_placement
from .scores import Scores, random_scores, synthetic
from .exact import mip_exact
from .solvers import DeviceSolution, dp_two_stage, greedy, timed

STRATEGIES: dict[str, tuple[Op, ...]] = {
    "backward": (Op.FULL, Op.FORWARD_ONLY),
    "shortcut": (Op.FULL, Op.SKIP),
    "hybrid": (Op.FULL, Op.FORWARD_ONLY, Op.SKIP),
}
BASELINES = ("full", "random", "freeze", "layerdrop")
SOLVERS = ("mip", "dp", "greedy")
MIP_BACKENDS = ("CBC", "HiGHS")
DEFAULT_BACKEND = "HiGHS"
"""Chosen by ``benchmarks/planner.py`` (see README, "Planner benchmark")."""


def check_strategy(name: str) -> str:
    if name not in STRATEGIES and name not in BASELINES:
        raise unknown_name("strategy", name, list(STRATEGIES) + list(BASELINES))
    return name


def check_solver(name: str) -> str:
    if name not in SOLVERS:
        raise unknown_name("solver", name, SOLVERS)
    return name


@dataclass(frozen=True)
class PlanReport:
    """A plan and how it was found: objective, bound, status, time, loads against capacities."""

    plan: Plan
    strategy: str
    solver: str
    objective: float
    """Sum of A_op over all items (method.md)."""
    bound: float | None
    """Upper bound on the objective (mip), None where unknown."""
    status: str
    """"optimal", "feasible" (mip with a gap), "heuristic", "baseline" or "unbudgeted" (full)."""
    solve_time_s: float
    load_s: tuple[float, ...]
    """Planned compute load per device, s (an upper bound on the cost model's compute time)."""
    capacity_s: tuple[float, ...]
    comm_bytes: tuple[int, ...]
    """Bytes each device sends plus receives."""
    capacity_bytes: tuple[float | None, ...]
    t_full_s: float
    """Busiest device's compute time under all-FULL, s."""
    compute_saving: float
    comm_saving: float
    device_names: tuple[str, ...] = field(default=())

    @property
    def gap(self) -> float | None:
        """(bound - objective) / bound, where a bound is known."""
        if self.bound is None:
            return None
        return (self.bound - self.objective) / self.bound if self.bound > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy, "solver": self.solver, "objective": self.objective, "bound": self.bound,
            "gap": self.gap, "status": self.status, "solve_time_s": self.solve_time_s,
            "op_counts": self.plan.summary(), "compute_saving": self.compute_saving,
            "comm_saving": self.comm_saving, "t_full_s": self.t_full_s,
            "devices": {
                n: {"load_s": l, "capacity_s": c, "comm_bytes": b, "capacity_bytes": cb}
                for n, l, c, b, cb in zip(self.device_names, self.load_s, self.capacity_s, self.comm_bytes,
                                          self.capacity_bytes)
            },
        }


def plan_step(
    model,
    cluster,
    strategy: str = "hybrid",
    solver: str = "dp",
    keep: float | None = 0.6,
    comm_keep: float | None = None,
    micro_batches: int = 1,
    micro_batch_size: int = 1,
    scores: Scores | None = None,
    placement=None,
    seed: int = 0,
    time_limit_s: float = 5.0,
    gap: float = 0.01,
    backend: str = DEFAULT_BACKEND,
    budget: Budget | None = None,
) -> PlanReport:
    """Plans the ops of one step: which subnet runs F, O or S in each micro-batch.

    ``scores`` default to ``synthetic(seed=seed)``; ``placement`` defaults to the
    speed-aware placement planner's; ``budget`` overrides ``keep``/``comm_keep``.
    """
    expect(model, ModelSpec, "model", "build one with ModelSpec.from_timm(name) or ModelSpec.vit(...)")
    check_strategy(strategy)
    check_solver(solver)
    check_plan_size(micro_batches, model.depth, model.heads)
    if backend not in MIP_BACKENDS:
        raise unknown_name("MIP backend", backend, MIP_BACKENDS)
    budget = budget or Budget(keep=keep, comm_keep=comm_keep)
    if placement is None:
        from .placement import plan_placement

        placement = plan_placement(model, cluster, micro_batches=micro_batches, micro_batch_size=micro_batch_size,
                                   keep=budget.keep or 1.0)
    skeleton = Plan.uniform(model, cluster, Op.FULL, micro_batches, micro_batch_size, placement=placement)
    if strategy == "random":  # the same knapsack, blind: random scores per micro-batch (method.md, baselines)
        scores = random_scores(model.depth, model.heads, seed=seed, micro_batches=micro_batches)
    scores = scores if scores is not None else synthetic(model.depth, model.heads, seed=seed)
    ops = STRATEGIES.get(strategy, STRATEGIES["hybrid"])
    problem = build_problem(model, cluster, skeleton, scores, budget, ops)
    solved = strategy in STRATEGIES or strategy == "random"
    meta = dict(strategy=strategy, solver=solver if solved else "baseline", seed=seed,
                keep=budget.keep, comm_keep=budget.comm_keep)
    if solved:
        solutions, seconds = timed(_solve, problem, solver, time_limit_s, gap, backend, seed)
        plan = problem.assemble([s.choice for s in solutions], **meta)
        objective = sum(s.objective for s in solutions)
        bounds = [s.bound for s in solutions]
        bound = sum(bounds) if all(b is not None for b in bounds) else None
        status = _worst([s.status for s in solutions])
    else:
        plan, seconds = timed(BASELINE_FNS[strategy], problem, random.Random(seed))
        plan = plan.with_ops(plan.ops, **meta)
        objective, bound = _objective(problem, plan), None
        status = "unbudgeted" if strategy == "full" else "baseline"
    return _report(model, cluster, problem, plan, strategy, meta["solver"], objective, bound, status, seconds)


def _solve(problem: Problem, solver: str, time_limit_s: float, gap: float, backend: str, seed: int):
    if solver == "greedy":
        return [greedy(dp) for dp in problem.devices]
    if solver == "dp":
        return [dp_two_stage(dp) for dp in problem.devices]
    total_items = sum(len(dp.items) for dp in problem.devices) or 1
    solutions = []
    for dp in problem.devices:  # warm-started from the better heuristic, so mip >= dp and greedy
        warm = max((dp_two_stage(dp), greedy(dp)), key=lambda s: s.objective).choice
        solutions.append(mip_exact(dp, time_limit_s * len(dp.items) / total_items, gap, backend, seed, warm=warm))
    return solutions


def _worst(statuses: list[str]) -> str:
    for s in ("heuristic", "feasible", "optimal"):
        if s in statuses:
            return s
    return "optimal"


def _objective(problem: Problem, plan: Plan) -> float:
    return sum(dp.objective(choice) for dp, choice in zip(problem.devices, problem.choices(plan)))


def _report(model, cluster, problem, plan, strategy, solver, objective, bound, status, seconds) -> PlanReport:
    loads, nbytes = problem.loads(plan)
    cost = CostModel(model, cluster).step(plan)
    return PlanReport(
        plan=plan, strategy=strategy, solver=solver, objective=objective, bound=bound, status=status,
        solve_time_s=seconds, load_s=tuple(loads), capacity_s=tuple(problem.capacity_s),
        comm_bytes=tuple(nbytes), capacity_bytes=tuple(problem.capacity_bytes), t_full_s=problem.t_full_s,
        compute_saving=cost.compute_saving, comm_saving=cost.comm_saving, device_names=cluster.device_names,
    )


# ---- baselines -----------------------------------------------------------------------------
def _fits(problem: Problem, plan: Plan) -> bool:
    return all(dp.fits(choice) for dp, choice in zip(problem.devices, problem.choices(plan)))


def _full(problem: Problem, rng: random.Random) -> Plan:
    return problem.plan


def _freeze(problem: Problem, rng: random.Random) -> Plan:
    """The fewest lowest blocks FORWARD_ONLY in every micro-batch that make every device fit."""
    p = problem.plan
    for frozen in range(p.depth + 1):
        grid = [[Op.FORWARD_ONLY if l < frozen else Op.FULL] * p.heads for l in range(p.depth)]
        plan = p.with_ops([grid] * p.micro_batches)
        if _fits(problem, plan):
            return plan
    raise ValueError("freeze: even every block FORWARD_ONLY exceeds the budget; raise keep or use a strategy that may SKIP")


def _layerdrop(problem: Problem, rng: random.Random) -> Plan:
    """Whole (micro-batch, block) pairs skipped in random order until every device fits."""
    p = problem.plan
    ops = [[[Op.FULL] * p.heads for _ in range(p.depth)] for _ in range(p.micro_batches)]
    order = [(m, l) for m in range(p.micro_batches) for l in range(p.depth)]
    rng.shuffle(order)
    for m, l in order:
        if _fits(problem, p.with_ops(ops)):
            break
        ops[m][l] = [Op.SKIP] * p.heads
    return p.with_ops(ops)


BASELINE_FNS: dict[str, Callable[[Problem, random.Random], Plan]] = {
    "full": _full, "freeze": _freeze, "layerdrop": _layerdrop,
}

__all__ = ["BASELINES", "DeviceSolution", "PlanReport", "SOLVERS", "STRATEGIES", "plan_step", "even_placement"]
