"""The interleaved execution order (``Job.order="interleaved"``): every micro-batch of a step in flight at once.

The sequential order (executor.py) runs micro-batch m's forward and backward before m + 1 starts. Here the
coordinator takes every micro-batch through each block half together, as the simulator's
``order="interleaved"`` schedules it (simulator/graph.py: the same step of every micro-batch together):

- forward, per block half: for each micro-batch in turn, its input is posted to the active workers
  (asynchronous sends) and the coordinator's own subnets run; then the replies are received, micro-batch
  by micro-batch. A worker meanwhile takes the micro-batches in the same order, so while it computes one,
  the next one's input is already on its way;
- backward, per block from the last: each micro-batch's part of that block in turn (its MLP half, then its
  attention half: output gradient sent to the FULL workers, own subnets, input gradients received), the
  workers replaying the same order.

Each block (and the stem and the head) is one autograd segment per micro-batch, cut at the residual
stream: a segment's backward runs from its output's gradient to its input's, so the order above is the
order of the calls, not the autograd engine's. The arithmetic is that of the sequential order (the same
products and sums; each parameter's gradient accumulates micro-batch 0 first): tests/test_runtime_dist.py
checks that both orders give the same losses and weights. Emulated ranks (no messages) and evaluation run
in the sequential order, which computes the same numbers. Not done: receives posted ahead of time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from d2ft.schedule import HALVES, heads_of


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """``x`` cut from its graph: the input of the next segment, whose gradient that segment's backward gives."""
    return x.detach().requires_grad_()


def _backward(outputs: list[torch.Tensor], grads: list[torch.Tensor | None]) -> None:
    """Backward of one segment per micro-batch, in micro-batch order (a segment without a graph: nothing)."""
    for out, g in zip(outputs, grads):
        if out.grad_fn is not None and g is not None:
            torch.autograd.backward(out, g)


def coordinator_step(coord, images: torch.Tensor, labels: torch.Tensor, link) -> tuple[torch.Tensor, torch.Tensor]:
    """``Coordinator.step`` in the interleaved order: (mean loss, logits of the batch)."""
    plan, mdl = coord.plan, coord.model
    M = plan.micro_batches
    stem = [mdl.norm_pre(mdl.patch_drop(mdl._pos_embed(mdl.patch_embed(x)))) for x in images.chunk(M)]
    xs = [_leaf(x) for x in stem]
    segments = []  # per block: (inputs, outputs), one of each per micro-batch
    for l, blk in enumerate(mdl.blocks):
        ins = xs
        for half, norm, ls, bias in (("attn", blk.norm1, blk.ls1, blk.proj_bias),
                                     ("mlp", blk.norm2, blk.ls2, blk.fc2_bias)):
            begun = [coord.half_begin(l, m, half, norm(x), link, plan) for m, x in enumerate(xs)]
            xs = [x + ls(coord.half_end(b, link, plan) + bias) for x, b in zip(xs, begun)]
        segments.append((ins, xs))
        xs = [_leaf(x) for x in xs]
    outs = [mdl.forward_head(mdl.norm(x)) for x in xs]
    losses = [F.cross_entropy(out, y) / M for out, y in zip(outs, labels.chunk(M))]
    _backward(losses, [torch.ones_like(loss) for loss in losses])
    grads = [x.grad for x in xs]
    for ins, block_outs in reversed(segments):
        _backward(block_outs, grads)
        grads = [x.grad for x in ins]
    _backward(stem, grads)
    return torch.stack([loss.detach() for loss in losses]).sum(), torch.cat([out.detach() for out in outs])


def worker_step(worker, shape: tuple[int, int, int], link) -> None:
    """``Worker.step`` in the interleaved order: the coordinator's messages in the order it sends them."""
    plan = worker.plan
    M = plan.micro_batches
    saved: dict[tuple[int, int], list] = {}  # (block, micro-batch) -> its FULL subnets' replies, in order
    for l in range(plan.depth):
        for half in HALVES:
            for m in range(M):
                f, o = heads_of(plan, worker.device, l, m)
                if f or o:
                    saved.setdefault((l, m), []).extend(worker.reply(plan, l, m, half, f, o, shape, link))
    for l in reversed(range(plan.depth)):
        for m in range(M):
            for half, _, _, y, out in reversed(saved.get((l, m), [])):
                worker.reply_backward(l, m, half, y, out, shape, link)
