"""Launching a prepared job's ranks: locally (``launch``) or under torchrun (``main``).

``run(job)`` prepares a job, writes its run directory's job.json, launches it and returns its
summary. ``launch(job)`` spawns ``job.nproc`` processes on this machine (gloo on 127.0.0.1, or NCCL
with ``device="cuda"``); each joins the process group and runs ``runtime.train.train``. If a
rank fails, the others are stopped and the failing rank's error is raised as one line;
Ctrl-C stops every rank. Under ``torchrun``, ``d2ft run`` (or ``python -m runtime.run
RUN_DIR/job.json``) is one rank (``run_under_torchrun``): it takes its rank, world size and
rendezvous from the environment, and the coordinator's rank writes the summary (the run
directory must be one folder every node sees).
"""

from __future__ import annotations

import datetime
import logging
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
from .prepare import claimed, prepare, spec_of
from .provenance import provenance
from .train import train


RANK_BASE_BYTES = 0.8e9
"""Resident memory of one local rank before its model's own state, B: 0.79-0.83 GB were measured for
ranks of the shipped backbone (0.7 M parameters) on the reference machine (2026-12-01), mostly torch
and timm themselves."""
RANK_BYTES_PER_PARAM = 16
"""Upper bound per model parameter and rank, B: every rank builds the whole fp32 model (4 B) before
keeping its part, plus gradients and two AdamW moments of what it trains."""


