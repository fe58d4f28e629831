"""Checkpoints of a run: every rank's state, written atomically, and the pointer that makes a set count.

A checkpoint set is ``RUN_DIR/checkpoints/step-NNNNNNN/rank{r}.pt`` for every rank; each file
holds the step it resumes at, the rank's part of the model, its optimizer state and (on the
coordinator) the re-planner's scores, the current plan and the plan index. Each rank writes
its file to a temporary name and renames it; after a barrier the coordinator moves
``RUN_DIR/checkpoint.json`` to the new set, so a set is used only once it is complete.
Files are read back with ``torch.load(weights_only=True)``: tensors and plain containers, no code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from d2ft import rundir
from d2ft.serial import read_json, write_json


def save_checkpoint(run_dir: Path, rank: int, next_step: int, part, opt, extra: dict, is_coord: bool,
                    keep: int = 1) -> None:
    """Every rank writes its file atomically; then the coordinator points ``checkpoint.json`` at the set
    and removes all but the newest ``keep`` sets."""
    folder = run_dir / rundir.CHECKPOINTS_DIR / f"step-{next_step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"rank{rank}.pt"
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({"step": next_step, "part": part.state_dict(), "opt": opt.state_dict(), **extra}, tmp)
    os.replace(tmp, out)
    dist.barrier()  # every rank's file is in place before the pointer moves
    if is_coord:
        write_json(run_dir / rundir.CHECKPOINT_FILE, {"step": next_step, "path": str(folder.relative_to(run_dir))})
        sets = sorted(p for p in (run_dir / rundir.CHECKPOINTS_DIR).iterdir() if p.is_dir() and p.name.startswith("step-"))
        for old in sets[:-max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run_dir: Path, rank: int, device) -> dict | None:
    """This rank's file of the last complete checkpoint set, or None when the run has none."""
    pointer = run_dir / rundir.CHECKPOINT_FILE
    if not pointer.exists():
        return None
    where = read_json(pointer, "checkpoint pointer")
    return torch.load(run_dir / where["path"] / f"rank{rank}.pt", map_location=device, weights_only=True)


__all__ = ["load_checkpoint", "save_checkpoint"]
