"""``d2ft run``: the flags mapped to a ``runtime.job.Job`` (``calibrate`` and ``pretrain``: ``d2ft.app.machine``).

torch is imported only when one of them runs, so ``d2ft --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from runtime.datasets import DATASETS

from ..rundir import JOB_CONFIG, JOB_FILE
from ..serial import atomic_write_text
from ..units import fmt_bytes, fmt_time
from . import flags

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
  metrics.csv       the same scalars as a table; events.out.tfevents.* as TensorBoard
                    events (when tensorboard is installed: tensorboard --logdir runs/)
  plans.jsonl       every plan used, with the step it started and the solver's time
  checkpoint.json   the last complete checkpoint (checkpoints/step-N/rank*.pt)
  model.safetensors the fine-tuned model as one timm state dict (LoRA merged)
  summary.json      the headline figures

Example: d2ft run --strategy hybrid --keep 0.6 --steps 300 --out runs/hybrid
"""


def _model_kwargs(args) -> dict:
    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs is not valid JSON: {e.msg}") from None
    if not isinstance(kwargs, dict):
        raise ValueError("--model-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    return kwargs


FLAGS = {  # d2ft run flag -> Job field, where the value carries over as it is
    "model": "model", "checkpoint": "checkpoint", "data": "data", "augment": "augment",
    "keep_classifier": "keep_classifier", "nproc": "nproc", "emulate_ranks": "emulate_ranks", "skip_rescale": "skip_rescale",
    "message_dtype": "message_dtype", "order": "order",
    "cluster": "cluster", "plan": "plan", "strategy": "strategy", "solver": "solver", "keep": "keep",
    "comm_keep": "comm_keep", "replan_every": "replan_every", "full_warmup": "full_warmup",
    "micro_batches": "micro_batches", "micro_batch_size": "micro_batch_size", "speed_oblivious": "speed_oblivious",
    "steps": "steps", "optimizer": "optimizer", "lr": "lr", "lr_warmup": "lr_warmup_steps",
    "weight_decay": "weight_decay", "momentum": "momentum", "seed": "seed", "eval_every": "eval_every",
    "eval_batch_size": "eval_batch_size", "checkpoint_every": "checkpoint_every",
    "keep_checkpoints": "keep_checkpoints", "resume": "resume", "device": "device", "port": "port",
    "timeout": "timeout_s", "out": "out_dir", "label": "label",
}


def job_from_args(args):
    """The ``runtime.job.Job`` of a ``d2ft run`` command line (``FLAGS`` map one to one onto fields). Under
    torchrun without ``--nproc`` the job has torchrun's world size, so that it is checked as it will run."""
    from runtime.job import Job, LoraSpec
    from runtime.run import under_torchrun

    fields = {field: getattr(args, flag) for flag, field in FLAGS.items()}
    if under_torchrun() and "nproc" not in _given(args):
        fields["nproc"] = int(os.environ["WORLD_SIZE"])
    if args.plan:  # a plan file runs as it is
        fields["strategy"] = None
    if args.lora:
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        fields["lora"] = LoraSpec(rank=args.lora_rank, alpha=args.lora_alpha, targets=targets)
    if args.slowdown:
        try:
            fields["slowdown"] = tuple(float(x) for x in args.slowdown.split(","))
        except ValueError:
            raise ValueError(f"--slowdown {args.slowdown!r}: expected comma-separated numbers >= 1, e.g. 1,1,2,4") from None
    flagged = Job(model_kwargs=_model_kwargs(args), progress=not (args.quiet or args.json), **fields)
    return _over_config(flagged, args) if getattr(args, "config", None) else flagged


def _over_config(flagged, args):
    """The job of ``--config FILE`` with the fields of the flags given on the command line over it."""
    from runtime.job import Job

    given = _given(args)
    fields = [field for flag, field in FLAGS.items() if flag in given]
    fields += [f for f, flags in (("lora", ("lora", "lora_rank", "lora_alpha", "lora_targets")),
                                  ("slowdown", ("slowdown",)), ("model_kwargs", ("model_kwargs",)),
                                  ("progress", ("quiet", "json"))) if given & set(flags)]
    if "plan" in given:
        fields.append("strategy")
    return Job.load(args.config).replace(**{f: getattr(flagged, f) for f in fields})


def _given(args) -> set[str]:
    """The dests of the ``run`` flags that stand on the command line (``--flag`` or ``--flag=value``)."""
    words = getattr(args, "argv", None) or []
    return {a.dest for a in args.run_parser._actions
            if any(w == opt or w.startswith(opt + "=") for w in words for opt in a.option_strings)}


def command_line(job) -> str:
    """The ``d2ft run`` command that makes ``job`` (flags for the fields that differ from the defaults)."""
    from runtime.job import Job

    default, parts = Job(), ["d2ft run"]
    for flag, field in FLAGS.items():
        value = getattr(job, field)
        if value == getattr(default, field) or not isinstance(value, (str, int, float)):
            continue  # a prepared job's Plan and Cluster have no flag form
        name = "--" + flag.replace("_", "-")
        if isinstance(value, bool):
            parts.append(name if value else f"--no-{flag.replace('_', '-')}")
        else:
            parts.append(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")
    if job.model_kwargs:
        parts.append(f"--model-kwargs '{json.dumps(job.model_kwargs)}'")
    if job.lora:
        parts.append(f"--lora --lora-rank {job.lora.rank} --lora-alpha {job.lora.alpha:g} "
                     f"--lora-targets {','.join(job.lora.targets)}")
    if job.slowdown:
        parts.append("--slowdown " + ",".join(f"{x:g}" for x in job.slowdown))
    return " ".join(parts)


def _resumed(job):
    """``--resume --out RUN_DIR`` with no other run option: the job RUN_DIR/job.json holds (its volatile
    fields, such as the progress bar and timeout, from the flags). With other options given, ``job``
    itself, which must then match the saved one."""
    from runtime.job import VOLATILE, Job

    saved = Path(job.out_dir) / JOB_FILE
    if not job.resume or not saved.is_file():
        return job
    default = Job()
    if any(getattr(job, f.name) != getattr(default, f.name) for f in dataclasses.fields(Job) if f.name not in VOLATILE):
        return job
    return Job.load(saved).replace(**{f: getattr(job, f) for f in VOLATILE})


def cmd_run(args) -> int:
    """``d2ft run``: the flags as a Job, prepared (every check before any rank starts), then run."""
    from runtime.prepare import claimed, prepare
    from runtime.run import run, run_under_torchrun, under_torchrun

    job = _resumed(job_from_args(args))
    if args.dry_run:
        job = prepare(job)
        with claimed(job) as path:
            config = atomic_write_text(path.parent / JOB_CONFIG, job.to_toml())
        print(f"job written to {path} (and as a config file, {config}); run it with: torchrun --nproc-per-node "
              f"{job.nproc} -m runtime.run {path}")
        return 0
    on_start = None if args.quiet or args.json else _starting
    command = ["d2ft", *args.argv]
    if under_torchrun():  # this process is one rank; the coordinator's prints the summary
        if "nproc" not in _given(args) and not (getattr(args, "config", None) and _config_sets(args, "nproc")):
            job = job.replace(nproc=int(os.environ["WORLD_SIZE"]))
        run_under_torchrun(job, on_start, lambda s: print(json.dumps(s) if args.json else format_summary(s)), command)
        return 0
    summary = run(job, on_start=on_start, command=command)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def _config_sets(args, field: str) -> bool:
    """Whether the ``--config`` file itself sets ``field``."""
    from d2ft.serial import toml_loads

    path = Path(args.config)
    data = json.loads(path.read_text()) if path.suffix == ".json" else toml_loads(path.read_text(), str(path))
    return field in data


def starting_line(job) -> str:
    """What ``d2ft run`` says while its ranks start (torch's import and the rendezvous take seconds)."""
    ranks = f"1 process playing {job.emulate_ranks} ranks" if job.emulate_ranks else \
        f"{job.nproc} rank{'s' if job.nproc != 1 else ''} ({'NCCL' if job.device == 'cuda' else 'gloo'})"
    slow = f", ranks slowed {' '.join(f'x{f:g}' for f in job.slowdown)} (emulated)" if job.slowdown else ""
    what = "resuming" if job.resume else "starting"
    return f"d2ft run: {what} {ranks}{slow} for {job.steps} steps into {job.out_dir} ..."


def _starting(job) -> None:
    import sys

    print(starting_line(job), file=sys.stderr, flush=True)


def format_summary(s: dict) -> str:
    """A run's summary (``d2ft.rundir.summarise``) as the few lines ``d2ft run`` prints."""
    ranks = f"{s['nproc']} emulated ranks (one process, no messages)" if s.get("emulated_ranks") else f"{s['nproc']} ranks"
    rows = [f"{s['model']} on {ranks}, {s['strategy'] or 'plan file'}"
            + (f" keep {s['keep']:g}" if s.get("keep") and s['strategy'] != 'full' else "") + (", LoRA" if s.get("lora") else "")
            + f", data {s['data']}: {s['steps']} steps"
            + (f" (ranks slowed {' '.join(f'x{f:g}' for f in s['emulated_slowdown'])}, emulated)"
               if s.get("emulated_slowdown") else "")]
    if s["final_loss"] is not None:
        rows.append(f"  final loss {s['final_loss']:.4f} (mean of the last steps)" + (f", test top-1 {s['top1']:.4f}" if s["top1"] is not None else ""))
    rows.append(f"  median step {fmt_time(s['median_step_time_s'])}, measured compute {fmt_time(s['median_measured_compute_s'])} "
                f"per step (all ranks), {fmt_bytes(s['total_measured_sent_bytes'])} sent in all")
    if "predicted_compute_saving" in s:
        check = "" if s.get("emulated_ranks") else \
            f"; measured bytes {'equal' if s['bytes_exact'] else 'DIFFER FROM'} the cost model's"
        rows.append(f"  planned savings against all-FULL: compute {s['predicted_compute_saving']:.1%}, "
                    f"communication {s['predicted_comm_saving']:.1%}{check}")
    if s.get("replans"):
        n = s["replans"]
        rows.append(f"  {n} plan{'s' if n != 1 else ''} made, median {fmt_time(s['median_replan_s'])} each")
    rows.append(f"metrics.jsonl, plans.jsonl, summary.json and the fine-tuned model ({Path(s['model_file']).name}) "
                f"in {s['run_dir']}/")
    return "\n".join(rows)


def add_parsers(sub) -> None:
    """The parser of ``run``."""
    _add_run(sub)


def _add_run(sub) -> None:
    p = flags.command(sub, "run", cmd_run, description=RUN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                      help="Fine-tune with D2FT on local ranks (torch.distributed): real data, re-planning, "
                           "checkpoints, metrics.")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="timm ViT/DeiT name (default: the checkpoint's; with neither, the shipped backbone)")
    g.add_argument("--model-kwargs", help='JSON of timm keyword arguments over the checkpoint\'s, e.g. \'{"num_classes": 10}\'')
    g.add_argument("--checkpoint", help="local weights (safetensors or torch) to start from; 'none' for a seeded "
                                        "random init (default: the shipped backbone when --model is not given)")
    g.add_argument("--data", default="fashion-mnist-5to9",
                   help="dataset: " + "; ".join(f"{k}: {v}" for k, v in DATASETS.items()).replace("%", "%%") + " (default: %(default)s)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random 2-pixel shifts (and flips where labels allow) of training images (default: on)")
    g.add_argument("--keep-classifier", action="store_true",
                   help="keep the checkpoint's classifier (same task); by default a new task gets a fresh one")
    g = p.add_argument_group("plan")
    g.add_argument("--nproc", type=int, default=4, help="ranks to spawn on this machine (default: 4)")
    g.add_argument("--emulate-ranks", type=int, default=0, metavar="K",
                   help="with --nproc 1: plan for K devices and play all of them in one process (same placement, "
                        "ops and sums as K ranks, no messages; for accuracy studies) (default: off)")
    g.add_argument("--skip-rescale", action=argparse.BooleanOptionalAction, default=False,
                   help="scale a block half running n of its H heads by H/n, so training sees the output scale "
                        "evaluation sees (default: off)")
    g.add_argument("--message-dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="element type of the activations and gradients sent between ranks: bf16 or fp16 halve "
                        "the bytes (rounded on the wire, computed in fp32; the plan prices them); default: fp32")
    g.add_argument("--order", choices=("sequential", "interleaved"), default="sequential",
                   help="execution order of a step's micro-batches: one after another, or every micro-batch in "
                        "flight at once, block half by block half (as `d2ft simulate --order` predicts them); "
                        "default: sequential")
    g.add_argument("--cluster", help="cluster JSON (e.g. from `d2ft calibrate`); default: assumed local CPU ranks")
    g.add_argument("--plan", help="plan file to run unchanged every step (its placement and ops)")
    flags.add_budget(g)
    g.add_argument("--replan-every", type=int, default=1,
                   help="re-plan every N steps from the measured scores; 0 plans once (default: 1)")
    g.add_argument("--full-warmup", type=int, default=0, help="first N steps run all FULL to seed the scores (default: 0)")
    flags.add_step_shape(g, micro_batches=2, micro_batch_size=16)
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
    flags.add_seed(g, "init, data order, augmentation and plans")
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
    flags.add_json(g, "one JSON summary (times in s, sizes in B)")
    g.add_argument("--dry-run", action="store_true", help="write RUN_DIR/job.json (and job.toml, a config file) and "
                                                           "stop (to launch it with torchrun)")
    g.add_argument("--config", help="a job file (.toml or .json; `--dry-run` writes one, the README lists its fields): "
                                    "its fields, with the flags given on the command line over them")
    p.set_defaults(run_parser=p)
