"""The execution schedule of one training step: what runs where, in which order, and every message.

One schedule serves everyone (design.md, "Execution model"): the cost model prices its
``Compute`` entries into ``Task``s, the simulator schedules the priced stream on the
cluster's devices and links, and the runtime executes the same order and records each
message it sends as a ``Message``, so that measurement and prediction can be compared
message for message.

Width-wise, for each micro-batch m: the stem on the coordinator; per block l and half
(attention, then MLP) the coordinator's pre task (norm), then for every device taking
part, a message in (unless it is the coordinator), the device's task over its running
subnets, a message back; the coordinator's post task (reduce and residual add); then the
classifier, its backward, and the blocks in reverse (MLP, then attention), where only
devices with a FULL subnet take part. The step ends with one optimizer task per device
that has parameters with a gradient.

``participants`` is the rule both sides share: a device takes part in block l of
micro-batch m when one of its subnets there is active (forward) or FULL (backward); a
device with no such subnet sends and receives nothing there.

Not described here: timing of any kind (``d2ft.cost`` prices, the simulator schedules),
overlap between micro-batches (a simulator option), and depth-wise placement (the
simulator's pipeline mode builds its own stream from the same entry types).
"""

from __future__ import annotations

from typing import NamedTuple

from .model import ModelSpec, Work
from .ops import Op
from .plan import Plan

HALVES = ("attn", "mlp")
"""Block halves in forward order."""


class Compute(NamedTuple):
    """One unpriced compute entry: ``copies`` of ``work`` on ``samples`` samples on ``device``."""

    device: int
    """Device index (plan order)."""
    phase: str
    """"fwd", "bwd" or "opt"."""
    part: str
    """"embed", "norm", "attn", "mlp", "add", "head", "block" (depth-wise) or "optimizer"."""
    layer: int
    """Block index; -1 for the stem, classifier and optimizer."""
    micro_batch: int
    """Micro-batch index; -1 for the optimizer."""
    work: Work | None
    """Per-sample work of one copy; None for the optimizer (priced by ``params``)."""
    copies: int = 1
    """How many copies of ``work`` run (the running subnets of a subnet task)."""
    samples: int = 1
    """Samples in the micro-batch."""
    extra_bytes: float = 0.0
    """Memory traffic beyond the work's own, B (the coordinator reading each partial sum)."""
    subnets: int = 0
    """How many subnets the task runs (0 for coordinator work)."""
    params: int = 0
    """Optimizer entries: parameters updated."""


class Task(NamedTuple):
    """One priced compute task (a ``Compute`` with its FLOP, bytes and time from the cost model)."""

    device: int
    """Device index."""
    phase: str
    """"fwd", "bwd" or "opt"."""
    part: str
    """"embed", "norm", "attn", "mlp", "add", "head", "block" or "optimizer"."""
    layer: int
    """Block index; -1 for the stem, classifier and optimizer."""
    micro_batch: int
    """Micro-batch index; -1 for the optimizer."""
    flop: float
    """FLOP executed."""
    bytes_moved: float
    """Bytes moved to and from the device's memory, B."""
    time_s: float
    """Compute time on the device, s."""
    subnets: int = 0
    """How many subnets the task runs (0 for coordinator work)."""


class Message(NamedTuple):
    """One point-to-point transfer of the execution model."""

    src: int
    """Sending device index."""
    dst: int
    """Receiving device index."""
    nbytes: int
    """Payload, B."""
    phase: str
    """"fwd" or "bwd"."""
    half: str
    """"attn" or "mlp" ("stream" for the depth-wise residual stream)."""
    layer: int
    """Block index."""
    micro_batch: int
    """Micro-batch index."""


def heads_of(plan: Plan, device: int, layer: int, micro_batch: int) -> tuple[list[int], list[int]]:
    """(FULL heads, FORWARD_ONLY heads) that ``device`` runs in ``layer`` for ``micro_batch``.

    >>> p = Plan(["c", "w"], [[1, 1, 0]], [[["F", "O", "S"]]], 1)
    >>> heads_of(p, 1, 0, 0), heads_of(p, 0, 0, 0)
    (([0], [1]), ([], []))
    """
    row, ops = plan.placement[layer], plan.ops[micro_batch][layer]
    full = [h for h, k in enumerate(row) if k == device and ops[h] is Op.FULL]
    fwd = [h for h, k in enumerate(row) if k == device and ops[h] is Op.FORWARD_ONLY]
    return full, fwd


