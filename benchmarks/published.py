"""Published single-GPU ViT throughputs against the cost model: how far to trust it on GPUs we do not have.

Each row is one published measurement, with its source (repository and file at a commit, or
paper and table), software, precision and batch. The cost model prices the same step on the
catalogue's device (one GPU, the whole model on it): training as one all-FULL step
(``CostModel.step``), inference as the forward pass (``CostModel.step(plan, inference=True)``),
16-bit by autocast (``ModelSpec.autocast``: fp32 weights, fp32 norms, softmax and residual
stream, the casts between) where the measurement used mixed precision (every row here says
AMP), 32-bit where it used fp32; the predicted
throughput is the batch over the step's compute time. The step of one GPU has no messages,
so only the compute model is under test.

Rows are split once, before any constant is fitted, into a calibration set (to fit catalogue
constants: GEMM efficiency, per-kernel costs) and a validation set that is never used for
fitting: within each (source, GPU, mode), rows sorted by measured throughput alternate
calibration, validation, calibration, ... Rows whose precision the source does not state are
"reference" rows, in neither set.

Training rows are priced with the optimizer they ran (timm's benchmark: SGD with momentum).
The catalogue's GPU constants (``d2ft.hardware.KERNEL_FITS``) are the fit of the calibration
rows (``--fit`` refits and says whether they agree); ``--model roofline`` prices every row as
the catalogue did before the kernel model, for the before-and-after table; ``--memory`` holds
the predicted peak memory against the batch sizes the training rows could and could not fit, and
fits the framework's own memory (``DeviceSpec.framework_bytes``, the catalogue's
``d2ft.hardware.FRAMEWORK_FITS``) on the calibration brackets alone.

Prints one JSON line per row (predicted, measured, ratio), then one summary line per set and
mode (rows, share within 10%, median absolute error, median signed error per size class:
Ti/S, B, L/H), and a final line with ``set`` "all" (scored rows only).

    .venv/bin/python benchmarks/published.py                 # the kernel model, as shipped
    .venv/bin/python benchmarks/published.py --set validation --model roofline
    .venv/bin/python benchmarks/published.py --fit | head -1
    .venv/bin/python benchmarks/published.py --memory

Sources:
- timm (Wightman, github.com/huggingface/pytorch-image-models), results/ at commit
  aa4b5850c1543fa488abf260f18390eda46cf85d: benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv
  (training, AMP, NCHW, PyTorch 1.12, CUDA 11.3, RTX 3090), benchmark-infer-amp-nchw-pt240-cu124-
  rtx3090.csv and -rtx4090.csv (inference, AMP, PyTorch 2.4, CUDA 12.4); samples per second at
  the batch size each row states.
- DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021),
  Table 2: inference throughput "on a NVIDIA V100 GPU with 128 samples per forward" (feature
  extractor, no classifier; precision not stated). Shown as "reference" rows, neither fitted nor
  scored (``REFERENCE`` says why).
- PaddleClas (PaddlePaddle, docs/zh_CN/models/ImageNet1k/DeiT.md, release 2.5): V100 inference
  latency with TensorRT, FP32, batch 8 (throughput = 8 / latency).

Not modelled here (see d2ft/cost.py for the cost model's own list): data loading and the
input pipeline (timm's benchmark uses synthetic inputs), kernel fusion (TensorRT fuses
aggressively), clock boost, and which V100 variant DINO and PaddleClas used (the SXM2 entry is
priced).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # benchmarks/simulator.py is no package
sys.path.insert(0, os.path.dirname(_HERE))

TIMM = "timm results/ at aa4b5850 ({file})"
TRAIN_3090 = "benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv"
INFER_3090 = "benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv"
INFER_4090 = "benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv"
DINO = "Caron et al., ICCV 2021, Table 2 (V100, 128 samples per forward; precision not stated)"
PADDLE = "PaddleClas docs, DeiT.md, release 2.5 (V100, TensorRT, FP32, batch 8 latency)"

# (source, file or table, gpu catalogue key, mode, timm model, img size, batch, measured samples/s, bytes per element)
ROWS = [
    *[(TIMM.format(file=TRAIN_3090), "rtx-3090", "train", m, img, b, v, 2) for m, img, b, v in (
        ("vit_tiny_patch16_224", 224, 512, 2293.54), ("vit_small_patch32_224", 224, 512, 4447.28),
        ("vit_small_patch16_224", 224, 384, 1052.92), ("vit_base_patch32_224", 224, 512, 1703.57),
        ("vit_base_patch16_224", 224, 192, 390.86), ("vit_large_patch32_224", 224, 256, 521.73),
        ("vit_large_patch16_224", 224, 64, 117.08), ("vit_large_patch14_224", 224, 48, 85.27),
        ("vit_huge_patch14_224", 224, 16, 39.94), ("vit_base_patch8_224", 224, 24, 63.42),
        ("vit_tiny_patch16_384", 384, 128, 512.2), ("vit_small_patch32_384", 384, 512, 1448.56),
        ("vit_small_patch16_384", 384, 64, 239.05), ("vit_base_patch32_384", 384, 256, 542.76),
        ("vit_base_patch16_384", 384, 32, 96.96), ("vit_large_patch32_384", 384, 96, 168.05),
        ("vit_large_patch16_384", 384, 12, 29.07))],
    *[(TIMM.format(file=INFER_3090), "rtx-3090", "infer", m, img, b, v, 2) for m, img, b, v in (
        ("vit_small_patch32_224", 224, 1024, 13132.7), ("vit_tiny_patch16_224", 224, 1024, 10231.54),
        ("vit_base_patch32_224", 224, 1024, 5098.65), ("vit_small_patch16_224", 224, 1024, 4584.86),
        ("vit_small_patch32_384", 384, 1024, 4513.63), ("vit_tiny_patch16_384", 384, 1024, 3237.39),
        ("vit_large_patch32_224", 224, 1024, 1759.2), ("vit_base_patch32_384", 384, 1024, 1749.95),
        ("vit_base_patch16_224", 224, 1024, 1570.66), ("vit_small_patch16_384", 384, 1024, 1459.09),
        ("vit_small_patch8_224", 224, 1024, 1031.53), ("vit_large_patch32_384", 384, 1024, 604.74),
        ("vit_base_patch16_384", 384, 1024, 509.98), ("vit_large_patch16_224", 224, 1024, 486.7),
        ("vit_base_patch8_224", 224, 1024, 364.14), ("vit_large_patch14_224", 224, 1024, 359.91),
        ("vit_huge_patch14_224", 224, 1024, 183.94), ("vit_large_patch16_384", 384, 768, 159.33))],
    *[(TIMM.format(file=INFER_4090), "rtx-4090", "infer", m, img, b, v, 2) for m, img, b, v in (
        ("vit_small_patch32_224", 224, 1024, 27011.35), ("vit_tiny_patch16_224", 224, 1024, 17666.09),
        ("vit_base_patch32_224", 224, 1024, 10112.91), ("vit_small_patch32_384", 384, 1024, 9286.73),
        ("vit_small_patch16_224", 224, 1024, 7693.38), ("vit_tiny_patch16_384", 384, 1024, 5746.17),
        ("vit_base_patch32_384", 384, 1024, 3507.62), ("vit_large_patch32_224", 224, 1024, 3482.36),
        ("vit_base_patch16_224", 224, 1024, 2787.15), ("vit_small_patch16_384", 384, 1024, 2502.77),
        ("vit_small_patch8_224", 224, 1024, 1790.17), ("vit_large_patch32_384", 384, 1024, 1196.88),
        ("vit_base_patch16_384", 384, 1024, 915.77), ("vit_large_patch16_224", 224, 1024, 912.7),
        ("vit_large_patch14_224", 224, 1024, 671.42), ("vit_base_patch8_224", 224, 768, 659.1),
        ("vit_huge_patch14_224", 224, 1024, 346.11), ("vit_large_patch16_384", 384, 768, 297.48))],
    *[(DINO, "v100-sxm2-32gb", "infer", m, 224, 128, v, 2) for m, v in (
        ("vit_small_patch16_224", 1007.0), ("vit_base_patch16_224", 312.0), ("vit_small_patch8_224", 180.0),
        ("vit_base_patch8_224", 63.0))],
    *[(PADDLE, "v100-sxm2-32gb", "infer", m, img, 8, 8 / (ms * 1e-3), 4) for m, img, ms in (
        ("deit_tiny_patch16_224", 224, 6.10), ("deit_small_patch16_224", 224, 10.49),
        ("deit_base_patch16_224", 224, 28.50), ("deit_base_patch16_384", 384, 97.60))],
]


def size_class(model: str) -> str:
    """Ti/S, B or L/H, from the timm name."""
    return "Ti/S" if any(k in model for k in ("tiny", "small")) else "B" if "base" in model else "L/H"


REFERENCE = {DINO: "precision not stated: at 16 bits the cost model is 5.5-6.5x faster than these rows, "
                   "at 32 bits close to them, so they are shown (priced at 16 bits as the table was "
                   "first read) but neither fitted nor scored"}
"""Sources whose rows are printed with set "reference": in no summary and no fit, and why."""


def split(rows) -> list[str]:
    """"calibration" or "validation" per row: within each (source, GPU, mode), by measured throughput,
    alternately (module docstring); "reference" for the rows of ``REFERENCE``."""
    out = [""] * len(rows)
    groups: dict = {}
    for i, r in enumerate(rows):
        if r[0] in REFERENCE:
            out[i] = "reference"
            continue
        groups.setdefault((r[0], r[1], r[2]), []).append(i)
    for idx in groups.values():
        for j, i in enumerate(sorted(idx, key=lambda i: -rows[i][6])):
            out[i] = "calibration" if j % 2 == 0 else "validation"
    return out


OPTIMIZER = "sgd"
"""The training rows' update: timm's benchmark.py trains with ``--opt sgd`` by default (momentum 0.9)."""


def model_spec(model: str, img: int, dtype_bytes: int):
    """The ModelSpec of a row's timm model (patch-8 variants, not in the zoo, as their patch-16 ones with patch
    8), with the training rows' optimizer (``OPTIMIZER``)."""
    from d2ft import ModelSpec

    base, patch = (model.replace("patch8", "patch16"), 8) if "patch8" in model else (model, None)
    return ModelSpec.from_timm(base, img_size=img, dtype_bytes=dtype_bytes, optimizer=OPTIMIZER,
                               autocast=dtype_bytes == 2, **({"patch": patch} if patch else {}))


