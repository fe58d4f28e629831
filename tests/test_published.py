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
    assert final["set"] == "all" and final["rows"] == len(published.ROWS) and 0 <= final["within_10pct"] <= 1


def test_the_kernel_model_is_fitted_on_calibration_rows_only(capsys):
    """The per-kernel model's constants come from the calibration rows: changing a validation row's
    measurement leaves them as they are; and it prices every row."""
    rows, sets = published.ROWS, published.split(published.ROWS)
    fitted = published.fit_kernels(rows, sets)
    i = sets.index("validation")
    changed = list(rows)
    changed[i] = (*rows[i][:6], rows[i][6] * 10, rows[i][7])
    assert published.fit_kernels(changed, sets) == fitted
    assert all(0.3 <= e <= 1.0 and 0 <= t <= 30e-6 for e, t in fitted.values())
    assert published.main(["--model", "kernels"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "fitted" in lines[0] and lines[-1]["model_kind"] == "kernels" and lines[-1]["rows"] == len(rows)
