"""What one step measured: per-subnet scores, per-rank statistics, the metrics line and the timeline.

Every rank measures its own seconds and bytes (``runtime.executor.Counters``) and, per subnet
it holds, the magnitude sum |w| and the Fisher sum (dL/dw)^2 of the step's gradient; the
coordinator gathers them into one line of ``RUN_DIR/metrics.jsonl``, beside the cost model's
prediction for the same plan, and for recorded steps a ``timeline-stepN.json`` Trace.

Peak memory on CPU is the bytes of the parameters, gradients and optimizer state a rank
holds (activations are not counted); on CUDA it is the allocator's peak.
"""

from __future__ import annotations

from pathlib import Path

import torch

from d2ft import rundir
from d2ft.plan import Plan
from d2ft.serial import atomic_write_text
from d2ft.trace import DeviceStats, Event, Trace

DEVICE_FIELDS = ("busy_s", "busy_cpu_s", "sent_bytes", "recv_bytes", "comm_s", "wait_s", "wall_s", "peak_memory_bytes")
"""Per-rank figures of a metrics line (s, B); ``busy_cpu_s``: the compute's thread CPU time by phase."""


def subnet_scores(part) -> list[tuple[int, int, float, float | None]]:
    """(layer, head, sum |w|, sum (dL/dw)^2 or None) for every subnet this rank holds.

    Magnitude is over the weights the subnet computes with (LoRA merged); Fisher is over
    the parameters a FULL op trains (in LoRA mode the B adapters only: ``Subnet.scored``),
    None when none of them has a gradient this step.
    """
    out = []
    with torch.no_grad():
        for l, shard in part.held():
            for h in shard.heads:
                sub = shard.subnet(h)
                mag = sum(float(w.abs().sum()) for w in sub.weights().values())
                grads = [p.grad for p in sub.scored() if p.grad is not None]
                fisher = sum(float(g.pow(2).sum()) for g in grads) if grads else None
                out.append((int(l), h, mag, fisher))
    return out


def state_bytes(part, opt) -> int:
    """Bytes of a rank's parameters, gradients and optimizer state."""
    tensors = list(part.parameters()) + [p.grad for p in part.parameters() if p.grad is not None]
    tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def metrics_line(step, loss, lr, plan, gathered, cost, full_cost, info, top1, plan_index) -> dict:
    """One line of metrics.jsonl: the step's loss, plan and every rank's measured and predicted figures."""
    counts = plan.summary()
    line = {"step": step, "loss": loss, "lr": lr, "plan_index": plan_index,
            "n_full": counts.get("F", 0), "n_forward_only": counts.get("O", 0), "n_skip": counts.get("S", 0),
            "step_time_s": max(g["wall_s"] for g in gathered),
            "measured_compute_s": sum(g["busy_s"] for g in gathered),
            "measured_sent_bytes": sum(g["sent_bytes"] for g in gathered)}
    devices = [{k: g[k] for k in DEVICE_FIELDS} for g in gathered]
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
    atomic_write_text(rundir.timeline_path(run_dir, step), trace.to_json())


def traces(run_dir: str | Path, meta: dict | None = None) -> list[Trace]:
    """One measured Trace per step, from ``RUN_DIR/metrics.jsonl``."""
    result = []
    for rec in rundir.read_jsonl(Path(run_dir) / rundir.METRICS_FILE):
        devices = {d.get("name", f"rank{r}"): DeviceStats(busy_s=d["busy_s"], sent_bytes=d["sent_bytes"],
                                                          recv_bytes=d["recv_bytes"],
                                                          peak_memory_bytes=d["peak_memory_bytes"],
                                                          comm_s=d["comm_s"], wait_s=d["wait_s"])
                   for r, d in enumerate(rec["devices"])}
        result.append(Trace("runtime", rec["step_time_s"], devices,
                            meta={**(meta or {}), "step": rec["step"], "loss": rec["loss"]}))
    return result


__all__ = ["metrics_line", "state_bytes", "subnet_scores", "traces", "write_timeline"]
