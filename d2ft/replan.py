"""Re-planning during a run: each step's plan from the strategy and the scores the ranks measured.

Pure: no torch. The runtime's coordinator owns one ``Replanner`` per run; it feeds it what
every rank measured after each step (``observe``), asks whether the plan changes before
the next (``due``) and gets the new plan (``plan``). Placement and batch shape stay those
of the run's initial plan.

Scores (method.md, "Contribution scores"): s_fwd is the magnitude sum |w| normalised per
block; s_bwd is an exponential moving average of the Fisher sum (dL/dw)^2 over the steps
in which the subnet ran FULL, each normalised by its participation (FULL in k of M
micro-batches: times (M/k)^2), a subnet never yet run FULL taking its block's mean and a
block with none measured the global mean. The Fisher grid is then scaled so that its mean
equals s_fwd's mean (1 / H): the two terms of A_F = s_fwd + s_bwd are on one scale while
blocks keep their differences. Until any Fisher value is known, s_bwd = s_fwd with a
tie-break that spreads FULL round-robin over every block and micro-batch
(``d2ft.scores.spread_scores``).

Not modelled: any cost of re-planning itself in the step (it runs on the coordinator
between steps and is reported as ``replan_s``).
"""

from __future__ import annotations

import time
from typing import Sequence

from .ops import Op
from .plan import Plan
from .planner import STRATEGIES, plan_step
from .scores import Scores, ema_update, fill_block_mean, normalise_per_block, participation_scaled, spread_scores


class Replanner:
    """Decides each step's plan (module docstring).

    Args:
        spec: the model.
        cluster: the planner's view of the ranks (None only for a run of fixed plans).
        plan: the run's initial plan; its placement and batch shape are kept.
        strategy: a strategy or baseline name, or None to run ``plan`` as it is.
        solver, keep, comm_keep: as ``d2ft.planner.plan_step``.
        replan_every: re-plan every N steps after the warm-up; 0 plans once.
        full_warmup: the first N steps run all FULL.
        score_decay: the Fisher moving average's decay, in [0, 1).
        seed: seeds each step's plan as ``seed * 1_000_003 + step``.
        schedule: plans run in turn, ``steps_each`` steps each, instead of planning.
    """

    def __init__(self, spec, cluster, plan: Plan, *, strategy: str | None, solver: str = "dp", keep: float = 1.0,
                 comm_keep: float | None = None, replan_every: int = 0, full_warmup: int = 0,
                 score_decay: float = 0.9, seed: int = 0, schedule: Sequence[Plan] = (), steps_each: int = 1) -> None:
        if cluster is None and strategy is not None:
            raise ValueError(f"the job plans with strategy {strategy!r} but has no cluster")
        self.spec, self.cluster, self.strategy = spec, cluster, strategy
        self.solver, self.keep, self.comm_keep, self.seed = solver, keep, comm_keep, seed
        self.initial = plan
        self.full = plan.with_ops([[[Op.FULL] * plan.heads for _ in range(plan.depth)]] * plan.micro_batches,
                                  strategy="full", reason="warm-up")
        self.warmup, self.every, self.decay = full_warmup, replan_every, score_decay
        self.magnitude: list[list[float]] | None = None
        self.fisher: list[list[float | None]] | None = None
        self.schedule, self.steps_each = list(schedule), steps_each
        for i, other in enumerate(self.schedule):
            if other.placement != plan.placement or other.micro_batch_size != plan.micro_batch_size or \
                    other.micro_batches != plan.micro_batches:
                raise ValueError(f"scheduled plan {i} differs from the run's plan in placement or batch shape; "
                                 "a run keeps one placement and one batch shape")

    def observe(self, records: list[tuple[int, int, float, float | None]], plan: Plan) -> None:
        """Takes every rank's (layer, head, magnitude, fisher-or-None) of the step just run with ``plan``.

        Each Fisher sum is normalised by the subnet's participation in ``plan`` (FULL in k of M
        micro-batches: times (M/k)^2, ``d2ft.scores.participation_scaled``) before it enters the
        moving average."""
        L, H = self.spec.depth, self.spec.heads
        mag = [[0.0] * H for _ in range(L)]
        new: list[list[float | None]] = [[None] * H for _ in range(L)]
        for l, h, m, f in records:
            mag[l][h], new[l][h] = m, f
        counts = [[sum(plan.ops[m][l][h] is Op.FULL for m in range(plan.micro_batches)) for h in range(H)]
                  for l in range(L)]
        self.magnitude = mag
        self.fisher = ema_update(self.fisher, participation_scaled(new, counts, plan.micro_batches), self.decay)

    def scores(self) -> Scores:
        """The scores the next plan is solved from (module docstring)."""
        H = self.spec.heads
        fwd = normalise_per_block(self.magnitude) if self.magnitude else \
            [[1.0 / H] * H for _ in range(self.spec.depth)]
        known = [v for row in (self.fisher or []) for v in row if v is not None]
        if not known or sum(known) <= 0:
            return spread_scores(fwd, self.initial.micro_batches)
        grid = fill_block_mean(self.fisher)
        mean = sum(map(sum, grid)) / (len(grid) * H)
        bwd = [[v / mean / H for v in row] for row in grid] if mean > 0 else fwd
        return Scores(fwd, bwd)

    def due(self, step: int) -> str | None:
        """Why the plan changes before ``step`` ("warm-up", "initial", "re-plan", "schedule"), or None."""
        if self.schedule:
            return "schedule" if step % self.steps_each == 0 and step // self.steps_each < len(self.schedule) else None
        if step < self.warmup:
            return "warm-up" if step == 0 else None
        if self.strategy is None or self.strategy in ("full", "freeze"):
            return "initial" if step == self.warmup else None
        if step == self.warmup:
            return "initial"
        return "re-plan" if self.every and (step - self.warmup) % self.every == 0 else None

    def plan(self, step: int, reason: str) -> tuple[Plan, dict]:
        """The plan from ``step`` on, and what making it took (solve time, objective, status, scores)."""
        if reason == "schedule":
            return self.schedule[step // self.steps_each], {"solve_time_s": 0.0}
        if reason == "warm-up":
            return self.full, {"solve_time_s": 0.0}
        if self.strategy is None:  # a plan given as a file: run it as it is
            return self.initial, {"solve_time_s": 0.0}
        p = self.initial
        scores = self.scores() if self.strategy in STRATEGIES else None
        t0 = time.perf_counter()
        report = plan_step(self.spec, self.cluster, self.strategy, self.solver, keep=self.keep,
                           comm_keep=self.comm_keep, micro_batches=p.micro_batches,
                           micro_batch_size=p.micro_batch_size, scores=scores,
                           placement=p.placement, seed=self.seed * 1_000_003 + step)
        info = {"solve_time_s": report.solve_time_s, "replan_s": time.perf_counter() - t0,
                "objective": report.objective, "status": report.status}
        if scores is not None:
            info["scores"] = scores.to_dict()
        return report.plan.with_ops(report.plan.ops, reason=reason), info

    def state_dict(self) -> dict:
        return {"magnitude": self.magnitude, "fisher": self.fisher}

    def load_state_dict(self, state: dict) -> None:
        self.magnitude, self.fisher = state["magnitude"], state["fisher"]


__all__ = ["Replanner"]
