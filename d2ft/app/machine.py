"""The commands that measure this machine or build the project's backbone: ``calibrate`` and ``pretrain``.

torch is imported only when one of them runs, so ``d2ft --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..serial import atomic_write_text, write_json
from ..units import fmt_time
from . import flags
from .runs import _model_kwargs


def cmd_calibrate(args) -> int:
    """``d2ft calibrate``: measure this machine's ranks into a cluster JSON."""
    from runtime.calibrate import calibrate
    from runtime.job import Job
    from runtime.prepare import resolve_model

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    model_job = None
    if args.model or args.checkpoint:
        name, kwargs, _ = resolve_model(args.model, _model_kwargs(args), args.checkpoint)
        model_job = Job(model=name, model_kwargs=kwargs, checkpoint="none")
    log = None if args.quiet or args.json else (lambda msg: print(f"d2ft calibrate: {msg}", file=sys.stderr, flush=True))
    from runtime.run import under_torchrun

    if under_torchrun():
        return _calibrate_torchrun(args, model_job, log)
    cluster, raw = calibrate(args.nproc, model_job, args.micro_batch_size, log=log, in_situ=args.in_situ)
    out = Path(args.out)
    atomic_write_text(out, cluster.to_json() + "\n")
    write_json(out.with_suffix(".raw.json"), raw)
    dev = cluster.device(0)
    fit = raw["tasks"] if "tasks" in raw else raw["device"]
    summary = {"out": str(out), "peak_flops": dev.peak_flops, "kernel_launch_s": dev.kernel_launch_s,
               "elementwise_overhead_s": dev.elementwise_overhead_s, "backward_efficiency": dev.backward_efficiency,
               "fit_median_abs_error": fit["median_abs_error"],
               "mem_bandwidth": dev.mem_bandwidth, "usable_cores": raw.get("cores"),
               "contention_slowdown": raw.get("contention_slowdown", 1.0)}
    if cluster.links:
        link = cluster.links[0][2]
        summary.update(link_bandwidth=link.bandwidth, link_latency_s=2 * link.latency_s)
    if args.json:
        print(json.dumps(summary))
        return 0
    what = f"{model_job.model} subnet tasks" if model_job else "GEMMs"
    light = "" if dev.elementwise_overhead_s is None else f", {fmt_time(dev.elementwise_overhead_s)} per elementwise kernel"
    print(f"compute ({what}, priced kernel by kernel): {dev.peak_flops / 1e9:.2f} GFLOP/s per rank (one thread), "
          f"{fmt_time(dev.kernel_launch_s)} per matrix-product kernel{light}, backward at "
          f"{dev.backward_efficiency:.2f} of the forward rate; memory {dev.mem_bandwidth / 1e9:.2f} GB/s; the fit "
          f"misses its timings by {100 * fit['median_abs_error']:.0f}% (median)")
    if "core_sharing" in raw:
        speedups = ", ".join(f"{row['speedup']:.2f}" for row in raw["core_sharing"]["rows"])
        print(f"cores: {raw['cores']} usable (total speed-up of 1..{args.nproc} ranks computing together: {speedups}); "
              f"the {args.nproc} ranks share them as one host, each {raw['contention_slowdown']:.3g}x slower together")
    if "in_situ" in raw:
        ratios = ", ".join(f"{r['fwd']:.2f}/{r['bwd']:.2f} (fixed times x{r['fixed']:.2f}, rate /{r['rate']:.2f})"
                           for r in raw["in_situ"]["ratios"])
        sizes = " and ".join(str(b) for b in raw["in_situ"]["sizes"])
        print(f"fitted to the runtime's own all-FULL steps at micro-batch {sizes}: per rank, forward/backward "
              f"time over the microbenchmarks' {ratios}")
    if cluster.links:
        print(f"link between ranks: {summary['link_bandwidth'] / 1e9:.2f} GB/s, {fmt_time(summary['link_latency_s'])} one way")
    print(f"cluster written to {out} (use it with --cluster); raw timings in {out.with_suffix('.raw.json')}")
    return 0


