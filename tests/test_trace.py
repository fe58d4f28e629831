"""Trace: the shared output type round-trips and rejects nonsense."""

import pytest

from d2ft import CostModel, DeviceStats, Event, Op, Plan, Trace
from tests.conftest import star, tiny_model


def test_round_trip_with_events():
    trace = Trace(
        "simulator", 1.5, {"a": DeviceStats(1.0, 10, 20, 3e6, flop=5.0, comm_s=0.2, wait_s=0.3)},
        links={"a->b": 10}, events=[Event("a", "compute", "fwd attn L0", 0.0, 0.5, micro_batch=0, layer=0, flop=5.0)],
        meta={"plan": "x"},
    )
    assert Trace.from_json(trace.to_json()) == trace


def test_from_cost_carries_totals():
    model, cluster = tiny_model(), star(3)
    cost = CostModel(model, cluster).step(Plan.uniform(model, cluster, Op.FULL, 2, 4))
    trace = Trace.from_cost(cost)
    assert trace.comm_bytes == cost.comm_bytes
    assert trace.compute_flop == pytest.approx(cost.compute_flop)
    assert trace.step_time_s == cost.max_compute_s
    assert Trace.from_json(trace.to_json()) == trace


def test_bad_traces():
    with pytest.raises(ValueError, match="source 'guess'"):
        Trace("guess", 1.0, {})
    with pytest.raises(ValueError, match="ends"):
        Trace("simulator", 1.0, {}, events=[Event("a", "compute", "x", 2.0, 1.0)])
