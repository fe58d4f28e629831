"""The run-directory contract: what ``d2ft run`` writes into RUN_DIR, and how it is read back.

The runtime writes a run directory, analysis and the app read it; this module is the one
place that knows its file names and formats:

    job.json          the job (``runtime.job.Job``), what --resume checks against
    job.toml          the same job as a config file (``d2ft run --dry-run``)
    metrics.jsonl     one JSON object per step (``step``, ``loss``, ``step_time_s`` and more)
    metrics.csv       the same steps' scalars as a table (``metrics_rows``), for spreadsheets
    events.out.tfevents.*  the same scalars as TensorBoard events (when tensorboard is installed)
    plans.jsonl       one JSON object per plan change (``step``, ``plan``, ``reason``, ...)
    checkpoint.json   the last complete checkpoint: {"step": N, "path": "checkpoints/step-N"}
    checkpoints/      the checkpoint sets, one rank*.pt per rank
    timeline-stepN.json  one recorded step as a ``d2ft.trace.Trace``
    model.json        the run's model as a ``d2ft.model.ModelSpec`` (``d2ft simulate --run``)
    cluster.json      the cluster the run planned on, emulated slowdown included
    model.safetensors the fine-tuned model as one timm state dict
    summary.json      the headline figures (``summarise``)
    .d2ft.lock        held (flock) by the run while it runs: pid, host and start time

Safety rules (``RunLock``, ``foreign_files``, ``intact_checkpoint``): one run at a time in a
run directory; a folder holding files d2ft did not write is never used; only checkpoint sets
that ``checkpoint.json`` records are ever pruned; a checkpoint set is used only when every
file has the size and SHA-256 recorded when it was written.

Units: seconds (``_s``), bytes (``_bytes``); savings are fractions of the all-FULL cost.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import socket
from pathlib import Path
from statistics import median

from .serial import atomic_write_text, read_json

JOB_FILE = "job.json"
JOB_CONFIG = "job.toml"
"""The same job as a config file (``d2ft run --dry-run`` writes it, ``--config`` reads it)."""
METRICS_FILE = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TENSORBOARD_PREFIX = "events.out.tfevents."
"""TensorBoard's event files, written into RUN_DIR itself: ``tensorboard --logdir runs/`` names each
run by its folder."""
PLANS_FILE = "plans.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
EXPORT_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"
TIMELINE_PREFIX = "timeline-step"
MODEL_FILE = "model.json"
CLUSTER_FILE = "cluster.json"
LOCK_FILE = ".d2ft.lock"
REPORT_FILES = ("report.html", "report.md", "figures")
"""What ``d2ft report`` writes beside a run."""


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


def plan_at(run_dir: str | Path, step: int | None = None) -> tuple[int, dict]:
    """(step, plan dict) of the plan the run executed at ``step`` (None: its last step), from plans.jsonl."""
    lines = read_jsonl(Path(run_dir) / METRICS_FILE)
    plans = read_jsonl(Path(run_dir) / PLANS_FILE)
    if not lines or not plans:
        raise ValueError(f"{run_dir}: no step has run yet (metrics.jsonl and plans.jsonl are empty or missing)")
    last = lines[-1]["step"]
    step = last if step is None else step
    if not 0 <= step <= last:
        raise ValueError(f"--step {step}: the run in {run_dir} has steps 0 to {last}")
    return step, [p for p in plans if p["step"] <= step][-1]["plan"]


# ---- safety: one run at a time, never a foreign folder, only verified checkpoints ------------------------
class RunLock:
    """An exclusive lock on a run directory for the life of a run (``with RunLock(run_dir): ...``).

    An advisory ``flock`` on RUN_DIR/.d2ft.lock: the kernel releases it when the holder exits in
    any way (kill -9 included), so a lock is never left stale. A second holder is refused at once
    with the first one's pid, host and start time.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"pid {info['pid']} on {info['host']}, started {info['started']}"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise ValueError(f"{self.path.parent} is in use by another d2ft run ({who}); wait for it to end, "
                             "or choose another --out") from None
        stamp = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(stamp).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # no stale holder is ever named
            os.close(self.fd)  # releases the lock
            self.fd = None


def ours(name: str) -> bool:
    """Whether a top-level entry of a run directory is one d2ft writes there."""
    return (name in (JOB_FILE, JOB_CONFIG, METRICS_FILE, METRICS_CSV, PLANS_FILE, CHECKPOINT_FILE,
                     CHECKPOINTS_DIR, EXPORT_FILE, SUMMARY_FILE, LOCK_FILE, MODEL_FILE, CLUSTER_FILE) + REPORT_FILES
            or (name.startswith(TIMELINE_PREFIX) and name.endswith(".json"))
            or name.startswith(TENSORBOARD_PREFIX)
            or (name.startswith("rank") and name.endswith(".pt"))
            or (name.startswith(".") and name.endswith(".tmp")))


