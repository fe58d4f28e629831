"""Checking a ``Job`` before any rank starts, and resolving it for the ranks.

``prepare(job)`` answers every problem it can find in the launcher, in seconds, rather
than in every rank after the process group forms: the model's arguments and checkpoint
(loaded once on the meta device, then for real), the data against the model's input and
classifier, the cluster against the rank count, the plan against the model and cluster,
and the run directory against what it already holds. The Job it returns has the model
name, its keyword arguments and the checkpoint fixed, ``plan`` a ``Plan`` and ``cluster``
a ``Cluster``; preparing it again changes nothing.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
from pathlib import Path

import torch

from d2ft import rundir
from d2ft.cluster import Cluster
from d2ft.device import DeviceSpec, LinkSpec
from d2ft.errors import one_line
from d2ft.loaders import load_cluster, load_plan
from d2ft.ops import Op
from d2ft.placement import plan_placement
from d2ft.plan import Plan
from d2ft.serial import atomic_write_text, read_json
from d2ft.units import GB, GFLOPS, GiB

from .job import VOLATILE, Job
from .spec import job_spec
from .weights import SHIPPED_CHECKPOINT, build_model, load_weights, read_metadata

log = logging.getLogger(__name__)

LOCAL_CPU = DeviceSpec(
    "this machine, one CPU thread per rank (assumed figures; `d2ft calibrate` measures them)",
    peak_flops=20 * GFLOPS, peak_flops_fp32=20 * GFLOPS, mem_bandwidth=10 * GB, memory_bytes=4 * GiB,
    efficiency=1.0, sm_count=1, gemm_tile=1, kernel_launch_s=20e-6,
)
"""A rank as ``d2ft calibrate`` prices one (the kernel model of one thread), with assumed constants."""
LOOPBACK = LinkSpec("loopback TCP (assumed)", bandwidth=1 * GB, latency_s=50e-6)


def local_cluster(nproc: int) -> Cluster:
    """``nproc`` ranks on this machine, rank 0 the coordinator (assumed figures)."""
    return Cluster.star([(f"rank{i}", LOCAL_CPU) for i in range(nproc)], LOOPBACK, name=f"local-{nproc}")


def resolve_model(model: str | None, kwargs: dict, checkpoint: str | None) -> tuple[str, dict, str | None]:
    """(timm name, keyword arguments, checkpoint path or None): a model name and arguments over the
    checkpoint's own metadata; with neither a name nor a checkpoint, the shipped backbone."""
    if checkpoint is None and model is None:
        checkpoint = str(SHIPPED_CHECKPOINT)
    if checkpoint in ("none", ""):
        checkpoint = None
    if checkpoint and model is None:
        meta = read_metadata(checkpoint)
        if "model" not in meta:
            raise ValueError(f"checkpoint {checkpoint!r} does not name its model; give --model and --model-kwargs")
        model = meta["model"]
        kwargs = {**json.loads(meta.get("model_kwargs", "{}")), **kwargs}
    return model or "vit_tiny_patch16_224", dict(kwargs), checkpoint


