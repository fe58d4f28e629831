"""benchmarks/compare.py's time to target: epochs to the study's target from hand-written learning records."""

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("compare_bench",
                                               Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def _arm(arm: str, seed: int, top1: float, curve: list[float], combo: str = "A") -> dict:
    return {"section": "learning", "stage": "arm", "combo": combo, "arm": arm, "seed": seed, "top1": top1,
            "curve": [[i + 1.0, y] for i, y in enumerate(curve)]}


def test_epochs_to_target_is_the_median_over_seeds_and_none_unless_every_seed_gets_there(tmp_path):
    recs = [_arm("full", 0, 0.90, [0.5, 0.85, 0.90]), _arm("full", 1, 0.92, [0.6, 0.91, 0.92]),
            _arm("hybrid", 0, 0.89, [0.5, 0.86, 0.89]), _arm("hybrid", 1, 0.84, [0.5, 0.80, 0.84]),
            _arm("full", 0, 0.10, [0.1, 0.1, 0.1], combo="C")]  # another combination: not read
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    target, reach = compare.epochs_to_target(path)
    assert abs(target - 0.90) < 1e-12  # full's mean top-1 (0.91) minus 1 point
    assert reach["full"] == (2.5, 2, 2)  # seed 0 reaches 0.90 at its 3rd evaluation, seed 1 at its 2nd
    assert reach["hybrid"] == (None, 0, 2)
    assert compare.epochs_to_target(tmp_path / "absent.jsonl") == (None, {})