def cmd_pretrain(args) -> int:
    """``d2ft pretrain``: the project's own backbone."""
    from runtime.pretrain import pretrain

    manifest = pretrain(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, threads=args.threads, limit=args.limit, classes=args.classes,
                        progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(manifest))
    else:
        print(f"test top-1 {manifest['test_top1']:.4f} after {args.epochs} epochs ({fmt_time(manifest['train_seconds'])}); "
              f"{manifest['params']:,} parameters written to {args.out} (manifest beside it)")
    return 0


def _calibrate_torchrun(args, model_job, log) -> int:
    """``d2ft calibrate`` as one rank under torchrun: rank 0 writes the cluster and prints its links."""
    from runtime.calibrate import calibrate_torchrun

    result = calibrate_torchrun(model_job, args.micro_batch_size, log=log if os.environ.get("RANK") == "0" else None)
    if result is None:
        return 0
    cluster, raw = result
    out = Path(args.out)
    atomic_write_text(out, cluster.to_json() + "\n")
    write_json(out.with_suffix(".raw.json"), raw)
    links = [{"a": a, "b": b, "bandwidth": l.bandwidth, "latency_s": l.latency_s} for a, b, l in cluster.links]
    if args.json:
        print(json.dumps({"out": str(out), "ranks": cluster.num_devices, "hosts": raw["hosts"], "links": links,
                          "peak_flops": [spec.peak_flops for _, spec in cluster.devices]}))
        return 0
    for name, spec in cluster.devices:
        print(f"{name}: {spec.name.split(' (')[0]}: {spec.peak_flops / 1e9:.2f} GFLOP/s, "
              f"{fmt_time(spec.kernel_launch_s)} per matrix-product kernel")
    for link in links:
        print(f"{link['a']} - {link['b']}: {link['bandwidth'] / 1e9:.2f} GB/s, {fmt_time(link['latency_s'])} one way")
    print(f"cluster of {cluster.num_devices} ranks on {len(raw['hosts'])} host(s) written to {out} (use it with "
          f"--cluster); raw timings in {out.with_suffix('.raw.json')}")
    return 0


def _add_calibrate(sub) -> None:
    p = flags.command(sub, "calibrate", cmd_calibrate,
                      help="Measure this machine's ranks (GEMMs, copies, point-to-point transfers) into a cluster "
                           "JSON the planner and simulator load.")
    p.add_argument("--nproc", type=int, default=2, help="ranks the cluster will have; >= 2 also measures the link")
    p.add_argument("--model", help="fit compute to this timm model's own subnet tasks (default: GEMMs)")
    p.add_argument("--model-kwargs", help="JSON of timm keyword arguments for --model")
    p.add_argument("--checkpoint", help="take the model and its arguments from this checkpoint's metadata "
                                        "(e.g. data/pretrained/vit-fmnist0-4.safetensors)")
    p.add_argument("--micro-batch-size", type=int, default=16, help="images per task with --model (default: 16)")
    p.add_argument("--no-in-situ", dest="in_situ", action="store_false",
                   help="with --model: keep the microbenchmark fit; by default each rank is then refitted to a few "
                        "all-FULL steps of the runtime itself (its forward and backward time, s)")
    p.add_argument("--out", default="profile.json", help="cluster JSON to write (default: profile.json)")
    flags.add_quiet(p, "no account of the measurements as they start")
    p.add_argument("--json", action="store_true", help="print one JSON summary (FLOP/s, B/s, s)")


def add_parsers(sub) -> None:
    """The parsers of ``pretrain`` and ``calibrate``."""
    _add_pretrain(sub)
    _add_calibrate(sub)


def _add_pretrain(sub) -> None:
    p = flags.command(sub, "pretrain", cmd_pretrain,
                      help="Pre-train the project's small ViT backbone on Fashion-MNIST IDX files and write a "
                           "safetensors checkpoint with a manifest.")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                   help="folder with the four Fashion-MNIST IDX files, gzipped or not (default: %(default)s)")
    p.add_argument("--out", default="data/pretrained/vit-fmnist0-4.safetensors", help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=2, help="passes over the training images (60,000, or those of --classes) (default: 2)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default: 128)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, order and augmentation (default: 0)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--limit", type=int, help="use only the first N training and test images (for a quick check)")
    p.add_argument("--classes", type=flags.class_range, metavar="A-B|A,B,..",
                   help="pre-train on these labels only (e.g. 0-4), relabelled from 0, leaving the others as a "
                        "downstream task (default: all ten)")
    flags.add_quiet(p)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
