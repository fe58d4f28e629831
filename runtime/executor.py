"""One rank of a D2FT training step, executing a plan exactly as the execution model says.

Rank k plays device k of the plan. The coordinator (``Coordinator``) runs the stem, the
norms, the residual updates and the classifier, and for every block half it sends the
normalised activations to the devices with an active subnet there, adds their replies and
its own subnets' outputs, and in backward sends the output gradient to the devices with a
FULL subnet there and adds the input gradients they return. A worker (``Worker``) replays
the same schedule from the plan: FULL subnets with autograd, FORWARD_ONLY under no_grad
(their output is a constant), SKIP not at all; a device with nothing active in a block
half sends and receives nothing there. Gradients accumulate over micro-batches; every rank
steps its own optimizer over its own parameters.

Messages are point-to-point ``torch.distributed`` messages of float tensors (gloo on CPU,
NCCL on GPU), fp32 or, with ``Job.message_dtype``, bf16 or fp16 on the wire (rounded when
sent, computed in fp32 when received); every byte sent and received is counted from the
tensors on the wire (``Counters``). Sends are asynchronous (``isend``: a rank computes while
they travel, and waits for them at the end of the step, never before a receive, which the
interleaved order needs: gloo completes a send when its receive is posted); receives block.

The coordinator posts a block half's input to the active workers, computes its own subnets
while the workers compute theirs, then receives their replies (and in backward: sends the
output gradient, runs its own subnets' backward, receives the input gradients), as the
simulator schedules it (its transfers hold links, not devices); micro-batch by micro-batch,
or all of them at once in the interleaved order (interleave.py). Not done: receives posted ahead.

Emulated ranks (``Coordinator(emulate=True)``) run all of this in one process without a
message: the same placement, ops and sums (and the same rounding where a 16-bit message would
be), for accuracy studies free of communication and of the contention of ranks sharing cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from d2ft.schedule import HALVES, Message, heads_of, participants

from .shard import BlockShard


@dataclass
class Counters:
    """What one rank measured in one step: seconds and bytes."""

    sent_bytes: int = 0
    recv_bytes: int = 0
    compute_s: float = 0.0
    """Time between messages (stretched by the emulated slowdown), s."""
    cpu_s: dict = field(default_factory=dict)
    """The same intervals' CPU time of this rank's thread by phase ("fwd", "bwd", "opt"), s: what the
    compute cost without the time the OS gave the core to other processes (``d2ft calibrate``'s fit)."""
    comm_s: float = 0.0
    """Time posting sends and waiting for them to complete, s."""
    wait_s: float = 0.0
    """Time inside receives, s: the transfer plus waiting for the peer to get there."""
    messages: list = field(default_factory=list)
    """Every message this rank sent or received, as a ``d2ft.schedule.Message``, in order."""
    events: list | None = None
    """When a list: (kind, start_s, end_s, tag, peer, bytes) per compute interval and message, times from
    the step's start ("compute", "send" or "recv"; a compute interval's tag is the next message's)."""


WIRE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``Job.message_dtype`` -> the element type of messages on the wire."""


class Link:
    """Point-to-point messages with byte and time counters, ``wire``-typed on the wire: sends
    asynchronous (completed by ``finish``), receives blocking.

    Everything a rank does between two messages is its compute. With ``slowdown`` f > 1
    (emulated heterogeneity) the rank sleeps (f - 1) times each such interval before its
    next message, so its compute takes f times as long.
    """

    def __init__(self, counters: Counters, slowdown: float = 1.0, device: torch.device | None = None,
                 rank: int = 0, wire: torch.dtype = torch.float32) -> None:
        self.c = counters
        self.wire = wire
        self.rank = rank
        self.slowdown = slowdown
        self.device = device or torch.device("cpu")
        self._mark = time.perf_counter()
        self._cpu = time.thread_time()
        self._sending: list[tuple] = []  # (work, tensor) of sends in flight: the tensor lives until its send completes

    def start(self) -> None:
        """Starts the compute clock (call at the start of the step)."""
        self._mark = self._origin = time.perf_counter()
        self._cpu = time.thread_time()

    def stretch(self, tag: tuple = ("opt",), peer: int = -1) -> None:
        """Books the compute since the last message, stretched by the slowdown."""
        if self.device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - self._mark
        phase = str(tag[0])
        self.c.cpu_s[phase] = self.c.cpu_s.get(phase, 0.0) + self.slowdown * (time.thread_time() - self._cpu)
        if self.slowdown > 1:
            time.sleep((self.slowdown - 1) * elapsed)
        self.c.compute_s += self.slowdown * elapsed
        if self.c.events is not None and elapsed > 0:
            t = self._mark - self._origin
            self.c.events.append(("compute", t, t + self.slowdown * elapsed, tag, peer, 0))

    def _event(self, kind: str, t0: float, tag: tuple, peer: int, n: int) -> None:
        if self.c.events is not None:
            self.c.events.append((kind, t0 - self._origin, self._mark - self._origin, tag, peer, n))

    def send(self, t: torch.Tensor, dst: int, tag: tuple) -> None:
        """Posts ``t`` to ``dst`` (``isend``) and returns; ``finish`` waits for it."""
        self.stretch(tag, dst)
        t = t.detach().to(self.wire).contiguous()
        t0 = time.perf_counter()
        self._sending.append((dist.isend(t, dst), t))
        self._mark, self._cpu = time.perf_counter(), time.thread_time()
        self.c.comm_s += self._mark - t0
        n = t.numel() * t.element_size()
        self.c.sent_bytes += n
        self.c.messages.append(Message(self.rank, dst, n, *tag))
        self._event("send", t0, tag, dst, n)

    def finish(self) -> None:
        """Waits for every send in flight (that time counts as ``comm_s``); call at the end of a step."""
        if not self._sending:
            return
        t0 = time.perf_counter()
        for work, _ in self._sending:
            work.wait()
        self._sending.clear()
        self._mark, self._cpu = time.perf_counter(), time.thread_time()
        self.c.comm_s += self._mark - t0

    def recv(self, shape, src: int, tag: tuple) -> torch.Tensor:
        """A float32 tensor of ``shape`` from ``src`` (received as ``wire``)."""
        self.stretch(tag, src)
        self._sending = [s for s in self._sending if not s[0].is_completed()]  # completed sends free their buffers
        buf = torch.empty(shape, dtype=self.wire, device=self.device)
        t0 = time.perf_counter()
        dist.recv(buf, src)
        self._mark, self._cpu = time.perf_counter(), time.thread_time()
        self.c.wait_s += self._mark - t0
        n = buf.numel() * buf.element_size()
        self.c.recv_bytes += n
        self.c.messages.append(Message(src, self.rank, n, *tag))
        self._event("recv", t0, tag, src, n)
        return buf.float()


def make_shards(model: nn.Module, plan, device: int, split_mlp: bool = True) -> nn.ModuleDict:
    """The BlockShards of ``device``: one per block where it holds heads, keyed by block index."""
    shards = {}
    for l, row in enumerate(plan.placement):
        heads = [h for h, k in enumerate(row) if k == device]
        if heads:
            shards[str(l)] = BlockShard(model.blocks[l], heads, split_mlp)
    return nn.ModuleDict(shards)


class _Scatter(torch.autograd.Function):
    """Sends a block half's input to the active devices; backward receives the FULL ones' input gradients.

    Returns an empty token that ``_Gather`` consumes, so that the coordinator can compute its
    own subnets between sending and receiving (the workers compute meanwhile), and in
    backward between sending the output gradient and receiving the input gradients: the
    autograd engine runs ``_Gather``'s backward first, then the local subnets', then this.
    """

    @staticmethod
    def forward(ctx, y, link: Link, active: list[int], full: list[int], tag: tuple):
        for k in active:
            link.send(y, k, ("fwd",) + tag)
        ctx.link, ctx.full, ctx.tag, ctx.shape = link, full, tag, y.shape
        return y.new_zeros(0)

    @staticmethod
    def backward(ctx, _token_grad):
        if not ctx.full:
            return None, None, None, None, None
        total = None
        for k in ctx.full:
            g = ctx.link.recv(ctx.shape, k, ("bwd",) + ctx.tag)
            total = g if total is None else total + g
        return total, None, None, None, None


class _Gather(torch.autograd.Function):
    """Sums the active devices' replies for a block half; backward sends the output gradient to the FULL ones."""

    @staticmethod
    def forward(ctx, token, shape, link: Link, active: list[int], full: list[int], tag: tuple):
        total = torch.zeros(shape, device=link.device)
        for k in active:
            total += link.recv(shape, k, ("fwd",) + tag)
        ctx.link, ctx.full, ctx.tag = link, full, tag
        return total

    @staticmethod
    def backward(ctx, grad):
        for k in ctx.full:
            ctx.link.send(grad, k, ("bwd",) + ctx.tag)
        return grad.new_zeros(0), None, None, None, None, None


class _Wire(torch.autograd.Function):
    """Rounds a tensor through the wire dtype both ways: forward (an activation or a reply sent) and
    backward (the gradient sent back), as a 16-bit message would (emulated ranks)."""

    @staticmethod
    def forward(ctx, t, wire):
        ctx.wire = wire
        return t.to(wire).to(t.dtype)

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.wire).to(g.dtype), None