def participants(plan: Plan, layer: int, micro_batch: int, phase: str) -> dict[int, int]:
    """Device index -> how many of its subnets run in ``layer`` of ``micro_batch``, in device order:
    active ones in forward, FULL ones in backward; devices with none are left out.

    >>> p = Plan(["c", "w1", "w2"], [[1, 2, 2]], [[["F", "O", "S"]]], 1)
    >>> participants(p, 0, 0, "fwd"), participants(p, 0, 0, "bwd")
    ({1: 1, 2: 1}, {1: 1})
    """
    if phase not in ("fwd", "bwd"):
        raise ValueError(f"unknown phase {phase!r}; valid: fwd, bwd")
    ops = plan.ops[micro_batch][layer]
    counts: dict[int, int] = {}
    for h, k in enumerate(plan.placement[layer]):
        if ops[h].runs_forward if phase == "fwd" else ops[h].runs_backward:
            counts[k] = counts.get(k, 0) + 1
    return dict(sorted(counts.items()))


def trained_params(plan: Plan, model: ModelSpec, coordinator: int) -> list[int]:
    """Per device, how many parameters get a gradient in a step of ``plan`` (the coordinator's own
    work always; a subnet's when it is FULL in any micro-batch; frozen ones never: ``Work.trained_params``)."""
    counts = [0] * len(plan.devices)
    counts[coordinator] = model.coordinator_work.trained_params
    full = {(l, h) for grid in plan.ops for l, row in enumerate(grid) for h, op in enumerate(row) if op is Op.FULL}
    trained = model.subnet.trained_params  # under LoRA its adapters only
    for l, h in full:
        counts[plan.placement[l][h]] += trained
    return counts


def step_stream(plan: Plan, model: ModelSpec, coordinator: int, inference: bool = False) -> list[Compute | Message]:
    """Every compute entry and message of one width-wise step of ``plan``, in execution order
    (module docstring). ``inference``: the forward pass only (evaluation or serving): no
    backward, no optimizer; FULL and FORWARD_ONLY both just run forward."""
    b = plan.micro_batch_size
    a = model.message_size(b)
    out: list[Compute | Message] = []
    for m in range(plan.micro_batches):
        out.append(Compute(coordinator, "fwd", "embed", -1, m, model.embed, samples=b))
        for l in range(model.depth):
            _block(out, plan, model, coordinator, "fwd", l, m, a)
        out.append(Compute(coordinator, "fwd", "head", -1, m, model.classifier, samples=b))
        if inference:
            continue
        out.append(Compute(coordinator, "bwd", "head", -1, m, model.classifier, samples=b))
        for l in reversed(range(model.depth)):
            _block(out, plan, model, coordinator, "bwd", l, m, a)
        out.append(Compute(coordinator, "bwd", "embed", -1, m, model.embed, samples=b))
    for k, n in enumerate([] if inference else trained_params(plan, model, coordinator)):
        if n:
            out.append(Compute(k, "opt", "optimizer", -1, -1, None, params=n))
    return out


def _block(out: list, plan: Plan, model: ModelSpec, c: int, phase: str, l: int, m: int, a: int) -> None:
    """Entries of block ``l``, micro-batch ``m``, one direction."""
    b, fwd = plan.micro_batch_size, phase == "fwd"
    running = participants(plan, l, m, phase)
    halves = HALVES if model.split_mlp else HALVES[:1]
    work = {"attn": model.subnet_attn, "mlp": model.subnet_mlp}
    for half in HALVES if fwd else HALVES[::-1]:
        # forward: norm -> subnets -> reduce + residual add; backward: the reverse.
        out.append(Compute(c, phase, "norm" if fwd else "add", l, m, model.norm if fwd else model.residual, samples=b))
        if half in halves:
            for k, n in running.items():
                if k != c:
                    out.append(Message(c, k, a, phase, half, l, m))
                out.append(Compute(k, phase, half, l, m, work[half], copies=n, samples=b, subnets=n))
                if k != c:
                    out.append(Message(k, c, a, phase, half, l, m))
            extra = len(running) * model.activation_bytes(b)  # the coordinator reads each device's partial sum once
        else:  # heads-only: the whole MLP runs on the coordinator
            out.append(Compute(c, phase, "mlp", l, m, model.coordinator_mlp, samples=b))
            extra = 0
        out.append(Compute(c, phase, "add" if fwd else "norm", l, m, model.residual if fwd else model.norm,
                           samples=b, extra_bytes=extra))


def messages(plan: Plan, model: ModelSpec, coordinator: int) -> list[Message]:
    """The messages of ``step_stream``, in order."""
    return [x for x in step_stream(plan, model, coordinator) if isinstance(x, Message)]


__all__ = ["Compute", "HALVES", "Message", "Task", "heads_of", "messages", "participants", "step_stream",
           "trained_params"]
