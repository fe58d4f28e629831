"""The learning study's own arithmetic (benchmarks/learning.py): epochs at the plateau, paired intervals,
coverage from a run's plans, and its section of the results page from hand-written records."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("learning_study", Path(__file__).resolve().parents[1] / "benchmarks" / "learning.py")
learning = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(learning)


def test_epochs_are_chosen_at_the_validation_plateau():
    assert learning.plateau([0.5, 0.7, 0.8, 0.85, 0.86, 0.86, 0.87, 0.86]) == 7
    assert learning.plateau([0.9]) == 1
    assert learning.plateau([0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.97, 0.99]) == 8  # still climbing: the last


def test_paired_differences_with_a_t_interval():
    m, hw = learning.paired([0.01, 0.02, 0.03])
    assert m == pytest.approx(0.02) and hw == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    assert math.isnan(learning.paired([0.05])[1])


def test_coverage_weights_each_plan_by_the_steps_it_ran(tmp_path):
    plans = [{"step": 0, "plan": {"ops": ["FO/SS", "FF/SS"]}},  # steps 0-2
             {"step": 3, "plan": {"ops": ["OO/FF", "OO/FF"]}}]  # step 3
    (tmp_path / "plans.jsonl").write_text("".join(json.dumps(p) + "\n" for p in plans))
    grid = learning.coverage(tmp_path, steps=4)
    assert grid == [[pytest.approx(0.75), pytest.approx(0.375)], [pytest.approx(0.25), pytest.approx(0.25)]]


def test_the_learning_section_tabulates_paired_differences_and_goals(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")

    def rec(stage, arm, seed, top1, **kw):
        return {"section": "learning", "name": f"{stage}-{arm}-{seed}", "stage": stage, "combo": "A",
                "backbone": "fmnist0-4", "task": "fmnist5-9", "arm": arm, "seed": seed, "top1": top1,
                "epochs": 10.0, "curve": [[1.0, top1 - 0.1], [10.0, top1]], "coverage": [[0.5, 1.0], [0.0, 0.25]],
                "predicted_compute_saving": 0.0 if "full" in arm else 0.4, "predicted_comm_saving": 0.3,
                "skip_rescale": False, **kw}

    recs = [rec("epochs", "full", 0, 0.9, curve=[[e, 0.8 + 0.01 * min(e, 5)] for e in range(1, 11)])]
    for seed, (full, hybrid, rnd) in enumerate([(0.90, 0.895, 0.85), (0.92, 0.91, 0.86)]):
        recs += [rec("arm", "full", seed, full), rec("arm", "hybrid", seed, hybrid), rec("arm", "random", seed, rnd)]
    lines, goals = learning.markdown(recs, tmp_path)
    text = "\n".join(lines)
    assert "Epochs: 6" in text and "-0.75 [" in text  # hybrid - full: -0.5 and -1.0 points
    assert (tmp_path / "learning-coverage-A.png").exists()
    by_goal = {g: met for g, _, met in goals}
    assert by_goal["hybrid at -40% compute within 1 point of full (fmnist0-4 -> fmnist5-9)"] is True
    assert by_goal["hybrid ahead of random by 2 points (fmnist0-4 -> fmnist5-9)"] is True


def test_every_arm_builds_its_job():
    """Each arm of the study is a valid job of its combination; the probe runs every subnet FORWARD_ONLY
    (only the classifier trains). The probe's job once failed at construction, after hours of other arms."""
    from d2ft.ops import Op

    for arm in learning.ARMS:
        job = learning._job("A", arm, 0, 0.01, "fashion-mnist-5to9", f"A-{arm}-s0", skip_rescale=False)
        if arm == "probe":
            job = learning._probe(job)
            assert job.strategy is None and {op for grid in job.plan.ops for row in grid for op in row} == {Op.FORWARD_ONLY}
        assert job.emulate_ranks == 4 and (job.lora is not None) == (arm in ("lora-full", "lora-hybrid", "probe"))


def test_the_reading_of_the_misses_follows_the_figures():
    close = {"A": {"full": -0.012, "full-equal": -0.006, "random": 0.025, "starved": [11, 13]}}
    text = learning._reading(close)[2]
    assert "-1.2 points from full" in text and "adds little" in text and "11 to 13 of the 24" in text
    assert "exploration" in text
    apart = {"A": {"full": -0.012, "full-equal": 0.05, "random": 0.01, "starved": [0, 1]}}
    text = learning._reading(apart)[2]
    assert "adds little" not in text and "far better than chance" not in text and "exploration" not in text
    assert learning._reading({"A": {"full": 0.0, "starved": [3]}}) == []  # an arm missing: no reading


def test_a_difference_on_the_goal_boundary_meets_it_despite_float32_top1(tmp_path):
    """Top-1 is a ratio of counts stored from float32: a mean difference of -1.00 points is within 1 point."""
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    import numpy as np

    def rec(stage, arm, seed, top1):
        return {"section": "learning", "name": f"{stage}-{arm}-{seed}", "stage": stage, "combo": "B",
                "backbone": "fmnist0-4", "task": "digits", "arm": arm, "seed": seed, "top1": float(np.float32(top1)),
                "epochs": 10.0, "curve": [[1.0, 0.5], [10.0, top1]], "coverage": [[1.0]],
                "predicted_compute_saving": 0.4, "predicted_comm_saving": 0.3, "skip_rescale": False}

    recs = [rec("epochs", "full", 0, 0.9)]
    for seed, (full, hybrid) in enumerate([(0.955, 0.950), (0.959, 0.951), (0.953, 0.936)]):  # the study's B seeds
        recs += [rec("arm", "full", seed, full), rec("arm", "hybrid", seed, hybrid)]
    goals = {g: met for g, _, met in learning.markdown(recs, tmp_path)[1]}
    assert goals["hybrid at -40% compute within 1 point of full (fmnist0-4 -> digits)"] is True
