"""One rank of a real D2FT fine-tuning job: the training loop behind ``d2ft run``.

Every rank runs ``train(rank, world, job)``. Per step:

1. the coordinator decides the step's plan (``Replanner``: all-FULL warm-up steps, then a
   re-plan every ``replan_every`` steps from the scores measured so far, or a static
   plan) and broadcasts it when it changes; placement stays fixed for the run;
2. the ranks execute it (``Coordinator`` / ``Worker``): micro-batches with gradient
   accumulation, then AdamW (or SGD) with linear warm-up and cosine decay of the rate;
   a subnet with no FULL micro-batch in the step has no gradient and is not updated;
3. every rank reports its measured seconds and bytes and, per subnet it holds, the
   magnitude sum |w| and the Fisher sum (dL/dw)^2 of the step's gradient (None if it ran
   no FULL micro-batch); the coordinator appends one line to ``RUN_DIR/metrics.jsonl``
   with the measured and the cost model's predicted compute and bytes;
4. every ``eval_every`` steps and at the end, top-1 on the test split with every subnet
   running (forward only); every ``checkpoint_every`` steps and at the end, every rank
   writes its state atomically and the coordinator moves ``RUN_DIR/checkpoint.json`` to it.

The last step (``job["timeline_steps"]``: others) is also written as a timeline,
``RUN_DIR/timeline-stepN.json``: a Trace with every rank's compute intervals and messages.

``job["resume"]`` continues from ``checkpoint.json``: weights, optimizer moments, scores,
the current plan and the data position are restored, and ``metrics.jsonl`` and
``plans.jsonl`` are cut back to the checkpoint, so the run continues exactly as an
uninterrupted one would (same batches, same plans, same losses: CPU ranks run one
thread each and every random draw is seeded by (seed, step)).

At the end the coordinator writes ``RUN_DIR/model.safetensors``: the fine-tuned model as
one timm state dict (LoRA adapters merged), loadable with ``--checkpoint``.

Not counted in the measured bytes: the control messages of steps 1 and 3 (a plan of a
few hundred bytes, the per-rank statistics) and evaluation traffic; they are not D2FT
training traffic and the cost model does not predict them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from d2ft.cost import CostModel
from d2ft.ops import Op
from d2ft.plan import Plan
from d2ft.planner import STRATEGIES, plan_step
from d2ft.scores import Scores, ema_update, fill_block_mean, normalise_per_block
from d2ft.serial import atomic_write_text, write_json

from .executor import Coordinator, Counters, Link, Worker

CHECKPOINT_FILE = "checkpoint.json"
METRICS_FILE = "metrics.jsonl"
PLANS_FILE = "plans.jsonl"
EXPORT_FILE = "model.safetensors"


# ---- scores and plans (the coordinator's side) ---------------------------------------------------
class Replanner:
    """Decides each step's plan from the job's strategy and the scores the ranks measured.

    Scores (method.md, "Contribution scores"): s_fwd is the magnitude sum |w| normalised
    per block; s_bwd is an exponential moving average of the Fisher sum (dL/dw)^2 over the
    steps in which the subnet ran FULL, a subnet never yet run FULL taking its block's
    mean. The Fisher grid is then scaled so that its mean equals s_fwd's mean (1 / H): the
    two terms of A_F = s_fwd + s_bwd are on one scale while blocks keep their differences.
    Until any Fisher value is known, s_bwd = s_fwd.
    """

    def __init__(self, job: dict, spec, cluster, plan: Plan) -> None:
        self.job, self.spec, self.cluster = job, spec, cluster
        self.strategy = job.get("strategy")
        self.initial = plan
        self.full = plan.with_ops([[[Op.FULL] * plan.heads for _ in range(plan.depth)]] * plan.micro_batches,
                                  strategy="full", reason="warm-up")
        self.warmup = int(job.get("full_warmup", 0))
        self.every = int(job.get("replan_every", 0))
        self.magnitude: list[list[float]] | None = None
        self.fisher: list[list[float | None]] | None = None
        self.decay = float(job.get("score_decay", 0.9))
        sched = job.get("schedule") or {}
        self.schedule = [Plan.from_dict(d) for d in sched.get("plans", [])]
        self.steps_each = int(sched.get("steps_each", 1))
        for i, other in enumerate(self.schedule):
            if other.placement != plan.placement or other.micro_batch_size != plan.micro_batch_size or \
                    other.micro_batches != plan.micro_batches:
                raise ValueError(f"scheduled plan {i} differs from the run's plan in placement or batch shape; "
                                 "a run keeps one placement and one batch shape")

    def observe(self, records: list[tuple[int, int, float, float | None]]) -> None:
        """Takes every rank's (layer, head, magnitude, fisher-or-None) of the step just run."""
        L, H = self.spec.depth, self.spec.heads
        mag = [[0.0] * H for _ in range(L)]
        new: list[list[float | None]] = [[None] * H for _ in range(L)]
        for l, h, m, f in records:
            mag[l][h], new[l][h] = m, f
        self.magnitude = mag
        self.fisher = ema_update(self.fisher, new, self.decay)

    def scores(self) -> Scores:
        H = self.spec.heads
        fwd = normalise_per_block(self.magnitude) if self.magnitude else \
            [[1.0 / H] * H for _ in range(self.spec.depth)]
        known = [v for row in (self.fisher or []) for v in row if v is not None]
        if not known or sum(known) <= 0:
            return Scores(fwd, fwd)
        grid = fill_block_mean(self.fisher)
        mean = sum(map(sum, grid)) / (len(grid) * H)
        bwd = [[v / mean / H for v in row] for row in grid] if mean > 0 else fwd
        return Scores(fwd, bwd)

    def due(self, step: int) -> str | None:
        """Why the plan changes before ``step`` ("warm-up", "initial", "re-plan", "schedule"), or None."""
        if self.schedule:
            return "schedule" if step % self.steps_each == 0 and step // self.steps_each < len(self.schedule) else None
        if step < self.warmup:
            return "warm-up" if step == 0 else None
        if self.strategy is None or self.strategy in ("full", "freeze"):
            return "initial" if step == self.warmup else None
        if step == self.warmup:
            return "initial"
        return "re-plan" if self.every and (step - self.warmup) % self.every == 0 else None

    def plan(self, step: int, reason: str) -> tuple[Plan, dict]:
        if reason == "schedule":
            return self.schedule[step // self.steps_each], {"solve_time_s": 0.0}
        if reason == "warm-up":
            return self.full, {"solve_time_s": 0.0}
        if self.strategy is None:  # a plan given as a file: run it as it is
            return self.initial, {"solve_time_s": 0.0}
        job, p = self.job, self.initial
        dynamic = self.strategy in STRATEGIES
        scores = self.scores() if dynamic else None
        t0 = time.perf_counter()
        report = plan_step(self.spec, self.cluster, self.strategy, job.get("solver", "dp"), keep=job.get("keep"),
                           comm_keep=job.get("comm_keep"), micro_batches=p.micro_batches,
                           micro_batch_size=p.micro_batch_size, scores=scores,
                           placement=p.placement, seed=job["seed"] * 1_000_003 + step)
        info = {"solve_time_s": report.solve_time_s, "replan_s": time.perf_counter() - t0,
                "objective": report.objective, "status": report.status}
        if scores is not None:
            info["scores"] = scores.to_dict()
        return report.plan.with_ops(report.plan.ops, reason=reason), info

    def state_dict(self) -> dict:
        return {"magnitude": self.magnitude, "fisher": self.fisher}

    def load_state_dict(self, state: dict) -> None:
        self.magnitude, self.fisher = state["magnitude"], state["fisher"]


def subnet_scores(part) -> list[tuple[int, int, float, float | None]]:
    """(layer, head, sum |w|, sum (dL/dw)^2 or None) for every subnet this rank holds.

    Magnitude is over the weights the subnet computes with (LoRA merged); Fisher is over
    the parameters a FULL op trains (the adapters in LoRA mode), None when none of them
    has a gradient this step.
    """
    out = []
    with torch.no_grad():
        for l, shard in part.shards.items():
            for h in shard.heads:
                sub = shard.subnet(h)
                mag = sum(float(w.abs().sum()) for w in sub.weights().values())
                grads = [p.grad for p in sub.trainable() if p.grad is not None]
                fisher = sum(float(g.pow(2).sum()) for g in grads) if grads else None
                out.append((int(l), h, mag, fisher))
    return out


# ---- data (the coordinator's side) ---------------------------------------------------------------
class Feed:
    """The coordinator's batches: step s always gets the same batch, whatever came before."""

    def __init__(self, job: dict, model) -> None:
        self.job, self.batch_size, self.seed = job, job["batch_size"], job["seed"]
        ref = job.get("data", "synthetic")
        self.synthetic = ref == "synthetic"
        if self.synthetic:
            from .run import synthetic_batches

            self._stream, self._next, self.test = synthetic_batches(job, model), 0, None
            return
        from .data import load_dataset

        data = load_dataset(ref)
        self.train, self.test, self.flip = data.train, data.test, data.flip
        self.mean, self.std = self.train.stats()
        self.per_epoch = len(self.train.images) // self.batch_size
        if self.per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train.images)} images, fewer than one batch of "
                             f"{self.batch_size}")
        self._epoch, self._iter, self._next = None, None, 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.synthetic:
            if step < self._next:
                raise ValueError("synthetic batches are drawn in order; a step cannot be revisited")
            for _ in range(step - self._next):
                next(self._stream)
            self._next = step + 1
            return next(self._stream)
        epoch, i = divmod(step, self.per_epoch)
        if (epoch, i) != (self._epoch, self._next):
            self._iter = self.train.batches(self.batch_size, self.seed, epoch, self.mean, self.std,
                                            augment=self.job.get("augment", True),
                                            flip=self.flip, start=i)
            self._epoch = epoch
        self._next = i + 1
        return next(self._iter)

    def test_chunks(self, size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = (self.test.images.float() / 255 - self.mean[:, None, None]) / self.std[:, None, None]
        return list(x.split(size)), self.test.labels


# ---- the loop --------------------------------------------------------------------------------------
def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0 (Loshchilov & Hutter, SGDR, 2017).

    >>> lr_at(0, 100, 10, 1.0), lr_at(10, 100, 10, 1.0), round(lr_at(55, 100, 10, 1.0), 3)
    (0.1, 1.0, 0.5)
    """
    import math

    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def apply_lora(part, lora: dict, seed: int) -> None:
    """LoRA mode: adapters on every subnet this rank holds (seeded per subnet), all else frozen but the classifier."""
    for l, shard in part.shards.items():
        for h in shard.heads:
            g = torch.Generator().manual_seed(seed * 1_000_003 + int(l) * 1_009 + h)
            shard.subnet(h).add_lora(lora["rank"], lora["alpha"], lora["targets"], generator=g)
    if isinstance(part, Coordinator):
        for name, p in part.model.named_parameters():
            p.requires_grad_(name.startswith("head"))


def _state_bytes(part, opt) -> int:
    tensors = list(part.parameters()) + [p.grad for p in part.parameters() if p.grad is not None]
    tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _truncate_jsonl(path: Path, step: int) -> None:
    """Keeps the lines of ``path`` whose "step" is before ``step`` (atomically)."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < step]
        atomic_write_text(path, "".join(line + "\n" for line in keep))


class _Log:
    """Appends JSON lines and flushes each, so a crash loses at most the line being written."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def train(rank: int, world: int, job: dict) -> None:
    """Rank ``rank`` of ``job`` (module docstring)."""
    from d2ft.cluster import Cluster

    from .run import build_model, make_optimizer
    from .spec import model_spec_from_timm

    run_dir = Path(job["out_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan.from_dict(job["plan"])
    if len(plan.devices) != world:
        raise ValueError(f"the plan has {len(plan.devices)} devices but {world} ranks were started")
    coord = job.get("coordinator", 0)
    is_coord = rank == coord
    model = build_model(job)
    spec = model_spec_from_timm(model, name=job["model"])
    feed = Feed(job, model) if is_coord else None
    tokens, dim = model.patch_embed.num_patches + model.num_prefix_tokens, model.embed_dim
    part = Coordinator(model, plan, rank) if is_coord else Worker(model, plan, rank, coord)
    del model  # a worker keeps only its shards
    if job.get("lora"):
        apply_lora(part, job["lora"], job["seed"])
    device = torch.device("cpu")
    if job.get("device") == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
        part.to(device)
    params = [p for p in part.parameters() if p.requires_grad]
    opt = make_optimizer(params, job)
    steps, peak_lr = job["steps"], job.get("lr", 1e-3)
    lr_warmup = job.get("lr_warmup_steps") or max(steps // 20, 1)
    slowdown = (job.get("slowdown") or [1.0] * world)[rank]

    replanner = cost = full_cost = None
    if is_coord:
        cluster = Cluster.from_dict(job["cluster"]) if job.get("cluster") else None
        planning = cluster.with_slowdown(job["slowdown"]) if cluster and job.get("slowdown") else cluster
        # The speed-oblivious baseline plans as if every rank ran at full speed (it still runs slowed).
        replanner = Replanner(job, spec, cluster if job.get("speed_oblivious") else planning, plan)
        if cluster is None and replanner.strategy is not None:
            raise ValueError(f"the job plans with strategy {replanner.strategy!r} but has no cluster (job['cluster'])")
        if planning is not None:  # predictions for the ranks as they run (emulated slowdown included)
            cost = CostModel(spec, planning)
            full_cost = cost.step(replanner.full)

    start, current, plan_index = 0, plan, -1
    if job.get("resume") and (run_dir / CHECKPOINT_FILE).exists():
        pointer = json.loads((run_dir / CHECKPOINT_FILE).read_text())
        saved = torch.load(run_dir / pointer["path"] / f"rank{rank}.pt", map_location=device, weights_only=True)
        part.load_state_dict(saved["part"])
        opt.load_state_dict(saved["opt"])
        start = saved["step"]
        if is_coord:
            replanner.load_state_dict(saved["replanner"])
            current, plan_index = Plan.from_dict(saved["plan"]), saved["plan_index"]
            _truncate_jsonl(run_dir / METRICS_FILE, start)
            _truncate_jsonl(run_dir / PLANS_FILE, start)
        payload = [current.to_dict() if is_coord else None]
        dist.broadcast_object_list(payload, src=coord)
        current = Plan.from_dict(payload[0])
    elif is_coord:
        for name in (METRICS_FILE, PLANS_FILE):
            (run_dir / name).unlink(missing_ok=True)

    n_test = [len(feed.test.images) if is_coord and feed.test is not None else 0]
    dist.broadcast_object_list(n_test, src=coord)
    eval_size = job.get("eval_batch_size", 250)
    timeline_steps = {s if s >= 0 else steps + s for s in job.get("timeline_steps", [-1])}
    eval_every = job.get("eval_every", 0)
    ckpt_every = job.get("checkpoint_every", 0)

    metrics = _Log(run_dir / METRICS_FILE) if is_coord else None
    plans_log = _Log(run_dir / PLANS_FILE) if is_coord else None
    bar = None
    if is_coord and job.get("progress", True):
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start, unit="step", file=sys.stderr, desc=job.get("label", "d2ft run"),
                   dynamic_ncols=True)
    totals = {"pred": 0.0, "pred_full": 0.0, "bytes": 0.0, "bytes_full": 0.0}
    log, last_top1 = [], None
    try:
        for step in range(start, steps):
            # 1. the step's plan
            info = None
            if is_coord:
                reason = replanner.due(step)
                if reason:
                    current, info = replanner.plan(step, reason)
                    plan_index += 1
                    plans_log.write({"step": step, "index": plan_index, "reason": reason, **info,
                                     "summary": current.summary(), "plan": current.to_dict()})
            payload = [current.to_dict() if is_coord and info is not None else None]
            dist.broadcast_object_list(payload, src=coord)
            if payload[0] is not None and not is_coord:
                current = Plan.from_dict(payload[0])
            part.plan = current

            # 2. the step itself
            lr = peak_lr if job.get("lr_schedule") == "constant" else lr_at(step, steps, lr_warmup, peak_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            counters = Counters()
            if step in timeline_steps:
                counters.events = []
            link = Link(counters, slowdown, device)
            loss = logits = None
            if is_coord:
                x, y = (t.to(device) for t in feed.batch(step))  # data loading is not part of the step's cost
            t0 = time.perf_counter()
            link.start()
            if is_coord:
                loss, logits = part.step(x, y, link)
            else:
                part.step((current.micro_batch_size, tokens, dim), link)
            opt.step()
            link.stretch()  # the backward tail and the optimizer step are compute too
            wall = time.perf_counter() - t0
            scores = subnet_scores(part)  # the optimizer leaves .grad in place; bookkeeping, not timed
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _state_bytes(part, opt)

            # 3. statistics to the coordinator
            mine = {"wall_s": wall, "peak_memory_bytes": peak, "busy_s": counters.compute_s,
                    "sent_bytes": counters.sent_bytes, "recv_bytes": counters.recv_bytes,
                    "comm_s": counters.comm_s, "wait_s": counters.wait_s, "scores": scores, "events": counters.events}
            gathered = [None] * world if is_coord else None
            dist.gather_object(mine, gathered, dst=coord)
            record = {"loss": None if loss is None else loss.detach().cpu(), "wall_s": wall, "peak_memory_bytes": peak,
                      "counters": {k: v for k, v in counters.__dict__.items()
                                   if k != "messages" or job.get("record_messages")}}
            if job.get("record_logits") and logits is not None:
                record["logits"] = logits.cpu()
            log.append(record)

            # 4. evaluation
            top1 = None
            if job.get("evaluate", True) and (step + 1 == steps or (eval_every and (step + 1) % eval_every == 0)):
                top1 = evaluate(part, current, feed, n_test[0], eval_size, (tokens, dim), device, is_coord)
                last_top1 = top1 if top1 is not None else last_top1

            if is_coord:
                replanner.observe([s for g in gathered for s in g["scores"]])
                line = _metrics_line(step, loss.item(), lr, current, gathered, cost, full_cost, info, top1, plan_index)
                metrics.write(line)
                if step in timeline_steps:
                    write_timeline(run_dir, step, current, gathered, line["step_time_s"])
                totals["pred"] += line.get("predicted_compute_s") or 0.0
                totals["pred_full"] += line.get("full_compute_s") or 0.0
                totals["bytes"] += line.get("predicted_sent_bytes") or 0.0
                totals["bytes_full"] += line.get("full_sent_bytes") or 0.0
                if bar is not None:
                    post = {"loss": f"{line['loss']:.3f}", "step": f"{wall:.2f}s"}
                    if totals["pred_full"]:
                        post["compute saved"] = f"{1 - totals['pred'] / totals['pred_full']:.0%}"
                    if totals["bytes_full"]:
                        post["bytes saved"] = f"{1 - totals['bytes'] / totals['bytes_full']:.0%}"
                    if last_top1 is not None:
                        post["top1"] = f"{last_top1:.3f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)

            # 5. checkpoint
            if step + 1 == steps or (ckpt_every and (step + 1) % ckpt_every == 0):
                extra = {"replanner": replanner.state_dict(), "plan": current.to_dict(),
                         "plan_index": plan_index} if is_coord else {}
                save_checkpoint(run_dir, rank, step + 1, part, opt, extra, is_coord, job.get("keep_checkpoints", 1))
    finally:
        if bar is not None:
            bar.close()
        for f in (metrics, plans_log):
            if f is not None:
                f.close()

    export(run_dir, job, part, current, rank, coord, is_coord)
    out = run_dir / f"rank{rank}.pt"
    tmp = out.with_name(f".{out.name}.tmp")
    state = {k: v.detach().cpu().clone() for k, v in part.state_dict().items()}
    torch.save({"rank": rank, "state": state, "log": log, "first_step": start}, tmp)
    os.replace(tmp, out)


def _metrics_line(step, loss, lr, plan, gathered, cost, full_cost, info, top1, plan_index) -> dict:
    counts = plan.summary()
    line = {"step": step, "loss": loss, "lr": lr, "plan_index": plan_index,
            "n_full": counts.get("F", 0), "n_forward_only": counts.get("O", 0), "n_skip": counts.get("S", 0),
            "step_time_s": max(g["wall_s"] for g in gathered),
            "measured_compute_s": sum(g["busy_s"] for g in gathered),
            "measured_sent_bytes": sum(g["sent_bytes"] for g in gathered)}
    devices = [{k: g[k] for k in ("busy_s", "sent_bytes", "recv_bytes", "comm_s", "wait_s", "wall_s",
                                  "peak_memory_bytes")} for g in gathered]
    if cost is not None:
        pred = cost.step(plan)
        line.update(predicted_compute_s=sum(d.compute_s for d in pred.devices), predicted_sent_bytes=pred.comm_bytes,
                    full_compute_s=sum(d.compute_s for d in full_cost.devices), full_sent_bytes=full_cost.comm_bytes,
                    predicted_compute_saving=pred.compute_saving, predicted_comm_saving=pred.comm_saving)
        for dev, d in zip(devices, pred.devices):
            dev.update(name=d.name, predicted_compute_s=d.compute_s, predicted_sent_bytes=d.sent_bytes,
                       predicted_recv_bytes=d.recv_bytes)
    line["devices"] = devices
    if info is not None:
        line.update(replan_s=info.get("replan_s", 0.0), solve_time_s=info["solve_time_s"])
    if top1 is not None:
        line["top1"] = top1
    return line


def write_timeline(run_dir: Path, step: int, plan: Plan, gathered: list[dict], step_time_s: float) -> None:
    """``RUN_DIR/timeline-stepN.json``: the measured step as a Trace with events (compute per rank, and
    each message on its sender's link "a->b"), comparable with the simulator's timeline of the same plan."""
    from d2ft.trace import DeviceStats, Event, Trace

    names = plan.devices
    events, devices = [], {}
    for r, g in enumerate(gathered):
        for kind, t0, t1, tag, peer, n in g["events"] or []:
            phase, half, layer, mb = (tuple(tag) + (None, None, -1, -1))[:4]
            label = f"{phase} {half} L{layer}" if half else str(phase)
            if kind == "compute":
                events.append(Event(names[r], "compute", label, t0, t1, mb, layer))
            elif kind == "send":
                events.append(Event(f"{names[r]}->{names[peer]}", "transfer", label, t0, t1, mb, layer, n))
        devices[names[r]] = DeviceStats(busy_s=g["busy_s"], sent_bytes=g["sent_bytes"], recv_bytes=g["recv_bytes"],
                                        peak_memory_bytes=g["peak_memory_bytes"], comm_s=g["comm_s"],
                                        wait_s=g["wait_s"])
    trace = Trace("runtime", step_time_s, devices, events=events, meta={"step": step, "plan": plan.to_dict()})
    atomic_write_text(run_dir / f"timeline-step{step}.json", trace.to_json())


def evaluate(part, plan: Plan, feed, n_test: int, size: int, shape, device, is_coord: bool) -> float | None:
    """Top-1 on the test split with every subnet running (all FORWARD_ONLY: no backward); None without one."""
    if n_test == 0:
        return None
    sizes = [min(size, n_test - i) for i in range(0, n_test, size)]
    grid = [[Op.FORWARD_ONLY] * plan.heads for _ in range(plan.depth)]
    eval_plan = Plan(plan.devices, plan.placement, [grid] * len(sizes), size)
    link = Link(Counters(), 1.0, device)
    if not is_coord:
        with torch.no_grad():
            part.serve([(n, *shape) for n in sizes], eval_plan, link)
        return None
    chunks, labels = feed.test_chunks(size)
    logits = part.predict([c.to(device) for c in chunks], eval_plan, link)
    return float((logits.argmax(1).cpu() == labels).float().mean())


def save_checkpoint(run_dir: Path, rank: int, next_step: int, part, opt, extra: dict, is_coord: bool,
                    keep: int = 1) -> None:
    """Every rank writes its file atomically; then the coordinator points ``checkpoint.json`` at the set
    and removes all but the newest ``keep`` sets."""
    folder = run_dir / "checkpoints" / f"step-{next_step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"rank{rank}.pt"
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({"step": next_step, "part": part.state_dict(), "opt": opt.state_dict(), **extra}, tmp)
    os.replace(tmp, out)
    dist.barrier()  # every rank's file is in place before the pointer moves
    if is_coord:
        write_json(run_dir / CHECKPOINT_FILE, {"step": next_step, "path": str(folder.relative_to(run_dir))})
        sets = sorted(p for p in (run_dir / "checkpoints").iterdir() if p.is_dir() and p.name.startswith("step-"))
        for old in sets[:-max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)


def export(run_dir: Path, job: dict, part, plan: Plan, rank: int, coord: int, is_coord: bool) -> None:
    """The fine-tuned model as one timm state dict in ``RUN_DIR/model.safetensors`` (LoRA merged)."""
    from safetensors.torch import save_file

    from d2ft.serial import default_file_mode

    from .run import build_model
    from .shard import full_state_dict

    mine = {"state": {k: v.detach().cpu() for k, v in part.state_dict().items()},
            "merged": {int(l): {h: {n: t.cpu() for n, t in w.items()} for h, w in s.merged().items()}
                       for l, s in part.shards.items()}}
    gathered = [None] * dist.get_world_size() if is_coord else None
    dist.gather_object(mine, gathered, dst=coord)
    if not is_coord:
        return
    merged: dict[int, dict] = {}
    for g in gathered:
        for l, heads in g["merged"].items():
            merged.setdefault(l, {}).update(heads)
    template = build_model({**job, "checkpoint": None})
    states = {r: g["state"] for r, g in enumerate(gathered)}
    state = full_state_dict(template, plan, states, coord, merged=merged)
    out = run_dir / EXPORT_FILE
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
              metadata={"model": job["model"], "model_kwargs": json.dumps(job.get("model_kwargs", {}))})
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, out)
