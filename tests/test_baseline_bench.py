"""benchmarks/baseline.py: two commits' speed benchmarks side by side (a real git worktree, real runs)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("baseline_bench", ROOT / "benchmarks" / "baseline.py")
baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(baseline)


def _in_a_git_checkout() -> bool:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode == 0


@pytest.mark.skipif(not _in_a_git_checkout(), reason="needs the repository's git history (an installed copy has none)")
def test_the_planner_benchmark_of_two_commits_runs_side_by_side_and_leaves_no_worktree(capsys):
    before = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert baseline.main(["--baseline", "HEAD", "--benchmarks", "planner", "--quick", "--rounds", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    runs = [r for r in lines if "side" in r]
    assert [(r["side"], r["round"]) for r in runs] == [("before", 1), ("after", 1), ("before", 2), ("after", 2)]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert runs[0]["commit"] == runs[1]["commit"] == head
    rows = [r for r in lines if "measure" in r]
    assert {r["measure"] for r in rows} >= {"dp, vit_base_patch16_224 x 8 devices x 8 micro-batches"}
    assert all(r["before"] > 0 and r["after"] > 0 and r["unit"] == "ms" and r["better"] == "lower" for r in rows)
    import statistics

    assert all(len(r["after_all"]) == 2 and r["after"] == statistics.median(r["after_all"]) for r in rows)
    assert subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout == before


def test_an_unknown_baseline_or_benchmark_is_one_line():
    for argv, says in ((["--baseline", "no-such-rev"], "not a commit"), (["--baseline", "HEAD", "--benchmarks", "x"],
                                                                          "unknown benchmarks")):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "baseline.py"), *argv], cwd=ROOT,
                             capture_output=True, text=True)
        assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr


def test_measures_are_read_from_each_benchmarks_own_lines():
    sim = [{"case": "full", "analytical_evals_per_s": 10.0, "graph_median_s": 0.05},
           {"case": "sweep", "points": 1000, "seconds": 2.0}]
    got = baseline.measures("simulator", sim)
    assert got["graph simulation (full)"] == (50.0, "ms", "lower")
    assert "batched evaluations/s (full)" not in got  # an old benchmark without the field: no row
    assert got["what-if sweep of 1,000 points"] == (2.0, "s", "lower")
    assert baseline.measures("runtime", [{"case": "overhead", "overhead": 0.25}]) == {
        "all-FULL in one process against plain timm": (25.0, "%", "lower")}


def test_every_speed_goal_of_the_results_page_names_a_measure_the_benchmarks_print():
    """The results page's speed goals are looked up by measure name: each must be one baseline.py makes."""
    spec = importlib.util.spec_from_file_location("results_page", ROOT / "benchmarks" / "results.py")
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    lines = {"simulator": [{"case": "full", "analytical_evals_per_s": 1.0, "batched_evals_per_s": 1.0,
                            "graph_median_s": 0.05}, {"case": "sweep", "points": 100_000, "seconds": 9.0}],
             "planner": [{"case": "speed", "solver": "dp", "model": m, "devices": d, "micro_batches": d, "median_s": 0.1}
                         for m, d in (("vit_base_patch16_224", 8), ("vit_large_patch16_224", 16))],
             "runtime": [{"case": "overhead", "overhead": 0.05}]}
    made = {m for name, recs in lines.items() for m in baseline.measures(name, recs)}
    assert {m for m, _, _ in results.SPEED_GOALS} <= made