ROOFLINE = dict(sm_count=None, efficiency=0.5, task_overhead_s=20e-6, elementwise_overhead_s=None)
"""The catalogue's GPU entries before the kernel model (d2ft 0.x to commit ada5211): one roofline per
task at an assumed half of peak, 20 us per task (``--model roofline``)."""

FUSED = {TRAIN_3090: False, INFER_3090: True, INFER_4090: True, DINO: False, PADDLE: False}
"""Whether a source's attention is one fused kernel: PyTorch 2.x's scaled_dot_product_attention (timm uses it
from 0.9) is; PyTorch 1.12 (the training CSV) and DINO's code compute the scores explicitly; TensorRT's fusion
of DeiT's attention is not documented on the page (priced unfused)."""


def _fused(source: str) -> bool:
    return next(v for k, v in FUSED.items() if k in source)


def row_device(row, kind: str = "kernels", **constants):
    """The catalogue's device of a row, as the cost model prices it: ``kind`` "kernels" (as shipped, with
    the row's attention kernel, and ``constants`` replaced) or "roofline" (``ROOFLINE``)."""
    import dataclasses

    from d2ft.catalogue import device

    spec = device(row[1])
    if kind == "roofline":
        return dataclasses.replace(spec, **ROOFLINE)
    return dataclasses.replace(spec, fused_attention=_fused(row[0]), **constants)


