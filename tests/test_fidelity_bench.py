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
