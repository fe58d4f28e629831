"""Fidelity benchmark: the simulator's predicted steps against steps measured on this machine.

Groups (``--groups``; all by default):

- ``r2-b16``, ``r3-b16``, ``r4-b16``: 2, 3 and 4 local ranks at micro-batch size 16, the size the
  profiles are calibrated at;
- ``r2-b8``, ``r3-b8``, ``r4-b8``: the same at size 8, held out (nothing was fitted there);
- ``r4-b16-slow``: 4 ranks emulating a heterogeneous cluster (``--slowdown 1,1,2,4``), planned and
  simulated on the profile slowed alike;
- ``r2-b16-interleaved``, ``r4-b16-interleaved``: 2 and 4 ranks executing every micro-batch of a step at
  once (``d2ft run --order interleaved``), against the simulator's ``order="interleaved"``;
- ``r2-b16-lora``: 2 ranks training LoRA adapters (rank 4 on q, v: ``d2ft run --lora``), priced as
  LoRA (``ModelSpec.lora_rank``); its rows also carry ``as_full_step_time_s``, the same plans priced
  as full fine-tuning (what the cost model did before it priced LoRA), and its line
  ``as_full_median_abs_step_error``.

Each group runs the demo's 12 plans (strategies x keep ratios: ``d2ft.app.demo.FIDELITY_PLANS``) of
the shipped backbone, ``--each`` steps each, in one run (``measure_fidelity``: one placement, the
first step of each plan left out of the medians). Profiles: ``d2ft calibrate`` of N ranks at
micro-batch size 16 with the backbone's subnet tasks, measured once into RUNS/profile-rN.json and
reused, as are finished group runs (a study can span sessions).

Prints one JSON line per group, then one with ``group`` "all": ``plans``; step time, absolute
relative error: ``median_abs_step_error``, ``p90_abs_step_error``, ``worst_abs_step_error``,
``median_signed_step_error`` (predicted - measured over measured; negative: under-predicted);
per rank, compute and wait (the part of the step a rank is not computing) as
``median_abs_compute_error``, ``p90_abs_compute_error``, ``median_signed_compute_error``, the same
compute measured as the rank thread's CPU time (without the time it waited for a core mid-task,
which the simulator counts as waiting) as ``median_abs_compute_cpu_error`` and
``median_signed_compute_cpu_error``,
``median_abs_wait_error``, ``median_signed_wait_error``; ``spearman`` (rank agreement of step time
across the group's plans); ``bytes_exact`` (every plan's measured bytes equal the cost model's);
``before_median_abs_step_error`` and ``before_spearman``: the same plans predicted on the profile as
``d2ft calibrate`` wrote it before it measured core sharing (``previous_profile``);
``roofline_median_abs_step_error`` and ``roofline_spearman``: the same plans predicted on the profile
``d2ft calibrate`` wrote before it priced ranks by the kernel model (one roofline per task, kept in
RUNS/roofline/ where it was measured); with
``--repeat``, ``rerun_median_abs_step_difference`` and ``rerun_median_signed_step_difference``: the
same plans measured again right after, against the first measurement (the machine's own noise).

    .venv/bin/python benchmarks/fidelity.py               # every group (about 15 min on 2 idle cores)
    .venv/bin/python benchmarks/fidelity.py --quick       # r2-b16, r4-b8, r4-b16 at 3 steps (under 10 min)
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
ROOFLINE = RUNS / "roofline"
"""Profiles of ``d2ft calibrate`` before it priced ranks by the kernel model (until 2026-12-02), and the runs
measured on them: the "roofline" comparison of every plan where ``ROOFLINE/profile-rN.json`` exists."""
GROUPS = {f"r{n}-b{b}": dict(nproc=n, micro_batch_size=b) for b in (16, 8) for n in (2, 3, 4)}
GROUPS["r4-b16-slow"] = dict(nproc=4, micro_batch_size=16, slowdown=[1.0, 1.0, 2.0, 4.0])
GROUPS["r2-b16-lora"] = dict(nproc=2, micro_batch_size=16, lora=True)
GROUPS.update({f"r{n}-b16-interleaved": dict(nproc=n, micro_batch_size=16, order="interleaved") for n in (2, 4)})
QUICK = ("r2-b16", "r4-b8", "r4-b16")
"""``--quick``: these groups, 3 steps per plan (under 10 minutes on 2 idle cores)."""
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


def _has(row: dict, key: str) -> bool:
    """Whether ``row`` holds ``key`` (records read back through pandas hold NaN where a row had none)."""
    value = row.get(key)
    return value is not None and not (isinstance(value, float) and value != value)


def summarise(group: str, rows: list[dict]) -> dict:
    """One group's line (module docstring) from ``measure_fidelity`` rows; rows that carry
    ``before_step_time_s`` (the same plans on the profile as calibrate wrote it before hosts:
    ``previous_profile``) add ``before_median_abs_step_error`` and ``before_spearman``; rows that carry
    ``roofline_step_time_s`` (on the roofline profile: ``ROOFLINE``) the same for ``roofline``."""
    rel = lambda p, m: (p - m) / m  # noqa: E731
    step = [rel(r["predicted_step_time_s"], r["measured_step_time_s"]) for r in rows]
    compute, wait, cpu = [], [], []
    for r in rows:
        if _has(r, "rank_measured_compute_cpu_s"):
            cpu += [rel(p, m) for p, m in zip(r["rank_predicted_compute_s"], r["rank_measured_compute_cpu_s"]) if m > 0]
        if _has(r, "rank_measured_compute_s"):
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
           "median_abs_compute_cpu_error": statistics.median(abs(e) for e in cpu) if cpu else None,
           "median_signed_compute_cpu_error": statistics.median(cpu) if cpu else None,
           # wait errors relative to the measured step (a rank's wait can be near zero)
           "median_abs_wait_error": statistics.median(abs(e) for e in wait) / statistics.median(steps) if wait else None,
           "median_signed_wait_error": statistics.median(wait) / statistics.median(steps) if wait else None,
           "spearman": spearman([r["predicted_step_time_s"] for r in rows], steps) if len(rows) > 1 else None,
           "bytes_exact": all(r["predicted_sent_bytes"] == r["measured_sent_bytes"] for r in rows)}
    as_full = [rel(r["as_full_step_time_s"], r["measured_step_time_s"]) for r in rows if _has(r, "as_full_step_time_s")]
    if as_full and len(as_full) == len(rows):
        out["as_full_median_abs_step_error"] = statistics.median(abs(e) for e in as_full)
    rerun = [rel(r["rerun_step_time_s"], r["measured_step_time_s"]) for r in rows if _has(r, "rerun_step_time_s")]
    if rerun and len(rerun) == len(rows):
        out["rerun_median_abs_step_difference"] = statistics.median(abs(e) for e in rerun)
        out["rerun_median_signed_step_difference"] = statistics.median(rerun)
    for other in ("before", "roofline"):
        key = f"{other}_step_time_s"
        if all(_has(r, key) for r in rows):
            out[f"{other}_median_abs_step_error"] = statistics.median(
                abs(rel(r[key], r["measured_step_time_s"])) for r in rows)
            out[f"{other}_spearman"] = spearman([r[key] for r in rows], steps) if len(rows) > 1 else None
    return out


def previous_profile(path: Path):
    """The profile at ``path`` as ``d2ft calibrate`` wrote it before it measured core sharing and fitted
    ranks in situ (until 2026-12-01): every rank at its microbenchmarks' speed alone, no host, and with
    more workers than cores each worker slowed by workers / cores (os cores). The "before" of the
    benchmark's comparison."""
    import dataclasses

    from d2ft.cluster import Cluster

    raw = json.loads(path.with_suffix(".raw.json").read_text())
    cluster = Cluster.from_dict(raw["microbenchmark_profile"]) if "microbenchmark_profile" in raw else \
        Cluster.from_json(path.read_text())  # before the in-situ fit
    spec = cluster.device(0)
    loss = raw.get("contention_slowdown", 1.0)
    alone = dataclasses.replace(spec.scaled(1 / loss), name=spec.name) if loss != 1 else spec
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max((cluster.num_devices - 1) / cores, 1.0)
    devices = tuple((n, alone if k == 0 else alone.scaled(share)) for k, (n, _) in enumerate(cluster.devices))
    return dataclasses.replace(cluster, devices=devices, hosts=())


