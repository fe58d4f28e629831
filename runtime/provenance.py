"""Where a run's figures come from: versions, the code's git commit, host, date and command.

``d2ft run`` writes it into ``summary.json`` (key ``provenance``), so a number quoted from a
run can be traced to the code and machine that measured it; ``machine`` is what a calibrated
profile records of the machine it was measured on, and ``profile_mismatch`` what differs here.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

PACKAGES = ("d2ft", "torch", "timm", "numpy", "mip")


def git_commit(path: Path = Path(__file__).resolve().parents[1]) -> dict | None:
    """{"commit": sha, "dirty": bool} of the checkout holding ``path``; None outside one (an installed wheel)."""
    if not (path / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())}


def provenance(command: list[str] | None = None) -> dict:
    """Versions, git commit, host, date (UTC, ISO 8601), threads and the command line."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    argv = sys.argv if command is None else command
    return {"versions": {"python": platform.python_version(), **versions}, "git": git_commit(),
            "host": socket.gethostname(), "platform": platform.platform(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(argv[0]).name, *argv[1:]]) if argv else ""}


def machine() -> dict:
    """What a profile is measured on: host, usable cores, threads per rank, versions, date (UTC)."""
    import timm
    import torch

    return {"host": socket.gethostname(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "threads_per_rank": 1, "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def profile_mismatch(cluster) -> str | None:
    """Why a measured profile does not describe this machine (host, cores or torch differ), or None."""
    then = cluster.measured_on
    if not then:
        return None
    now = machine()
    diff = [f"{k} {then.get(k)!r} there, {now[k]!r} here" for k in ("host", "cores", "machine", "torch")
            if then.get(k) is not None and then.get(k) != now[k]]
    return "; ".join(diff) or None


__all__ = ["git_commit", "machine", "profile_mismatch", "provenance"]
