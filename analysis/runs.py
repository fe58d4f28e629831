"""Run directories (``d2ft run --out RUN_DIR``) as tidy DataFrames.

A run directory holds ``job.json``, ``metrics.jsonl`` (one line per step) and
``plans.jsonl`` (one line per plan change); see ``d2ft run --help``. Columns carry their
unit in the name: ``_s`` seconds, ``_bytes`` bytes; savings and accuracies are fractions
in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from d2ft import rundir
from d2ft.plan import Plan

STEP_COLUMNS = ["step", "loss", "lr", "plan_index", "n_full", "n_forward_only", "n_skip", "step_time_s",
                "measured_compute_s", "predicted_compute_s", "full_compute_s", "measured_sent_bytes",
                "predicted_sent_bytes", "full_sent_bytes", "predicted_compute_saving", "predicted_comm_saving",
                "replan_s", "solve_time_s", "top1"]


@dataclass
class Run:
    """One run directory, read."""

    path: Path
    job: dict
    steps: pd.DataFrame
    """One row per step: ``STEP_COLUMNS`` (NaN where a step has no value, e.g. top1 between evaluations)."""
    devices: pd.DataFrame
    """One row per step and rank: step, rank, device, busy_s, sent_bytes, recv_bytes, comm_s, wait_s,
    wall_s, peak_memory_bytes, predicted_compute_s, predicted_sent_bytes, predicted_recv_bytes."""
    plans: list[tuple[int, Plan]]
    """(first step, plan) of every plan the run used, in order."""
    records: list[dict]
    """The lines of metrics.jsonl as read."""

    @property
    def label(self) -> str:
        """"hybrid keep 0.6", "full", "random keep 0.6 LoRA", ... from the job."""
        j = self.job
        text = j.get("strategy") or "plan file"
        if text != "full" and j.get("keep") is not None:
            text += f" keep {j['keep']:g}"
        if j.get("comm_keep") is not None:
            text += f" comm {j['comm_keep']:g}"
        return text + (" LoRA" if j.get("lora") else "")

    @property
    def final_top1(self) -> float | None:
        evals = self.steps["top1"].dropna()
        return float(evals.iloc[-1]) if len(evals) else None


def read_run(path: str | Path) -> Run:
    """Reads a run directory; ValueError naming what is missing when it is not one."""
    path = Path(path)
    if not (path / rundir.JOB_FILE).is_file() or not rundir.is_run_dir(path):
        raise ValueError(f"{path} is not a run directory: it needs {rundir.JOB_FILE} and {rundir.METRICS_FILE} "
                         "(made by `d2ft run`)")
    job = rundir.read_job(path)
    lines = rundir.read_jsonl(path / rundir.METRICS_FILE)
    steps = pd.DataFrame([{k: r.get(k) for k in STEP_COLUMNS} for r in lines], columns=STEP_COLUMNS).astype(float)
    steps["step"] = steps["step"].astype(int)
    rows = [{"step": r["step"], "rank": k, "device": d.get("name", f"rank{k}"), **{c: v for c, v in d.items() if c != "name"}}
            for r in lines for k, d in enumerate(r["devices"])]
    devices = pd.DataFrame(rows)
    plans = [(rec["step"], Plan.from_dict(rec["plan"])) for rec in rundir.read_jsonl(path / rundir.PLANS_FILE)]
    return Run(path, job, steps, devices, plans, lines)


_NO_PLANNED = {"predicted_compute_saving": float("nan"), "predicted_comm_saving": float("nan"), "bytes_exact": False}


def runs_frame(runs: list[Run], reference: Run | None = None) -> pd.DataFrame:
    """One row per run: label, strategy, keep, comm_keep, lora, seed, steps, top1, final_loss, median_step_time_s,
    measured_compute_s and measured_sent_bytes (medians per step), predicted_compute_saving and
    predicted_comm_saving (over the run, against all-FULL), and, against ``reference`` (the all-FULL
    run of the same job), measured_compute_saving, measured_comm_saving and step_time_saving."""
    rows = []
    for run in runs:
        s = run.steps
        row = {
            "label": run.label, "strategy": run.job.get("strategy"), "keep": run.job.get("keep"),
            "comm_keep": run.job.get("comm_keep"), "lora": bool(run.job.get("lora")), "seed": run.job.get("seed"),
            "steps": len(s), "top1": run.final_top1, "final_loss": rundir.final_loss(run.records),
            "median_step_time_s": float(s["step_time_s"].median()),
            "measured_compute_s": float(s["measured_compute_s"].median()),
            "measured_sent_bytes": float(s["measured_sent_bytes"].median()),
            **(rundir.planned_savings(run.records) or _NO_PLANNED),
        }
        if reference is not None:
            row.update(rundir.measured_savings(run.records, reference.records))
        rows.append(row)
    return pd.DataFrame(rows)


def find_runs(folder: str | Path) -> list[Run]:
    """Every run directory directly under ``folder`` (sorted by name)."""
    return [read_run(p) for p in rundir.find_runs(folder) if p != Path(folder)]
