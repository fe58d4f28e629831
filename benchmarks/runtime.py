"""Runtime benchmark: what D2FT's execution costs and saves for real, one JSON line per case.

  overhead  one process running the all-FULL plan (every subnet on rank 0) against a plain
            timm training step of the same model, batch and optimizer (AdamW), one thread;
            --rounds runs of each, alternated, so that the machine's drift between two runs
            falls on both (medians over every round's steps; ``round_overheads`` per round).
  saving    4 ranks (gloo, this machine): measured compute time of a hybrid plan at keep
            0.6 against the all-FULL plan on the same placement, next to the saving the
            cost model planned.
Model: a ViT-Ti-sized timm ViT (dim 192, depth 12, 3 heads) on 32 x 32 images with 4 x 4
patches (65 tokens), 2 micro-batches of 4. Medians over --steps steps after one warm-up.

    .venv/bin/python benchmarks/runtime.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This script shares its name with the ``runtime`` package: keep its own folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import torch  # noqa: E402

from d2ft import CostModel, Op, Plan, plan_step  # noqa: E402
from runtime.feed import synthetic_batches  # noqa: E402
from runtime.job import Job  # noqa: E402
from runtime.prepare import local_cluster  # noqa: E402
from runtime.run import launch  # noqa: E402
from runtime.spec import model_spec_from_timm  # noqa: E402
from runtime.weights import build_model  # noqa: E402

KW = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, num_classes=10)


MODEL = Job(model="vit_tiny_patch16_224", model_kwargs=KW, checkpoint="none", data="synthetic", seed=0)


def job_for(plan: Plan, steps: int, out: Path) -> Job:
    return MODEL.replace(plan=plan, strategy=None, nproc=len(plan.devices), optimizer="adamw", lr=1e-3, steps=steps,
                         out_dir=str(out), timeout_s=300, progress=False)


def rank_logs(out: Path, n: int) -> list[list[dict]]:
    return [torch.load(out / f"rank{r}.pt", weights_only=True)["log"] for r in range(n)]


def plain_timm(steps: int, batch: int) -> list[float]:
    torch.set_num_threads(1)
    job = MODEL.replace(micro_batches=1, micro_batch_size=batch)
    model = build_model(job)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for x, y in itertools.islice(synthetic_batches(job, model), steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        for xm, ym in zip(x.chunk(2), y.chunk(2)):
            (torch.nn.functional.cross_entropy(model(xm), ym) / 2).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="steps per run; the first is a warm-up")
    p.add_argument("--rounds", type=int, default=3, help="alternated d2ft and plain-timm runs of the overhead case")
    args = p.parse_args(argv)
    with torch.device("meta"):
        spec = model_spec_from_timm(build_model(MODEL))
    with tempfile.TemporaryDirectory(prefix="d2ft-bench-") as scratch:  # the runs' directories, removed after
        _cases(spec, args, Path(scratch))
    return 0


def _cases(spec, args, tmp: Path) -> None:
    """The overhead and saving cases of ``main``, their run directories under ``tmp``."""
    one = local_cluster(1)
    full1 = Plan.uniform(spec, one, Op.FULL, 2, 4)
    d2ft_steps, timm_steps, rounds = [], [], []
    for r in range(args.rounds):
        launch(job_for(full1, args.steps, tmp / f"one{r}"))
        ours = [s["wall_s"] for s in rank_logs(tmp / f"one{r}", 1)[0][1:]]
        theirs = plain_timm(args.steps, full1.batch_size)[1:]
        d2ft_steps += ours
        timm_steps += theirs
        rounds.append(statistics.median(ours) / statistics.median(theirs) - 1)
    d2ft_s, timm_s = statistics.median(d2ft_steps), statistics.median(timm_steps)
    print(json.dumps(dict(case="overhead", d2ft_all_full_step_s=d2ft_s, timm_step_s=timm_s,
                          overhead=d2ft_s / timm_s - 1, rounds=args.rounds, round_overheads=rounds)), flush=True)

    four = local_cluster(4)
    hybrid = plan_step(spec, four, "hybrid", "dp", keep=0.6, micro_batches=2, micro_batch_size=4, seed=0).plan
    full4 = hybrid.with_ops([[[Op.FULL] * spec.heads] * spec.depth] * 2)
    measured = {}
    for name, plan in (("full", full4), ("hybrid", hybrid)):
        launch(job_for(plan, args.steps, tmp / name))
        logs = rank_logs(tmp / name, 4)
        per_rank = [statistics.median(s["counters"]["compute_s"] for s in log[1:]) for log in logs]
        measured[name] = dict(compute_s=per_rank, total_compute_s=sum(per_rank),
                              step_s=statistics.median(max(log[i]["wall_s"] for log in logs)
                                                       for i in range(1, args.steps)))
    planned = CostModel(spec, four).step(hybrid).compute_saving
    real = 1 - measured["hybrid"]["total_compute_s"] / measured["full"]["total_compute_s"]
    print(json.dumps(dict(case="saving", ranks=4, ops=hybrid.summary(), planned_compute_saving=planned,
                          measured_compute_saving=real, full=measured["full"], hybrid=measured["hybrid"],
                          step_time_saving=1 - measured["hybrid"]["step_s"] / measured["full"]["step_s"])), flush=True)


if __name__ == "__main__":
    sys.exit(main())
