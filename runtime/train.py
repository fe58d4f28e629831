"""One rank of a real D2FT fine-tuning job: the training loop behind ``d2ft run``.

Every rank runs ``train(rank, world, job)`` on a prepared ``runtime.job.Job``. Per step:

1. the coordinator decides the step's plan (``d2ft.replan.Replanner``: all-FULL warm-up
   steps, then a re-plan every ``replan_every`` steps from the scores measured so far, or
   a static plan) and broadcasts it when it changes; placement stays fixed for the run;
2. the ranks execute it (``Coordinator`` / ``Worker``): micro-batches with gradient
   accumulation, then AdamW (or SGD) with linear warm-up and cosine decay of the rate;
   a subnet with no FULL micro-batch in the step has no gradient and is not updated;
3. every rank reports its measured seconds and bytes and its subnets' scores
   (``runtime.measure``); the coordinator appends one line to ``RUN_DIR/metrics.jsonl``
   with the measured and the cost model's predicted compute and bytes (and tracks it:
   ``metrics.csv``, TensorBoard, ``runtime.tracking``);
4. every ``eval_every`` steps and at the end, top-1 on the test split with every subnet
   running (forward only); every ``checkpoint_every`` steps and at the end, a checkpoint
   (``runtime.checkpoint``).

The steps of ``job.timeline_steps`` (default: the last) are also written as timelines,
``RUN_DIR/timeline-stepN.json``: a Trace with every rank's compute intervals and messages.

``job.resume`` continues from ``checkpoint.json``: weights, optimizer moments, scores, the
current plan and the data position are restored, and ``metrics.jsonl`` and ``plans.jsonl``
are cut back to the checkpoint, so the run continues exactly as an uninterrupted one would
(same batches, same plans, same losses: CPU ranks run one thread each and every random
draw is seeded by (seed, step)).

At the end the coordinator writes ``RUN_DIR/model.safetensors`` (``runtime.weights.export``)
and every rank writes ``RUN_DIR/rank{r}.pt``: its final state and per-step log (tests read it).

Not counted in the measured bytes: the control messages of steps 1 and 3 (a plan of a
few hundred bytes, the per-rank statistics) and evaluation traffic; they are not D2FT
training traffic and the cost model does not predict them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from d2ft import rundir
from d2ft.cost import CostModel
from d2ft.ops import Op
from d2ft.plan import Plan
from d2ft.replan import Replanner
from d2ft.serial import write_json

from .checkpoint import choose_checkpoint, load_checkpoint, save_checkpoint
from .executor import WIRE, Coordinator, Counters, Link, Worker
from .feed import Feed
from .measure import metrics_line, state_bytes, subnet_scores, write_timeline
from .optim import lr_of, make_optimizer
from .spec import job_spec
from .tracking import Tracker
from .weights import build_model, export


log = logging.getLogger(__name__)


def apply_lora(part, lora, seed: int) -> None:
    """LoRA mode: adapters on every subnet this rank holds (seeded per subnet), all else frozen but the classifier."""
    for l, shard in part.held():
        for h in shard.heads:
            g = torch.Generator().manual_seed(seed * 1_000_003 + int(l) * 1_009 + h)
            shard.subnet(h).add_lora(lora.rank, lora.alpha, list(lora.targets), generator=g)
    if isinstance(part, Coordinator):
        for name, p in part.model.named_parameters():
            p.requires_grad_(name.startswith("head"))


def train(rank: int, world: int, job) -> None:
    """Rank ``rank`` of the prepared ``job`` (module docstring)."""
    RankLoop(rank, world, job).run()


class RankLoop:
    """One rank's state over a run: its part of the model, optimizer, and (coordinator) plans and logs."""

    def __init__(self, rank: int, world: int, job) -> None:
        plan = job.plan
        if len(plan.devices) != job.plan_devices or world != job.nproc:
            raise ValueError(f"the plan has {len(plan.devices)} devices but {world} ranks were started"
                             + (f" to emulate {job.emulate_ranks}" if job.emulate_ranks else ""))
        self.rank, self.world, self.job = rank, world, job
        self.run_dir = Path(job.out_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.coord = job.coordinator
        self.is_coord = rank == self.coord
        model = build_model(job)
        self.spec = job_spec(model, job)
        self.feed = Feed(job, model) if self.is_coord else None
        self.shape = (model.patch_embed.num_patches + model.num_prefix_tokens, model.embed_dim)
        self.part = Coordinator(model, plan, rank, emulate=bool(job.emulate_ranks), rescale_skips=job.skip_rescale,
                                wire=WIRE[job.message_dtype], order=job.order) \
            if self.is_coord else Worker(model, plan, rank, self.coord, order=job.order)
        del model  # a worker keeps only its shards
        if job.lora:
            apply_lora(self.part, job.lora, job.seed)
        self.device = torch.device("cpu")
        if job.device == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
            self.part.to(self.device)
        self.opt = make_optimizer([p for p in self.part.parameters() if p.requires_grad], job)
        self.slowdown = (job.slowdown or [1.0] * world)[rank]
        self.current, self.plan_index, self.log, self.last_top1 = plan, -1, [], None
        self.replanner = self.cost = self.full_cost = None
        if self.is_coord:
            self._init_planning()

    def _init_planning(self) -> None:
        job, cluster, planning = self.job, self.job.cluster, self.job.planning_cluster
        # The speed-oblivious baseline plans as if every rank ran at full speed (it still runs slowed).
        self.replanner = Replanner(self.spec, cluster if job.speed_oblivious else planning, job.plan,
                                   strategy=job.strategy, solver=job.solver, keep=job.keep, comm_keep=job.comm_keep,
                                   replan_every=job.replan_every, full_warmup=job.full_warmup,
                                   score_decay=job.score_decay, seed=job.seed, schedule=job.schedule,
                                   steps_each=job.schedule_steps_each)
        if planning is not None:  # predictions for the ranks as they run (emulated slowdown included)
            self.cost = CostModel(self.spec, planning)
            self.full_cost = self.cost.step(self.replanner.full)

    # ---- the run ----
    def run(self) -> None:
        job = self.job
        start = self.restore()
        n_test = [self.feed.test_size if self.is_coord else 0]
        dist.broadcast_object_list(n_test, src=self.coord)
        self.n_test = n_test[0]
        self.timeline_steps = {s if s >= 0 else job.steps + s for s in job.timeline_steps}
        if self.is_coord:  # what `d2ft simulate --run` needs to predict this run's steps
            write_json(self.run_dir / rundir.MODEL_FILE, self.spec.to_dict())
            if job.planning_cluster is not None:
                write_json(self.run_dir / rundir.CLUSTER_FILE, job.planning_cluster.to_dict())
        self.metrics = rundir.JsonlAppender(self.run_dir / rundir.METRICS_FILE) if self.is_coord else None
        self.plans_log = rundir.JsonlAppender(self.run_dir / rundir.PLANS_FILE) if self.is_coord else None
        self.tracker = Tracker(self.run_dir, start, messages=not job.emulate_ranks) if self.is_coord else None
        self.bar = self._progress_bar(start)
        self.totals = {"pred": 0.0, "pred_full": 0.0, "bytes": 0.0, "bytes_full": 0.0}
        try:
            for step in range(start, job.steps):
                self.step(step)
        finally:
            if self.bar is not None:
                self.bar.close()
            for f in (self.metrics, self.plans_log, self.tracker):
                if f is not None:
                    f.close()
        export(self.run_dir, job, self.part, self.current, self.rank, self.coord, self.is_coord)
        self._write_rank_file(start)

    def restore(self) -> int:
        """The step to start at: after the last checkpoint when resuming (state restored), else 0."""
        ckpt = None
        if self.job.resume:
            choice = [choose_checkpoint(self.run_dir) if self.is_coord else None]
            dist.broadcast_object_list(choice, src=self.coord)
            ckpt = choice[0]
        if ckpt is None:
            if self.is_coord:
                if self.job.resume and rundir.is_run_dir(self.run_dir):  # a restart before any checkpoint
                    log.warning("%s has no checkpoint yet: the run starts again from step 0", self.run_dir)
                for name in (rundir.METRICS_FILE, rundir.PLANS_FILE):
                    (self.run_dir / name).unlink(missing_ok=True)
            return 0
        saved = load_checkpoint(self.run_dir, ckpt, self.rank, self.device)
        self.part.load_state_dict(saved["part"])
        self.opt.load_state_dict(saved["opt"])
        start = saved["step"]
        if self.is_coord:
            self.replanner.load_state_dict(saved["replanner"])
            self.current, self.plan_index = Plan.from_dict(saved["plan"]), saved["plan_index"]
            rundir.truncate_jsonl(self.run_dir / rundir.METRICS_FILE, start)
            rundir.truncate_jsonl(self.run_dir / rundir.PLANS_FILE, start)
        payload = [self.current.to_dict() if self.is_coord else None]
        dist.broadcast_object_list(payload, src=self.coord)
        self.current = Plan.from_dict(payload[0])
        return start

    def step(self, step: int) -> None:
        """One optimizer step: plan, execute, gather statistics, evaluate, log, checkpoint."""
        info = self._next_plan(step)
        wall, loss, logits, counters = self._execute(step)
        scores = subnet_scores(self.part)  # the optimizer leaves .grad in place; bookkeeping, not timed
        device = self.device
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else state_bytes(self.part, self.opt)
        mine = {"wall_s": wall, "peak_memory_bytes": peak, "busy_s": counters.compute_s, "busy_cpu_s": counters.cpu_s,
                "sent_bytes": counters.sent_bytes, "recv_bytes": counters.recv_bytes,
                "comm_s": counters.comm_s, "wait_s": counters.wait_s, "scores": scores, "events": counters.events}
        gathered = [None] * self.world if self.is_coord else None
        dist.gather_object(mine, gathered, dst=self.coord)
        kept = {k: v for k, v in counters.__dict__.items() if k != "messages"}
        if self.job.record_messages:  # plain tuples: the rank file reads back with weights_only=True
            kept["messages"] = [tuple(m) for m in counters.messages]
        record = {"loss": None if loss is None else loss.detach().cpu(), "wall_s": wall, "peak_memory_bytes": peak,
                  "counters": kept}
        if self.job.record_logits and logits is not None:
            record["logits"] = logits.cpu()
        self.log.append(record)
        top1 = self._evaluate_if_due(step)
        if self.is_coord:
            self._log_step(step, loss.item(), gathered, info, top1)
        self._checkpoint_if_due(step)

    def _next_plan(self, step: int) -> dict | None:
        """The coordinator decides the step's plan and broadcasts it when it changes; returns its info."""
        info = None
        if self.is_coord:
            reason = self.replanner.due(step)
            if reason:
                self.current, info = self.replanner.plan(step, reason)
                self.plan_index += 1
                self.plans_log.write({"step": step, "index": self.plan_index, "reason": reason, **info,
                                      "summary": self.current.summary(), "plan": self.current.to_dict()})
        payload = [self.current.to_dict() if self.is_coord and info is not None else None]
        dist.broadcast_object_list(payload, src=self.coord)
        if payload[0] is not None and not self.is_coord:
            self.current = Plan.from_dict(payload[0])
        self.part.plan = self.current
        return info

    def _execute(self, step: int):
        """The step itself: (wall seconds, loss, logits, counters); loss and logits on the coordinator only."""
        self.lr = lr_of(self.job, step)
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        self.opt.zero_grad(set_to_none=True)
        counters = Counters()
        if step in self.timeline_steps:
            counters.events = []
        link = Link(counters, self.slowdown, self.device, rank=self.rank, wire=WIRE[self.job.message_dtype])
        loss = logits = None
        if self.is_coord:
            x, y = (t.to(self.device) for t in self.feed.batch(step))  # data loading is not part of the step's cost
        t0 = time.perf_counter()
        link.start()
        if self.is_coord:
            loss, logits = self.part.step(x, y, link)
        else:
            self.part.step((self.current.micro_batch_size, *self.shape), link)
        self.opt.step()
        link.stretch()  # the backward tail and the optimizer step are compute too
        link.finish()
        return time.perf_counter() - t0, loss, logits, counters

    def _evaluate_if_due(self, step: int) -> float | None:
        job = self.job
        if not job.evaluate or not (step + 1 == job.steps or (job.eval_every and (step + 1) % job.eval_every == 0)):
            return None
        top1 = self.evaluate()
        self.last_top1 = top1 if top1 is not None else self.last_top1
        return top1

    def evaluate(self) -> float | None:
        """Top-1 on the test split with every subnet running (all FORWARD_ONLY: no backward); None without one."""
        if self.n_test == 0:
            return None
        plan, size, n = self.current, self.job.eval_batch_size, self.n_test
        sizes = [min(size, n - i) for i in range(0, n, size)]
        grid = [[Op.FORWARD_ONLY] * plan.heads for _ in range(plan.depth)]
        eval_plan = Plan(plan.devices, plan.placement, [grid] * len(sizes), size)
        link = Link(Counters(), 1.0, self.device, rank=self.rank, wire=WIRE[self.job.message_dtype])
        if not self.is_coord:
            with torch.no_grad():
                self.part.serve([(k, *self.shape) for k in sizes], eval_plan, link)
            link.finish()
            return None
        chunks, labels = self.feed.test_chunks(size)
        logits = self.part.predict([c.to(self.device) for c in chunks], eval_plan, link)
        link.finish()
        return float((logits.argmax(1).cpu() == labels).float().mean())

    def _log_step(self, step: int, loss: float, gathered: list[dict], info: dict | None, top1: float | None) -> None:
        self.replanner.observe([s for g in gathered for s in g["scores"]], self.current)
        line = metrics_line(step, loss, self.lr, self.current, gathered, self.cost, self.full_cost, info, top1,
                            self.plan_index)
        self.metrics.write(line)
        self.tracker.step(line)
        if step in self.timeline_steps:
            write_timeline(self.run_dir, step, self.current, gathered, line["step_time_s"])
        t = self.totals
        t["pred"] += line.get("predicted_compute_s") or 0.0
        t["pred_full"] += line.get("full_compute_s") or 0.0
        t["bytes"] += line.get("predicted_sent_bytes") or 0.0
        t["bytes_full"] += line.get("full_sent_bytes") or 0.0
        if self.bar is not None:
            post = {"loss": f"{line['loss']:.3f}", "step": f"{gathered[self.coord]['wall_s']:.2f}s"}
            if t["pred_full"]:
                post["compute saved"] = f"{1 - t['pred'] / t['pred_full']:.0%}"
            if t["bytes_full"]:
                post["bytes saved"] = f"{1 - t['bytes'] / t['bytes_full']:.0%}"
            if self.last_top1 is not None:
                post["top1"] = f"{self.last_top1:.3f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)

    def _checkpoint_if_due(self, step: int) -> None:
        job = self.job
        if step + 1 == job.steps or (job.checkpoint_every and (step + 1) % job.checkpoint_every == 0):
            extra = {"replanner": self.replanner.state_dict(), "plan": self.current.to_dict(),
                     "plan_index": self.plan_index} if self.is_coord else {}
            save_checkpoint(self.run_dir, self.rank, self.coord, step + 1, self.part, self.opt, extra,
                            job.keep_checkpoints)
            if self.tracker is not None:
                self.tracker.flush()

    def _progress_bar(self, start: int):
        if not (self.is_coord and self.job.progress):
            return None
        import threading

        from tqdm import tqdm

        # One bar in one process: a thread lock. tqdm's default also makes a multiprocessing lock, a
        # semaphore that this rank's os._exit never releases ("leaked semaphore objects" at the end).
        tqdm.set_lock(threading.RLock())
        return tqdm(total=self.job.steps, initial=start, unit="step", file=sys.stderr, desc=self.job.label,
                    dynamic_ncols=True)

    def _write_rank_file(self, start: int) -> None:
        out = self.run_dir / f"rank{self.rank}.pt"
        tmp = out.with_name(f".{out.name}.tmp")
        state = {k: v.detach().cpu().clone() for k, v in self.part.state_dict().items()}
        torch.save({"rank": self.rank, "state": state, "log": self.log, "first_step": start}, tmp)
        os.replace(tmp, out)


__all__ = ["RankLoop", "apply_lora", "train"]
