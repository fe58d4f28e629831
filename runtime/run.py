"""Running a D2FT job: local spawn or torchrun, the per-rank loop, and the measured Traces.

A job is a plain JSON-able dict (``d2ft run`` writes it to ``RUN_DIR/job.json``):

    model, model_kwargs   timm name and keyword arguments (e.g. img_size, num_classes)
    checkpoint            optional local weights file (timm's checkpoint_path)
    plan                  the Plan, as a dict; plan device k is rank k
    coordinator           the coordinator's rank (the plan's cluster coordinator)
    optimizer, lr, weight_decay, momentum, steps, seed, batch_size
    slowdown              optional per-rank compute slowdown factors (emulation)
    timeout_s             how long a rank waits for a peer before giving up
    out_dir               where ranks write rank{r}.pt

``launch(job, nproc)`` spawns the ranks on this machine (gloo on 127.0.0.1); under
``torchrun`` run ``python -m runtime.run RUN_DIR/job.json``, which takes its rank, world
size and rendezvous from the environment. If a rank fails, the others are stopped and
the failing rank's error is raised; Ctrl-C stops every rank.

Data is a seeded synthetic batch stream for now (the same on every rank; only the
coordinator uses it). Peak memory on CPU is the bytes of the parameters, gradients and
optimizer state a rank holds (activations are not counted); on CUDA it is the allocator's
peak.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from d2ft.plan import Plan
from d2ft.trace import DeviceStats, Trace

from .executor import Coordinator, Counters, Link, Worker


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(job: dict):
    """The timm model of ``job``, initialised from its seed (the same on every rank), or its checkpoint."""
    import timm

    torch.manual_seed(job["seed"])
    kwargs = dict(job.get("model_kwargs", {}))
    if job.get("checkpoint"):
        path = Path(job["checkpoint"])
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; give the path of a local weights file")
        kwargs["checkpoint_path"] = str(path)
    return timm.create_model(job["model"], pretrained=False, **kwargs)


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


def _state_bytes(part, opt) -> int:
    tensors = list(part.parameters()) + [p.grad for p in part.parameters() if p.grad is not None]
    tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def run_rank(rank: int, world: int, init_method: str, job: dict) -> None:
    """One rank of ``job`` (module docstring)."""
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=job.get("timeout_s", 120))
    backend = "nccl" if job.get("device") == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=timeout)
    try:
        _train(rank, world, job)
    finally:
        dist.destroy_process_group()


def _train(rank: int, world: int, job: dict) -> None:
    plan = Plan.from_dict(job["plan"])
    if len(plan.devices) != world:
        raise ValueError(f"the plan has {len(plan.devices)} devices but {world} ranks were started")
    model = build_model(job)
    coord = job.get("coordinator", 0)
    batches = synthetic_batches(job, model, job["steps"]) if rank == coord else [None] * job["steps"]
    tokens, dim = model.patch_embed.num_patches + model.num_prefix_tokens, model.embed_dim
    part = Coordinator(model, plan, rank) if rank == coord else Worker(model, plan, rank, coord)
    del model  # a worker keeps only its shards
    device = torch.device("cpu")
    if job.get("device") == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
        part.to(device)
        batches = [b if b is None else (b[0].to(device), b[1].to(device)) for b in batches]
    opt = make_optimizer([p for p in part.parameters() if p.requires_grad], job)
    slowdown = (job.get("slowdown") or [1.0] * world)[rank]
    log = []
    for batch in batches:
        opt.zero_grad(set_to_none=False)
        counters = Counters()
        link = Link(counters, slowdown, device)
        t0 = time.perf_counter()
        link.start()
        if rank == coord:
            loss, logits = part.step(*batch, link)
        else:
            part.step((plan.micro_batch_size, tokens, dim), link)
            loss = logits = None
        opt.step()
        link.stretch()  # the backward tail and the optimizer step are compute too
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _state_bytes(part, opt)
        log.append({"loss": loss if loss is None else loss.cpu(), "logits": logits if logits is None else logits.cpu(),
                    "wall_s": time.perf_counter() - t0, "peak_memory_bytes": peak, "counters": counters.__dict__})
    out = Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in part.state_dict().items()}
    tmp = out / f".rank{rank}.pt.tmp"
    torch.save({"rank": rank, "state": state, "log": log}, tmp)
    os.replace(tmp, out / f"rank{rank}.pt")


def launch(job: dict, nproc: int, port: int | None = None) -> None:
    """Runs ``job`` on ``nproc`` local processes; raises RuntimeError naming a failing rank."""
    port = port or free_port()
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


def traces(out_dir: str | Path, plan: Plan, meta: dict | None = None) -> list[Trace]:
    """One measured Trace per step from the ranks' files in ``out_dir``."""
    out = Path(out_dir)
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(len(plan.devices))]
    result = []
    for step in range(len(ranks[0]["log"])):
        devices, loss = {}, None
        for r, name in enumerate(plan.devices):
            rec = ranks[r]["log"][step]
            c = rec["counters"]
            devices[name] = DeviceStats(busy_s=c["compute_s"], sent_bytes=c["sent_bytes"], recv_bytes=c["recv_bytes"],
                                        peak_memory_bytes=rec["peak_memory_bytes"], comm_s=c["comm_s"],
                                        wait_s=c["wait_s"])
            if rec["loss"] is not None:
                loss = float(rec["loss"])
        wall = max(ranks[r]["log"][step]["wall_s"] for r in range(len(ranks)))
        result.append(Trace("runtime", wall, devices, meta={**(meta or {}), "step": step, "loss": loss}))
    return result


def main(argv=None) -> int:
    """torchrun entry: ``torchrun --nproc-per-node N -m runtime.run RUN_DIR/job.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runtime.run RUN_DIR/job.json (under torchrun)", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text())
    run_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
