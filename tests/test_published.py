"""benchmarks/published.py: published GPU throughputs held against the cost model (rows, split, output)."""

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("published", Path(__file__).resolve().parents[1] / "benchmarks" / "published.py")
published = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(published)


def test_the_rows_cover_what_the_benchmark_promises():
    rows = published.ROWS
    sources = {r[0].split(" (")[0].split(" results/")[0] for r in rows}
    assert len(sources) >= 3 and {r[1] for r in rows} >= {"rtx-3090", "rtx-4090", "v100-sxm2-32gb"}
    assert {r[2] for r in rows} == {"train", "infer"}
    assert {published.size_class(r[3]) for r in rows} == {"Ti/S", "B", "L/H"}
    assert any("huge" in r[3] for r in rows) and any("tiny" in r[3] for r in rows)
    sets = published.split(rows)
    for key in {(r[0], r[1], r[2]) for r in rows}:  # every group is split about evenly
        mine = [s for r, s in zip(rows, sets) if (r[0], r[1], r[2]) == key]
        assert abs(mine.count("calibration") - mine.count("validation")) <= 1


def test_every_row_is_priced_and_summarised(capsys):
    assert published.main(["--set", "validation"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = [r for r in lines if "model" in r]
    assert rows and all(r["set"] == "validation" and r["predicted_samples_per_s"] > 0 for r in rows)
    sets = {(r["set"], r.get("mode")) for r in lines if "model" not in r}
    assert {("calibration", "train"), ("validation", "infer"), ("all", None)} <= sets
    final = lines[-1]
    scored = [s for s in published.split(published.ROWS) if s != "reference"]
    assert final["set"] == "all" and final["rows"] == len(scored) and 0 <= final["within_10pct"] <= 1
    assert scored.count("calibration") >= 20 and scored.count("validation") >= 20


def test_the_catalogue_constants_are_the_fit_of_the_calibration_rows_only(capsys):
    """The kernel model's constants in the catalogue are what ``--fit`` gets from the calibration rows:
    changing a validation row's measurement leaves them as they are."""
    from d2ft.hardware import KERNEL_FITS

    rows, sets = published.ROWS, published.split(published.ROWS)
    fitted = published.fit_kernels(rows, sets)
    assert fitted == KERNEL_FITS
    i = sets.index("validation")
    changed = list(rows)
    changed[i] = (*rows[i][:6], rows[i][6] * 10, rows[i][7])
    assert published.fit_kernels(changed, sets) == fitted
    assert all(0.3 <= e <= 1.0 and 0 <= t <= 30e-6 for e, t in fitted.values())
    assert published.main(["--fit", "--set", "calibration"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["catalogue_is_the_fit"] is True and lines[-1]["model_kind"] == "kernels"


def test_the_fit_prices_rows_as_the_cost_model_does():
    """The fit's fast table of a row's kernels gives the cost model's own prediction, at the catalogue's
    constants and at others, so the fitted constants mean the same in d2ft.CostModel."""
    import pytest

    for row in published.ROWS[::5]:
        spec = published.row_device(row)
        assert published.predict_table(row, spec.efficiency, spec.kernel_launch_s) == pytest.approx(
            published.predict(row, spec), rel=1e-9)
        other = published.row_device(row, efficiency=0.5, kernel_launch_s=7e-6)
        assert published.predict_table(row, 0.5, 7e-6) == pytest.approx(published.predict(row, other), rel=1e-9)


def test_the_roofline_model_is_the_catalogue_before_the_kernel_model(capsys):
    assert published.main(["--model", "roofline", "--set", "validation"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(r["model_kind"] == "roofline" for r in lines)
    row = published.ROWS[0]
    assert published.row_device(row, "roofline").sm_count is None
    assert published.predict(row, published.row_device(row, "roofline")) != published.predict(row, published.row_device(row))


def test_peak_memory_is_held_against_the_published_batch_brackets(capsys):
    """Each training row below timm's first batch gives a bracket: its batch fit the GPU, the one tried
    before it did not. The records say whether the prediction agrees and by what factor it would."""
    assert published.main(["--memory"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows, total = [r for r in lines if "model" in r], lines[-1]
    assert rows and all(r["fails_batch"] == published.DECAY[published.DECAY.index(r["fits_batch"]) - 1] for r in rows)
    for r in rows:
        assert r["predicted_peak_fails_bytes"] > r["predicted_peak_fits_bytes"] > r["framework_bytes"] > 0
        assert r["agrees"] == (r["predicted_peak_fits_bytes"] <= r["memory_bytes"] < r["predicted_peak_fails_bytes"])
        assert r["scale_low"] < r["scale_high"]
    assert total["rows"] == len(rows) and total["agree"] == sum(r["agrees"] for r in rows)
    by_set = {r["set"]: r for r in lines if "model" not in r and r["set"] != "all"}
    assert by_set["calibration"]["rows"] + by_set["validation"]["rows"] == len(rows)
    assert total["catalogue_is_the_fit"] is True


def test_the_framework_memory_is_the_fit_of_the_calibration_brackets_only():
    """The catalogue's framework memory is what the calibration brackets allow (the middle of the values
    that make the most agree); moving a validation bracket leaves it as it is."""
    from d2ft.hardware import FRAMEWORK_FITS

    records = published.memory_records(published.ROWS, published.split(published.ROWS))
    fitted = published.fit_framework(records)
    assert fitted == FRAMEWORK_FITS
    changed = [{**r, "memory_bytes": r["memory_bytes"] * 3} if r["set"] == "validation" else r for r in records]
    assert published.fit_framework(changed) == fitted
    calib = [r for r in records if r["set"] == "calibration"]
    assert sum(r["agrees"] for r in calib) == len(calib)  # at the fit every calibration bracket agrees