def one_gpu(mspec, spec, batch: int, name: str = "gpu"):
    """(cost model, all-FULL plan) of ``mspec`` wholly on one GPU ``spec``, one micro-batch of ``batch``."""
    from d2ft import CostModel, Op, Plan
    from d2ft.cluster import Cluster

    one = Cluster(devices=(("gpu", spec),), links=(), coordinator="gpu", name=name)
    return CostModel(mspec, one), Plan.uniform(mspec, one, Op.FULL, 1, batch)


def predict(row, spec) -> float:
    """The cost model's samples per second for a row on ``spec``: batch / compute time of the step."""
    source, gpu, mode, model, img, batch, _, d = row
    cm, plan = one_gpu(model_spec(model, img, d), spec, batch, gpu)
    return batch / cm.step(plan, inference=mode == "infer").devices[0].compute_s


_TABLES: dict = {}


def kernel_table(row):
    """The kernel model's step of a row as arrays, so that a fit can price it at any (efficiency, launch)
    at once: per kernel, its compute seconds at efficiency 1 and its memory seconds, and the step's
    memory seconds outside kernels (the coordinator's reads of partial sums). ``predict_table`` of it
    equals ``predict`` on the kernel model (tests/test_published.py)."""
    if row in _TABLES:
        return _TABLES[row]
    import numpy as np

    from d2ft.cost import optimizer_bytes_per_param
    from d2ft.kernels import memory_bytes, task_kernels, utilisation
    from d2ft.schedule import step_stream

    source, gpu, mode, model, img, batch, _, d = row
    mspec, dev = model_spec(model, img, d), row_device(row)
    _, plan = one_gpu(mspec, dev, batch, gpu)
    compute, memory, extra = [], [], 0.0
    for c in step_stream(plan, mspec, 0, inference=mode == "infer"):
        if getattr(c, "phase", None) == "opt":  # one memory-bound kernel
            compute.append(0.0)
            memory.append(c.params * optimizer_bytes_per_param(mspec.weight_bytes, mspec.optimizer) / dev.mem_bandwidth)
            continue
        if not hasattr(c, "part"):
            continue
        extra += c.extra_bytes / dev.mem_bandwidth
        for k in task_kernels(mspec, c.part, c.phase, c.copies, c.samples, dev.fused_attention):
            compute.append(k.flop / (dev.peak(d) * utilisation(k, dev.sm_count, dev.gemm_tile)) if k.kind == "gemm" else 0.0)
            memory.append(memory_bytes(k, d, dev.sm_count, dev.gemm_tile) / dev.mem_bandwidth)
    _TABLES[row] = (np.array(compute), np.array(memory), extra)
    return _TABLES[row]