class CoordinatorBlock(nn.Module):
    """What the coordinator keeps of a timm Block: norms, layer scales and the two output biases."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.norm1, self.ls1, self.norm2, self.ls2 = block.norm1, block.ls1, block.norm2, block.ls2
        self.proj_bias = block.attn.proj.bias
        self.fc2_bias = block.mlp.fc2.bias


class Coordinator(nn.Module):
    """The coordinator's part of the model: timm's stem and head, CoordinatorBlocks, its own shards.

    With ``emulate``, one process plays every device of the plan (``d2ft run --emulate-ranks K``):
    it also holds every other device's shards (``peers``), each device's kept apart so that its
    subnets run as one batched product as on their own rank, and computes each device's reply
    where a real run would receive it, adding them in the same order. No message is sent: the
    losses and updates are those of K real ranks, the timings are not.

    With ``rescale_skips``, a block half whose plan runs n of its H heads in a micro-batch
    (n > 0) is scaled by H / n, so its output keeps the scale it has at evaluation, where all
    heads run: dropout's rescaling applied at training time (Srivastava et al., JMLR 15, 2014, scale at
    test time instead; the train-time form is what PyTorch's dropout does).
    """

    def __init__(self, model: nn.Module, plan, device: int, emulate: bool = False, rescale_skips: bool = False,
                 wire: torch.dtype = torch.float32, order: str = "sequential") -> None:
        super().__init__()
        self.wire, self.order = wire, order
        self.shards = make_shards(model, plan, device)
        others = range(len(plan.devices)) if emulate else ()
        self.peers = nn.ModuleDict({str(k): make_shards(model, plan, k) for k in others if k != device})
        model.blocks = nn.ModuleList(CoordinatorBlock(b) for b in model.blocks)  # drops the sliced weights
        self.model = model
        self.plan, self.device, self.rescale_skips = plan, device, rescale_skips

    def _sent(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` as a peer would receive it (emulated ranks): rounded through the wire dtype, both ways."""
        return t if self.wire == torch.float32 else _Wire.apply(t, self.wire)

    def held(self) -> list[tuple[str, BlockShard]]:
        """(block, shard) of every shard this process holds: its own, and with ``emulate`` every peer's."""
        return list(self.shards.items()) + [item for peer in self.peers.values() for item in peer.items()]

    def step(self, images: torch.Tensor, labels: torch.Tensor, link: Link) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of every micro-batch of ``self.plan`` in ``order`` (interleave.py; emulated
        ranks compute the same numbers in the sequential one); returns (mean loss, logits of the batch)."""
        if self.order == "interleaved" and not self.peers:
            from .interleave import coordinator_step

            return coordinator_step(self, images, labels, link)
        M = self.plan.micro_batches
        losses, logits = [], []
        for m, (x_mb, y_mb) in enumerate(zip(images.chunk(M), labels.chunk(M))):
            out = self._forward(x_mb, m, link, self.plan)
            loss = F.cross_entropy(out, y_mb) / M
            loss.backward()
            losses.append(loss.detach())
            logits.append(out.detach())
        return torch.stack(losses).sum(), torch.cat(logits)

    @torch.no_grad()
    def predict(self, chunks: list[torch.Tensor], plan, link: Link) -> torch.Tensor:
        """Logits of every chunk (micro-batch m of ``plan`` is chunk m), forward only."""
        return torch.cat([self._forward(x, m, link, plan) for m, x in enumerate(chunks)])

    def _forward(self, images: torch.Tensor, m: int, link: Link, plan) -> torch.Tensor:
        mdl = self.model
        x = mdl.norm_pre(mdl.patch_drop(mdl._pos_embed(mdl.patch_embed(images))))
        if torch.is_grad_enabled() and not x.requires_grad:
            # A frozen stem (LoRA): the residual stream must still carry gradients, or the FULL
            # subnets' backward messages would never be sent and the workers would wait forever.
            x = x.detach().requires_grad_()
        for l, blk in enumerate(mdl.blocks):
            for half, norm, ls, bias in (("attn", blk.norm1, blk.ls1, blk.proj_bias),
                                         ("mlp", blk.norm2, blk.ls2, blk.fc2_bias)):
                x = x + ls(self.half_end(self.half_begin(l, m, half, norm(x), link, plan), link, plan) + bias)
        return mdl.forward_head(mdl.norm(x))

    def half_begin(self, l: int, m: int, half: str, y: torch.Tensor, link: Link, plan) -> tuple:
        """Block half (``l``, ``half``) of micro-batch ``m``, up to the replies: posts its input to the active
        workers and runs the coordinator's own subnets; ``half_end`` takes what this returns."""
        c = self.device
        active = [k for k in participants(plan, l, m, "fwd") if k != c]
        full = [k for k in participants(plan, l, m, "bwd") if k != c]
        tag = (half, l, m)
        sent = active and not self.peers
        token = _Scatter.apply(y, link, active, full, tag) if sent else None
        total = _run(self.shards, plan, c, l, m, half, y)  # the coordinator's own subnets, while the workers compute
        return l, m, half, y, active, full, tag, token, total

    def half_end(self, begun: tuple, link: Link, plan) -> torch.Tensor:
        """The block half's output: the active workers' replies (received here) plus the coordinator's own."""
        l, m, half, y, active, full, tag, token, total = begun
        if active:
            if token is not None:
                remote = _Gather.apply(token, y.shape, link, active, full, tag)
            else:  # emulated ranks: each peer's reply computed here, summed in the order they would arrive
                remote = torch.zeros_like(y)
                for k in active:  # each peer gets its own copy of the message, and its gradient comes back alone
                    reply = _run(self.peers[str(k)], plan, k, l, m, half, self._sent(y))
                    remote = remote + self._sent(reply)
            total = remote if total is None else remote + total
        if total is None:
            return torch.zeros_like(y)
        if self.rescale_skips:
            running = sum(len(f) + len(o) for f, o in (heads_of(plan, k, l, m) for k in range(len(plan.devices))))
            if 0 < running < plan.heads:
                total = total * (plan.heads / running)
        return total


