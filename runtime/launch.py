"""Launching ranks on one machine, and the per-rank training loop of a job.

``spawn_job(job, nproc)`` starts ``nproc`` processes (torch.multiprocessing, "spawn"),
each joining a gloo process group on 127.0.0.1 at a free port, and runs ``run_rank``; an
exception in any rank stops them all and is raised here with that rank's traceback.

A job is a plain dict: the timm model name and keyword arguments, the plan (as a dict),
the optimizer, the number of steps, the seed, and the data (a seeded synthetic batch
generator for now). Each rank writes ``rank{r}.pt`` to the job's ``out_dir``: its
parameters after the last step, and per step its loss (coordinator), logits
(coordinator) and counters.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from d2ft.plan import Plan

from .executor import Coordinator, Counters, Link, Worker


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(job: dict):
    """The timm model of ``job``, initialised from the job's seed (the same on every rank)."""
    import timm

    torch.manual_seed(job["seed"])
    return timm.create_model(job["model"], pretrained=False, **job.get("model_kwargs", {}))


def synthetic_batches(job: dict, model, steps: int):
    """Seeded random images and labels, the same on every rank: (images, labels) per step."""
    g = torch.Generator().manual_seed(job["seed"] + 1)
    size = model.patch_embed.img_size
    chans = model.patch_embed.proj.in_channels
    b = job["batch_size"]
    return [(torch.randn(b, chans, *size, generator=g), torch.randint(0, model.num_classes, (b,), generator=g))
            for _ in range(steps)]


def make_optimizer(params, job: dict) -> torch.optim.Optimizer:
    name, lr = job.get("optimizer", "adamw"), job.get("lr", 1e-3)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=job.get("momentum", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=job.get("weight_decay", 0.05))
    raise ValueError(f"unknown optimizer {name!r}; valid: sgd, adamw")


def run_rank(rank: int, world: int, port: int, job: dict) -> None:
    """One rank of ``job`` (module docstring)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        plan = Plan.from_dict(job["plan"])
        if len(plan.devices) != world:
            raise ValueError(f"the plan has {len(plan.devices)} devices but {world} ranks were started")
        model = build_model(job)
        coord = job.get("coordinator", 0)
        batches = synthetic_batches(job, model, job["steps"])
        tokens, dim = model.patch_embed.num_patches + model.num_prefix_tokens, model.embed_dim
        part = Coordinator(model, plan, rank) if rank == coord else Worker(model, plan, rank, coord)
        del model  # a worker keeps only its shards
        opt = make_optimizer([p for p in part.parameters() if p.requires_grad], job)
        log = []
        for images, labels in batches:
            opt.zero_grad(set_to_none=False)
            counters = Counters()
            link = Link(counters)
            t0 = time.perf_counter()
            if rank == coord:
                loss, logits = part.step(images, labels, link)
            else:
                part.step((plan.micro_batch_size, tokens, dim), link)
                loss = logits = None
            wall = time.perf_counter() - t0
            opt.step()
            if rank == coord:
                counters.compute_s = wall - counters.comm_s
            log.append({"loss": loss, "logits": logits, "wall_s": wall, "counters": counters.__dict__})
        out = Path(job["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().clone() for k, v in part.state_dict().items()}
        torch.save({"rank": rank, "state": state, "log": log}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn_job(job: dict, nproc: int) -> None:
    """Runs ``job`` on ``nproc`` local processes; raises with the failing rank's traceback."""
    port = free_port()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    mp.start_processes(run_rank, args=(nproc, port, job), nprocs=nproc, join=True, start_method="spawn")
