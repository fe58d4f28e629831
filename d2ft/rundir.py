"""The run-directory contract: what ``d2ft run`` writes into RUN_DIR, and how it is read back.

The runtime writes a run directory, analysis and the app read it; this module is the one
place that knows its file names and formats:

    job.json          the job (``runtime.job.Job``), what --resume checks against
    metrics.jsonl     one JSON object per step (``step``, ``loss``, ``step_time_s`` and more)
    plans.jsonl       one JSON object per plan change (``step``, ``plan``, ``reason``, ...)
    checkpoint.json   the last complete checkpoint: {"step": N, "path": "checkpoints/step-N"}
    checkpoints/      the checkpoint sets, one rank*.pt per rank
    timeline-stepN.json  one recorded step as a ``d2ft.trace.Trace``
    model.safetensors the fine-tuned model as one timm state dict
    summary.json      the headline figures (``summarise``)

Units: seconds (``_s``), bytes (``_bytes``); savings are fractions of the all-FULL cost.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

from .serial import atomic_write_text, read_json

JOB_FILE = "job.json"
METRICS_FILE = "metrics.jsonl"
PLANS_FILE = "plans.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
EXPORT_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"
TIMELINE_PREFIX = "timeline-step"


# ---- JSON lines ------------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[dict]:
    """Every JSON object of a JSON-lines file (blank lines skipped); [] when it does not exist.

    Raises ValueError naming the file and line of a line that is not JSON.
    """
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for i, text in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if text.strip():
            try:
                out.append(json.loads(text))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {i + 1} is not JSON ({e.msg})") from None
    return out


class JsonlAppender:
    """Appends JSON lines and flushes each, so a crash loses at most the line being written."""

    def __init__(self, path: str | Path) -> None:
        self.f = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def truncate_jsonl(path: str | Path, step: int) -> None:
    """Keeps the lines of ``path`` whose "step" is before ``step`` (atomically); nothing if it is missing."""
    path = Path(path)
    if path.exists():
        keep = [r for r in read_jsonl(path) if r["step"] < step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


# ---- finding and reading runs ------------------------------------------------------------------------
def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a run's metrics (a run directory, finished or not)."""
    return (Path(path) / METRICS_FILE).is_file()


def find_runs(folder: str | Path) -> list[Path]:
    """``[folder]`` when it is a run directory, else the run directories directly under it, by name."""
    folder = Path(folder)
    if is_run_dir(folder):
        return [folder]
    return sorted(p for p in folder.iterdir() if is_run_dir(p)) if folder.is_dir() else []


def read_job(run_dir: str | Path) -> dict:
    """The job a run directory holds, as a dict (ValueError or FileNotFoundError naming the file)."""
    return read_json(Path(run_dir) / JOB_FILE, "job file")


def timelines(run_dir: str | Path) -> list[Path]:
    """The run's recorded timelines (``timeline-stepN.json``), by step."""
    files = Path(run_dir).glob(f"{TIMELINE_PREFIX}*.json")
    return sorted(files, key=lambda p: int(p.stem.removeprefix(TIMELINE_PREFIX)))


def timeline_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"{TIMELINE_PREFIX}{step}.json"


# ---- figures ---------------------------------------------------------------------------------------
def planned_savings(records: list[dict]) -> dict:
    """The cost model's savings over a run's steps against all-FULL, and whether every step's measured
    bytes equal the predicted ones; {} when the run has no predictions (no cluster)."""
    if not records or "predicted_compute_s" not in records[0]:
        return {}
    return {
        "predicted_compute_saving": 1 - sum(r["predicted_compute_s"] for r in records) /
        sum(r["full_compute_s"] for r in records),
        "predicted_comm_saving": 1 - sum(r["predicted_sent_bytes"] for r in records) /
        max(sum(r["full_sent_bytes"] for r in records), 1),
        "bytes_exact": all(r["predicted_sent_bytes"] == r["measured_sent_bytes"] for r in records),
    }


def measured_savings(records: list[dict], reference: list[dict]) -> dict:
    """Measured savings of a run against ``reference`` (the all-FULL run of the same job): compute and
    step time by their medians per step, bytes by their totals."""
    return {
        "measured_compute_saving": 1 - median(r["measured_compute_s"] for r in records) /
        median(r["measured_compute_s"] for r in reference),
        "measured_comm_saving": 1 - sum(r["measured_sent_bytes"] for r in records) /
        sum(r["measured_sent_bytes"] for r in reference),
        "step_time_saving": 1 - median(r["step_time_s"] for r in records) / median(r["step_time_s"] for r in reference),
    }


def summarise(run_dir: str | Path) -> dict:
    """The run's headline figures from its job.json and metrics.jsonl (medians over steps; s, B)."""
    run_dir = Path(run_dir)
    job = read_job(run_dir)
    lines = read_jsonl(run_dir / METRICS_FILE)
    evals = [(r["step"], r["top1"]) for r in lines if r.get("top1") is not None]
    out = {
        "run_dir": str(run_dir), "model": job["model"], "data": job.get("data"), "strategy": job.get("strategy"),
        "keep": job.get("keep"), "comm_keep": job.get("comm_keep"), "lora": job.get("lora"), "seed": job["seed"],
        "nproc": len(job["plan"]["devices"]), "steps": len(lines), "emulated_slowdown": job.get("slowdown"),
        "final_loss": lines[-1]["loss"] if lines else None, "loss": [r["loss"] for r in lines],
        "top1": evals[-1][1] if evals else None, "evals": evals,
        "median_step_time_s": median(r["step_time_s"] for r in lines) if lines else None,
        "median_measured_compute_s": median(r["measured_compute_s"] for r in lines) if lines else None,
        "total_measured_sent_bytes": sum(r["measured_sent_bytes"] for r in lines),
        "model_file": str(run_dir / EXPORT_FILE),
    }
    if lines and "predicted_compute_s" in lines[0]:
        out.update(median_predicted_compute_s=median(r["predicted_compute_s"] for r in lines),
                   total_predicted_sent_bytes=sum(r["predicted_sent_bytes"] for r in lines), **planned_savings(lines))
    replans = [r["replan_s"] for r in lines if r.get("replan_s") is not None]
    if replans:
        out.update(replans=len(replans), median_replan_s=median(replans))
    return out


__all__ = ["CHECKPOINTS_DIR", "CHECKPOINT_FILE", "EXPORT_FILE", "JOB_FILE", "JsonlAppender", "METRICS_FILE",
           "PLANS_FILE", "SUMMARY_FILE", "find_runs", "is_run_dir", "measured_savings", "planned_savings",
           "read_job", "read_jsonl", "summarise", "timeline_path", "timelines", "truncate_jsonl"]
