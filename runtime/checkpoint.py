"""Checkpoints of a run: every rank's state, written atomically, and the pointer that makes a set count.

A checkpoint set is ``RUN_DIR/checkpoints/step-NNNNNNN/rank{r}.pt`` for every rank; each file
holds the step it resumes at, the rank's part of the model, its optimizer state and (on the
coordinator) the re-planner's scores, the current plan and the plan index. Each rank writes
its file to a temporary name and renames it; after a barrier the coordinator moves
``RUN_DIR/checkpoint.json`` to the new set, so a set is used only once it is complete.
Files are read back with ``torch.load(weights_only=True)``: tensors and plain containers, no code.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from d2ft import rundir

log = logging.getLogger(__name__)


def save_checkpoint(run_dir: Path, rank: int, coord: int, next_step: int, part, opt, extra: dict,
                    keep: int = 1) -> None:
    """Every rank writes its file atomically and reports its size and SHA-256; then the coordinator
    records the complete set in ``checkpoint.json`` and removes the recorded sets beyond the newest
    ``keep`` (never a folder the pointer does not record)."""
    rel = f"{rundir.CHECKPOINTS_DIR}/step-{next_step:07d}"
    folder = run_dir / rel
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"rank{rank}.pt"
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({"step": next_step, "part": part.state_dict(), "opt": opt.state_dict(), **extra}, tmp)
    os.replace(tmp, out)
    is_coord = rank == coord
    records = [None] * dist.get_world_size() if is_coord else None
    dist.gather_object((out.name, rundir.file_record(out)), records, dst=coord)
    if is_coord:
        for old in rundir.record_checkpoint(run_dir, next_step, rel, dict(records), keep):
            shutil.rmtree(run_dir / old, ignore_errors=True)
    dist.barrier()  # the pointer has moved before any rank goes on


def choose_checkpoint(run_dir: Path) -> dict | None:
    """The newest intact checkpoint set (``d2ft.rundir.intact_checkpoint``), a warning per damaged one
    skipped; None when the run has none; ValueError naming the files when none is intact. The
    coordinator chooses and tells the other ranks, so the files are verified once."""
    ckpt, problems = rundir.intact_checkpoint(run_dir)
    for problem in problems:
        log.warning("skipping a damaged checkpoint: %s", problem)
    if ckpt is None and problems:
        raise ValueError(f"no intact checkpoint in {run_dir} to resume from: {'; '.join(problems)}")
    return ckpt


def load_checkpoint(run_dir: Path, ckpt: dict, rank: int, device) -> dict:
    """This rank's file of checkpoint set ``ckpt`` (tensors and plain containers only)."""
    return torch.load(run_dir / ckpt["path"] / f"rank{rank}.pt", map_location=device, weights_only=True)


__all__ = ["choose_checkpoint", "load_checkpoint", "save_checkpoint"]