def _run(shards: nn.ModuleDict, plan, k: int, l: int, m: int, half: str, y: torch.Tensor) -> torch.Tensor | None:
    """Device ``k``'s subnets of block half (``l``, ``half``) in micro-batch ``m``: the FULL ones with
    autograd, plus the FORWARD_ONLY ones as a constant; None if it runs none there."""
    f, o = heads_of(plan, k, l, m)
    if not (f or o):
        return None
    shard = shards[str(l)]
    total = getattr(shard, half)(y, f) if f else None
    if o:
        with torch.no_grad():  # a constant in backward; the sum itself must stay in the graph
            frozen = getattr(shard, half)(y, o)
        total = frozen if total is None else total + frozen
    return total


class Worker(nn.Module):
    """A worker: its shards, and the replay of the coordinator's schedule from the plan."""

    def __init__(self, model: nn.Module, plan, device: int, coordinator: int, order: str = "sequential") -> None:
        super().__init__()
        self.shards = make_shards(model, plan, device)
        self.plan, self.device, self.coord, self.order = plan, device, coordinator, order

    def held(self) -> list[tuple[str, BlockShard]]:
        """(block, shard) of every shard this rank holds."""
        return list(self.shards.items())

    def step(self, shape: tuple[int, int, int], link: Link) -> None:
        """Serve every micro-batch of ``self.plan`` in ``order``: replies, then the FULL subnets' input gradients."""
        if self.order == "interleaved":
            from .interleave import worker_step

            worker_step(self, shape, link)
            return
        self.serve([shape] * self.plan.micro_batches, self.plan, link)

    def serve(self, shapes: list[tuple[int, int, int]], plan, link: Link) -> None:
        """Serve micro-batch m of ``plan`` with activations of ``shapes[m]`` (backward only where FULL)."""
        for m, shape in enumerate(shapes):
            saved = []
            for l in range(plan.depth):
                f, o = heads_of(plan, self.device, l, m)
                if f or o:
                    for half in HALVES:
                        saved += self.reply(plan, l, m, half, f, o, shape, link)
            for half, l, _, y, out in reversed(saved):
                self.reply_backward(l, m, half, y, out, shape, link)

    def reply(self, plan, l: int, m: int, half: str, f: list[int], o: list[int], shape, link: Link) -> list[tuple]:
        """Block half (``l``, ``half``) of micro-batch ``m``: input received, FULL ``f`` with autograd plus
        FORWARD_ONLY ``o`` as a constant sent back; [(half, l, m, input, output)] for ``reply_backward`` if any FULL."""
        shard = self.shards[str(l)]
        y = link.recv(shape, self.coord, ("fwd", half, l, m)).requires_grad_(bool(f))
        out = getattr(shard, half)(y, f) if f else None
        with torch.no_grad():
            reply = out.detach() if out is not None else torch.zeros(shape, device=link.device)
            if o:
                reply = reply + getattr(shard, half)(y.detach(), o)
        link.send(reply, self.coord, ("fwd", half, l, m))
        return [(half, l, m, y, out)] if f else []

    def reply_backward(self, l: int, m: int, half: str, y: torch.Tensor, out: torch.Tensor, shape, link: Link) -> None:
        """A ``reply``'s backward: its output gradient received, its input gradient sent back."""
        out.backward(link.recv(shape, self.coord, ("bwd", half, l, m)))
        link.send(y.grad, self.coord, ("bwd", half, l, m))
