"""Comparison benchmark: D2FT against what a user would run instead, on this machine, in one run.

The job is the learning study's combination A (``benchmarks/learning.py``): the shipped
``data/pretrained/vit-fmnist0-4.safetensors`` backbone (dim 96, 6 blocks of 4 heads, 28 x 28
images in 4 x 4 patches) fine-tuned with AdamW on batches of 2 micro-batches x 16. Cases:

  timm-1-thread, timm-all-cores  plain timm training steps in this process, 1 thread / every core
  ddp-2, ddp-4                   torch DistributedDataParallel (gloo), the batch split over the ranks
  d2ft-full-2, d2ft-full-4       ``d2ft run --nproc K``, the all-FULL plan
  d2ft-hybrid-2, d2ft-hybrid-4   the same with hybrid at compute keep 0.6 (planned every step)

``step_s``: the median wall time of a step over --steps steps after one warm-up (synthetic images:
the time does not depend on their values; a d2ft step includes its planning). ``time_to_target_s``:
``step_s`` times the steps the study's runs of that arm took to reach the target top-1 (full's mean over
the study's seeds minus 1 point, the results page's time-to-accuracy target), median over seeds: timm
and DDP compute the full arm's steps (the same batch, loss and optimizer), and the study ran D2FT as 4
emulated ranks, which compute what 4 real ranks do (tests/test_runtime_dist.py), so a 2-rank hybrid,
whose plans differ, has no such figure. Ranks share this machine's cores, as in every runtime
benchmark here. One JSON line per case, then a summary line.

    .venv/bin/python benchmarks/compare.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This script's folder holds benchmarks named like the project's packages: keep it off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from runtime.feed import synthetic_batches  # noqa: E402
from runtime.job import Job  # noqa: E402
from runtime.prepare import prepare  # noqa: E402
from runtime.run import free_port, launch  # noqa: E402
from runtime.weights import build_model  # noqa: E402

ROOT = Path(_HERE).parent
RESULTS = ROOT / "benchmarks" / "results" / "results.jsonl"
JOB = Job(checkpoint="data/pretrained/vit-fmnist0-4.safetensors", data="synthetic", model_kwargs={"num_classes": 5},
          micro_batches=2, micro_batch_size=16, optimizer="adamw", lr=2e-3, evaluate=False, checkpoint_every=0,
          progress=False, timeout_s=300, seed=0)
"""The study's combination A job (benchmarks/learning.py: batch 2 x 16, AdamW at 2e-3), on synthetic images."""