def _meta_model(job: Job):
    """The job's timm model on the meta device: shapes only, no memory, no weights read.

    ValueError naming the model and its arguments when timm cannot build it."""
    import timm

    if not timm.is_model(job.model):
        close = difflib.get_close_matches(job.model, timm.list_models(), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ValueError(f"--model {job.model!r}: timm has no such model{hint}; timm.list_models() lists them")
    try:
        with torch.device("meta"):
            return build_model(job.replace(checkpoint="none"))
    except (TypeError, ValueError, RuntimeError, AssertionError, KeyError, AttributeError) as e:
        raise ValueError(f"--model-kwargs {json.dumps(job.model_kwargs)}: timm cannot build {job.model} with "
                         f"them ({type(e).__name__}: {one_line(e, 200)})") from None


def spec_of(job: Job):
    """The ``ModelSpec`` of the job's model (no weights read)."""
    return job_spec(_meta_model(job), job)


def prepare(job: Job) -> Job:
    """``job`` checked and resolved (module docstring); ValueError or FileNotFoundError on any problem."""
    from .data import load_dataset

    if job.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible here; use --device cpu")
    name, kwargs, checkpoint = resolve_model(job.model, job.model_kwargs, job.checkpoint)
    data = None if job.data == "synthetic" else load_dataset(job.data)
    if data is not None and "num_classes" not in job.model_kwargs and not job.keep_classifier:
        kwargs["num_classes"] = data.classes  # a new task's fresh classifier has its own classes
    job = job.replace(model=name, model_kwargs=kwargs, checkpoint=checkpoint or "none")
    meta_model = _meta_model(job)
    spec = job_spec(meta_model, job)
    subnets = spec.depth * spec.heads
    if job.plan_devices > subnets + 1:
        what = f"--emulate-ranks {job.emulate_ranks}" if job.emulate_ranks else f"--nproc {job.nproc}"
        raise ValueError(f"{what}: {name} has {subnets} subnets ({spec.depth} blocks x {spec.heads} "
                         f"heads), so more than {subnets + 1} ranks would leave ranks with nothing to run")
    if data is not None:
        _check_data(data, meta_model)
    if checkpoint:
        load_weights(build_model(job.replace(checkpoint="none")), checkpoint, job.keep_classifier)  # fails here
    cluster = job.cluster
    if not isinstance(cluster, Cluster):
        cluster = load_cluster(cluster) if cluster else local_cluster(job.plan_devices)
        _warn_if_measured_elsewhere(cluster, job.cluster)
    if cluster.num_devices != job.plan_devices:
        what = f"--emulate-ranks is {job.emulate_ranks}" if job.emulate_ranks else f"--nproc is {job.nproc}"
        raise ValueError(f"cluster {cluster.name!r} has {cluster.num_devices} devices but {what}")
    if job.emulate_ranks and cluster.coordinator_index != 0:
        raise ValueError(f"--emulate-ranks: cluster {cluster.name!r} has its coordinator at device "
                         f"{cluster.coordinator_index}; the emulating process plays the coordinator, device 0")
    plan = job.plan
    if isinstance(plan, str):
        plan = load_plan(plan)
    if plan is None:
        planning = cluster.with_slowdown(list(job.slowdown)) if job.slowdown and not job.speed_oblivious else cluster
        placement = plan_placement(spec, planning, micro_batches=job.micro_batches,
                                   micro_batch_size=job.micro_batch_size, keep=job.keep)
        plan = Plan.uniform(spec, planning, Op.FULL, job.micro_batches, job.micro_batch_size, placement=placement)
    plan.validate(spec, cluster)
    return job.replace(plan=plan, cluster=cluster, micro_batches=plan.micro_batches,
                       micro_batch_size=plan.micro_batch_size)


def _warn_if_measured_elsewhere(cluster: Cluster, ref) -> None:
    """A profile measured on another machine is never used silently: one warning says what differs."""
    from .provenance import profile_mismatch

    why = profile_mismatch(cluster)
    if why:
        log.warning("cluster %s was measured on another machine (%s): its predictions describe that machine; "
                    "run `d2ft calibrate` here for this one", ref, why)


def _check_data(data, model) -> None:
    """The dataset's images, labels and classes fit the model (before any rank starts)."""
    train, test = set(data.train.labels.unique().tolist()), set(data.test.labels.unique().tolist())
    if min(train | test, default=0) < 0:
        raise ValueError(f"dataset {data.name!r} has negative labels ({min(train | test)}); labels must be 0..C-1")
    if not test <= train:
        unseen = sorted(test - train)
        raise ValueError(f"dataset {data.name!r}: its test split has labels the training split never shows "
                         f"({', '.join(map(str, unseen[:5]))}); top-1 on them would be 0. Check the split or the labels")
    x = data.train.images
    chans, size = model.patch_embed.proj.in_channels, tuple(model.patch_embed.img_size)
    if x.shape[1] != chans or tuple(x.shape[2:]) != size:
        raise ValueError(f"dataset {data.name!r} has {x.shape[1]} x {x.shape[2]} x {x.shape[3]} images but the model "
                         f"takes {chans} x {size[0]} x {size[1]}; set img_size / in_chans in --model-kwargs or pick "
                         "a checkpoint built for these images")
    if data.classes > model.num_classes:
        raise ValueError(f"dataset {data.name!r} has {data.classes} classes but the model's classifier has "
                         f"{model.num_classes}; pass --model-kwargs '{{\"num_classes\": {data.classes}}}'")


def claim_run_dir(job: Job) -> None:
    """Refuses a run directory that holds files d2ft did not write, another run, this run without
    ``resume``, or (with ``resume``) nothing intact to resume from. Call it holding the run's lock."""
    run_dir = Path(job.out_dir)
    foreign = rundir.foreign_files(run_dir)
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise ValueError(f"{run_dir} holds files d2ft did not write ({shown}); d2ft never overwrites or deletes "
                         "them: choose another --out")
    existing = run_dir / rundir.JOB_FILE
    if not existing.exists():
        if job.resume:
            raise ValueError(f"--resume: {run_dir} holds no run to resume (no job.json); leave out --resume to start one")
        return
    old = read_json(existing, "job file")
    new = job.to_dict()
    if not isinstance(old, dict):
        raise ValueError(f"job file {str(existing)!r} is not a d2ft job; choose another --out")
    diff = sorted(k for k in set(old) | set(new) if k not in VOLATILE and old.get(k) != new.get(k))
    if diff:
        raise ValueError(f"{run_dir} already holds a different run (it differs in {', '.join(diff)}); "
                         "choose another --out, or repeat that run's own options to resume it")
    ckpt, problems = rundir.intact_checkpoint(run_dir)
    started = rundir.is_run_dir(run_dir) or (run_dir / rundir.CHECKPOINT_FILE).exists()
    if not job.resume and not started:  # written by `--dry-run` and never started: this is its start
        return
    if not job.resume:
        where = f" (checkpointed at step {ckpt['step']} of {job.steps})" if ckpt else ""
        raise ValueError(f"{run_dir} already holds this run{where}; pass --resume to continue it, or choose another --out")
    if ckpt is None and problems:
        raise ValueError(f"--resume: no intact checkpoint in {run_dir}: {'; '.join(problems)}")
    done = len(rundir.read_jsonl(run_dir / rundir.METRICS_FILE))
    if ckpt is None and done:
        raise ValueError(f"--resume: {run_dir} has the metrics of {done} steps but no checkpoint to resume from; "
                         f"to start fresh, remove {run_dir} or choose another --out")
    for problem in problems:
        log.warning("resuming from an earlier checkpoint: %s", problem)


@contextlib.contextmanager
def claimed(job: Job):
    """Holds the prepared job's run directory for the block: its lock taken, the folder checked
    (``claim_run_dir``) and RUN_DIR/job.json written; yields the job file's path."""
    if not job.prepared:
        raise ValueError("claimed() takes a prepared job (runtime.prepare.prepare)")
    if rundir.foreign_files(job.out_dir):
        claim_run_dir(job)  # refuses it before the lock file is put into someone else's folder
    with rundir.RunLock(job.out_dir):
        claim_run_dir(job)
        yield atomic_write_text(Path(job.out_dir) / rundir.JOB_FILE, job.to_json())


__all__ = ["LOCAL_CPU", "LOOPBACK", "claim_run_dir", "claimed", "local_cluster", "prepare", "resolve_model", "spec_of"]