def run_group(group: str, each: int, repeat: bool = False) -> list[dict]:
    """Measures (or reads back) one group's plans; rows of ``measure_fidelity`` with ``before_step_time_s``.
    ``repeat``: the same plans measured once more, in a second run right after, as ``rerun_step_time_s``
    (how much this machine's own step times move between two runs: the floor under any prediction)."""
    from d2ft.app.demo import measure_fidelity
    from runtime.job import LoraSpec

    from d2ft.cluster import Cluster

    spec = GROUPS[group]
    profile = profile_for(spec["nproc"])
    assumed = {"before": previous_profile(profile)}
    if (roofline := ROOFLINE / profile.name).exists():
        assumed["roofline"] = Cluster.from_json(roofline.read_text())
    lora = LoraSpec() if spec.get("lora") else None
    runs = [f"{group}-e{each}"] + [f"{group}-e{each}-rerun"] * repeat
    frames = [measure_fidelity(RUNS / name, profile, spec["nproc"], each=each,
                               micro_batch_size=spec["micro_batch_size"], slowdown=spec.get("slowdown"),
                               assumed=assumed, lora=lora,
                               order=spec.get("order", "sequential"))
              for name in runs]
    rows = [{**row, "group": group, "each": each} for row in frames[0].to_dict("records")]
    for row, again in zip(rows, frames[-1].to_dict("records") if repeat else []):
        row["rerun_step_time_s"] = again["measured_step_time_s"]
    if lora:  # the same plans priced as full fine-tuning, as the cost model did before it priced LoRA
        from d2ft import Plan
        from d2ft.app.demo import backbone_spec
        from d2ft.rundir import read_job
        from simulator import simulate

        cluster, full = Cluster.from_json(profile.read_text()), backbone_spec()
        for row, plan in zip(rows, read_job(RUNS / runs[0])["schedule"]):
            row["as_full_step_time_s"] = simulate(Plan.from_dict(plan), full, cluster).step_time_s
    return rows


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
    p.add_argument("--groups", default=None, help=f"comma-separated of {', '.join(GROUPS)} (default: all)")
    p.add_argument("--each", type=int, default=None,
                   help="steps per plan (the first is left out; default: 6, --quick 3)")
    p.add_argument("--quick", action="store_true", help=f"groups {', '.join(QUICK)} at 3 steps per plan (under 10 min)")
    p.add_argument("--repeat", action="store_true",
                   help="measure every group twice, one run after the other: the rerun_* fields say how far this "
                        "machine's own step times move between two runs of the same plans (twice the time)")
    args = p.parse_args(argv)
    groups = [g.strip() for g in (args.groups or ",".join(QUICK if args.quick else GROUPS)).split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        p.error(f"unknown groups {bad}; choose from {', '.join(GROUPS)}")
    each = args.each or (3 if args.quick else 6)
    if each < 2:
        p.error("--each must be at least 2 (the first step of each plan is left out)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    every = []
    for g in groups:
        print(f"[fidelity] {g}: 12 plans x {each} steps ...", file=sys.stderr, flush=True)
        rows = run_group(g, each, args.repeat)
        every += rows
        print(json.dumps(summarise(g, rows)), flush=True)
    print(json.dumps(summarise("all", every)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
