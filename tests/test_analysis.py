"""Analysis frames: a hand-written trace becomes the documented rows and columns."""

import pytest

pd = pytest.importorskip("pandas")

from analysis import devices_frame, events_frame  # noqa: E402
from d2ft import DeviceStats, Event, Trace  # noqa: E402


def test_frames_from_a_hand_written_trace():
    trace = Trace("runtime", 2.0, {"a": DeviceStats(1.5, 10, 20, 3e6, flop=7.0, comm_s=0.25, wait_s=0.25),
                                   "b": DeviceStats(0.5, 20, 10, 1e6)},
                  events=[Event("a", "compute", "fwd attn L0", 0.0, 1.5, micro_batch=0, layer=0, flop=7.0),
                          Event("a->b", "transfer", "fwd attn L0", 1.5, 1.75, micro_batch=0, layer=0, nbytes=10)])
    devices = devices_frame(trace)
    assert list(devices["device"]) == ["a", "b"]
    assert devices.set_index("device").loc["a", "busy_s"] == 1.5
    assert (devices["step_time_s"] == 2.0).all() and (devices["source"] == "runtime").all()
    events = events_frame(trace)
    assert events["duration_s"].tolist() == [1.5, 0.25]
    assert events.loc[1, "nbytes"] == 10 and events.loc[0, "flop"] == 7.0
    assert events_frame(Trace("simulator", 0.0, {})).empty


def test_compare_a_trace_with_itself_and_with_a_measurement():
    from analysis import compare, rank_agreement, savings

    t = Trace("simulator", 2.0, {"a": DeviceStats(1.5, 10, 20, 0), "b": DeviceStats(0.5, 20, 10, 0)})
    same = compare(t, t)
    assert (same["abs_error"] == 0).all() and (same["rel_error"].fillna(0) == 0).all()
    assert len(same) == 1 + 2 * 3
    measured = Trace("runtime", 2.5, {"a": DeviceStats(1.0, 10, 20, 0), "b": DeviceStats(0.5, 20, 10, 0)})
    rows = compare(t, measured).set_index(["device", "quantity"])
    assert rows.loc[("step", "step_time_s"), "rel_error"] == pytest.approx(-0.2)
    assert rows.loc[("a", "busy_s"), "rel_error"] == pytest.approx(0.5)
    full = Trace("runtime", 4.0, {"a": DeviceStats(2.0, 20, 40, 0), "b": DeviceStats(1.0, 40, 20, 0)})
    s = savings(t, full, measured, full).set_index("quantity")
    assert s.loc["comm_bytes", "error_points"] == pytest.approx(0.0)
    assert s.loc["compute_s", "predicted_saving"] == pytest.approx(1 / 3)
    assert rank_agreement([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    assert rank_agreement([3, 1, 2], [10, 30, 20]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="different devices"):
        compare(t, Trace("runtime", 1.0, {"a": DeviceStats(1, 1, 1, 0)}))


def test_plan_and_sweep_frames(tmp_path):
    from analysis import plan_frame, sweep_frame
    from d2ft import Op, Plan

    plan = Plan(["c", "w"], [[1, 0]], [[[Op.FULL, Op.SKIP]], [[Op.FORWARD_ONLY, Op.FULL]]], 2)
    frame = plan_frame(plan)
    assert len(frame) == 2 * 1 * 2 and list(frame["op"]) == ["F", "S", "O", "F"]
    assert list(frame["device_name"]) == ["w", "c", "w", "c"]
    records = [{"strategy": "full", "step_time_s": 1.0, "error": ""}, {"strategy": "hybrid", "step_time_s": 0.6,
                                                                       "error": "no plan fits"}]
    pd.DataFrame(records).to_csv(tmp_path / "s.csv", index=False)
    for source in (records, tmp_path / "s.csv"):
        s = sweep_frame(source)
        assert list(s["strategy"]) == ["full", "hybrid"] and s["error"].isna().tolist() == [True, False]
