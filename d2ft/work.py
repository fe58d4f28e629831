"""Work: what one part of a vision transformer costs per sample, and the work of a subnet's halves.

The counting conventions are ``d2ft.model``'s (FLOP of matrix products only, 1 multiply-add = 2
FLOP; backward = input gradient + weight gradient, kept apart; activation bytes read and written
once per operator, unfused). ``attention_work`` and ``mlp_work`` give one subnet's attention head
and MLP slice, as full fine-tuning or LoRA (``lora_linear``) trains them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .units import FLOP_PER_MAC


@dataclass(frozen=True)
class Work:
    """The work of one part of the model for ONE sample.

    A micro-batch of b samples costs b times the FLOP and activation bytes below, plus
    the parameter traffic, which does not depend on b.
    """

    params: int = 0
    """Parameters held by this part (count)."""
    fwd_flop: float = 0.0
    """Forward FLOP per sample."""
    ig_flop: float = 0.0
    """Backward input-gradient FLOP per sample."""
    wg_flop: float = 0.0
    """Backward weight-gradient FLOP per sample."""
    fwd_act_bytes: float = 0.0
    """Activation bytes read and written per sample in forward (B)."""
    ig_act_bytes: float = 0.0
    """Activation bytes read and written per sample for the input gradient (B)."""
    wg_act_bytes: float = 0.0
    """Activation bytes read per sample for the weight gradient (B)."""
    saved_bytes: float = 0.0
    """Activation bytes kept from forward for backward, per sample (B)."""
    frozen_params: int = 0
    """Of ``params``, those that get no gradient and no optimizer state (LoRA's frozen base) (count)."""

    def __add__(self, other: "Work") -> "Work":
        return Work(*(getattr(self, f) + getattr(other, f) for f in _WORK_FIELDS))

    def __mul__(self, k: int) -> "Work":
        return Work(*(getattr(self, f) * k for f in _WORK_FIELDS))

    @property
    def trained_params(self) -> int:
        """Parameters that get a gradient when this part runs FULL (count)."""
        return self.params - self.frozen_params

    @property
    def bwd_flop(self) -> float:
        """Backward FLOP per sample (input- plus weight-gradient)."""
        return self.ig_flop + self.wg_flop

    @property
    def train_flop(self) -> float:
        """Forward plus backward FLOP per sample."""
        return self.fwd_flop + self.ig_flop + self.wg_flop


_WORK_FIELDS = tuple(f.name for f in dataclasses.fields(Work))

LORA_TARGETS = ("q", "k", "v", "proj", "fc1", "fc2")
"""The per-subnet weights LoRA may adapt: q, k, v, proj of its head; fc1, fc2 of its MLP slice."""


def attention_work(spec, hd: int, qkv_bias: bool) -> Work:
    """One head of width ``hd``: its qkv rows, Q K^T, softmax, A V and its proj columns (``lora_linear``
    for LoRA)."""
    N, D, d = spec.tokens, spec.dim, spec.dtype_bytes
    linear = N * D * 3 * hd + N * hd * D  # qkv slice (N x D @ D x 3hd) + proj slice (N x hd @ hd x D)
    attn = 2 * N * N * hd  # Q K^T (N x hd @ hd x N) and A V (N x N @ N x hd)
    work = Work(
        params=3 * hd * D + (3 * hd if qkv_bias else 0) + D * hd,
        fwd_flop=FLOP_PER_MAC * (linear + attn),
        ig_flop=FLOP_PER_MAC * (linear + 2 * attn),  # dQ, dK and dA, dV: two products per matmul
        wg_flop=FLOP_PER_MAC * linear,
        # qkv: read x, write q,k,v; scores: read q,k, write N x N; softmax: read, write N x N;
        # A V: read A and v, write out; proj: read out, write N x D.
        fwd_act_bytes=(2 * N * D + 8 * N * hd + 4 * N * N) * d,
        ig_act_bytes=(2 * N * D + 8 * N * hd + 4 * N * N) * d,
        wg_act_bytes=(2 * N * D + 4 * N * hd) * d,  # (x, dqkv) for qkv; (out, dy) for proj
        # q, k, v, attention probabilities, head output; under autocast the probabilities twice: softmax's
        # fp32 output (saved for its backward) and its 16-bit copy (for A V's)
        saved_bytes=4 * N * hd * d + N * N * (4 + d if spec.autocast else d),
    )
    if not spec.lora_rank:
        return work
    T = set(spec.lora_targets)
    qkv, proj = bool(T & {"q", "k", "v"}), "proj" in T
    products = [(qkv, N * D * 3 * hd, (N * D + 3 * N * hd) * d), (proj, N * hd * D, (N * hd + N * D) * d)]
    return lora_linear(spec, work, products, [hd] * len(T & {"q", "k", "v", "proj"}))


def mlp_work(spec, m: int) -> Work:
    """An MLP slice of ``m`` hidden units: fc1 rows with their bias, GELU, fc2 columns.

    The fc2 bias belongs to the whole block and is counted in ``block_shared``.
    """
    if m == 0:
        return Work()
    N, D, d = spec.tokens, spec.dim, spec.dtype_bytes
    macs = 2 * N * D * m  # fc1 (N x D @ D x m) + fc2 (N x m @ m x D)
    work = Work(
        params=2 * D * m + m,
        fwd_flop=FLOP_PER_MAC * macs,
        ig_flop=FLOP_PER_MAC * macs,
        wg_flop=FLOP_PER_MAC * macs,
        fwd_act_bytes=(2 * N * D + 4 * N * m) * d,  # fc1: read x, write h; GELU: read, write; fc2: read, write
        ig_act_bytes=(2 * N * D + 4 * N * m) * d,
        wg_act_bytes=(2 * N * D + 2 * N * m) * d,
        saved_bytes=2 * N * m * d,  # fc1 output and GELU output
    )
    if not spec.lora_rank:
        return work
    if not spec.split_mlp:  # the whole MLP on the coordinator: frozen under LoRA
        return frozen(work)
    T = set(spec.lora_targets)
    products = [("fc1" in T, N * D * m, (N * D + N * m) * d), ("fc2" in T, N * m * D, (N * m + N * D) * d)]
    return lora_linear(spec, work, products, [m] * len(T & {"fc1", "fc2"}))


def frozen(work: Work) -> Work:
    """``work`` with every parameter frozen (LoRA's base outside the adapters): no weight gradient."""
    return dataclasses.replace(work, frozen_params=work.params, wg_flop=0.0, wg_act_bytes=0.0)


def lora_linear(spec, work: Work, linears: list[tuple[bool, int, float]], rows: list[int]) -> Work:
    """``work`` of a subnet half under LoRA, as the runtime computes it (``runtime.shard``: the adapted
    weight W0 + (alpha / r) B A is merged before each product, Hu et al., ICLR 2022, eq. 3).

    ``linears``: per weight-gradient product of the half (qkv, proj; fc1, fc2), whether an adapter reaches
    it, its multiply-adds and its bytes per sample. The merged weight's gradient is one product of the
    forward's size wherever an adapter is (the adapters' gradients, dB = dW A^T and dA = B^T dW, come from
    it), none where the weight is frozen; the input gradient and the forward are unchanged. ``rows``:
    the output rows of each adapted weight (hd for q, k, v, proj; m for fc1, fc2): its A (r x D) and B
    (rows x r) are the half's only trained parameters.

    Not modelled: the merge and the adapters' own products (r x D x rows per micro-batch, well under 1%
    of the half's FLOP at r << N x b), and the merged weight's copy in memory."""
    r, D = spec.lora_rank, spec.dim
    adapters = sum(r * (D + n) for n in rows)
    wg_flop = sum(FLOP_PER_MAC * macs for adapted, macs, _ in linears if adapted)
    wg_bytes = sum(nbytes for adapted, _, nbytes in linears if adapted)
    return dataclasses.replace(work, params=work.params + adapters, frozen_params=work.params, wg_flop=wg_flop,
                               wg_act_bytes=wg_bytes)


__all__ = ["LORA_TARGETS", "Work", "attention_work", "frozen", "lora_linear", "mlp_work"]
