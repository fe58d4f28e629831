"""Running a D2FT job: local spawn or torchrun, and the measured Traces.

A job is a plain JSON-able dict (``d2ft run`` writes it to ``RUN_DIR/job.json``):

    model, model_kwargs   timm name and keyword arguments (e.g. img_size, num_classes)
    checkpoint            optional local weights file (safetensors or a torch state dict)
    data, augment         dataset reference (``runtime.data.DATASETS``), or "synthetic";
                          whether training images are randomly shifted (and flipped)
    plan                  the initial Plan, as a dict; plan device k is rank k; its placement
                          is kept for the whole run
    cluster               the Cluster as a dict (the planner's and cost model's view)
    coordinator           the coordinator's rank (the plan's cluster coordinator)
    strategy, solver, keep, comm_keep, replan_every, full_warmup
                          how plans are made during the run (``train.Replanner``);
                          strategy None runs ``plan`` as it is
    schedule              optional {"plans": [plan dicts], "steps_each": K}: plan i runs
                          steps i*K .. i*K+K-1 (same placement and batch shape as ``plan``)
    optimizer, lr, weight_decay, momentum, steps, seed, batch_size
    lr_schedule, lr_warmup_steps
                          "cosine" (default: linear warm-up, then cosine decay) or "constant"
    lora                  optional {"rank", "alpha", "targets"}
    eval_every, eval_batch_size, evaluate (False: no test top-1 at all), checkpoint_every,
    keep_checkpoints, resume, progress
    slowdown              optional per-rank compute slowdown factors (emulation)
    speed_oblivious       plan as if there were no slowdown (the baseline of a heterogeneity study)
    timeout_s             how long a rank waits for a peer before giving up
    out_dir               the run directory

``launch(job, nproc)`` spawns the ranks on this machine (gloo on 127.0.0.1); under
``torchrun`` run ``python -m runtime.run RUN_DIR/job.json``, which takes its rank, world
size and rendezvous from the environment (the run directory must then be one shared
folder). If a rank fails, the others are stopped and the failing rank's error is raised;
Ctrl-C stops every rank. The training loop itself is ``runtime.train``.

Peak memory on CPU is the bytes of the parameters, gradients and optimizer state a rank
holds (activations are not counted); on CUDA it is the allocator's peak.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from d2ft.trace import DeviceStats, Trace



def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(job: dict):
    """The timm model of ``job``, initialised from its seed (the same on every rank), then its checkpoint."""
    import timm

    torch.manual_seed(job["seed"])
    model = timm.create_model(job["model"], pretrained=False, **job.get("model_kwargs", {}))
    if job.get("checkpoint"):
        load_weights(model, job["checkpoint"])
    return model


def read_metadata(path: str | Path) -> dict:
    """The metadata of a safetensors file (model, model_kwargs, ...) without reading its tensors; {} for a
    torch checkpoint, which has none."""
    return read_weights(path, tensors=False)[1]


def read_weights(path: str | Path, tensors: bool = True) -> tuple[dict, dict]:
    """(state dict, metadata) of a safetensors file or a torch checkpoint; ValueError if unreadable.

    ``tensors=False`` reads a safetensors file's header only (the state dict comes back empty)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; give the path of a local weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()} if tensors else {}, dict(f.metadata() or {})
        if not tensors:
            return {}, {}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch raise many kinds on a corrupt file
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {str(e)[:200]}); "
                         "is it a complete safetensors or torch file?") from None
    for key in ("state_dict", "model", "state_dict_ema"):  # common wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a state dict of tensors")
    return state, {}


def load_weights(model, path: str | Path) -> list[str]:
    """Loads ``path`` into ``model``; a classifier of another size is left at its init (returned keys).

    Raises ValueError naming the mismatches when the checkpoint is of another architecture.
    """
    state, _ = read_weights(path)
    own = model.state_dict()
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    head = [k for k in shapes if k.startswith("head")]
    body = [k for k in shapes if not k.startswith("head")]
    if missing or unexpected or body:
        parts = []
        if body:
            k = body[0]
            parts.append(f"{len(body)} tensors differ in shape (e.g. {k}: checkpoint {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} model tensors are missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint tensors are unknown to the model (e.g. {unexpected[0]})")
        raise ValueError(f"checkpoint {str(path)!r} is not a {type(model).__name__} of this shape: {'; '.join(parts)}. "
                         "Give the model name and --model-kwargs it was trained with (its manifest or metadata "
                         "says), or leave --model out to take them from the checkpoint")
    for k in head:
        state[k] = own[k]  # a new task's classifier: keep the seeded init
    model.load_state_dict(state)
    return head


def synthetic_batches(job: dict, model):
    """Seeded random images and labels, the same on every rank: an endless stream of (images, labels)."""
    g = torch.Generator().manual_seed(job["seed"] + 1)
    size = model.patch_embed.img_size
    chans = model.patch_embed.proj.in_channels
    b = job["batch_size"]
    while True:
        yield torch.randn(b, chans, *size, generator=g), torch.randint(0, model.num_classes, (b,), generator=g)


def make_optimizer(params, job: dict) -> torch.optim.Optimizer:
    name, lr = job.get("optimizer", "adamw"), job.get("lr", 1e-3)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=job.get("momentum", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=job.get("weight_decay", 0.05))
    raise ValueError(f"unknown optimizer {name!r}; valid: sgd, adamw")


def run_rank(rank: int, world: int, init_method: str, job: dict) -> None:
    """One rank of ``job``: joins the process group and runs ``runtime.train.train``."""
    from .train import train

    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=job.get("timeout_s", 120))
    backend = "nccl" if job.get("device") == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=timeout)
    try:
        train(rank, world, job)
        dist.barrier()  # no rank tears its gloo pairs down while a peer's last message is in flight
    finally:
        dist.destroy_process_group()


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


def traces(run_dir: str | Path, meta: dict | None = None) -> list[Trace]:
    """One measured Trace per step, from ``RUN_DIR/metrics.jsonl``."""
    from .train import METRICS_FILE

    result = []
    for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        devices = {d.get("name", f"rank{r}"): DeviceStats(busy_s=d["busy_s"], sent_bytes=d["sent_bytes"],
                                                          recv_bytes=d["recv_bytes"],
                                                          peak_memory_bytes=d["peak_memory_bytes"],
                                                          comm_s=d["comm_s"], wait_s=d["wait_s"])
                   for r, d in enumerate(rec["devices"])}
        result.append(Trace("runtime", rec["step_time_s"], devices,
                            meta={**(meta or {}), "step": rec["step"], "loss": rec["loss"]}))
    return result


def main(argv=None) -> int:
    """torchrun entry: ``torchrun --nproc-per-node N -m runtime.run RUN_DIR/job.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runtime.run RUN_DIR/job.json (under torchrun)", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text())
    run_dir = Path(job["out_dir"])
    if (run_dir / "metrics.jsonl").exists() and not job.get("resume"):
        print(f"{run_dir} already holds this run's metrics; set \"resume\": true in {args[0]} to continue it "
              "from its last checkpoint, or make a new job with `d2ft run --dry-run --out NEW_DIR`", file=sys.stderr)
        return 2
    run_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
