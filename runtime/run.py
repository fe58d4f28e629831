"""Launching a prepared job's ranks: locally (``launch``) or under torchrun (``main``).

``run(job)`` prepares a job, writes its run directory's job.json, launches it and returns its
summary. ``launch(job)`` spawns ``job.nproc`` processes on this machine (gloo on 127.0.0.1, or NCCL
with ``device="cuda"``); each joins the process group and runs ``runtime.train.train``. If a
rank fails, the others are stopped and the failing rank's error is raised as one line;
Ctrl-C stops every rank. Under ``torchrun`` run ``python -m runtime.run RUN_DIR/job.json``,
which takes its rank, world size and rendezvous from the environment (the run directory
must then be one shared folder).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from d2ft import rundir
from d2ft.serial import write_json

from .job import Job
from .prepare import prepare, write_job
from .train import train


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank: int, world: int, init_method: str, job: Job) -> None:
    """One rank of the prepared ``job``: joins the process group, runs ``runtime.train.train``, and ends
    the rank's process.

    A rank that finished leaves with exit status 0 at once (``os._exit``), after the barrier, the
    process group's destruction and a flush of its output: every file it wrote is closed by then,
    and what interpreter shutdown would still do is destroy gloo's threads, which has aborted a
    finished rank (SIGABRT, "terminate called without an active exception") on this machine.
    """
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=job.timeout_s)
    backend = "nccl" if job.device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=timeout)
    try:
        train(rank, world, job)
        dist.barrier()  # no rank tears its gloo pairs down while a peer's last message is in flight
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(job: Job) -> None:
    """Runs the prepared ``job`` on ``job.nproc`` local processes; raises RuntimeError naming a failing rank."""
    if not job.prepared:
        raise ValueError("launch takes a prepared job (runtime.prepare.prepare)")
    nproc, port = job.nproc, job.port or free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} on 127.0.0.1 is in use; choose another with --port or leave it out")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = mp.start_processes(run_rank, args=(nproc, f"tcp://127.0.0.1:{port}", job), nprocs=nproc, join=False,
                             start_method="spawn")
    try:
        while not ctx.join():
            pass
    except KeyboardInterrupt:
        _stop(ctx)
        raise
    except mp.ProcessRaisedException as e:
        _stop(ctx)
        last = [line for line in str(e).strip().splitlines() if line.strip()][-1]
        raise RuntimeError(f"rank {e.error_index} failed: {last}") from None
    except mp.ProcessExitedException as e:
        _stop(ctx)
        raise RuntimeError(f"rank {e.error_index} died (exit code {e.exit_code}); the other ranks were stopped") from None


def _stop(ctx) -> None:
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    for p in ctx.processes:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()


def run(job: Job) -> dict:
    """Prepares ``job`` (every check before any rank starts), claims its run directory, runs it on
    ``job.nproc`` local ranks and returns its summary (``d2ft.rundir.summarise``, also written to
    RUN_DIR/summary.json)."""
    job = prepare(job)
    write_job(job)
    launch(job)
    summary = rundir.summarise(job.out_dir)
    write_json(Path(job.out_dir) / rundir.SUMMARY_FILE, summary)
    return summary


def main(argv=None) -> int:
    """torchrun entry: ``torchrun --nproc-per-node N -m runtime.run RUN_DIR/job.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runtime.run RUN_DIR/job.json (under torchrun)", file=sys.stderr)
        return 2
    job = Job.load(args[0])
    if not job.prepared:
        print(f"{args[0]} is not a prepared job (no plan); write one with `d2ft run --dry-run`", file=sys.stderr)
        return 2
    run_dir = Path(job.out_dir)
    if rundir.is_run_dir(run_dir) and not job.resume:
        print(f"{run_dir} already holds this run's metrics; set \"resume\": true in {args[0]} to continue it "
              "from its last checkpoint, or make a new job with `d2ft run --dry-run --out NEW_DIR`", file=sys.stderr)
        return 2
    run_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", job)  # exits the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
