"""The GPU kernel model: a compute task priced as the sum of its kernels, each on its own roofline.

A task of the schedule (``d2ft.schedule.Compute``: a block half of n subnets, a norm, the stem,
the classifier, a whole block of a depth-wise pipeline) runs as a handful of kernels. On a
device with ``sm_count`` set (``DeviceSpec.kernel_model``) ``d2ft.cost.CostModel`` prices each
kernel on its own (``task_time``), and the optimizer's update as one memory-bound kernel:

    t = kernel_launch_s + max(FLOP / (peak x efficiency x util(shape)), bytes / bandwidth)

- matrix products (GEMMs) take their shape into account: the output is cut into 128 x 128
  tiles that the device's SMs run in waves; ``util`` is the share of the last wave's SMs and
  of each tile that holds real work (tile and wave quantisation: NVIDIA, "Matrix
  Multiplication Background User's Guide", Deep Learning Performance documentation, 2023,
  sections "Tile Quantization" and "Wave Quantization"), so small and narrow products run
  far below peak, as measured; a product whose tiles fill less than one wave splits its
  inner dimension over the idle SMs (split-K: the CUTLASS documentation, "Efficient GEMM in
  CUDA", section "Parallelized Reductions"), each slice at least one tile deep, and pays
  for writing and reading its fp32 partial sums;
- elementwise kernels (softmax, GELU, LayerNorm, residual adds) are memory-bound: bytes read
  and written over the bandwidth;
- attention is either fused (one kernel that never writes the score matrix, as PyTorch's
  ``scaled_dot_product_attention`` with FlashAttention: Dao et al., NeurIPS 2022) or three
  kernels (scores, softmax, weighted sum) that write and read the N x N scores: the device's
  ``fused_attention`` says which its figures assume;
- backward runs two GEMMs per forward GEMM (input and weight gradient) and one elementwise
  kernel per forward one, reading the saved input and the gradient; fused attention's backward
  recomputes the scores (2.5 times the forward FLOP: Dao et al. 2022, section 3.1).

Under LoRA (``ModelSpec.lora_rank``) a frozen weight's weight-gradient product is left out (the
stem's always), as ``d2ft.work`` counts it. What it does not model: kernel fusion beyond the
above (bias adds and activations fused into GEMM epilogues are counted as separate elementwise
kernels only for GELU), stream-K GEMMs and the library's exact choice of tile and split,
tensor-core alignment penalties for odd sizes, clock boost and power limits, L2-cache reuse between
kernels, and launch overlap under CUDA graphs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

TILE = 128
"""Output tile edge of a GEMM, elements (cuBLAS's large tiles; the user's guide above)."""


class Kernel(NamedTuple):
    """One kernel: a GEMM (m, n, k) with its batch count, or an elementwise pass over ``elements``."""

    kind: str
    """"gemm" or "elementwise"."""
    m: int = 0
    n: int = 0
    k: int = 0
    batch: int = 1
    elements: int = 0
    """Elements an elementwise kernel reads and writes in all (inputs plus outputs)."""
    flop: float = 0.0

    def bytes_moved(self, dtype_bytes: int) -> float:
        """Bytes read and written: a GEMM's operands and result, an elementwise kernel's ``elements``."""
        if self.kind == "gemm":
            return self.batch * (self.m * self.k + self.k * self.n + self.m * self.n) * dtype_bytes
        return self.elements * dtype_bytes


def gemm(m: int, n: int, k: int, batch: int = 1) -> Kernel:
    """A batch of ``batch`` (m x k) @ (k x n) products: 2 m n k FLOP each."""
    return Kernel("gemm", m, n, k, batch, flop=2.0 * batch * m * n * k)


def elementwise(elements: int, flop_per_element: float = 0.0) -> Kernel:
    return Kernel("elementwise", elements=elements, flop=flop_per_element * elements)


def split_k(kern: Kernel, sms: int) -> int:
    """Slices of a GEMM's inner dimension: as many as the SMs its output tiles leave idle, each at
    least ``TILE`` deep; 1 for a product that fills a wave, and for elementwise kernels.

    >>> split_k(gemm(128, 128, 1024), 80), split_k(gemm(128, 128, 64), 80), split_k(gemm(128 * 8, 128 * 10, 4096), 80)
    (8, 1, 1)
    """
    if kern.kind != "gemm":
        return 1
    tiles = math.ceil(kern.m / TILE) * math.ceil(kern.n / TILE) * kern.batch
    if tiles >= sms:
        return 1
    return max(1, min(sms // tiles, math.ceil(kern.k / TILE)))


def utilisation(kern: Kernel, sms: int) -> float:
    """The share of the device's tile slots that a GEMM fills with real work: tile quantisation (the
    last tile row and column are partly empty) times wave quantisation (the last wave leaves SMs idle),
    after split-K (``split_k``).

    >>> round(utilisation(gemm(128, 128, 64), 80), 4)  # one tile, too shallow to split, for 80 SMs
    0.0125
    >>> utilisation(gemm(128 * 8, 128 * 10, 64), 80)  # exactly one full wave
    1.0
    >>> utilisation(gemm(128, 128, 1024), 80)  # one tile split eight ways: 8 of 80 SMs
    0.1
    """
    tm, tn = math.ceil(kern.m / TILE), math.ceil(kern.n / TILE)
    tiles = tm * tn * kern.batch * split_k(kern, sms)
    waves = math.ceil(tiles / sms)
    tile_fill = (kern.m * kern.n) / (tm * TILE * tn * TILE)
    return tile_fill * tiles / (waves * sms)


def memory_bytes(kern: Kernel, dtype_bytes: int, sms: int) -> float:
    """``Kernel.bytes_moved`` plus, for a split GEMM, its fp32 partial sums written and read once."""
    s = split_k(kern, sms)
    partials = 2 * s * kern.batch * kern.m * kern.n * 4 if s > 1 else 0
    return kern.bytes_moved(dtype_bytes) + partials


def kernel_time(spec, kern: Kernel, dtype_bytes: int) -> float:
    """One kernel's time on ``spec`` (module docstring), s."""
    memory_s = memory_bytes(kern, dtype_bytes, spec.sm_count) / spec.mem_bandwidth
    if kern.kind == "gemm":
        rate = spec.peak(dtype_bytes) * spec.efficiency * utilisation(kern, spec.sm_count)
        return spec.kernel_launch_s + max(kern.flop / rate, memory_s)
    return spec.kernel_launch_s + memory_s