def foreign_files(run_dir: str | Path) -> list[str]:
    """The entries of ``run_dir`` that d2ft did not write, sorted ([] for a missing or empty folder).

    Without a job.json every entry is foreign: d2ft puts nothing in a run directory before it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    names = sorted(p.name for p in run_dir.iterdir())
    if (run_dir / JOB_FILE).is_file():
        return [n for n in names if not ours(n)]
    return [n for n in names if n != LOCK_FILE]


METRICS_COLUMNS = ("step", "loss", "lr", "top1", "step_time_s", "measured_compute_s", "predicted_compute_s",
                   "full_compute_s", "predicted_compute_saving", "measured_sent_bytes", "predicted_sent_bytes",
                   "full_sent_bytes", "predicted_comm_saving", "n_full", "n_forward_only", "n_skip", "plan_index",
                   "replan_s", "solve_time_s")
"""The per-step scalars of metrics.csv and TensorBoard, in column order (s, B, fractions)."""


def metrics_rows(lines: list[dict]) -> list[list]:
    """metrics.jsonl's lines as table rows of ``METRICS_COLUMNS`` ("" where a step has no value)."""
    return [["" if line.get(c) is None else line[c] for c in METRICS_COLUMNS] for line in lines]


def write_metrics_csv(run_dir: str | Path) -> Path:
    """RUN_DIR/metrics.csv from RUN_DIR/metrics.jsonl (written whole, atomically)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRICS_COLUMNS)
    writer.writerows(metrics_rows(read_jsonl(Path(run_dir) / METRICS_FILE)))
    return atomic_write_text(Path(run_dir) / METRICS_CSV, buf.getvalue())


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_record(path: str | Path) -> dict:
    """What a checkpoint records of each file it writes: size (B) and SHA-256."""
    return {"size": os.path.getsize(path), "sha256": sha256(path)}


def read_checkpoints(run_dir: str | Path) -> list[dict]:
    """The checkpoint sets ``checkpoint.json`` records, oldest first: {"step", "path", "files"} each.

    [] without a checkpoint.json; ValueError naming the file when it is not one d2ft wrote."""
    pointer = Path(run_dir) / CHECKPOINT_FILE
    if not pointer.exists():
        return []
    data = read_json(pointer, "checkpoint pointer")
    sets = data.get("sets") if isinstance(data, dict) else None
    if not isinstance(sets, list) or not all(isinstance(s, dict) and {"step", "path", "files"} <= set(s) for s in sets):
        raise ValueError(f"checkpoint pointer {str(pointer)!r} is not one d2ft wrote (no list of checkpoint sets); "
                         "remove the run directory to start fresh")
    return sets


def intact_checkpoint(run_dir: str | Path) -> tuple[dict | None, list[str]]:
    """(the newest checkpoint set whose every file matches its record, or None; a problem per bad set).

    Every rank and the launcher call it on the same files and so pick the same set."""
    run_dir, problems = Path(run_dir), []
    for ckpt in reversed(read_checkpoints(run_dir)):
        bad = []
        for name, rec in ckpt["files"].items():
            path = run_dir / ckpt["path"] / name
            if not path.is_file():
                bad.append(f"{path} is missing")
            elif os.path.getsize(path) != rec["size"] or sha256(path) != rec["sha256"]:
                bad.append(f"{path} is corrupt (size or SHA-256 differs from when it was written)")
        if not bad:
            return ckpt, problems
        problems.append(f"checkpoint at step {ckpt['step']}: {'; '.join(bad)}")
    return None, problems


def record_checkpoint(run_dir: str | Path, step: int, path: str, files: dict, keep: int) -> list[str]:
    """Adds a complete checkpoint set to checkpoint.json (atomically) and returns the paths of the
    recorded sets beyond the newest ``keep``, which the caller may delete: only sets this run wrote."""
    sets = [s for s in read_checkpoints(run_dir) if s["path"] != path]
    sets.append({"step": step, "path": path, "files": files})
    keep = max(keep, 1)
    drop, sets = sets[:-keep], sets[-keep:]
    atomic_write_text(Path(run_dir) / CHECKPOINT_FILE,
                      json.dumps({"step": step, "path": path, "sets": sets}, indent=2) + "\n")
    return [s["path"] for s in drop]


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


FINAL_LOSS_STEPS = 10


def final_loss(lines: list[dict]) -> float | None:
    """A run's final loss: the mean training loss of its last ``FINAL_LOSS_STEPS`` steps (one step's loss is one
    batch's, too noisy to compare runs by); the one definition summary.json and ``analysis`` use.

    >>> final_loss([{"loss": 9.0}] + [{"loss": 1.0}] * 5 + [{"loss": 3.0}] * 5)
    2.0
    """
    tail = [r["loss"] for r in lines[-FINAL_LOSS_STEPS:]]
    return sum(tail) / len(tail) if tail else None


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
        "emulated_ranks": bool(job.get("emulate_ranks")),
        "final_loss": final_loss(lines), "loss": [r["loss"] for r in lines],
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


__all__ = ["CHECKPOINTS_DIR", "CHECKPOINT_FILE", "EXPORT_FILE", "JOB_FILE", "JsonlAppender", "LOCK_FILE", "METRICS_COLUMNS",
           "METRICS_CSV", "METRICS_FILE", "TENSORBOARD_PREFIX", "metrics_rows", "write_metrics_csv", "MODEL_FILE", "CLUSTER_FILE",
           "plan_at", "final_loss", "FINAL_LOSS_STEPS",
           "PLANS_FILE", "RunLock", "SUMMARY_FILE", "file_record", "find_runs", "foreign_files", "intact_checkpoint",
           "is_run_dir", "measured_savings", "ours", "planned_savings", "read_checkpoints", "read_job", "read_jsonl",
           "record_checkpoint", "sha256", "summarise", "timeline_path", "timelines", "truncate_jsonl"]