def timm_steps(job: Job, steps: int, threads: int) -> list[float]:
    """Wall time of ``steps`` plain timm training steps (two micro-batches, as the study's), s each."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model(job)
        opt = torch.optim.AdamW(model.parameters(), lr=job.lr)
        stream, times = synthetic_batches(job, model), []
        for _ in range(steps):
            x, y = next(stream)
            t0 = time.perf_counter()
            opt.zero_grad()
            for xm, ym in zip(x.chunk(job.micro_batches), y.chunk(job.micro_batches)):
                (torch.nn.functional.cross_entropy(model(xm), ym) / job.micro_batches).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        return times
    finally:
        torch.set_num_threads(before)


def _ddp_rank(rank: int, world: int, port: int, job: Job, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=job.timeout_s))
    try:
        model = torch.nn.parallel.DistributedDataParallel(build_model(job))
        opt = torch.optim.AdamW(model.parameters(), lr=job.lr)
        stream, times = synthetic_batches(job, model.module), []
        for _ in range(steps):
            x, y = next(stream)
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]  # this rank's share of the batch
            t0 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()  # DDP averages the gradients over ranks
            opt.step()
            dist.barrier()  # the step ends when the slowest rank's does
            times.append(time.perf_counter() - t0)
        if rank == 0:
            Path(out).write_text(json.dumps(times))
    finally:
        dist.destroy_process_group()


def ddp_steps(job: Job, steps: int, world: int, tmp: Path) -> list[float]:
    out = tmp / f"ddp-{world}.json"
    mp.start_processes(_ddp_rank, args=(world, free_port(), job, steps, str(out)), nprocs=world, start_method="spawn")
    return json.loads(out.read_text())


def d2ft_steps(job: Job, steps: int, nproc: int, strategy: str, keep: float, tmp: Path) -> list[float]:
    out = tmp / f"d2ft-{strategy}-{nproc}"
    launch(prepare(job.replace(nproc=nproc, strategy=strategy, keep=keep, steps=steps, out_dir=str(out))))
    logs = [torch.load(out / f"rank{r}.pt", weights_only=True)["log"] for r in range(nproc)]
    return [max(log[i]["wall_s"] for log in logs) for i in range(steps)]


def epochs_to_target(path: Path = RESULTS) -> tuple[float | None, dict[str, tuple[float | None, int, int]]]:
    """The target top-1 and, per arm of the study's combination A, (the median over seeds of the epochs its
    runs took to reach it, or None unless every seed did; seeds that reached it; seeds) (the i-th evaluation
    of a run is at the end of epoch i + 1)."""
    if not path.exists():
        return None, {}
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    runs: dict[str, dict[int, dict]] = {}
    for r in recs:
        if r.get("section") == "learning" and r.get("stage") == "arm" and r.get("combo") == "A":
            runs.setdefault(r["arm"], {})[r["seed"]] = r
    if "full" not in runs:
        return None, {}
    target = statistics.fmean(r["top1"] for r in runs["full"].values()) - 0.01
    reach = {}
    for arm in ("full", "hybrid"):
        epochs = [next((i + 1 for i, (_, y) in enumerate(r["curve"]) if y >= target), None)
                  for r in runs.get(arm, {}).values()]
        reached = [e for e in epochs if e is not None]
        reach[arm] = (statistics.median(reached) if epochs and len(reached) == len(epochs) else None,
                      len(reached), len(epochs))
    return target, reach


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="steps per case; the first is a warm-up and not counted")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps must be at least 2 (one warm-up and one measured), got {args.steps}")
    from runtime.data import load_dataset

    per_epoch = len(load_dataset("fashion-mnist-5to9").train.images) // JOB.batch_size
    target, reach = epochs_to_target()
    with tempfile.TemporaryDirectory(prefix="d2ft-compare-") as scratch:  # the cases' run directories, removed after
        return _compare(args.steps, per_epoch, target, reach, Path(scratch))


def _compare(steps: int, per_epoch: int, target: float, reach: dict, tmp: Path) -> int:
    """Every case of ``main``, its run directories under ``tmp``."""
    plain = prepare(JOB)  # the model and its checkpoint resolved, as timm and DDP build it
    cases = [("timm-1-thread", "full", lambda: timm_steps(plain, steps, 1)),
             ("timm-all-cores", "full", lambda: timm_steps(plain, steps, os.cpu_count() or 1))]
    for k in (2, 4):
        cases += [(f"ddp-{k}", "full", lambda k=k: ddp_steps(plain, steps, k, tmp)),
                  (f"d2ft-full-{k}", "full", lambda k=k: d2ft_steps(JOB, steps, k, "full", 1.0, tmp)),
                  (f"d2ft-hybrid-{k}", "hybrid" if k == 4 else None,
                   lambda k=k: d2ft_steps(JOB, steps, k, "hybrid", 0.6, tmp))]
    summary = {}
    for name, arm, measure in cases:
        print(f"[compare] {name} ...", file=sys.stderr, flush=True)
        times = measure()[1:]
        step = statistics.median(times)
        epochs, reached, seeds = reach.get(arm, (None, 0, 0)) if arm else (None, 0, 0)
        rec = dict(case=name, step_s=step, steps_s=times, target_top1=target, arm=arm, epochs_to_target=epochs,
                   seeds_reaching_target=f"{reached} of {seeds}" if seeds else None,
                   time_to_target_s=None if epochs is None else epochs * per_epoch * step)
        print(json.dumps(rec), flush=True)
        summary[name] = {k: rec[k] for k in ("step_s", "time_to_target_s")}
    print(json.dumps({"case": "summary", "target_top1": target, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
