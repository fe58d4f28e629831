"""The pure re-planner (d2ft.replan): when plans change, and what it solves them from. No torch."""

import subprocess
import sys

from d2ft import Op, Plan
from d2ft.replan import Replanner
from tests.conftest import star, tiny_model


def _replanner(**kw) -> Replanner:
    model, cluster = tiny_model(depth=2, heads=2), star(2)
    plan = Plan.uniform(model, cluster, Op.FULL, 2, 2, placement=[[1, 1], [0, 1]])
    return Replanner(model, cluster, plan, **kw)


def test_plans_change_at_warm_up_initial_and_every_replan():
    r = _replanner(strategy="hybrid", keep=0.6, replan_every=2, full_warmup=1)
    assert [r.due(s) for s in range(6)] == ["warm-up", "initial", None, "re-plan", None, "re-plan"]
    static = _replanner(strategy="freeze", keep=0.6, replan_every=1)
    assert [static.due(s) for s in range(3)] == ["initial", None, None]


def test_scores_follow_what_the_ranks_measured():
    r = _replanner(strategy="hybrid", keep=0.6, replan_every=1)
    assert r.scores().backward == r.scores().forward  # nothing measured: s_bwd = s_fwd
    r.observe([(0, 0, 1.0, 4.0), (0, 1, 3.0, None), (1, 0, 2.0, 1.0), (1, 1, 2.0, 1.0)])
    s = r.scores()
    assert list(s.forward[0]) == [0.25, 0.75] and list(s.forward[1]) == [0.5, 0.5]
    # (0, 1) never ran FULL: it takes its block's mean (4.0); the grid is scaled to mean 1/H.
    assert s.backward[0][0] == s.backward[0][1] > s.backward[1][0] == s.backward[1][1]
    plan, info = r.plan(1, "re-plan")
    assert plan.placement == r.initial.placement and plan.meta["reason"] == "re-plan"
    assert info["scores"] == s.to_dict() and info["solve_time_s"] >= 0


def test_the_replanner_imports_no_torch_and_runs_a_given_plan_as_it_is():
    code = "import sys, d2ft.replan; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    r = _replanner(strategy=None)
    assert r.plan(0, "initial")[0] is r.initial