def predict_table(row, efficiency: float, launch_s: float) -> float:
    """``predict`` on the kernel model at (``efficiency``, ``launch_s``), from ``kernel_table``."""
    import numpy as np

    compute, memory, extra = kernel_table(row)
    return row[5] / (len(compute) * launch_s + float(np.maximum(compute / efficiency, memory).sum()) + extra)


def fit_kernels(rows, sets) -> dict[str, tuple[float, float]]:
    """Per GPU kind, the (efficiency, launch s) that minimise the median |log(predicted / measured)| over its
    calibration rows (a grid: efficiency 0.30-1.00 by 0.02, launch 0-30 us by 1 us). Validation rows are
    never read. The catalogue's constants (``d2ft.hardware.KERNEL_FITS``) are this fit's output."""
    out = {}
    for gpu in sorted({r[1] for r in rows}):
        calib = [r for r, s in zip(rows, sets) if r[1] == gpu and s == "calibration"]
        best = None
        for e in [0.30 + 0.02 * i for i in range(36)]:
            for us in range(0, 31):
                err = statistics.median(abs(math.log(predict_table(r, e, us * 1e-6) / r[6])) for r in calib)
                if best is None or err < best[0] - 1e-12:
                    best = (err, e, us * 1e-6)
        out[gpu] = (round(best[1], 2), round(best[2], 9))
    return out


DECAY = (512, 384, 256, 192, 128, 96, 64, 48, 32, 24, 16, 12, 8)
"""Batch sizes timm's benchmark.py tries in turn after an out-of-memory error, from its default 512 (two steps
per power of two: ``timm.utils.decay_batch_step``). A training row run below 512 ran at the largest of these
that fit the GPU; the one before it did not: a published bracket on peak memory."""


def memory_records(rows, sets) -> list[dict]:
    """Per training row run below timm's first batch: the cost model's peak memory (``CostModel.memory_breakdown``,
    all-FULL on one GPU) at the row's batch, which fit, and at the batch tried before it, which did not, against
    the GPU's memory; ``agrees`` when the prediction fits the first and not the second. ``scale_low`` and
    ``scale_high`` bracket the factor the predicted peaks would need to agree."""
    out = []
    for row, which in zip(rows, sets):
        source, gpu, mode, model, img, batch, _, d = row
        if mode != "train" or batch not in DECAY[1:]:
            continue
        mspec, dev = model_spec(model, img, d), row_device(row)
        up = DECAY[DECAY.index(batch) - 1]
        fits, fails = (sum(cm.memory_breakdown(plan)[0].values())
                       for cm, plan in (one_gpu(mspec, dev, b, gpu) for b in (batch, up)))
        cap = dev.memory_bytes
        out.append({"set": which, "kind": "memory", "source": source, "gpu": gpu, "model": model, "img_size": img,
                    "fits_batch": batch, "fails_batch": up, "memory_bytes": cap, "framework_bytes": dev.framework_bytes,
                    "predicted_peak_fits_bytes": fits, "predicted_peak_fails_bytes": fails,
                    "agrees": fits <= cap < fails,
                    "scale_low": cap / fails, "scale_high": cap / fits})
    return out


