"""Speed benchmarks of two commits side by side: the performance table's before and after, in one run.

Runs ``benchmarks/simulator.py``, ``benchmarks/planner.py --suite speed`` and ``benchmarks/runtime.py``
of a baseline commit (checked out into a temporary git worktree, its own packages first on
``PYTHONPATH``) and of this checkout, one after the other per benchmark, so that both sides of a row
see the machine in the same minutes; ``--rounds N`` alternates the two N times and reports each
measure's median over the rounds (this machine's speed moves by tens of percent within minutes, so
one round can mislead). Each benchmark prints one JSON line per run (``benchmark``, ``side``:
"before" or "after", ``round``, ``commit``, ``seconds``, ``lines``: the benchmark's own JSON lines),
then one line per measure of the table (``measure``, ``before``, ``after``: medians over the rounds,
``before_all``, ``after_all``: every round's, ``unit``, ``better``: "lower" or "higher"). Rows of
different benchmarks are minutes apart and not comparable to each other's timings.

    .venv/bin/python benchmarks/baseline.py --baseline 01e6545 --rounds 3  # the performance issue's start
    .venv/bin/python benchmarks/baseline.py --baseline HEAD~5 --quick      # fewer repeats (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BENCHMARKS = {  # name -> (argv, --quick argv)
    "simulator": (["benchmarks/simulator.py"], ["benchmarks/simulator.py", "--repeat", "3", "--evals", "200",
                                                 "--batch", "1000", "--sweep-points", "2000"]),
    "planner": (["benchmarks/planner.py", "--suite", "speed", "--repeat", "5"],
                ["benchmarks/planner.py", "--suite", "speed", "--repeat", "1"]),
    "runtime": (["benchmarks/runtime.py", "--steps", "11"], ["benchmarks/runtime.py", "--steps", "3"]),
}


def _git(*args: str, cwd: Path = ROOT) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise ValueError(f"git {' '.join(args)}: {out.stderr.strip() or 'failed'}")
    return out.stdout.strip()


def _run(root: Path, argv: list[str]) -> tuple[list[dict], float]:
    """A benchmark's JSON lines, run from ``root`` with ``root``'s packages first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {root} failed (exit {out.returncode}): {out.stderr.strip()[-400:]}")
    return [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")], time.perf_counter() - t0


def measures(name: str, lines: list[dict]) -> dict[str, tuple[float, str, str]]:
    """The table's measures of one benchmark's output: measure -> (value, unit, which way is better)."""
    out: dict[str, tuple[float, str, str]] = {}
    if name == "simulator":
        for r in lines:
            if r.get("case") in ("full", "hybrid"):
                c = r["case"]
                one = r["analytical_evals_per_s"]
                out[f"analytical evaluations/s, one plan at a time ({c})"] = (one, "1/s", "higher")
                if "batched_evals_per_s" in r:
                    out[f"batched evaluations/s ({c})"] = (r["batched_evals_per_s"], "1/s", "higher")
                out[f"graph simulation ({c})"] = (1e3 * r["graph_median_s"], "ms", "lower")
            elif r.get("case") == "sweep":
                out[f"what-if sweep of {r['points']:,} points"] = (r["seconds"], "s", "lower")
    elif name == "planner":
        for r in lines:
            if r.get("case") == "speed" and r.get("solver") == "dp":
                out[f"dp, {r['model']} x {r['devices']} devices x {r['micro_batches']} micro-batches"] = (
                    1e3 * r["median_s"], "ms", "lower")
    elif name == "runtime":
        for r in lines:
            if r.get("case") == "overhead":
                out["all-FULL in one process against plain timm"] = (100 * r["overhead"], "%", "lower")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="the commit to measure against this checkout (any git revision)")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS), help=f"comma-separated of {', '.join(BENCHMARKS)}")
    p.add_argument("--rounds", type=int, default=1, help="before/after alternations per benchmark, medians reported")
    p.add_argument("--quick", action="store_true", help="fewer repeats and points (a smoke test, not a measurement)")
    args = p.parse_args(argv)
    chosen = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    if bad := sorted(set(chosen) - set(BENCHMARKS)):
        p.error(f"unknown benchmarks {bad}; choose from {', '.join(BENCHMARKS)}")
    try:
        before = _git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
        after = _git("rev-parse", "HEAD")
    except ValueError as e:
        p.error(f"--baseline {args.baseline}: not a commit of this repository ({e})")
    with tempfile.TemporaryDirectory(prefix="d2ft-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        _git("worktree", "add", "--detach", str(tree), before)
        try:
            for name in chosen:
                argv_ = BENCHMARKS[name][1 if args.quick else 0]
                got: dict[str, list[dict]] = {"before": [], "after": []}
                for i in range(args.rounds):
                    for side, root, commit in (("before", tree, before), ("after", ROOT, after)):
                        print(f"[baseline] {name} {side} ({commit[:10]}), round {i + 1} of {args.rounds} ...",
                              file=sys.stderr, flush=True)
                        lines, seconds = _run(root, argv_)
                        got[side].append(measures(name, lines))
                        print(json.dumps({"benchmark": name, "side": side, "round": i + 1, "commit": commit,
                                          "seconds": seconds, "command": ".venv/bin/python " + " ".join(argv_),
                                          "lines": lines}), flush=True)
                for m, (_, unit, better) in got["after"][0].items():
                    old = [r[m][0] for r in got["before"] if m in r]
                    new = [r[m][0] for r in got["after"]]
                    print(json.dumps({"measure": m, "benchmark": name, "before": statistics.median(old) if old else None,
                                      "after": statistics.median(new), "before_all": old, "after_all": new,
                                      "rounds": args.rounds, "unit": unit, "better": better,
                                      "before_commit": before, "after_commit": after}), flush=True)
        finally:
            _git("worktree", "remove", "--force", str(tree))
    return 0


if __name__ == "__main__":
    sys.exit(main())
