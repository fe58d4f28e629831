"""Single-GPU ViT steps measured here against the cost model: the validation rows a lent GPU adds.

For each model, a timm ViT (random weights: speed does not depend on them) trains on synthetic
images as timm's own benchmark does (SGD with momentum 0.9, cross-entropy, 16-bit autocast) and runs
inference (forward only, no gradients); each is timed over ``--steps`` steps after ``--warmup``, the
GPU synchronised around every step (``time.perf_counter``; median step). Beside each measurement: the
cost model's prediction for the same step on the catalogue's entry of this GPU (``--catalogue``, else
from the device's name), priced as ``benchmarks/published.py`` prices a published row (autocast,
SGD, one GPU holding the whole model), and the peak memory ``torch.cuda.max_memory_allocated``
reports against the cost model's peak without its framework constant (the allocator's count
leaves out the CUDA context and the cache's free blocks, which ``framework_bytes`` holds).

Prints one JSON line per (model, mode), then one summary line per mode: rows, share within 10%, median
absolute error. These rows are measured here, on the lent machine: label them so when they join the
published validation rows.

    .venv/bin/python benchmarks/gpu.py                                   # on a GPU: Ti, S, B, L
    .venv/bin/python benchmarks/gpu.py --models vit_base_patch16_224 --batch 64 --steps 30
    .venv/bin/python benchmarks/gpu.py --device cpu --catalogue epyc-9654 --models vit_tiny_patch16_224 \\
        --batch 2 --steps 2 --warmup 1                                   # the pipeline on a CPU (no figure)

Not measured here: data loading (inputs are synthetic and on the device), multi-GPU messages (one GPU:
the NCCL path is checked by ``d2ft run --device cuda``), and clocks (whatever the lent card runs at).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

MODELS = {"vit_tiny_patch16_224": 256, "vit_small_patch16_224": 256, "vit_base_patch16_224": 128,
          "vit_large_patch16_224": 32}
"""Default models and their batch sizes (images per step)."""

NAMES = {"H200": "h200-sxm", "H100": "h100-sxm", "A100-SXM4-80GB": "a100-sxm4-80gb", "A100-PCIE-40GB": "a100-pcie-40gb",
         "V100": "v100-sxm2-32gb", "L4": "l4", "T4": "t4", "RTX 4090": "rtx-4090", "RTX 3090": "rtx-3090"}
"""Substrings of ``torch.cuda.get_device_name`` -> catalogue keys (the first that matches)."""


def catalogue_key(device_name: str) -> str | None:
    """The catalogue entry of a GPU by its reported name, None where none matches.

    >>> catalogue_key("NVIDIA H200"), catalogue_key("NVIDIA GeForce RTX 3090"), catalogue_key("Radeon")
    ('h200-sxm', 'rtx-3090', None)
    """
    return next((key for sub, key in NAMES.items() if sub.lower() in device_name.lower()), None)


def _published():
    """benchmarks/published.py (a published row's pricing), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("d2ft_published", os.path.join(_HERE, "published.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict(name: str, batch: int, catalogue: str, mode: str) -> tuple[float, float]:
    """(samples/s, peak bytes without the framework's) the cost model predicts for one step on ``catalogue``,
    priced as ``benchmarks/published.py`` prices a published row (its ``model_spec`` and ``one_gpu``)."""
    from d2ft.catalogue import device

    published = _published()
    cm, plan = published.one_gpu(published.model_spec(name, 224, 2), device(catalogue), batch, catalogue)
    step = cm.step(plan, inference=mode == "infer")
    memory = cm.memory_breakdown(plan, inference=mode == "infer")[0]
    return batch / step.devices[0].compute_s, sum(memory.values()) - memory["framework"]


def measure(name: str, batch: int, mode: str, device, steps: int, warmup: int, amp: bool) -> dict:
    """Median step time (s), samples/s and peak allocated bytes of ``mode`` ("train" or "infer")."""
    import timm
    import torch

    cuda = device.type == "cuda"
    model = timm.create_model(name, pretrained=False).to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    autocast = torch.autocast(device.type, dtype=torch.float16 if cuda else torch.bfloat16, enabled=amp)
    model.train(mode == "train")

    def step() -> None:
        if mode == "train":
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad(), autocast:
                model(x)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    del model, opt, x, y
    if cuda:
        torch.cuda.empty_cache()
    return {"median_step_s": s, "measured_samples_per_s": batch / s, "max_memory_allocated_bytes": peak}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    p.add_argument("--catalogue", help="catalogue key of this GPU (`d2ft list devices`); default: from its name")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated timm names (default: %(default)s)")
    p.add_argument("--batch", type=int, help="images per step for every model (default: per model, MODELS)")
    p.add_argument("--modes", default="train,infer", help="train, infer or both (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per (model, mode), median reported")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN/cuBLAS autotuning, allocator)")
    p.add_argument("--no-amp", action="store_true", help="fp32 instead of 16-bit autocast (the prediction stays AMP)")
    args = p.parse_args(argv)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no GPU is visible to torch here; run on a GPU machine, or --device cpu with "
                "--catalogue to try the pipeline")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    key = args.catalogue or catalogue_key(name)
    from d2ft.catalogue import DEVICES

    if key not in DEVICES:
        p.error(f"no catalogue entry for {name!r}" + (f" ({key!r} is unknown)" if key else "")
                + f"; give --catalogue, one of {', '.join(DEVICES)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := sorted(set(modes) - {"train", "infer"}):
        p.error(f"unknown modes {bad}; choose from train, infer")
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        batch = args.batch or MODELS.get(model, 32)
        for mode in modes:
            got = measure(model, batch, mode, device, args.steps, args.warmup, not args.no_amp)
            predicted, peak = predict(model, batch, key, mode)
            row = {"source": "measured here", "device": name, "catalogue": key, "mode": mode, "model": model,
                   "batch": batch, "precision": "fp32" if args.no_amp else "16-bit autocast", **got,
                   "predicted_samples_per_s": predicted, "ratio": predicted / got["measured_samples_per_s"],
                   "predicted_peak_allocated_bytes": peak, "torch": torch.__version__}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for mode in modes:
        errors = [abs(r["ratio"] - 1) for r in rows if r["mode"] == mode]
        if errors:
            within = sum(e <= 0.1 for e in errors) / len(errors)
            print(json.dumps({"summary": mode, "rows": len(errors), "within_10pct": within,
                              "median_abs_error": statistics.median(errors)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