def fit_framework(records: list[dict]) -> dict[str, float]:
    """Per GPU kind with calibration brackets, the framework memory (``DeviceSpec.framework_bytes``, B) that
    makes the most of them agree: over a grid of 0-8 GiB by 1/8 GiB, the middle of the values that reach
    the most (the brackets bound it from both sides). Validation brackets are never read. The catalogue's
    ``d2ft.hardware.FRAMEWORK_FITS`` is this fit's output."""
    out = {}
    for gpu in sorted({r["gpu"] for r in records}):
        calib = [r for r in records if r["gpu"] == gpu and r["set"] == "calibration"]
        if not calib:
            continue
        grid = [i * 2**30 / 8 for i in range(65)]

        def agree(c: float) -> int:
            return sum(r["predicted_peak_fits_bytes"] - r["framework_bytes"] + c <= r["memory_bytes"]
                       < r["predicted_peak_fails_bytes"] - r["framework_bytes"] + c for r in calib)

        scores = [agree(c) for c in grid]
        best = [c for c, n in zip(grid, scores) if n == max(scores)]
        out[gpu] = best[len(best) // 2]
    return out


def summary(records: list[dict], label: str) -> dict:
    errors = [abs(r["ratio"] - 1) for r in records]
    by_size = {}
    for cls in ("Ti/S", "B", "L/H"):
        signed = [r["ratio"] - 1 for r in records if r["size"] == cls]
        by_size[cls] = statistics.median(signed) if signed else None
    return {"set": label, "rows": len(records), "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
            "median_abs_error": statistics.median(errors), "median_signed_error_by_size": by_size,
            "worst_ratio": max((r["ratio"] for r in records), key=lambda x: abs(math.log(x)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", choices=("calibration", "validation", "all"), default="all",
                   help="which rows to print (summaries always cover both sets)")
    p.add_argument("--model", choices=("kernels", "roofline"), default="kernels",
                   help="kernels: the catalogue as shipped (d2ft.kernels: every kernel on its own roofline, "
                        "constants fitted per GPU kind on the calibration rows); roofline: the catalogue "
                        "before the kernel model (one roofline per task, efficiency 0.5, 20 us per task)")
    p.add_argument("--memory", action="store_true",
                   help="instead: predicted peak memory against the published brackets of timm's training rows "
                        "(the batch that fit, the one before it that did not)")
    p.add_argument("--fit", action="store_true",
                   help="refit the kernel constants on the calibration rows and print them (first line) "
                        "beside the catalogue's")
    args = p.parse_args(argv)
    sets = split(ROWS)
    if args.memory:
        recs = memory_records(ROWS, sets)
        for r in recs:
            print(json.dumps(r))
        from d2ft.hardware import FRAMEWORK_FITS

        fitted = fit_framework(recs)
        for which in ("calibration", "validation"):
            mine = [r for r in recs if r["set"] == which]
            print(json.dumps({"set": which, "kind": "memory", "rows": len(mine), "agree": sum(r["agrees"] for r in mine)}))
        mids = sorted(math.sqrt(r["scale_low"] * r["scale_high"]) for r in recs)
        print(json.dumps({"set": "all", "kind": "memory", "rows": len(recs), "agree": sum(r["agrees"] for r in recs),
                          "median_scale": statistics.median(mids), "framework_fit_bytes": fitted,
                          "catalogue_is_the_fit": fitted == FRAMEWORK_FITS}))
        return 0
    if args.fit:
        from d2ft.hardware import KERNEL_FITS

        fitted = fit_kernels(ROWS, sets)
        print(json.dumps({"fitted": {g: {"efficiency": e, "kernel_launch_s": t} for g, (e, t) in fitted.items()},
                          "catalogue": {g: {"efficiency": e, "kernel_launch_s": t} for g, (e, t) in KERNEL_FITS.items()},
                          "catalogue_is_the_fit": fitted == KERNEL_FITS}))
    records = []
    for row, which in zip(ROWS, sets):
        source, gpu, mode, model, img, batch, measured, d = row
        predicted = predict(row, row_device(row, args.model))
        rec = {"set": which, **({"note": REFERENCE[source]} if source in REFERENCE else {}), "model_kind": args.model, "source": source, "gpu": gpu, "mode": mode, "model": model,
               "img_size": img,
               "batch": batch, "precision": "fp16 (AMP)" if d == 2 else "fp32", "size": size_class(model),
               "measured_samples_per_s": measured, "predicted_samples_per_s": predicted, "ratio": predicted / measured}
        records.append(rec)
        if args.set in ("all", which):
            print(json.dumps(rec))
    for which in ("calibration", "validation"):
        for mode in ("train", "infer"):
            chosen = [r for r in records if r["set"] == which and r["mode"] == mode]
            if chosen:
                print(json.dumps({**summary(chosen, which), "mode": mode, "model_kind": args.model}))
    scored = [r for r in records if r["set"] != "reference"]
    print(json.dumps({**summary(scored, "all"), "model_kind": args.model}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
