"""The kernel model: a compute task priced as the sum of its kernels, each on its own roofline.

A task of the schedule (``d2ft.schedule.Compute``: a block half of n subnets, a norm, the stem,
the classifier, a whole block of a depth-wise pipeline) runs as a handful of kernels. On a
device with ``sm_count`` set (``DeviceSpec.kernel_model``) ``d2ft.cost.CostModel`` prices each
kernel on its own (``task_time``), and the optimizer's update as one memory-bound kernel:

    t = kernel_launch_s + max(FLOP / (peak x efficiency x util(shape)), bytes / bandwidth)

GPUs (the catalogue's, constants fitted to published measurements) and CPU ranks (``d2ft
calibrate``: one thread as one "SM", ``gemm_tile`` 1, so that ``util`` is 1, and constants
fitted to the rank's own task timings by ``d2ft.kernelfit``) are priced by the same model; a
backward GEMM runs at ``backward_efficiency`` of the forward's rate (1 on the catalogue's
GPUs), and an elementwise kernel's fixed time is ``elementwise_overhead_s`` where a device sets
it (a CPU rank dispatches a light operator faster than a matrix product with its weights).

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

Under autocast (``ModelSpec.autocast``: PyTorch's automatic mixed precision) the elementwise
kernels move elements of their real widths and the casts between them are kernels of their own
(``_autocast_kernels`` lists them with their bytes); otherwise every element is of the model's
width. Under LoRA (``ModelSpec.lora_rank``) a frozen weight's weight-gradient product is left out
(the stem's always), as ``d2ft.work`` counts it. What it does not model: kernel fusion beyond the
above (bias adds and activations fused into GEMM epilogues are counted as separate elementwise
kernels only for GELU), stream-K GEMMs and the library's exact choice of tile and split,
tensor-core alignment penalties for odd sizes, efficiency lost by shallow products (small
inner dimension), clock boost and power limits (a card that holds a clock above its rated
boost fits an ``efficiency`` near 1), L2-cache reuse between kernels, CPU-side launches
overlapping the GPU's work (every kernel pays its launch), and launch overlap under CUDA graphs;
on a CPU rank also caches (every kernel's bytes move at the measured copy bandwidth of a 64 MiB
tensor, though a micro-batch's activations may stay in cache), the elementwise kernels' arithmetic
(memory-bound by the formula above, where a LayerNorm on one thread is bound by its vector
arithmetic), and the framework's operators around each modelled kernel (stacking the heads'
weights, reshapes, bias adds), which its fitted fixed time absorbs.
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
    role: str = ""
    """What a GEMM computes: a weight's product ("qkv", "proj", "fc1", "fc2", "stem", "classifier") or
    attention's ("attention"); "" for an elementwise kernel."""
    nbytes: float = 0.0
    """An elementwise kernel's bytes read and written, where its elements are not all of the task's
    width (autocast); 0: ``elements`` x the task's bytes per element."""
    grad_nbytes: tuple[float, ...] = ()
    """With ``nbytes``: the bytes of each kernel its backward runs (none: empty)."""

    def bytes_moved(self, dtype_bytes: int) -> float:
        """Bytes read and written: a GEMM's operands and result, an elementwise kernel's ``nbytes`` or
        ``elements`` at ``dtype_bytes``."""
        if self.kind == "gemm":
            return self.batch * (self.m * self.k + self.k * self.n + self.m * self.n) * dtype_bytes
        return self.nbytes or self.elements * dtype_bytes


def gemm(m: int, n: int, k: int, batch: int = 1, role: str = "") -> Kernel:
    """A batch of ``batch`` (m x k) @ (k x n) products: 2 m n k FLOP each."""
    return Kernel("gemm", m, n, k, batch, flop=2.0 * batch * m * n * k, role=role)


def elementwise(elements: int, flop_per_element: float = 0.0) -> Kernel:
    return Kernel("elementwise", elements=elements, flop=flop_per_element * elements)


def moves(nbytes: float, *grad_nbytes: float) -> Kernel:
    """A memory-bound kernel of ``nbytes`` read and written, whose backward runs one kernel per
    ``grad_nbytes`` (autocast's kernels, whose elements differ in width)."""
    return Kernel("elementwise", nbytes=float(nbytes), grad_nbytes=tuple(float(g) for g in grad_nbytes))


