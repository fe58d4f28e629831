"""Where a run's figures come from: versions, the code's git commit, host, date and command.

``d2ft run`` writes it into ``summary.json`` (key ``provenance``), so a number quoted from a
run can be traced to the code and machine that measured it.
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


__all__ = ["git_commit", "provenance"]