def check_capacity(nproc: int, params: int) -> None:
    """ValueError when ``nproc`` local ranks of a model with ``params`` parameters would not fit in
    this machine's memory (90% of it)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_rank = RANK_BASE_BYTES + RANK_BYTES_PER_PARAM * params
    most = int(0.9 * total // per_rank)
    if nproc > most:
        raise ValueError(f"--nproc {nproc}: this machine has {cores} cores and {total / 2**30:.0f} GiB; each rank "
                         f"needs about {per_rank / 1e9:.1f} GB, so at most {most} local ranks fit "
                         "(across machines, launch with torchrun)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank: int, world: int, init_method: str, job: Job, finish=None) -> None:
    """One rank of the prepared ``job``: joins the process group, runs ``runtime.train.train``, and ends
    the rank's process (``finish()``, if given, runs first, after the last barrier: the summary).

    A rank that finished leaves with exit status 0 at once (``os._exit``), after the barrier, the
    process group's destruction and a flush of its output: every file it wrote is closed by then,
    and what interpreter shutdown would still do is destroy gloo's threads, which has aborted a
    finished rank (SIGABRT, "terminate called without an active exception") on this machine.
    """
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=job.timeout_s)
    backend = "nccl" if job.device == "cuda" else "gloo"
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt:  # a torchrun restart: the store may still hold the dead attempt's addresses, so use fresh keys
        store, _, _ = next(dist.rendezvous(init_method, rank, world, timeout=timeout))
        store = dist.PrefixStore(f"d2ft/attempt-{attempt}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    else:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=timeout)
    try:
        train(rank, world, job)
        dist.barrier()  # no rank tears its gloo pairs down while a peer's last message is in flight
    finally:
        dist.destroy_process_group()
    if finish is not None:
        finish()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(job: Job) -> None:
    """Runs the prepared ``job`` on ``job.nproc`` local processes; raises RuntimeError naming a failing rank.

    Every rank is gone when it returns or raises (Ctrl-C included), and no file is left outside
    the run directory (torch's per-rank error files are removed)."""
    if not job.prepared:
        raise ValueError("launch takes a prepared job (runtime.prepare.prepare)")
    nproc, port = job.nproc, job.port or free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise ValueError(f"--port {port}: port {port} on 127.0.0.1 is in use; choose another with --port "
                             "or leave it out")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # On a failure torch logs "Terminating process N via signal SIGTERM" for each peer it stops; the
    # one-line error below says it all.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
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
    finally:
        for path in ctx.error_files:
            Path(path).unlink(missing_ok=True)


def _stop(ctx) -> None:
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    for p in ctx.processes:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()


def run(job: Job, on_start=None, command: list[str] | None = None) -> dict:
    """Prepares ``job`` (every check before any rank starts), claims its run directory, runs it on
    ``job.nproc`` local ranks and returns its summary (``d2ft.rundir.summarise`` and the run's
    ``runtime.provenance``, also written to RUN_DIR/summary.json). ``on_start(prepared_job)``, if given, is called as the ranks start;
    ``command`` is the command line recorded (default: this process's ``sys.argv``)."""
    job = prepare(job)
    check_capacity(job.nproc, spec_of(job).params)
    with claimed(job):
        if on_start is not None:
            on_start(job)
        launch(job)
    return write_summary(job, command)


def write_summary(job: Job, command: list[str] | None = None) -> dict:
    """RUN_DIR/summary.json of the finished ``job`` (its summary and provenance), returned."""
    summary = {**rundir.summarise(job.out_dir), "provenance": provenance(command)}
    write_json(Path(job.out_dir) / rundir.SUMMARY_FILE, summary)
    return summary


def under_torchrun() -> bool:
    """Whether this process is a rank that torchrun started (its environment names rank and world)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def run_under_torchrun(job: Job, on_start=None, on_summary=None, command: list[str] | None = None,
                       claim: bool = True) -> None:
    """This process's rank of ``job`` under torchrun; ends the process when the rank is done.

    Every rank prepares the job itself unless it is prepared (the same checks and the same plan:
    preparing is deterministic); the coordinator's rank claims the run directory (its lock, job.json) before
    it joins the process group, so no rank trains before the folder is checked, and after the
    last step writes summary.json and passes the summary to ``on_summary``. A job that torchrun
    restarted (``--max-restarts``; TORCHELASTIC_RESTART_COUNT > 0) resumes from its last intact
    checkpoint, and its coordinator only takes the folder's lock (the folder is its own). With
    ``claim`` False (a job file that ``--dry-run`` wrote there) it only takes the lock too.
    RUN_DIR must be one folder that every node sees."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if job.prepared and job.nproc != world:
        raise ValueError(f"the job was prepared for {job.nproc} ranks but torchrun started {world}; use "
                         f"--nproc-per-node (x --nnodes) = {job.nproc}, or prepare it again with --nproc {world}")
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if restarted and not job.resume:
        job = job.replace(resume=True)
    if not job.prepared:  # a prepared job (a --dry-run's job.json) runs as it is
        job = prepare(job)
    if job.nproc != world:
        raise ValueError(f"--nproc {job.nproc}, but torchrun started {world} ranks; leave --nproc out under torchrun "
                         f"(it takes the world size) or start --nproc-per-node x --nnodes = {job.nproc} ranks")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if rank != job.coordinator:
        run_rank(rank, world, "env://", job)
        return
    with claimed(job) if claim and not restarted else rundir.RunLock(job.out_dir):
        if on_start is not None:
            on_start(job)

        def finish() -> None:
            summary = write_summary(job, command)
            if on_summary is not None:
                on_summary(summary)

        run_rank(rank, world, "env://", job, finish=finish)  # exits the process when the rank is done


def main(argv=None) -> int:
    """torchrun entry: ``torchrun --nproc-per-node N -m runtime.run [--resume] RUN_DIR/job.json``.

    The coordinator's rank holds the run directory's lock and writes summary.json at the end.
    ``--resume`` continues the run from its last intact checkpoint; so does a job that torchrun
    restarted by itself (``--max-restarts``; TORCHELASTIC_RESTART_COUNT > 0). ``d2ft run`` under
    torchrun does the same without a job file (``run_under_torchrun``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in args
    args = [a for a in args if a != "--resume"]
    if len(args) != 1:
        return _usage("usage: python -m runtime.run [--resume] RUN_DIR/job.json (under torchrun)")
    if not under_torchrun():
        return _usage("runtime.run: no torchrun environment (RANK, WORLD_SIZE, ...); start it with torchrun, or "
                      "run the job with `d2ft run --config` on this machine")
    try:
        job = Job.load(args[0])
    except (ValueError, OSError) as e:
        return _usage(f"runtime.run: {e}")
    if not job.prepared:
        return _usage(f"{args[0]} is not a prepared job (no plan); write one with `d2ft run --dry-run`")
    run_dir = Path(job.out_dir)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    resume = resume or job.resume or restarted
    if rundir.is_run_dir(run_dir) and not resume:
        return _usage(f"{run_dir} already holds this run's metrics; add --resume (python -m runtime.run --resume "
                      f"{args[0]}) to continue it from its last checkpoint, or make a new job with "
                      "`d2ft run --dry-run --out NEW_DIR`")
    try:
        run_under_torchrun(job.replace(resume=resume), command=["python", "-m", "runtime.run", *sys.argv[1:]],
                           claim=False)
    except ValueError as e:
        return _usage(f"runtime.run: {e}")
    return 0


def _usage(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
