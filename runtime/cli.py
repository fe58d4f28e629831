"""``d2ft run``: plan (or load) a plan, run it on local ranks, and compare with the cost model."""

from __future__ import annotations

import json
from pathlib import Path

from d2ft.cluster import Cluster, DeviceSpec, LinkSpec
from d2ft.cost import CostModel
from d2ft.loaders import load_cluster, load_plan
from d2ft.planner import plan_step
from d2ft.serial import atomic_write_text, write_json
from d2ft.units import GB, GiB, GFLOPS, fmt_bytes, fmt_time

LOCAL_CPU = DeviceSpec(
    "this machine, one CPU thread per rank (assumed figures; `d2ft calibrate` measures them)",
    peak_flops=20 * GFLOPS, peak_flops_fp32=20 * GFLOPS, mem_bandwidth=10 * GB, memory_bytes=4 * GiB,
    efficiency=1.0, task_overhead_s=20e-6,
)
LOOPBACK = LinkSpec("loopback TCP (assumed)", bandwidth=1 * GB, latency_s=50e-6)


def local_cluster(nproc: int) -> Cluster:
    """``nproc`` ranks on this machine, rank 0 the coordinator."""
    return Cluster.star([(f"rank{i}", LOCAL_CPU) for i in range(nproc)], LOOPBACK, name=f"local-{nproc}")


def run_command(args) -> int:
    import torch

    from runtime.run import build_model, launch, traces
    from runtime.spec import model_spec_from_timm

    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {args.checkpoint!r} does not exist; give the path of a local weights file")
    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs is not valid JSON: {e.msg}") from None
    job = dict(model=args.model, model_kwargs=kwargs, checkpoint=args.checkpoint, optimizer=args.optimizer,
               lr=args.lr, weight_decay=args.weight_decay, steps=args.steps, seed=args.seed,
               timeout_s=args.timeout, device=args.device)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is visible here; use --device cpu")
    with torch.device("meta"):
        spec = model_spec_from_timm(build_model({**job, "checkpoint": None}), name=args.model)
    cluster = load_cluster(args.cluster) if args.cluster else local_cluster(args.nproc)
    if cluster.num_devices != args.nproc:
        raise ValueError(f"cluster {cluster.name!r} has {cluster.num_devices} devices but --nproc is {args.nproc}")
    slowdown = [float(x) for x in args.slowdown.split(",")] if args.slowdown else None
    if slowdown and len(slowdown) != args.nproc:
        raise ValueError(f"--slowdown gives {len(slowdown)} factors for {args.nproc} ranks")
    if args.plan:
        plan = load_plan(args.plan)
    else:
        planning = cluster.with_slowdown(slowdown) if slowdown else cluster
        plan = plan_step(spec, planning, args.strategy, args.solver, keep=args.keep, comm_keep=args.comm_keep,
                         micro_batches=args.micro_batches, micro_batch_size=args.micro_batch_size,
                         seed=args.seed).plan
    plan.validate(spec, cluster)
    run_dir = Path(args.out)
    job.update(plan=plan.to_dict(), coordinator=cluster.coordinator_index, batch_size=plan.batch_size,
               slowdown=slowdown, out_dir=str(run_dir))
    write_json(run_dir / "job.json", job)
    atomic_write_text(run_dir / "plan.txt", plan.to_text())
    launch(job, args.nproc, port=args.port)
    meta = {"model": args.model, "strategy": plan.meta.get("strategy"), "emulated_slowdown": slowdown}
    measured = traces(run_dir, plan, meta)
    predicted = CostModel(spec, cluster).step(plan)
    for i, t in enumerate(measured):
        atomic_write_text(run_dir / f"trace-step{i}.json", t.to_json())
    summary = {
        "run_dir": str(run_dir), "steps": len(measured), "loss": [t.meta["loss"] for t in measured],
        "step_time_s": [t.step_time_s for t in measured], "op_counts": plan.summary(),
        "emulated_slowdown": slowdown,
        "devices": {
            d.name: {"measured_compute_s": measured[-1].devices[d.name].busy_s, "predicted_compute_s": d.compute_s,
                     "measured_sent_bytes": measured[-1].devices[d.name].sent_bytes, "predicted_sent_bytes": d.sent_bytes,
                     "measured_recv_bytes": measured[-1].devices[d.name].recv_bytes, "predicted_recv_bytes": d.recv_bytes,
                     "peak_memory_bytes": measured[-1].devices[d.name].peak_memory_bytes}
            for d in predicted.devices
        },
    }
    write_json(run_dir / "summary.json", summary)
    if args.json:
        print(json.dumps(summary))
        return 0
    label = " (emulated slowdown " + ",".join(f"{x:g}" for x in slowdown) + ")" if slowdown else ""
    print(f"{args.model} on {args.nproc} ranks{label}: {len(measured)} steps, ops {plan.summary()}")
    for i, t in enumerate(measured):
        print(f"  step {i}: loss {t.meta['loss']:.4f}, {fmt_time(t.step_time_s)}")
    print(f"{'rank':<8} {'compute':>10} {'sent':>11} {'predicted':>11} {'received':>11} {'predicted':>11} {'state mem':>11}")
    for name, d in summary["devices"].items():
        print(f"{name:<8} {fmt_time(d['measured_compute_s']):>10} {fmt_bytes(d['measured_sent_bytes']):>11} "
              f"{fmt_bytes(d['predicted_sent_bytes']):>11} {fmt_bytes(d['measured_recv_bytes']):>11} "
              f"{fmt_bytes(d['predicted_recv_bytes']):>11} {fmt_bytes(d['peak_memory_bytes']):>11}")
    print(f"traces, plan and summary in {run_dir}/")
    return 0


