"""``d2ft run``, ``calibrate`` and ``pretrain``: the runtime's commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from d2ft.cluster import Cluster, DeviceSpec, LinkSpec
from d2ft.loaders import load_cluster, load_plan
from d2ft.planner import plan_step
from d2ft.serial import atomic_write_text, read_json, write_json
from runtime.datasets import DATASETS
from d2ft.units import GB, GiB, GFLOPS, fmt_bytes, fmt_time

LOCAL_CPU = DeviceSpec(
    "this machine, one CPU thread per rank (assumed figures; `d2ft calibrate` measures them)",
    peak_flops=20 * GFLOPS, peak_flops_fp32=20 * GFLOPS, mem_bandwidth=10 * GB, memory_bytes=4 * GiB,
    efficiency=1.0, task_overhead_s=20e-6,
)
LOOPBACK = LinkSpec("loopback TCP (assumed)", bandwidth=1 * GB, latency_s=50e-6)


RUN_DESCRIPTION = """\
Fine-tune a timm ViT with D2FT on local ranks (torch.distributed: gloo on CPU, NCCL on GPU).

Rank 0 is the coordinator (stem, norms, classifier, and the planner); the subnets (a head
and its MLP slice) are placed over the ranks once, by their speed. Every --replan-every
steps the coordinator re-solves which subnet runs FULL, FORWARD_ONLY or SKIP in each
micro-batch from the contribution scores the ranks measured (magnitude, Fisher), within
--keep of the all-FULL compute. Written to --out (RUN_DIR):

  job.json          the job (what --resume checks against)
  metrics.jsonl     one line per step: loss, lr, op counts, step time (s), measured and
                    predicted compute (s) and bytes (B) per rank, re-plan time, top-1
  plans.jsonl       every plan used, with the step it started and the solver's time
  checkpoint.json   the last complete checkpoint (checkpoints/step-N/rank*.pt)
  model.safetensors the fine-tuned model as one timm state dict (LoRA merged)
  summary.json      the headline figures

Example: d2ft run --strategy hybrid --keep 0.6 --steps 300 --out runs/hybrid
"""


def local_cluster(nproc: int) -> Cluster:
    """``nproc`` ranks on this machine, rank 0 the coordinator."""
    return Cluster.star([(f"rank{i}", LOCAL_CPU) for i in range(nproc)], LOOPBACK, name=f"local-{nproc}")


SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "pretrained" / "vit-fmnist.safetensors"
"""The project's own backbone (``d2ft pretrain``): a small ViT pre-trained on Fashion-MNIST."""
VOLATILE = ("resume", "timeout_s", "progress", "out_dir", "label", "keep_checkpoints")
"""Job keys that may differ when a run is resumed."""


