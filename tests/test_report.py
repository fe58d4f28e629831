"""Run directories as frames, and the report: hand-written runs with known numbers."""

import json

import pytest

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from analysis.report import write_report  # noqa: E402
from analysis.runs import read_run, runs_frame  # noqa: E402
from d2ft import Op, Plan  # noqa: E402
from d2ft.app.cli import main  # noqa: E402


def _plan(ops):
    return Plan(["rank0", "rank1"], [[1, 1], [1, 0]], [[[Op(o) for o in row] for row in grid] for grid in ops], 4)


def _write_run(folder, strategy, compute, sent, top1, plans, seed=0, step_scale=1.0):
    """A run of 4 steps whose every number is known: compute and bytes per step, top-1 at the end."""
    folder.mkdir(parents=True)
    job = {"model": "vit_tiny_patch16_224", "model_kwargs": {}, "data": "mnist-digits", "strategy": strategy,
           "keep": 0.6, "steps": 4, "seed": seed, "lr": 1e-3, "plan": plans[0].to_dict(), "coordinator": 0}
    (folder / "job.json").write_text(json.dumps(job))
    lines = []
    for step in range(4):
        devices = [{"name": f"rank{r}", "busy_s": compute / 2, "sent_bytes": sent // 2, "recv_bytes": sent // 2,
                    "comm_s": 0.001, "wait_s": 0.002, "wall_s": 0.1, "peak_memory_bytes": 1000,
                    "predicted_compute_s": compute / 2 * 1.1, "predicted_sent_bytes": sent // 2,
                    "predicted_recv_bytes": sent // 2} for r in range(2)]
        line = {"step": step, "loss": 2.0 - 0.1 * step, "lr": 1e-3, "plan_index": 0, "n_full": 3, "n_forward_only": 1,
                "n_skip": 0, "step_time_s": step_scale * 0.1 * compute / 0.2, "measured_compute_s": compute,
                "measured_sent_bytes": sent, "predicted_compute_s": 1.1 * compute, "predicted_sent_bytes": sent,
                "full_compute_s": 0.22, "full_sent_bytes": 1000, "predicted_compute_saving": 1 - 1.1 * compute / 0.22,
                "predicted_comm_saving": 1 - sent / 1000, "devices": devices}
        if step == 3:
            line["top1"] = top1
        lines.append(json.dumps(line))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "plans.jsonl").write_text("".join(
        json.dumps({"step": s, "index": i, "reason": "re-plan", "plan": p.to_dict()}) + "\n"
        for i, (s, p) in enumerate(zip((0, 2), plans))))


@pytest.fixture()
def runs(tmp_path):
    full = _plan([["FF", "FF"]])
    _write_run(tmp_path / "runs" / "full", "full", 0.2, 1000, 0.80, [full])
    _write_run(tmp_path / "runs" / "hybrid", "hybrid", 0.12, 600, 0.79, [_plan([["FO", "SF"]]), _plan([["OF", "FS"]])])
    return tmp_path / "runs"


def test_frames_and_savings(runs):
    full, hybrid = read_run(runs / "full"), read_run(runs / "hybrid")
    assert len(hybrid.steps) == 4 and list(hybrid.steps["step"]) == [0, 1, 2, 3]
    assert hybrid.final_top1 == 0.79 and hybrid.steps["top1"].isna().sum() == 3
    assert set(hybrid.devices["device"]) == {"rank0", "rank1"} and len(hybrid.devices) == 8
    assert [s for s, _ in hybrid.plans] == [0, 2] and hybrid.label == "hybrid keep 0.6" and full.label == "full"
    table = runs_frame([full, hybrid], reference=full).set_index("label")
    assert table.loc["hybrid keep 0.6", "measured_compute_saving"] == pytest.approx(0.4)
    assert table.loc["hybrid keep 0.6", "measured_comm_saving"] == pytest.approx(0.4)
    assert table.loc["hybrid keep 0.6", "predicted_compute_saving"] == pytest.approx(0.4)
    assert table.loc["full", "measured_compute_saving"] == 0 and table["bytes_exact"].all()


def test_report_embeds_every_figure(runs, tmp_path, capsys):
    import pandas as pd

    sweep = tmp_path / "sweep.csv"
    pd.DataFrame({"strategy": ["full", "full", "hybrid", "hybrid"], "link_bandwidth": [1e6, 1e9, 1e6, 1e9],
                  "step_time_s": [2.0, 1.0, 1.0, 0.6], "compute_saving": [0, 0, 0.4, 0.4], "error": [None] * 4}
                 ).to_csv(sweep, index=False)
    assert main(["report", str(runs), "--sweep", str(sweep), "--out", str(tmp_path / "rep"), "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)
    html = open(paths["html"]).read()
    md = open(paths["markdown"]).read()
    figures = sorted((tmp_path / "rep" / "figures").glob("*.png"))
    names = {p.stem for p in figures}
    assert {"training", "accuracy-compute", "accuracy-comm", "op-mix", "device-loads", "sweep-step"} <= names
    assert all(p.stat().st_size > 1000 and p.with_suffix(".svg").exists() for p in figures)
    assert html.count("data:image/png;base64,") == len(figures)  # self-contained: every figure embedded
    for name in names:
        assert f"figures/{name}.png" in md
    assert "| hybrid keep 0.6 | 79.00 | -1.00 |" in md  # top-1 and its distance from full, in points


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    (tmp_path / "job.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("{oops\n")
    assert main(["report", str(tmp_path)]) == 2
    assert "line 1 is not JSON" in capsys.readouterr().err


def test_single_run_predictions(runs, tmp_path):
    import pandas as pd

    fidelity = pd.DataFrame({"plan": [f"p{i}" for i in range(4)], "predicted_step_time_s": [0.1, 0.2, 0.3, 0.4],
                             "measured_step_time_s": [0.11, 0.19, 0.33, 0.38]})
    html, md = write_report(runs / "hybrid", tmp_path / "one", predicted_step_s={"hybrid keep 0.6": 0.05},
                            fidelity=fidelity)
    text = md.read_text()
    assert "5 plans: median absolute step-time error" in text and "Spearman rank agreement" in text


def test_seeds_get_an_interval_and_inconsistent_timings_a_warning(tmp_path):
    """Two seeds of one configuration: mean top-1 and its 95% interval; one of them 50% slower per step (a
    loaded machine): the report says so. A single-seed report says it is one seed."""
    full = _plan([["FF", "FF"]])
    _write_run(tmp_path / "one" / "full", "full", 0.2, 1000, 0.80, [full])
    _write_run(tmp_path / "one" / "hybrid", "hybrid", 0.12, 600, 0.79, [_plan([["FO", "SF"]])])
    _, md = write_report(tmp_path / "one")
    assert "One seed per configuration" in md.read_text() and "Across seeds" not in md.read_text()
    for seed, top1, scale in ((0, 0.78, 1.0), (1, 0.80, 1.5)):
        _write_run(tmp_path / "two" / f"hybrid-s{seed}", "hybrid", 0.12, 600, top1, [_plan([["FO", "SF"]])],
                   seed=seed, step_scale=scale)
    _, md = write_report(tmp_path / "two")
    text = md.read_text()
    assert "Across seeds" in text and "| hybrid keep 0.6 | 2 | 79" in text
    assert "+- 12.71" in text  # t(0.975, 1 df) 12.706 x sd 0.01414 / sqrt 2 = 0.1271
    assert "measured median steps from 60 ms to 90 ms (50% apart)" in text
