"""Fidelity benchmark: the simulator's predicted steps against steps measured on this machine.

Groups (``--groups``; all by default):

- ``r2-b16``, ``r3-b16``, ``r4-b16``: 2, 3 and 4 local ranks at micro-batch size 16, the size the
  profiles are calibrated at;
- ``r2-b8``, ``r3-b8``, ``r4-b8``: the same at size 8, held out (nothing was fitted there);
- ``r4-b16-slow``: 4 ranks emulating a heterogeneous cluster (``--slowdown 1,1,2,4``), planned and
  simulated on the profile slowed alike.

Each group runs the demo's 12 plans (strategies x keep ratios: ``d2ft.app.demo.FIDELITY_PLANS``) of
the shipped backbone, ``--each`` steps each, in one run (``measure_fidelity``: one placement, the
first step of each plan left out of the medians). Profiles: ``d2ft calibrate`` of N ranks at
micro-batch size 16 with the backbone's subnet tasks, measured once into RUNS/profile-rN.json and
reused, as are finished group runs (a study can span sessions).

Prints one JSON line per group, then one with ``group`` "all": ``plans``; step time, absolute
relative error: ``median_abs_step_error``, ``p90_abs_step_error``, ``worst_abs_step_error``,
``median_signed_step_error`` (predicted - measured over measured; negative: under-predicted);
per rank, compute and wait (the part of the step a rank is not computing) as
``median_abs_compute_error``, ``p90_abs_compute_error``, ``median_signed_compute_error``,
``median_abs_wait_error``, ``median_signed_wait_error``; ``spearman`` (rank agreement of step time
across the group's plans); ``bytes_exact`` (every plan's measured bytes equal the cost model's).

    .venv/bin/python benchmarks/fidelity.py               # every group (about 15 min on 2 idle cores)
    .venv/bin/python benchmarks/fidelity.py --groups r2-b16 --each 3

Measured times include everything this machine does meanwhile: run it on idle cores, and remove
runs/results/fidelity-bench/ to measure again (its profiles and runs are reused as they are).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

RUNS = Path(os.path.dirname(_HERE)) / "runs" / "results" / "fidelity-bench"
GROUPS = {f"r{n}-b{b}": dict(nproc=n, micro_batch_size=b) for b in (16, 8) for n in (2, 3, 4)}
GROUPS["r4-b16-slow"] = dict(nproc=4, micro_batch_size=16, slowdown=[1.0, 1.0, 2.0, 4.0])
CALIBRATED_SIZE = 16
"""Micro-batch size the profiles are fitted at; the b8 groups are held out."""


def _quantile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's default)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties share their mean rank).

    >>> round(spearman([1, 2, 3, 4], [10, 20, 40, 30]), 6)
    0.8
    """
    import numpy as np
    import pandas as pd

    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def summarise(group: str, rows: list[dict]) -> dict:
    """One group's line (module docstring) from ``measure_fidelity`` rows."""
    rel = lambda p, m: (p - m) / m  # noqa: E731
    step = [rel(r["predicted_step_time_s"], r["measured_step_time_s"]) for r in rows]
    compute, wait = [], []
    for r in rows:
        if r.get("rank_measured_compute_s"):
            compute += [rel(p, m) for p, m in zip(r["rank_predicted_compute_s"], r["rank_measured_compute_s"]) if m > 0]
            wait += [p - m for p, m in zip(r["rank_predicted_wait_s"], r["rank_measured_wait_s"])]
    steps = [r["measured_step_time_s"] for r in rows]
    out = {"group": group, "plans": len(rows),
           "median_abs_step_error": statistics.median(abs(e) for e in step),
           "p90_abs_step_error": _quantile([abs(e) for e in step], 0.9),
           "worst_abs_step_error": max(abs(e) for e in step),
           "median_signed_step_error": statistics.median(step),
           "median_abs_compute_error": statistics.median(abs(e) for e in compute) if compute else None,
           "p90_abs_compute_error": _quantile([abs(e) for e in compute], 0.9) if compute else None,
           "median_signed_compute_error": statistics.median(compute) if compute else None,
           # wait errors relative to the measured step (a rank's wait can be near zero)
           "median_abs_wait_error": statistics.median(abs(e) for e in wait) / statistics.median(steps) if wait else None,
           "median_signed_wait_error": statistics.median(wait) / statistics.median(steps) if wait else None,
           "spearman": spearman([r["predicted_step_time_s"] for r in rows], steps) if len(rows) > 1 else None,
           "bytes_exact": all(r["predicted_sent_bytes"] == r["measured_sent_bytes"] for r in rows)}
    return out


def profile_for(nproc: int) -> Path:
    """This machine's calibrated profile of ``nproc`` ranks at ``CALIBRATED_SIZE`` (measured once)."""
    from d2ft.app.demo import backbone_job
    from d2ft.serial import atomic_write_text, write_json
    from runtime.calibrate import calibrate

    path = RUNS / f"profile-r{nproc}.json"
    if not path.exists():
        print(f"[fidelity] calibrating {nproc} ranks at micro-batch size {CALIBRATED_SIZE} ...", file=sys.stderr,
              flush=True)
        cluster, raw = calibrate(nproc, backbone_job(checkpoint="none"), micro_batch_size=CALIBRATED_SIZE)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, cluster.to_json() + "\n")
        write_json(path.with_suffix(".raw.json"), raw)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Runs and profiles go to runs/results/fidelity-bench/ and are reused.")
    p.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated of {', '.join(GROUPS)}")
    p.add_argument("--each", type=int, default=6, help="steps per plan (the first is left out; default: 6)")
    args = p.parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        p.error(f"unknown groups {bad}; choose from {', '.join(GROUPS)}")
    if args.each < 2:
        p.error("--each must be at least 2 (the first step of each plan is left out)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from d2ft.app.demo import measure_fidelity

    every = []
    for g in groups:
        spec = GROUPS[g]
        print(f"[fidelity] {g}: 12 plans x {args.each} steps ...", file=sys.stderr, flush=True)
        frame = measure_fidelity(RUNS / f"{g}-e{args.each}", profile_for(spec["nproc"]), spec["nproc"], each=args.each,
                                 micro_batch_size=spec["micro_batch_size"], slowdown=spec.get("slowdown"))
        rows = frame.to_dict("records")
        every += rows
        print(json.dumps(summarise(g, rows)), flush=True)
    print(json.dumps(summarise("all", every)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