def _model_args(args) -> tuple[str, dict, str | None]:
    """(timm name, model kwargs, checkpoint): --model and --model-kwargs over the checkpoint's own metadata."""
    from runtime.run import read_metadata

    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs is not valid JSON: {e.msg}") from None
    if not isinstance(kwargs, dict):
        raise ValueError("--model-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    checkpoint = args.checkpoint
    if checkpoint is None and args.model is None:
        checkpoint = str(SHIPPED_CHECKPOINT)
    if checkpoint in ("none", ""):
        checkpoint = None
    model = args.model
    if checkpoint:
        meta = read_metadata(checkpoint)
        if model is None:
            if "model" not in meta:
                raise ValueError(f"checkpoint {checkpoint!r} does not name its model; give --model and --model-kwargs")
            model = meta["model"]
            kwargs = {**json.loads(meta.get("model_kwargs", "{}")), **kwargs}
    return model or "vit_tiny_patch16_224", kwargs, checkpoint


def _check_data(data, model) -> None:
    """The dataset's images and classes fit the model (before any rank starts)."""
    x = data.train.images
    chans, size = model.patch_embed.proj.in_channels, tuple(model.patch_embed.img_size)
    if x.shape[1] != chans or tuple(x.shape[2:]) != size:
        raise ValueError(f"dataset {data.name!r} has {x.shape[1]} x {x.shape[2]} x {x.shape[3]} images but the model "
                         f"takes {chans} x {size[0]} x {size[1]}; set img_size / in_chans in --model-kwargs or pick "
                         "a checkpoint built for these images")
    if data.classes > model.num_classes:
        raise ValueError(f"dataset {data.name!r} has {data.classes} classes but the model's classifier has "
                         f"{model.num_classes}; pass --model-kwargs '{{\"num_classes\": {data.classes}}}'")


def _claim_run_dir(run_dir: Path, job: dict, resume: bool) -> None:
    """Refuses a run directory that holds another run (or this one, without --resume)."""
    from runtime.train import CHECKPOINT_FILE

    existing = run_dir / "job.json"
    if not existing.exists():
        if resume:
            raise ValueError(f"--resume: {run_dir} holds no run to resume (no job.json); leave out --resume to start one")
        return
    old = read_json(existing, "job file")
    diff = sorted(k for k in set(old) | set(job) if k not in VOLATILE and old.get(k) != job.get(k))
    if diff:
        raise ValueError(f"{run_dir} already holds a different run (it differs in {', '.join(diff)}); "
                         "choose another --out, or repeat that run's own options to resume it")
    if not resume:
        done = read_json(run_dir / CHECKPOINT_FILE, "checkpoint pointer") if (run_dir / CHECKPOINT_FILE).exists() else None
        where = f" (checkpointed at step {done['step']} of {job['steps']})" if done else ""
        raise ValueError(f"{run_dir} already holds this run{where}; pass --resume to continue it, or choose another --out")


def prepare_job(args) -> dict:
    """The job of a ``d2ft run`` command line, checked before any rank starts (and its run directory claimed)."""
    import torch

    from runtime.data import load_dataset
    from runtime.run import build_model
    from runtime.spec import model_spec_from_timm

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible here; use --device cpu")
    for name in ("steps", "nproc", "micro_batches", "micro_batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    model_name, kwargs, checkpoint = _model_args(args)
    data = None if args.data == "synthetic" else load_dataset(args.data)
    if data is not None and "num_classes" not in kwargs:
        kwargs["num_classes"] = data.classes
    lora = None
    if args.lora:
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        lora = {"rank": args.lora_rank, "alpha": args.lora_alpha, "targets": targets}
    job = dict(model=model_name, model_kwargs=kwargs, checkpoint=checkpoint, data=args.data, augment=args.augment,
               optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
               lr_warmup_steps=args.lr_warmup, steps=args.steps, seed=args.seed, lora=lora,
               strategy=None if args.plan else args.strategy, solver=args.solver, keep=args.keep,
               comm_keep=args.comm_keep, replan_every=args.replan_every, full_warmup=args.full_warmup,
               eval_every=args.eval_every, eval_batch_size=args.eval_batch_size,
               checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, timeout_s=args.timeout, device=args.device,
               progress=not (args.quiet or args.json), label=args.label, speed_oblivious=args.speed_oblivious)
    with torch.device("meta"):
        meta_model = build_model({**job, "checkpoint": None})
        spec = model_spec_from_timm(meta_model, name=model_name)
    if data is not None:
        _check_data(data, meta_model)
    if checkpoint:
        from runtime.run import load_weights

        load_weights(build_model({**job, "checkpoint": None}), checkpoint)  # fails here, not in every rank
    cluster = load_cluster(args.cluster) if args.cluster else local_cluster(args.nproc)
    if cluster.num_devices != args.nproc:
        raise ValueError(f"cluster {cluster.name!r} has {cluster.num_devices} devices but --nproc is {args.nproc}")
    slowdown = [float(x) for x in args.slowdown.split(",")] if args.slowdown else None
    if slowdown and len(slowdown) != args.nproc:
        raise ValueError(f"--slowdown gives {len(slowdown)} factors for {args.nproc} ranks")
    if args.plan:
        plan = load_plan(args.plan)
    else:
        planning = cluster.with_slowdown(slowdown) if slowdown and not args.speed_oblivious else cluster
        plan = plan_step(spec, planning, "full", keep=args.keep, micro_batches=args.micro_batches,
                         micro_batch_size=args.micro_batch_size, seed=args.seed).plan
    plan.validate(spec, cluster)
    run_dir = Path(args.out)
    job.update(plan=plan.to_dict(), cluster=cluster.to_dict(), coordinator=cluster.coordinator_index,
               batch_size=plan.batch_size, slowdown=slowdown, out_dir=str(run_dir))
    _claim_run_dir(run_dir, job, args.resume)
    job["resume"] = args.resume
    return job


def run_command(args) -> int:
    from runtime.run import launch

    job = prepare_job(args)
    run_dir = Path(job["out_dir"])
    write_json(run_dir / "job.json", job)
    if args.dry_run:
        print(f"job written to {run_dir / 'job.json'}; run it with: torchrun --nproc-per-node {args.nproc} "
              f"-m runtime.run {run_dir / 'job.json'}")
        return 0
    launch(job, args.nproc, port=args.port)
    summary = summarise(run_dir)
    write_json(run_dir / "summary.json", summary)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(format_summary(summary))
    return 0


def summarise(run_dir: str | Path) -> dict:
    """The run's headline figures from its job.json and metrics.jsonl (medians over steps; s, B)."""
    from statistics import median

    from runtime.train import EXPORT_FILE, METRICS_FILE

    run_dir = Path(run_dir)
    job = read_json(run_dir / "job.json", "job file")
    lines = [json.loads(x) for x in (run_dir / METRICS_FILE).read_text().splitlines() if x.strip()]
    evals = [(r["step"], r["top1"]) for r in lines if r.get("top1") is not None]
    out = {
        "run_dir": str(run_dir), "model": job["model"], "data": job.get("data"), "strategy": job.get("strategy"),
        "keep": job.get("keep"), "comm_keep": job.get("comm_keep"), "lora": job.get("lora"), "seed": job["seed"],
        "nproc": len(job["plan"]["devices"]), "steps": len(lines), "emulated_slowdown": job.get("slowdown"),
        "final_loss": lines[-1]["loss"] if lines else None, "loss": [r["loss"] for r in lines],
        "top1": evals[-1][1] if evals else None, "evals": evals,
        "median_step_time_s": median(r["step_time_s"] for r in lines) if lines else None,
        "median_measured_compute_s": median(r["measured_compute_s"] for r in lines) if lines else None,
        "total_measured_sent_bytes": sum(r["measured_sent_bytes"] for r in lines),
        "model_file": str(run_dir / EXPORT_FILE),
    }
    if lines and "predicted_compute_s" in lines[0]:
        out.update(
            median_predicted_compute_s=median(r["predicted_compute_s"] for r in lines),
            total_predicted_sent_bytes=sum(r["predicted_sent_bytes"] for r in lines),
            predicted_compute_saving=1 - sum(r["predicted_compute_s"] for r in lines) / sum(r["full_compute_s"] for r in lines),
            predicted_comm_saving=1 - sum(r["predicted_sent_bytes"] for r in lines) / max(sum(r["full_sent_bytes"] for r in lines), 1),
            bytes_exact=all(r["predicted_sent_bytes"] == r["measured_sent_bytes"] for r in lines),
        )
    replans = [r["replan_s"] for r in lines if r.get("replan_s") is not None]
    if replans:
        out.update(replans=len(replans), median_replan_s=median(replans))
    return out


def format_summary(s: dict) -> str:
    rows = [f"{s['model']} on {s['nproc']} ranks, {s['strategy'] or 'plan file'}"
            + (f" keep {s['keep']:g}" if s.get("keep") and s['strategy'] != 'full' else "") + (", LoRA" if s.get("lora") else "")
            + f", data {s['data']}: {s['steps']} steps"]
    if s["final_loss"] is not None:
        rows.append(f"  final loss {s['final_loss']:.4f}" + (f", test top-1 {s['top1']:.4f}" if s["top1"] is not None else ""))
    rows.append(f"  median step {fmt_time(s['median_step_time_s'])}, measured compute {fmt_time(s['median_measured_compute_s'])} "
                f"per step (all ranks), {fmt_bytes(s['total_measured_sent_bytes'])} sent in all")
    if "predicted_compute_saving" in s:
        rows.append(f"  planned savings against all-FULL: compute {s['predicted_compute_saving']:.1%}, "
                    f"communication {s['predicted_comm_saving']:.1%}; measured bytes "
                    f"{'equal' if s['bytes_exact'] else 'DIFFER FROM'} the cost model's")
    if s.get("replans"):
        n = s["replans"]
        rows.append(f"  {n} plan{'s' if n != 1 else ''} made, median {fmt_time(s['median_replan_s'])} each")
    rows.append(f"metrics.jsonl, plans.jsonl, summary.json and the fine-tuned model ({Path(s['model_file']).name}) "
                f"in {s['run_dir']}/")
    return "\n".join(rows)


def calibrate_command(args) -> int:
    from runtime.calibrate import calibrate

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    model_job = None
    if args.model or args.checkpoint:
        name, kwargs, _ = _model_args(args)
        model_job = {"model": name, "model_kwargs": kwargs, "seed": 0}
    cluster, raw = calibrate(args.nproc, model_job, args.micro_batch_size)
    out = Path(args.out)
    atomic_write_text(out, cluster.to_json() + "\n")
    write_json(out.with_suffix(".raw.json"), raw)
    dev = cluster.device(0)
    summary = {"out": str(out), "peak_flops": dev.peak_flops, "task_overhead_s": dev.task_overhead_s,
               "elementwise_overhead_s": dev.elementwise_overhead_s, "backward_efficiency": dev.backward_efficiency,
               "mem_bandwidth": dev.mem_bandwidth, "worker_core_share": raw.get("worker_core_share", 1.0)}
    if cluster.links:
        link = cluster.links[0][2]
        summary.update(link_bandwidth=link.bandwidth, link_latency_s=2 * link.latency_s)
    if args.json:
        print(json.dumps(summary))
        return 0
    what = f"{model_job['model']} subnet tasks" if model_job else "GEMMs"
    print(f"compute ({what}): {dev.peak_flops / 1e9:.2f} GFLOP/s per rank (one thread), {fmt_time(dev.task_overhead_s)} "
          f"per task; memory {dev.mem_bandwidth / 1e9:.2f} GB/s")
    if raw.get("worker_core_share", 1) < 1:
        print(f"{args.nproc - 1} worker ranks share {raw['cores']} cores: each worker is modelled at "
              f"{raw['worker_core_share']:.0%} of a core's speed")
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
    p = sub.add_parser("run", help="Fine-tune with D2FT on local ranks (torch.distributed): real data, "
                                   "re-planning, checkpoints, metrics.",
                       description=RUN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="timm ViT/DeiT name (default: the checkpoint's; with neither, the shipped backbone)")
    g.add_argument("--model-kwargs", help='JSON of timm keyword arguments over the checkpoint\'s, e.g. \'{"num_classes": 10}\'')
    g.add_argument("--checkpoint", help="local weights (safetensors or torch) to start from; 'none' for a seeded "
                                        "random init (default: the shipped backbone when --model is not given)")
    g.add_argument("--data", default="mnist-digits",
                   help="dataset: " + "; ".join(f"{k}: {v}" for k, v in DATASETS.items()).replace("%", "%%") + " (default: %(default)s)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random 2-pixel shifts (and flips where labels allow) of training images (default: on)")
    g = p.add_argument_group("plan")
    g.add_argument("--nproc", type=int, default=4, help="ranks to spawn on this machine (default: 4)")
    g.add_argument("--cluster", help="cluster JSON (e.g. from `d2ft calibrate`); default: assumed local CPU ranks")
    g.add_argument("--plan", help="plan file to run unchanged every step (its placement and ops)")
    g.add_argument("--strategy", default="hybrid",
                   help="backward, shortcut, hybrid, or a baseline: full, random, freeze, layerdrop (default: hybrid)")
    g.add_argument("--solver", default="dp", help="mip, dp or greedy (default: dp)")
    g.add_argument("--keep", type=float, default=0.6, help="compute keep ratio in (0, 1] (default: 0.6)")
    g.add_argument("--comm-keep", type=float, default=None, help="communication keep ratio in (0, 1] (default: none)")
    g.add_argument("--replan-every", type=int, default=1,
                   help="re-plan every N steps from the measured scores; 0 plans once (default: 1)")
    g.add_argument("--full-warmup", type=int, default=0, help="first N steps run all FULL to seed the scores (default: 0)")
    g.add_argument("--micro-batches", type=int, default=2, help="micro-batches per step (default: 2)")
    g.add_argument("--micro-batch-size", type=int, default=16, help="images per micro-batch (default: 16)")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=100, help="optimizer steps (default: 100)")
    g.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="optimizer (default: adamw)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    g.add_argument("--lr-warmup", type=int, default=None, help="linear warm-up steps before the cosine decay "
                                                             "(default: 5%% of --steps)")
    g.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: 0.05)")
    g.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default: 0)")
    g.add_argument("--lora", action="store_true", help="LoRA: freeze the base weights, train per-subnet adapters "
                                                      "and the classifier")
    g.add_argument("--lora-rank", type=int, default=4, help="adapter rank r (default: 4)")
    g.add_argument("--lora-alpha", type=float, default=8.0, help="adapter scale alpha; updates are alpha/r B A (default: 8)")
    g.add_argument("--lora-targets", default="q,v", help="comma-separated of q, k, v, proj, fc1, fc2 (default: q,v)")
    g.add_argument("--seed", type=int, default=0, help="seed of the init, data order, augmentation and plans (default: 0)")
    g.add_argument("--eval-every", type=int, default=0, help="test top-1 every N steps, and always at the end (default: end only)")
    g.add_argument("--eval-batch-size", type=int, default=250, help="images per evaluation micro-batch (default: 250)")
    g.add_argument("--checkpoint-every", type=int, default=50, help="checkpoint every N steps, and at the end (default: 50)")
    g.add_argument("--keep-checkpoints", type=int, default=1, help="checkpoints kept on disk, newest first (default: 1)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, exactly")
    g = p.add_argument_group("execution")
    g.add_argument("--slowdown", help="per-rank compute slowdown factors, e.g. 1,1,2,4 (emulated heterogeneity)")
    g.add_argument("--speed-oblivious", action="store_true",
                   help="place and plan as if every rank ran at full speed, ignoring --slowdown (the baseline the "
                        "balanced plan is measured against)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: gloo; cuda: NCCL with one GPU per rank (by local rank, shared when fewer)")
    g.add_argument("--port", type=int, help="rendezvous port on 127.0.0.1 (default: a free one)")
    g.add_argument("--timeout", type=float, default=120, help="seconds a rank waits for a peer (default: 120)")
    g.add_argument("--out", default="runs/latest", help="run directory (default: runs/latest)")
    g.add_argument("--label", default="d2ft run", help="progress bar label")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print one JSON summary (times in s, sizes in B)")
    g.add_argument("--dry-run", action="store_true", help="write RUN_DIR/job.json and stop (to launch it with torchrun)")

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
    p.add_argument("--model", help="fit compute to this timm model's own subnet tasks (default: GEMMs)")
    p.add_argument("--model-kwargs", help="JSON of timm keyword arguments for --model")
    p.add_argument("--checkpoint", help="take the model and its arguments from this checkpoint's metadata "
                                        "(e.g. data/pretrained/vit-fmnist.safetensors)")
    p.add_argument("--micro-batch-size", type=int, default=16, help="images per task with --model (default: 16)")
    p.add_argument("--out", default="profile.json", help="cluster JSON to write (default: profile.json)")
    p.add_argument("--json", action="store_true", help="print one JSON summary (FLOP/s, B/s, s)")