def split_k(kern: Kernel, sms: int, tile: int = TILE) -> int:
    """Slices of a GEMM's inner dimension: as many as the SMs its output tiles (``tile`` elements a side)
    leave idle, each at least ``tile`` deep; 1 for a product that fills a wave, and for elementwise kernels.

    >>> split_k(gemm(128, 128, 1024), 80), split_k(gemm(128, 128, 64), 80), split_k(gemm(128 * 8, 128 * 10, 4096), 80)
    (8, 1, 1)
    """
    if kern.kind != "gemm":
        return 1
    tiles = math.ceil(kern.m / tile) * math.ceil(kern.n / tile) * kern.batch
    if tiles >= sms:
        return 1
    return max(1, min(sms // tiles, math.ceil(kern.k / tile)))


def utilisation(kern: Kernel, sms: int, tile: int = TILE) -> float:
    """The share of the device's tile slots that a GEMM fills with real work: tile quantisation (the
    last tile row and column are partly empty) times wave quantisation (the last wave leaves SMs idle),
    after split-K (``split_k``).

    >>> round(utilisation(gemm(128, 128, 64), 80), 4)  # one tile, too shallow to split, for 80 SMs
    0.0125
    >>> utilisation(gemm(128 * 8, 128 * 10, 64), 80)  # exactly one full wave
    1.0
    >>> utilisation(gemm(128, 128, 1024), 80)  # one tile split eight ways: 8 of 80 SMs
    0.1
    >>> utilisation(gemm(800, 72, 96), 1, tile=1)  # a CPU rank: one thread, no quantisation
    1.0
    """
    tm, tn = math.ceil(kern.m / tile), math.ceil(kern.n / tile)
    tiles = tm * tn * kern.batch * split_k(kern, sms, tile)
    waves = math.ceil(tiles / sms)
    tile_fill = (kern.m * kern.n) / (tm * tile * tn * tile)
    return tile_fill * tiles / (waves * sms)


def memory_bytes(kern: Kernel, dtype_bytes: int, sms: int, tile: int = TILE) -> float:
    """``Kernel.bytes_moved`` plus, for a split GEMM, its fp32 partial sums written and read once."""
    s = split_k(kern, sms, tile)
    partials = 2 * s * kern.batch * kern.m * kern.n * 4 if s > 1 else 0
    return kern.bytes_moved(dtype_bytes) + partials


def kernel_time(spec, kern: Kernel, dtype_bytes: int, backward: bool = False) -> float:
    """One kernel's time on ``spec`` (module docstring), s; ``backward``: a GEMM of the backward pass, at
    ``spec.backward_efficiency`` of the forward's rate."""
    memory_s = memory_bytes(kern, dtype_bytes, spec.sm_count, spec.gemm_tile) / spec.mem_bandwidth
    if kern.kind != "gemm":
        return fixed_time(spec, kern) + memory_s
    rate = spec.peak(dtype_bytes) * spec.efficiency * utilisation(kern, spec.sm_count, spec.gemm_tile)
    if backward:
        rate *= spec.backward_efficiency
    return fixed_time(spec, kern) + max(kern.flop / rate, memory_s)


def fixed_time(spec, kern: Kernel) -> float:
    """A kernel's fixed time on ``spec``, s: ``kernel_launch_s`` for a GEMM, ``spec.memory_task_overhead_s``
    for an elementwise kernel (``elementwise_overhead_s`` where set)."""
    return spec.kernel_launch_s if kern.kind == "gemm" else spec.memory_task_overhead_s


def task_kernels(model, part: str, phase: str, heads: int, samples: int, fused: bool) -> list[Kernel]:
    """The kernels of one schedule entry: ``part`` of ``model`` for ``heads`` subnets (block halves) and
    ``samples`` images, forward or backward ("fwd", "bwd")."""
    if part == "block" and phase == "bwd":  # a depth-wise stage's block: its parts' backward kernels
        parts = ("norm", "attn", "add") + (("norm", "mlp", "add") if model.mlp_hidden else ())
        return [k for p in parts for k in task_kernels(model, p, "bwd", heads, samples, fused)]
    fwd = _forward_kernels(model, part, heads, samples, fused)
    if phase == "fwd":
        return fwd
    frozen = frozen_roles(model)
    out = []
    for k in fwd:
        if k.kind == "elementwise":
            if k.nbytes:  # autocast: its own backward kernels
                out.extend(moves(g) for g in k.grad_nbytes)
            else:
                out.append(elementwise(k.elements * 3 // 2))  # read the saved input and the gradient, write one
        elif k.role == "attention" and fused:  # fused attention: recompute and both gradients
            out.append(k._replace(flop=2.5 * k.flop))
        else:
            if k.role != "stem":  # no gradient with respect to the pixels
                out.append(gemm(k.m, k.k, k.n, k.batch, k.role))  # input gradient: dY (m x n) @ W^T (n x k)
            if k.role not in frozen:
                out.append(gemm(k.k, k.n, k.m, k.batch, k.role))  # weight gradient: X^T (k x m) @ dY (m x n)
    return out


def frozen_roles(model) -> set[str]:
    """The weights' GEMM roles that LoRA freezes (``d2ft.work.lora_linear``): no weight-gradient product.
    qkv and proj of a head, fc1 and fc2 of an MLP slice, as their adapters go (an unsplit MLP is frozen);
    the stem always."""
    if not model.lora_rank:
        return set()
    targets = set(model.lora_targets)
    adapted = {"qkv": bool(targets & {"q", "k", "v"}), "proj": "proj" in targets,
               "fc1": model.split_mlp and "fc1" in targets, "fc2": model.split_mlp and "fc2" in targets}
    return {"stem"} | {role for role, yes in adapted.items() if not yes}


def _forward_kernels(model, part: str, heads: int, b: int, fused: bool,
                     autocast: bool | None = None) -> list[Kernel]:
    """A part's forward kernels; ``autocast`` (default: the model's) adds autocast's (``_autocast_kernels``)."""
    N, D, hd = model.tokens, model.dim, model.head_dim
    tokens = b * N
    if part in ("attn", "mlp") and heads <= 0:  # no subnet runs: no kernel
        return []
    if (model.autocast if autocast is None else autocast) and part != "block":
        return _autocast_kernels(model, part, heads, b, fused)
    if part == "attn":
        n = heads
        att = [gemm(N, N, hd, b * n, "attention"), gemm(N, hd, N, b * n, "attention")]  # Q K^T, then weights x V
        if fused:  # one kernel: the two products, no score matrix in memory
            att = [gemm(N, N, 2 * hd, b * n, "attention")]
        else:
            att.insert(1, elementwise(2 * b * n * N * N, 5.0))  # softmax reads and writes the scores
        return [gemm(tokens, 3 * n * hd, D, role="qkv")] + att + [gemm(tokens, D, n * hd, role="proj")]
    if part == "mlp":
        width = heads * model.mlp_slice if model.split_mlp else model.mlp_hidden
        return [gemm(tokens, width, D, role="fc1"), elementwise(2 * tokens * width, 8.0),
                gemm(tokens, D, width, role="fc2")]
    if part == "norm":
        return [elementwise(2 * tokens * D, 8.0)]
    if part == "add":
        return [elementwise(3 * tokens * D, 1.0)]
    if part == "embed":
        k = model.in_chans * model.patch ** 2
        return [gemm(b * model.patches, D, k, role="stem"), elementwise(3 * tokens * D, 1.0)]
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
            out.append(gemm(b * heads_out, model.num_classes, D, role="classifier"))
        return out
    raise ValueError(f"no kernel model for part {part!r}")


def _autocast_kernels(model, part: str, heads: int, b: int, fused: bool) -> list[Kernel]:
    """A part's forward kernels under autocast (``ModelSpec.autocast``), element widths as PyTorch's
    autocast sets them (the "CUDA Ops that can autocast to float32" list of the torch.amp documentation,
    and type promotion of mixed-width operands): weights stay fp32 and are cast to 16 bits once per
    forward; the residual stream is fp32 (the class-token concatenation and the position-embedding add
    promote the 16-bit patch embeddings); LayerNorm and softmax run in fp32, and each GEMM casts an
    fp32 input to 16 bits (the stem its pixels); everything else is 16-bit. Bytes per element read plus
    written, forward then backward: a cast between 32 and 16 bits 6 and 6 (the pixels' cast no
    backward); LayerNorm 8, then 12 for the input gradient and 8 for the weight and bias gradients (not
    under LoRA, which freezes them); softmax 8, then 12 (its fp32 output and gradient read); the residual add
    (fp32 + 16-bit -> fp32) 10, then 6 to cast the branch's gradient to 16 bits and 12 to add the two
    gradients of the stream where it forks; the attention scale (16-bit) 4 and 4, GELU 4 and 6; the
    head-merging copy (``transpose(1, 2).reshape``) 4 and 4. Each weight's cast reads fp32 and writes
    16 bits (6 per element), and its backward reduces the bias gradient over the tokens (2 per
    element of the output gradient) and casts the weight and bias gradients to fp32 (6). Not
    modelled: zeroing and accumulating the fp32 gradients, and per-tensor optimizer kernels (the
    update is one memory-bound kernel), a gradient scaler (loss scaling) and dropout."""
    N, D, hd = model.tokens, model.dim, model.head_dim
    tokens = b * N
    E = tokens * D  # residual-stream elements
    frozen = frozen_roles(model)
    gemms: dict[str, list[Kernel]] = {}  # the part's products, by role, as without autocast
    for kern in _forward_kernels(model, part, heads, b, fused, autocast=False):
        if kern.kind == "gemm":
            gemms.setdefault(kern.role, []).append(kern)

    def weight(kern: Kernel) -> Kernel:  # the fp32 weight (k x n) and bias (n) cast to 16 bits; its gradients
        params = kern.k * kern.n + kern.n
        return moves(6 * params) if kern.role in frozen else moves(6 * params, 2 * kern.m * kern.n, 6 * params)

    def norm() -> list[Kernel]:
        return [moves(8 * E, 12 * E) if model.lora_rank else moves(8 * E, 12 * E, 8 * E)]

    def linear(kern: Kernel, cast_input: bool = False) -> list[Kernel]:
        cast = 6 * kern.m * kern.k  # the input, fp32 to 16 bits; its gradient back (none for the pixels)
        back = () if kern.role == "stem" else (cast,)
        return [weight(kern)] + ([moves(cast, *back)] if cast_input else []) + [kern]

    if part == "attn":
        S = b * heads * N * N  # score elements
        att = gemms["attention"]
        if not fused:  # scores, scale, cast up, softmax, cast down, weighted sum
            att = [att[0], moves(4 * S, 4 * S), moves(6 * S, 6 * S), moves(8 * S, 12 * S), moves(6 * S, 6 * S), att[1]]
        merge = moves(4 * tokens * heads * hd, 4 * tokens * heads * hd)
        return linear(gemms["qkv"][0], cast_input=True) + att + [merge] + linear(gemms["proj"][0])
    if part == "mlp":
        fc1 = gemms["fc1"][0]
        gelu = moves(4 * fc1.m * fc1.n, 6 * fc1.m * fc1.n)  # over the hidden activations
        return linear(fc1, cast_input=True) + [gelu] + linear(gemms["fc2"][0])
    if part == "norm":
        return norm()
    if part == "add":
        return [moves(10 * E, 6 * E, 12 * E)]
    if part == "embed":  # the stem, then the concatenation (promoting to fp32) and the position add
        return linear(gemms["stem"][0], cast_input=True) + [moves(6 * E, 6 * E), moves(8 * E, 4 * E)]
    if part == "head":
        return norm() + [k for c in gemms.get("classifier", []) for k in linear(c, cast_input=True)]
    raise ValueError(f"no kernel model for part {part!r}")


def task_time(spec, model, part: str, phase: str, heads: int, samples: int, dtype_bytes: int) -> float:
    """The sum of a task's kernel times on ``spec`` (a device with ``sm_count``), s."""
    kernels = task_kernels(model, part, phase, heads, samples, spec.fused_attention)
    return sum(kernel_time(spec, k, dtype_bytes, backward=phase == "bwd") for k in kernels)


def launch_time(spec, model, part: str, phase: str, heads: int, samples: int) -> float:
    """The fixed share of ``task_time``: its kernels' ``fixed_time``, s."""
    return sum(fixed_time(spec, k) for k in task_kernels(model, part, phase, heads, samples, spec.fused_attention))


__all__ = ["Kernel", "TILE", "elementwise", "fixed_time", "frozen_roles", "gemm", "kernel_time", "launch_time", "memory_bytes", "moves",
           "split_k", "task_kernels",
           "task_time", "utilisation"]
