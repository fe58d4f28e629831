"""Plan: construction, validation, JSON and text round trips."""

import pytest
from hypothesis import given

from d2ft import Op, Plan
from d2ft.plan import even_placement
from tests.conftest import plans, star, tiny_model


@given(plans())
def test_json_round_trip_is_exact(plan):
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.meta == plan.meta


@given(plans())
def test_text_round_trip_is_exact(plan):
    again = Plan.from_text(plan.to_text())
    assert again == plan and again.meta == plan.meta


def test_text_is_readable():
    model, cluster = tiny_model(depth=2, heads=3), star(3)
    plan = Plan.uniform(model, cluster, Op.FULL, micro_batches=1, micro_batch_size=4)
    plan = plan.with_ops([[["F", "O", "S"], ["S", "S", "F"]]], strategy="hybrid")
    assert "micro-batch 0:\n  L0  F O S\n  L1  S S F\n" in plan.to_text()
    assert plan.summary() == {"F": 2, "O": 1, "S": 3}


def test_even_placement_uses_workers_round_robin():
    placement = even_placement(tiny_model(depth=2, heads=3), star(3))
    assert placement == ((1, 2, 1), (2, 1, 2))
    assert even_placement(tiny_model(depth=1, heads=2), star(1)) == ((0, 0),)


def test_validate_lists_every_problem():
    model, cluster = tiny_model(depth=2, heads=2), star(2)
    plan = Plan(["x", "y", "z"], [[0, 1, 2]], [[["F", "F", "F"]]])
    with pytest.raises(ValueError) as e:
        plan.validate(model, cluster)
    msg = str(e.value)
    assert "2 problems" in msg and "1 layers x 3 heads" in msg and "differ from cluster" in msg


def test_malformed_plans_are_rejected_with_reasons():
    with pytest.raises(ValueError) as e:
        Plan(["a"], [[0, 3], [0]], [[["F", "F"]]], micro_batch_size=0)
    msg = str(e.value)
    assert "placement[0][1] = 3 is not a device index" in msg
    assert "placement row 1 has 1 heads" in msg
    assert "micro-batch 0 has 1 layers" in msg
    assert "micro_batch_size must be a positive integer" in msg
    with pytest.raises(ValueError, match="unknown op 'X'"):
        Plan(["a"], [[0]], [[["X"]]])
    with pytest.raises(ValueError, match="line 2"):
        Plan.from_text("# d2ft plan\nbogus line\n")
    with pytest.raises(ValueError, match="missing keys \\['ops'\\]"):
        Plan.from_dict({"devices": ["a"], "placement": [[0]]})
