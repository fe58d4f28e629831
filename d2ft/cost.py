"""The analytical cost model: what one training step of a plan costs, task by task.

Execution model (design.md): the coordinator holds the residual stream, stem, norms,
shared biases and classifier; workers hold subnets. For each block l, micro-batch m
and half (attention, then MLP):

- forward: the coordinator computes the norm and sends it (a = b N D dtype bytes) to
  every device with an active (non-SKIP) subnet of that half's block; each returns the
  sum of its active subnets' outputs (a); the coordinator reduces them and updates the
  residual stream;
- backward (reverse order): the coordinator sends the output gradient (a) to every
  device with a FULL subnet there; each returns its input gradient (a) and keeps its
  weight gradients; the coordinator reduces them and back-propagates through the norm.

So a worker moves 8a per block and micro-batch when its most active subnet there is
FULL, 4a when FORWARD_ONLY, 0 when SKIP (4a and 2a in heads-only mode). Subnets on the
coordinator itself send nothing. A device runs its tasks one at a time, so its compute time
is their sum. Every step ends with an optimizer update (AdamW, or SGD with momentum: ``ModelSpec.optimizer``)
of the parameters that got gradients.

A task's time depends on its device (``DeviceSpec``):

- kernel model (``sm_count`` set: the catalogue's GPUs and ``d2ft calibrate``'s CPU ranks): the sum of the task's kernels, each
  on its own roofline with tile and wave quantisation, a launch cost per kernel, and the
  memory traffic of each kernel, fused attention or not (``d2ft.kernels``, where the
  formulas and their sources are), with autocast's casts and fp32 elementwise kernels where
  the model trains by autocast (``ModelSpec.autocast``); the optimizer's update is one
  memory-bound kernel. The constants (``efficiency``, ``kernel_launch_s``) are fitted per GPU
  kind on the calibration rows of published measurements (``benchmarks/published.py``); a CPU
  rank's (rate, fixed time per GEMM and per elementwise kernel, backward efficiency) to its own
  task timings by ``d2ft calibrate`` (one thread, no tile quantisation: ``runtime.calibrate``),
  then refitted to the runtime's own steps (``runtime.insitu``);
- roofline (the catalogue's CPUs, whose constants are assumed, and profiles written before
  2026-12-02): one roofline per task plus a fixed per-task overhead
  (``DeviceSpec.compute_time``).

The planner's knapsack needs a cost linear in the number of subnets (``subnet_time``,
``block_overhead_s``): exact on the roofline, and on the kernel model a lower bound (each
subnet at its cheapest share of a task) beside the exact ``block_table``, with which the
planner checks and repairs every plan, so a plan that fits the planner's budget fits the
cost model's.

Not modelled: overlap of compute and communication and any waiting (the simulator
schedules the timeline), the loss, data loading, framework overhead beyond the per-task
or per-kernel constants, memory held by the framework beyond the device's constant
``framework_bytes`` (communication buffers, a backward's transient gradients), and
micro-batches in flight at once (peak memory assumes one
micro-batch's activations at a time); under LoRA the merge of the adapters into their weight
and the adapters' own products (``d2ft.work.lora_linear``), and the merged weight's gradient in
memory; on the roofline also kernel fusion and the softmax/GELU FLOP; on the kernel model what
``d2ft.kernels`` lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from . import kernels
from .cluster import Cluster
from .errors import expect
from .model import ModelSpec, Work
from .ops import Op
from .plan import Plan
from .schedule import Compute, Message, Task, step_stream

OPTIMIZER_STATE_BYTES = {"adamw": 2 * 4, "sgd": 4}
"""Optimizer state per trained parameter, B, fp32 whatever the model dtype: AdamW's m and v
(Loshchilov & Hutter, ICLR 2019, Algorithm 2); SGD with momentum's one buffer (PyTorch's
``torch.optim.SGD``, the update of Sutskever et al., ICML 2013, eq. 1-2)."""


def state_bytes_per_param(dtype_bytes: int, optimizer: str = "adamw") -> tuple[int, int, int]:
    """(parameter, gradient, optimizer) bytes per trained parameter. fp32: the parameter, its gradient
    and the optimizer state. 16-bit mixed precision: a 16-bit parameter and gradient plus an fp32 master
    copy and the state: for AdamW 2 + 2 + 12 = 16 B, the accounting of Rajbhandari et al., "ZeRO", SC
    2020, section 3.1 (K = 12). Frozen parameters (LoRA's base: ``Work.frozen_params``) hold only
    the parameter itself.

    >>> state_bytes_per_param(2), state_bytes_per_param(4, "sgd")
    ((2, 2, 12), (4, 4, 4))
    """
    state = OPTIMIZER_STATE_BYTES[optimizer]
    return (4, 4, state) if dtype_bytes >= 4 else (dtype_bytes, dtype_bytes, 4 + state)


def optimizer_bytes_per_param(dtype_bytes: int, optimizer: str = "adamw") -> int:
    """Memory traffic of one update per parameter, B: theta read and written, the gradient read and
    zeroed, the optimizer state read and written (AdamW's m and v, or SGD's momentum buffer).

    >>> optimizer_bytes_per_param(4), optimizer_bytes_per_param(2, "sgd")
    (32, 16)
    """
    return 2 * dtype_bytes + 2 * dtype_bytes + 2 * OPTIMIZER_STATE_BYTES[optimizer]


@dataclass(frozen=True)
class DeviceCost:
    """One device's share of one step."""

    name: str
    compute_s: float
    """Sum of its task times, s."""
    flop: float
    """FLOP it executes."""
    mem_bytes: float
    """Bytes it moves to and from its memory."""
    sent_bytes: int
    recv_bytes: int
    peak_memory_bytes: float
    """Parameters, gradients, AdamW state and one micro-batch's saved activations, B."""
    memory_capacity_bytes: float

    @property
    def fits_memory(self) -> bool:
        return self.peak_memory_bytes <= self.memory_capacity_bytes


@dataclass(frozen=True)
class StepCost:
    """Costs of one step of a plan, and of the all-FULL plan with the same placement."""

    devices: tuple[DeviceCost, ...]
    compute_flop: float
    comm_bytes: int
    """Bytes of all messages (each counted once)."""
    full_compute_flop: float
    full_comm_bytes: int

    @property
    def compute_saving(self) -> float:
        """1 - FLOP / FLOP of all-FULL."""
        return 1.0 - self.compute_flop / self.full_compute_flop if self.full_compute_flop else 0.0

    @property
    def comm_saving(self) -> float:
        """1 - bytes / bytes of all-FULL (0 when all-FULL moves nothing)."""
        return 1.0 - self.comm_bytes / self.full_comm_bytes if self.full_comm_bytes else 0.0

    @property
    def max_compute_s(self) -> float:
        """Compute time of the busiest device, s (a lower bound on the step time)."""
        return max(d.compute_s for d in self.devices)


class CostModel:
    """Costs of plans for one model on one cluster (see the module docstring)."""

    def __init__(self, model: ModelSpec, cluster) -> None:
        expect(model, ModelSpec, "model", "build one with ModelSpec.from_timm(name) or ModelSpec.vit(...)")
        expect(cluster, Cluster, "cluster", "load one with d2ft.catalogue.cluster_preset(name) or Cluster.from_json")
        self.model = model
        self.cluster = cluster
        self.halves: tuple[str, ...] = ("attn", "mlp") if model.split_mlp else ("attn",)
        self._half = {"attn": model.subnet_attn, "mlp": model.subnet_mlp}
        self._specs = [spec for _, spec in cluster.devices]
        self._coord = cluster.coordinator_index
        self._block_tasks: dict[tuple, dict] = {}
        self._priced: dict[tuple, Task] = {}  # price

    # ---- pricing ------------------------------------------------------------------
    def half_work(self, half: str) -> Work:
        """One subnet's per-sample work in block half ``half`` ("attn" or "mlp")."""
        return self._half[half]

    def price(self, c: Compute) -> Task:
        """The FLOP, memory traffic and time of a schedule entry on its device (``_price``; entries that
        differ only in block and micro-batch cost the same, so each distinct one is priced once)."""
        key = c[:3] + c[5:]  # every field but layer and micro_batch
        t = self._priced.get(key)
        if t is None:
            t = self._priced[key] = self._price(c)
        return Task(t[0], t[1], t[2], c[3], c[4], *t[5:])

    def _price(self, c: Compute) -> Task:
        """The FLOP, memory traffic and time of a schedule entry on its device.

        Forward moves the weights once and the forward activations; backward (input
        gradient + weight gradient) reads the weights, read-modify-writes their gradients
        (2P) and moves both gradients' activations; the optimizer moves
        ``optimizer_bytes_per_param`` per updated parameter. Time is the sum of the task's
        kernels on a kernel-model device (``d2ft.kernels.task_time``, plus the coordinator's
        reads of partial sums over the bandwidth), else the device's roofline
        (``DeviceSpec.compute_time``), per-task overhead included.
        """
        d = self.model.dtype_bytes
        spec = self._specs[c.device]
        if c.phase == "opt":
            nbytes = float(c.params * optimizer_bytes_per_param(self.model.weight_bytes, self.model.optimizer))
            return Task(c.device, "opt", c.part, c.layer, c.micro_batch, 0.0, nbytes, spec.compute_time(0.0, nbytes, d))
        w, n, b = c.work, c.copies, c.samples
        P, G = w.params * d, w.trained_params * d
        if c.phase == "fwd":
            flop, nbytes = n * b * w.fwd_flop, n * (P + b * w.fwd_act_bytes)
        else:  # read the weights, read-modify-write the gradients of those that train
            flop, nbytes = n * b * w.bwd_flop, n * (P + 2 * G + b * (w.ig_act_bytes + w.wg_act_bytes))
        nbytes += c.extra_bytes
        if spec.kernel_model:
            heads = c.subnets if c.part == "block" else c.copies
            time = kernels.task_time(spec, self.model, c.part, c.phase, heads, b, d) + c.extra_bytes / spec.mem_bandwidth
        else:
            time = spec.compute_time(flop, nbytes, d, backward=c.phase != "fwd")
        return Task(c.device, c.phase, c.part, c.layer, c.micro_batch, flop, nbytes, time, c.subnets)

    def task_time(self, device: int, phase: str, half: str, n: int, micro_batch_size: int) -> float:
        """Time of one task of ``n`` subnets of block half ``half`` on ``device``, s (0 for none)."""
        if n <= 0:
            return 0.0
        c = Compute(device, phase, half, 0, 0, self._half[half], copies=n, samples=micro_batch_size, subnets=n)
        return self.price(c).time_s

    def subnet_time(self, device: int, op: Op, micro_batch_size: int, per_task: int | None = None) -> float:
        """Compute time of one subnet for one micro-batch on ``device`` under ``op``, s: the
        per-subnet cost of the knapsack's linear model. FULL >= FORWARD_ONLY >= SKIP = 0.

        Roofline: the sum over its halves of the roofline time without the per-task overhead,
        exactly the marginal cost of adding the subnet to a task. Kernel model: per half and
        phase the least (task time - launches) / n over tasks of n = 1..``per_task`` subnets
        (default: every head of a block), so that ``block_overhead_s`` plus n of these never
        exceeds such a task (``block_table`` gives the exact time).
        """
        spec, d = self._specs[device], self.model.dtype_bytes
        total = 0.0
        for half in self.halves:
            for phase in ("fwd", "bwd")[: op.level]:
                if spec.kernel_model:
                    total += self._least_share(device, half, phase, micro_batch_size, per_task or self.model.heads)
                    continue
                t = self.price(Compute(device, phase, half, 0, 0, self._half[half], samples=micro_batch_size))
                total += spec.roofline_s(t.flop, t.bytes_moved, d, backward=phase == "bwd")
        return total

    def _least_share(self, device: int, half: str, phase: str, b: int, most: int) -> float:
        launch = kernels.launch_time(self._specs[device], self.model, half, phase, 1, b)
        return min((self.task_time(device, phase, half, n, b) - launch) / n for n in range(1, most + 1))

    def block_overhead_s(self, device: int, micro_batch_size: int, phase: str = "fwd") -> float:
        """The fixed time of ``device``'s tasks of one direction (``phase``) in one block and
        micro-batch in which it runs a subnet, s: the knapsack's per-block overhead
        (``subnet_time``). Roofline: the per-task overhead per half. Kernel model: the launches
        of that direction's kernels, both halves."""
        spec = self._specs[device]
        if not spec.kernel_model:
            return spec.task_overhead_s * len(self.halves)
        return sum(kernels.launch_time(spec, self.model, half, phase, 1, micro_batch_size) for half in self.halves)

    def block_table(self, device: int, micro_batch_size: int, most: int) -> tuple[tuple[float, ...], ...] | None:
        """On a kernel-model device, the exact time of its tasks in one block and micro-batch with f
        subnets FULL and o FORWARD_ONLY, as ``table[f][o]`` for f + o <= ``most``, s; None on a roofline
        device, where the knapsack's linear model is exact."""
        if not self._specs[device].kernel_model:
            return None
        key = (device, micro_batch_size)
        tasks = self._block_tasks.setdefault(key, {})
        for phase in ("fwd", "bwd"):
            for n in range(most + 1):
                if (phase, n) not in tasks:
                    tasks[phase, n] = sum(self.task_time(device, phase, h, n, micro_batch_size) for h in self.halves)
        return tuple(tuple(tasks["fwd", f + o] + tasks["bwd", f] for o in range(most + 1 - f)) for f in range(most + 1))

    def block_messages_bytes(self, op: Op, micro_batch_size: int) -> int:
        """Bytes a worker sends plus receives in one block and micro-batch when its most active op is ``op``.

        >>> from d2ft.cluster import Cluster; from d2ft.catalogue import device, link
        >>> c = Cluster.star({"c": device("t4"), "w": device("t4")}, link("10gbe"))
        >>> m = ModelSpec.vit(dim=64, depth=1, heads=2, img_size=32, patch=16)
        >>> CostModel(m, c).block_messages_bytes(Op.FULL, 1) == 8 * m.message_size(1)
        True
        """
        return (2 + 2 * op.runs_backward) * len(self.halves) * self.model.message_size(micro_batch_size) if op.runs_forward else 0

    # ---- a whole step -------------------------------------------------------------
    def stream(self, plan: Plan, inference: bool = False) -> list[Task | Message]:
        """Every task and message of one step of ``plan`` in execution order (``d2ft.schedule``),
        each compute entry priced; ``inference``: the forward pass only."""
        expect(plan, Plan, "plan", "read one with Plan.from_dict or Plan.from_json")
        plan.validate(self.model, self.cluster)
        return [self.price(x) if isinstance(x, Compute) else x
                for x in step_stream(plan, self.model, self._coord, inference=inference)]

    def tasks_and_messages(self, plan: Plan, inference: bool = False) -> tuple[list[Task], list[Message]]:
        """Every compute task and message of one step of ``plan`` (``stream`` split by kind)."""
        s = self.stream(plan, inference)
        return [x for x in s if isinstance(x, Task)], [x for x in s if isinstance(x, Message)]

    def peak_memory(self, plan: Plan) -> list[float]:
        """Per device: parameters, gradients and AdamW state of what it holds, plus its largest
        micro-batch's saved activations (and the inputs it received for backward), B."""
        return [sum(m.values()) for m in self.memory_breakdown(plan)]

    def memory_breakdown(self, plan: Plan, inference: bool = False) -> list[dict[str, float]]:
        """Per device, the parts of its peak memory at the model's dtype, B: ``params``, ``grads``,
        ``optimizer`` (``state_bytes_per_param``) and ``activations`` (its largest micro-batch's saved
        activations and received inputs). ``inference``: a forward pass: the parameters at the model's
        dtype, no gradients or optimizer state, and as activations the input and output of one block
        half (the coordinator also holds the residual stream), attention's score matrix not stored (a
        fused kernel's way); ``framework``: the device's ``framework_bytes`` (CUDA context, allocator
        reserve). Under autocast (``ModelSpec.autocast``) weights, gradients and the saved norm inputs
        are fp32, and attention keeps its probabilities at both widths. Not counted: communication
        buffers and temporary workspace (a backward's transient gradients)."""
        M, b = self.model, plan.micro_batch_size
        p_bytes, g_bytes, o_bytes = state_bytes_per_param(M.weight_bytes, M.optimizer)
        if inference:
            p_bytes, g_bytes, o_bytes = M.weight_bytes, 0, 0
        held, trained = [0] * self.cluster.num_devices, [0] * self.cluster.num_devices
        held[self._coord], trained[self._coord] = M.coordinator_work.params, M.coordinator_work.trained_params
        subnet = M.subnet  # a computed property: once
        for row in plan.placement:
            for k in row:
                held[k] += subnet.params
                trained[k] += subnet.trained_params
        acts = [0.0] * self.cluster.num_devices
        if inference:
            a = M.activation_bytes(b)
            return [{"params": n * p_bytes, "grads": 0, "optimizer": 0,
                     "activations": (3 if k == self._coord else 2) * a, "framework": self._specs[k].framework_bytes}
                    for k, n in enumerate(held)]
        coord_acts = b * (M.embed.saved_bytes + M.depth * M.block_shared.saved_bytes + M.classifier.saved_bytes)
        groups = _groups_by_device(plan)
        for grid in plan.ops:
            mb = [0.0] * self.cluster.num_devices
            mb[self._coord] = coord_acts
            for l, group in enumerate(groups):
                for k, heads in group.items():
                    n_full = sum(1 for h in heads if grid[l][h] is Op.FULL)
                    if n_full:
                        inputs = 0 if k == self._coord else len(self.halves) * M.activation_bytes(b)
                        mb[k] += n_full * b * subnet.saved_bytes + inputs
            acts = [max(x, y) for x, y in zip(acts, mb)]
        return [{"params": n * p_bytes, "grads": t * g_bytes, "optimizer": t * o_bytes, "activations": x,
                 "framework": spec.framework_bytes} for n, t, x, spec in zip(held, trained, acts, self._specs)]

    def inference_memory(self, plan: Plan) -> list[float]:
        """Per device, the memory of a forward pass of ``plan``, B (``memory_breakdown(plan, inference=True)``)."""
        return [sum(m.values()) for m in self.memory_breakdown(plan, inference=True)]

    def step(self, plan: Plan, inference: bool = False) -> StepCost:
        """Per-device and total costs of one step of ``plan``, with savings against all-FULL.

        ``inference``: the forward pass of ``plan``'s micro-batches only (evaluation or serving:
        no backward, no optimizer; FULL and FORWARD_ONLY alike run forward, SKIP does not),
        against every subnet running; peak memory is then the parameters and one block half's
        input and output per device (no gradients, optimizer state or saved activations)."""
        tasks, msgs = self.tasks_and_messages(plan, inference)
        everything = plan.with_ops([[[Op.FULL] * plan.heads] * plan.depth] * plan.micro_batches)
        full_tasks, full_msgs = self.tasks_and_messages(everything, inference)
        peak = self.inference_memory(plan) if inference else self.peak_memory(plan)
        devices = []
        for k, (name, spec) in enumerate(self.cluster.devices):
            mine = [t for t in tasks if t.device == k]
            devices.append(DeviceCost(
                name=name,
                compute_s=sum(t.time_s for t in mine),
                flop=sum(t.flop for t in mine),
                mem_bytes=sum(t.bytes_moved for t in mine),
                sent_bytes=sum(x.nbytes for x in msgs if x.src == k),
                recv_bytes=sum(x.nbytes for x in msgs if x.dst == k),
                peak_memory_bytes=peak[k],
                memory_capacity_bytes=spec.memory_bytes,
            ))
        return StepCost(
            devices=tuple(devices),
            compute_flop=sum(t.flop for t in tasks),
            comm_bytes=sum(x.nbytes for x in msgs),
            full_compute_flop=sum(t.flop for t in full_tasks),
            full_comm_bytes=sum(x.nbytes for x in full_msgs),
        )


def _groups_by_device(plan: Plan) -> list[dict[int, list[int]]]:
    """Per layer: device index -> heads it holds, in device order."""
    groups = []
    for row in plan.placement:
        g: dict[int, list[int]] = {}
        for h, k in enumerate(row):
            g.setdefault(k, []).append(h)
        groups.append(dict(sorted(g.items())))
    return groups


__all__ = ["CostModel", "DeviceCost", "Message", "OPTIMIZER_STATE_BYTES", "StepCost", "Task", "optimizer_bytes_per_param",
           "state_bytes_per_param"]
