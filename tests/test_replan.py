"""The pure re-planner (d2ft.replan): when plans change, and what it solves them from. No torch."""

import subprocess
import sys

import pytest

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
    first = r.scores()  # nothing measured: s_fwd uniform, s_bwd the round-robin prior
    assert [sorted(row) for row in first.backward[0]] == [[0.4, 4.0]] * 2
    r.observe([(0, 0, 1.0, 4.0), (0, 1, 3.0, None), (1, 0, 2.0, 1.0), (1, 1, 2.0, 1.0)], r.full)
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


def test_fisher_is_normalised_by_participation():
    """A subnet FULL in 1 of 2 micro-batches with Fisher f scores as one FULL in both with 4 f."""
    r = _replanner(strategy="hybrid", keep=0.6, replan_every=1)
    F, S = Op.FULL, Op.SKIP
    ran = r.full.with_ops([[[F, F], [F, F]], [[S, F], [F, F]]])  # (0, 0) FULL in micro-batch 0 only
    r.observe([(0, 0, 1.0, 1.0), (0, 1, 1.0, 4.0), (1, 0, 1.0, 4.0), (1, 1, 1.0, 4.0)], ran)
    s = r.scores()
    assert s.backward[0][0] == s.backward[0][1] == s.backward[1][0]


def test_a_block_with_no_measured_subnet_is_not_starved():
    """Only block 0 measured: block 1 takes the global mean, not zero, and a re-plan trains it."""
    r = _replanner(strategy="hybrid", keep=0.6, replan_every=1)
    r.observe([(0, 0, 1.0, 2.0), (0, 1, 1.0, 2.0), (1, 0, 1.0, None), (1, 1, 1.0, None)], r.full)
    s = r.scores()
    assert s.backward[1][0] == s.backward[1][1] == s.backward[0][0] > 0
    plan, _ = r.plan(1, "re-plan")
    assert any(plan.ops[m][1][h] is Op.FULL for m in range(plan.micro_batches) for h in range(plan.heads))


@pytest.mark.parametrize("strategy", ["hybrid", "backward", "shortcut"])
@pytest.mark.parametrize("overhead", [0.0, 1e-5])
def test_the_first_plan_spreads_full_over_every_block(strategy, overhead):
    """With no warm-up and no measured score, the first plan at keep 0.6 trains every block (before:
    ties went by item order and the last blocks never ran FULL): in every micro-batch, and in some
    micro-batch where a per-task overhead (10 times a subnet's compute) makes concentrating FULL in
    few blocks cheaper and the budget cannot afford a FULL head in every block of every micro-batch."""
    from d2ft import Cluster, LinkSpec
    from tests.conftest import simple_device

    model = tiny_model(depth=6, heads=4)
    cluster = Cluster.star([("d0", simple_device("d", overhead=overhead)), ("d1", simple_device("d", overhead=overhead))],
                           LinkSpec("l", 1e9, 0.0))
    plan = Plan.uniform(model, cluster, Op.FULL, 2, 8, placement=[[1] * 4] * 6)
    r = Replanner(model, cluster, plan, strategy=strategy, keep=0.6, replan_every=1)
    first, _ = r.plan(0, r.due(0))
    trains = [[Op.FULL in first.ops[m][l] for l in range(first.depth)] for m in range(first.micro_batches)]
    assert all(any(col) for col in zip(*trains)), first.to_dict()["ops"]
    if overhead == 0:
        assert all(map(all, trains)), first.to_dict()["ops"]
