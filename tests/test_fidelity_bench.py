"""benchmarks/fidelity.py's summary of a group: errors, rank agreement and bytes, by hand."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("fidelity", Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity.py")
fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fidelity)


def _row(pred, meas, rank_pred, rank_meas, wait_pred, wait_meas, nbytes=(10, 10)):
    return {"predicted_step_time_s": pred, "measured_step_time_s": meas, "rank_predicted_compute_s": rank_pred,
            "rank_measured_compute_s": rank_meas, "rank_predicted_wait_s": wait_pred, "rank_measured_wait_s": wait_meas,
            "predicted_sent_bytes": nbytes[0], "measured_sent_bytes": nbytes[1]}


def test_a_group_line_by_hand():
    rows = [_row(0.9, 1.0, [0.5, 0.5], [0.5, 0.4], [0.4, 0.4], [0.5, 0.6]),   # step -10%; compute 0%, +25%
            _row(2.4, 2.0, [1.0, 1.0], [1.0, 1.0], [1.4, 1.4], [1.0, 1.0]),   # step +20%; compute 0%, 0%
            _row(3.0, 3.0, [2.0, 1.0], [1.0, 1.0], [1.0, 2.0], [2.0, 2.0])]   # step 0%; compute +100%, 0%
    line = fidelity.summarise("r2-b16", rows)
    assert line["group"] == "r2-b16" and line["plans"] == 3
    assert line["median_abs_step_error"] == pytest.approx(0.1) and line["worst_abs_step_error"] == pytest.approx(0.2)
    assert line["median_signed_step_error"] == pytest.approx(0.0)
    assert line["p90_abs_step_error"] == pytest.approx(0.18)  # between 0.1 and 0.2 at 0.9 of the way
    assert line["median_abs_compute_error"] == pytest.approx(0.0) and line["p90_abs_compute_error"] == pytest.approx(0.625)
    # wait errors (-0.1, -0.2, +0.4, +0.4, -1.0, 0.0) over the median measured step (2.0)
    assert line["median_abs_wait_error"] == pytest.approx(0.3 / 2.0) and line["median_signed_wait_error"] == pytest.approx(-0.05 / 2)
    assert line["spearman"] == pytest.approx(1.0) and line["bytes_exact"] is True
    rows[0]["measured_sent_bytes"] = 11
    assert fidelity.summarise("all", rows)["bytes_exact"] is False


def test_spearman_and_unknown_groups(capsys):
    assert fidelity.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(SystemExit):
        fidelity.main(["--groups", "r9-b16"])
    assert "unknown groups ['r9-b16']" in capsys.readouterr().err


def test_before_figures_and_the_profile_as_calibrate_wrote_it_before_hosts(tmp_path):
    import json
    import os

    from d2ft.cluster import Cluster, Host
    from runtime.prepare import LOCAL_CPU, LOOPBACK

    rows = [{**_row(1.0, 1.0, [1], [1], [0], [0]), "before_step_time_s": b} for b in (0.5, 0.8, 1.1)]
    rows[0]["rerun_step_time_s"] = 1.3
    line = fidelity.summarise("r4-b16", rows)
    assert line["before_median_abs_step_error"] == pytest.approx(0.2)
    assert "rerun_median_abs_step_difference" not in line  # only where every plan was measured twice
    for r, again in zip(rows, (1.3, 0.9, 1.05)):
        r["rerun_step_time_s"] = again
    line = fidelity.summarise("r4-b16", rows)
    assert line["rerun_median_abs_step_difference"] == pytest.approx(0.1)
    assert line["rerun_median_signed_step_difference"] == pytest.approx(0.05)
    assert "before_median_abs_step_error" not in fidelity.summarise("r4-b16", [_row(1.0, 1.0, [1], [1], [0], [0])])
    # The same plans on the roofline profiles of before the kernel model: figures of their own, where every plan has one.
    for r, old in zip(rows, (1.5, 1.2, 0.6)):
        r["roofline_step_time_s"] = old
    line = fidelity.summarise("r4-b16", rows)
    assert line["roofline_median_abs_step_error"] == pytest.approx(0.4) and "roofline_spearman" in line
    assert "roofline_median_abs_step_error" not in fidelity.summarise("r4-b16", rows + [_row(1.0, 1.0, [1], [1], [0], [0])])
    # A 4-rank profile with a host of 2 cores and every rank 1.25x slower for computing together ...
    alone = LOCAL_CPU
    names = [f"rank{i}" for i in range(4)]
    now = Cluster.star([(n, alone.scaled(1.25)) for n in names], LOOPBACK).with_hosts(
        [Host("vm", tuple(names), 2)])
    path = tmp_path / "profile-r4.json"
    path.write_text(now.to_json())
    path.with_suffix(".raw.json").write_text(json.dumps({"contention_slowdown": 1.25, "cores": 2}))
    # ... was written as ranks at their speed alone, workers slowed by workers / cores, and no host.
    before = fidelity.previous_profile(path)
    share = max(3 / len(os.sched_getaffinity(0)), 1.0)
    assert before.hosts == () and before.device(0).peak_flops == pytest.approx(alone.peak_flops)
    assert before.device(3).peak_flops == pytest.approx(alone.peak_flops / share)
    assert before.device(0).name == now.device(0).name