def calibrate_command(args) -> int:
    from runtime.calibrate import calibrate

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    cluster, raw = calibrate(args.nproc)
    out = Path(args.out)
    atomic_write_text(out, cluster.to_json() + "\n")
    write_json(out.with_suffix(".raw.json"), raw)
    dev = cluster.device(0)
    summary = {"out": str(out), "peak_flops": dev.peak_flops, "task_overhead_s": dev.task_overhead_s,
               "mem_bandwidth": dev.mem_bandwidth}
    if cluster.links:
        link = cluster.links[0][2]
        summary.update(link_bandwidth=link.bandwidth, link_latency_s=2 * link.latency_s)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"compute: {dev.peak_flops / 1e9:.2f} GFLOP/s per rank (one thread), {fmt_time(dev.task_overhead_s)} per task; "
          f"memory {dev.mem_bandwidth / 1e9:.2f} GB/s")
    if cluster.links:
        print(f"link between ranks: {summary['link_bandwidth'] / 1e9:.2f} GB/s, {fmt_time(summary['link_latency_s'])} one way")
    print(f"cluster written to {out} (use it with --cluster); raw timings in {out.with_suffix('.raw.json')}")
    return 0


def pretrain_command(args) -> int:
    from runtime.pretrain import pretrain

    manifest = pretrain(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, threads=args.threads, limit=args.limit)
    if args.json:
        print(json.dumps(manifest))
    else:
        print(f"test top-1 {manifest['test_top1']:.4f} after {args.epochs} epochs ({fmt_time(manifest['train_seconds'])}); "
              f"{manifest['params']:,} parameters written to {args.out} (manifest beside it)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="Run D2FT training steps on local ranks (torch.distributed, gloo) and "
                                   "measure them against the cost model.",
                       description=__doc__)
    p.add_argument("--nproc", type=int, default=2, help="ranks to spawn on this machine (default: 2)")
    p.add_argument("--model", default="vit_tiny_patch16_224", help="timm ViT/DeiT name (default: %(default)s)")
    p.add_argument("--model-kwargs", help='JSON of timm keyword arguments, e.g. \'{"img_size": 32, "patch_size": 8}\'')
    p.add_argument("--checkpoint", help="local weights file to start from (default: seeded random init)")
    p.add_argument("--cluster", help="cluster JSON (e.g. from `d2ft calibrate`); default: assumed local CPU ranks")
    p.add_argument("--plan", help="plan file; default: plan with --strategy/--keep")
    p.add_argument("--strategy", default="hybrid", help="strategy or baseline (default: hybrid)")
    p.add_argument("--solver", default="dp", help="mip, dp or greedy (default: dp)")
    p.add_argument("--keep", type=float, default=0.6, help="compute keep ratio in (0, 1] (default: 0.6)")
    p.add_argument("--comm-keep", type=float, default=None, help="communication keep ratio in (0, 1]")
    p.add_argument("--micro-batches", type=int, default=2, help="micro-batches per step (default: 2)")
    p.add_argument("--micro-batch-size", type=int, default=4, help="images per micro-batch (default: 4)")
    p.add_argument("--steps", type=int, default=3, help="training steps (default: 3)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="optimizer (default: adamw)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, data and scores (default: 0)")
    p.add_argument("--slowdown", help="per-rank compute slowdown factors, e.g. 1,1,2,4 (emulated heterogeneity)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: gloo; cuda: NCCL with one GPU per rank (by local rank, shared when fewer)")
    p.add_argument("--port", type=int, help="rendezvous port on 127.0.0.1 (default: a free one)")
    p.add_argument("--timeout", type=float, default=120, help="seconds a rank waits for a peer (default: 120)")
    p.add_argument("--out", default="runs/latest", help="run directory (default: runs/latest)")
    p.add_argument("--json", action="store_true", help="print one JSON summary (times in s, sizes in B)")

    p = sub.add_parser("pretrain", help="Pre-train the project's small ViT backbone on Fashion-MNIST IDX files "
                                        "and write a safetensors checkpoint with a manifest.")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                   help="folder with the four Fashion-MNIST IDX files, gzipped or not (default: %(default)s)")
    p.add_argument("--out", default="data/pretrained/vit-fmnist.safetensors", help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=2, help="passes over the 60,000 training images (default: 2)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default: 128)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, order and augmentation (default: 0)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--limit", type=int, help="use only the first N training and test images (for a quick check)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")

    p = sub.add_parser("calibrate", help="Measure this machine's ranks (GEMMs, copies, point-to-point transfers) "
                                         "into a cluster JSON the planner and simulator load.")
    p.add_argument("--nproc", type=int, default=2, help="ranks the cluster will have; >= 2 also measures the link")
    p.add_argument("--out", default="profile.json", help="cluster JSON to write (default: profile.json)")
    p.add_argument("--json", action="store_true", help="print one JSON summary (FLOP/s, B/s, s)")
