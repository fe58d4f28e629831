"""Depth-wise execution: whole blocks per device, a pipeline (the simulator's second mode).

Each device owns consecutive whole blocks (``placement`` rows each on one device, e.g. from
``plan_placement(..., mode="depth")``); the coordinator keeps the stem and classifier. Per
micro-batch the residual stream (a = b N D dtype bytes) goes forward from owner to owner
and its gradient comes back. A block's task on its owner runs the block's shared work
(norms, residual updates) and its active subnets: FULL and FORWARD_ONLY forward, FULL
backward. So ops save compute here but not traffic: the stream passes every stage.

Not modelled: the cost model (d2ft/cost.py) is width-wise, so depth-wise bytes are the
simulator's own; recomputation, pipeline schedules other than the static list (1F1B,
interleaved stages), and whole stages skipped by routing around them.
"""

from __future__ import annotations

from d2ft.cost import CostModel
from d2ft.ops import Op
from d2ft.schedule import Compute, Message, Task


def owners(plan) -> list[int]:
    """The device of each block; raises ValueError unless every block sits on one device."""
    split = [l for l, row in enumerate(plan.placement) if len(set(row)) != 1]
    if split:
        raise ValueError(f"depth-wise mode needs whole blocks per device, but blocks {split} are split across "
                         "devices; use plan_placement(..., mode='depth') or --placement depth")
    return [row[0] for row in plan.placement]


def pipeline_stream(plan, model, cluster) -> list[Task | Message]:
    """Tasks and messages of one depth-wise step, in execution order (the chain of each micro-batch)."""
    cm = CostModel(model, cluster)
    c, b = cluster.coordinator_index, plan.micro_batch_size
    own = owners(plan)
    a = model.message_size(b)
    shared = model.block_shared
    out: list[Task | Message] = []

    def hop(src: int, dst: int, phase: str, l: int, m: int) -> None:
        if src != dst:
            out.append(Message(src, dst, a, phase, "stream", l, m))

    for m, grid in enumerate(plan.ops):
        out.append(cm.price(Compute(c, "fwd", "embed", -1, m, model.embed, samples=b)))
        prev = c
        for l in range(model.depth):
            hop(prev, own[l], "fwd", l, m)
            n = sum(op.runs_forward for op in grid[l])
            out.append(cm.price(Compute(own[l], "fwd", "block", l, m, shared + model.subnet * n, samples=b, subnets=n)))
            prev = own[l]
        hop(prev, c, "fwd", model.depth, m)
        out.append(cm.price(Compute(c, "fwd", "head", -1, m, model.classifier, samples=b)))
        out.append(cm.price(Compute(c, "bwd", "head", -1, m, model.classifier, samples=b)))
        prev = c
        for l in reversed(range(model.depth)):
            hop(prev, own[l], "bwd", l, m)
            n = sum(op.runs_backward for op in grid[l])
            out.append(cm.price(Compute(own[l], "bwd", "block", l, m, shared + model.subnet * n, samples=b, subnets=n)))
            prev = own[l]
        hop(prev, c, "bwd", -1, m)
        out.append(cm.price(Compute(c, "bwd", "embed", -1, m, model.embed, samples=b)))
    trained = [0] * cluster.num_devices
    trained[c] += model.embed.params + model.classifier.params
    for l, k in enumerate(own):
        n_full = sum(1 for h in range(model.heads) if any(g[l][h] is Op.FULL for g in plan.ops))
        trained[k] += shared.params + n_full * model.subnet.params
    out += [cm.price(Compute(k, "opt", "optimizer", -1, -1, None, params=n)) for k, n in enumerate(trained) if n]
    return out


def pipeline_peak_memory(plan, model, cluster) -> list[float]:
    """Per device: parameters, gradients and AdamW state of its blocks, plus one micro-batch's saved activations."""
    own, c, b = owners(plan), cluster.coordinator_index, plan.micro_batch_size
    per_param = 2 * model.dtype_bytes + 8
    peak = [0.0] * cluster.num_devices
    peak[c] += (model.embed.params + model.classifier.params) * per_param
    peak[c] += b * (model.embed.saved_bytes + model.classifier.saved_bytes)
    acts = [0.0] * cluster.num_devices
    for grid in plan.ops:
        mb = [0.0] * cluster.num_devices
        for l, k in enumerate(own):
            mb[k] += b * (model.block_shared.saved_bytes + sum(op is Op.FULL for op in grid[l]) * model.subnet.saved_bytes)
        acts = [max(x, y) for x, y in zip(acts, mb)]
    for l, k in enumerate(own):
        peak[k] += (model.block_shared.params + model.heads * model.subnet.params) * per_param
    return [p + x for p, x in zip(peak, acts)]