def task_kernels(model, part: str, phase: str, heads: int, samples: int, fused: bool) -> list[Kernel]:
    """The kernels of one schedule entry: ``part`` of ``model`` for ``heads`` subnets (block halves) and
    ``samples`` images, forward or backward ("fwd", "bwd")."""
    if part == "block" and phase == "bwd":  # a depth-wise stage's block: its parts' backward kernels
        parts = ("norm", "attn", "add") + (("norm", "mlp", "add") if model.mlp_hidden else ())
        return [k for p in parts for k in task_kernels(model, p, "bwd", heads, samples, fused)]
    fwd = _forward_kernels(model, part, heads, samples, fused)
    if phase == "fwd":
        return fwd
    frozen = _frozen_products(model, part, len(fwd))
    out = []
    for i, k in enumerate(fwd):
        if k.kind == "elementwise":
            out.append(elementwise(k.elements * 3 // 2))  # read the saved input and the gradient, write one
        elif part == "attn" and fused and 0 < i < len(fwd) - 1:  # fused attention: recompute and both gradients
            out.append(Kernel("gemm", k.m, k.n, k.k, k.batch, flop=2.5 * k.flop))
        else:
            if not (part == "embed" and i == 0):  # no gradient with respect to the pixels
                out.append(gemm(k.m, k.k, k.n, k.batch))  # input gradient: dY (m x n) @ W^T (n x k)
            if i not in frozen:
                out.append(gemm(k.k, k.n, k.m, k.batch))  # weight gradient: X^T (k x m) @ dY (m x n)
    return out


def _frozen_products(model, part: str, n: int) -> set[int]:
    """Indices of a part's forward GEMMs whose weights are frozen (LoRA, ``d2ft.work.lora_linear``): no
    weight-gradient product. qkv and proj of a head, fc1 and fc2 of an MLP slice, as their adapters go;
    the stem always."""
    if not model.lora_rank:
        return set()
    targets = set(model.lora_targets)
    if part == "attn":
        return {i for i, adapted in ((0, bool(targets & {"q", "k", "v"})), (n - 1, "proj" in targets)) if not adapted}
    if part == "mlp":
        if not model.split_mlp:
            return {0, n - 1}
        return {i for i, adapted in ((0, "fc1" in targets), (n - 1, "fc2" in targets)) if not adapted}
    return {0} if part == "embed" else set()


def _forward_kernels(model, part: str, heads: int, b: int, fused: bool) -> list[Kernel]:
    N, D, hd = model.tokens, model.dim, model.head_dim
    tokens = b * N
    if part in ("attn", "mlp") and heads <= 0:  # no subnet runs: no kernel
        return []
    if part == "attn":
        n = heads
        att = [gemm(N, N, hd, b * n), gemm(N, hd, N, b * n)]  # scores Q K^T, then weights x V
        if fused:  # one kernel: the two products, no score matrix in memory
            att = [gemm(N, N, 2 * hd, b * n)]
        else:
            att.insert(1, elementwise(2 * b * n * N * N, 5.0))  # softmax reads and writes the scores
        return [gemm(tokens, 3 * n * hd, D)] + att + [gemm(tokens, D, n * hd)]
    if part == "mlp":
        width = heads * model.mlp_slice if model.split_mlp else model.mlp_hidden
        return [gemm(tokens, width, D), elementwise(2 * tokens * width, 8.0), gemm(tokens, D, width)]
    if part == "norm":
        return [elementwise(2 * tokens * D, 8.0)]
    if part == "add":
        return [elementwise(3 * tokens * D, 1.0)]
    if part == "embed":
        k = model.in_chans * model.patch ** 2
        return [gemm(b * model.patches, D, k), elementwise(3 * tokens * D, 1.0)]
    if part == "block":  # a depth-wise stage's block: norm, attention, add, norm, MLP, add
        halves = [_forward_kernels(model, "norm", heads, b, fused) + _forward_kernels(model, "attn", heads, b, fused)
                  + _forward_kernels(model, "add", heads, b, fused)]
        if model.mlp_hidden:
            halves.append(_forward_kernels(model, "norm", heads, b, fused) + _forward_kernels(model, "mlp", heads, b, fused)
                          + _forward_kernels(model, "add", heads, b, fused))
        return [k for half in halves for k in half]
    if part == "head":
        heads_out = model.class_heads if model.num_classes else 0
        out = [elementwise(2 * tokens * D, 8.0)]  # the final norm
        if heads_out:
            out.append(gemm(b * heads_out, model.num_classes, D))
        return out
    raise ValueError(f"no kernel model for part {part!r}")


def task_time(spec, model, part: str, phase: str, heads: int, samples: int, dtype_bytes: int) -> float:
    """The sum of a task's kernel times on ``spec`` (a device with ``sm_count``), s."""
    kernels = task_kernels(model, part, phase, heads, samples, spec.fused_attention)
    return sum(kernel_time(spec, k, dtype_bytes) for k in kernels)


def launch_time(spec, model, part: str, phase: str, heads: int, samples: int) -> float:
    """The launch share of ``task_time``: kernels x ``spec.kernel_launch_s``, s."""
    return len(task_kernels(model, part, phase, heads, samples, spec.fused_attention)) * spec.kernel_launch_s


__all__ = ["Kernel", "TILE", "elementwise", "gemm", "kernel_time", "launch_time", "memory_bytes", "split_k", "task_kernels",
           "task_time", "utilisation"]
