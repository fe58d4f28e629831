"""ModelSpec: a vision transformer as L blocks x H subnets, with its work per sample.

Subnet (l, h) is head h of block l (its rows of the fused ``qkv`` Linear, its attention
and its columns of ``proj``) plus, by default, the h-th 1/H slice of the block's MLP
(rows of ``fc1``, columns of ``fc2``); method.md, "Subnets". Everything else is shared
and runs on the coordinator: per block the norms, the ``proj`` and ``fc2`` biases and
layer scales (``block_shared``); the stem (``embed``) and the final norm and classifier
(``classifier``).

Counting conventions (one place for all of them):
- FLOP counts matrix products only, 1 multiply-add = 2 FLOP. That is the convention
  behind the published 17.56 G multiply-adds of ViT-B/16 at 224 px (it counts the two
  attention matmuls, Q K^T and A V). Elementwise work (LayerNorm, softmax, GELU, bias and
  residual adds) is memory-bound and is counted in bytes moved, not in FLOP.
- Backward = input-gradient + weight-gradient, kept apart. For a Linear layer
  Y = X W each is one more product of the forward's size (dX = dY W^T, dW = X^T dY);
  the attention matmuls have no weights and two input gradients each (dQ, dK; dA, dV).
  So backward = 2 x forward overall (method.md, "FLOP counting").
- Bytes moved (activations): each operator reads its inputs and writes its outputs once,
  unfused, in the model's dtype. Parameter bytes are separate (``Work.params``), because
  weights are read once per micro-batch, not per sample.

Not modelled: fused kernels (flash attention never writes the N x N scores), dropout,
the softmax and GELU FLOP, the loss, global-average-pooling heads, relative position
biases and register tokens.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .errors import raise_problems
from .serial import fields_dict, from_fields
from .units import FLOP_PER_MAC
from .zoo import timm_config


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

    def __add__(self, other: "Work") -> "Work":
        return Work(*(getattr(self, f) + getattr(other, f) for f in _WORK_FIELDS))

    def __mul__(self, k: int) -> "Work":
        return Work(*(getattr(self, f) * k for f in _WORK_FIELDS))

    @property
    def bwd_flop(self) -> float:
        """Backward FLOP per sample (input- plus weight-gradient)."""
        return self.ig_flop + self.wg_flop

    @property
    def train_flop(self) -> float:
        """Forward plus backward FLOP per sample."""
        return self.fwd_flop + self.ig_flop + self.wg_flop


_WORK_FIELDS = tuple(f.name for f in dataclasses.fields(Work))


@dataclass(frozen=True)
class ModelSpec:
    """A ViT-style transformer, as numbers. Build with ``vit()`` or ``from_timm()``.

    Attributes mirror timm's ``VisionTransformer`` arguments; every count is per sample.
    """

    dim: int
    """Embedding width D."""
    depth: int
    """Number of transformer blocks L."""
    heads: int
    """Attention heads per block H (= subnets per block)."""
    mlp_hidden: int
    """MLP hidden width M (4 D for standard ViTs)."""
    img_size: int = 224
    """Input image side (px); images are square."""
    patch: int = 16
    """Patch side (px)."""
    in_chans: int = 3
    """Input channels."""
    num_classes: int = 1000
    """Classifier outputs; 0 means no classifier head."""
    dtype_bytes: int = 4
    """Bytes per parameter and activation element (4 = fp32, 2 = bf16)."""
    prefix_tokens: int = 1
    """Tokens before the patches: 1 (class token), 2 (class + distillation token)."""
    class_heads: int = 1
    """Classifier heads: 1, or 2 for distilled DeiT (head and head_dist)."""
    pos_embed_prefix: bool = True
    """Whether the position embedding also covers the prefix tokens (timm: not no_embed_class)."""
    layer_scale: bool = False
    """Per-block LayerScale gammas (DeiT III)."""
    qkv_bias: bool = True
    """Bias on the fused qkv projection."""
    split_mlp: bool = True
    """Subnets include a 1/H slice of the MLP; False = heads only, MLP on the coordinator."""
    message_dtype_bytes: int | None = None
    """Bytes per element of the activations and gradients sent between devices: 2 for bf16 or fp16
    messages (``d2ft run --message-dtype``); None: ``dtype_bytes``."""
    optimizer: str = "adamw"
    """The update the cost model prices: "adamw" (what d2ft trains with: m and v, fp32) or "sgd"
    (with momentum: one fp32 buffer), ``d2ft.cost.OPTIMIZER_STATE_BYTES``."""
    name: str = "vit"
    """A label (the timm name when built from one)."""

    def __post_init__(self) -> None:
        problems = []
        for f in ("dim", "depth", "heads", "mlp_hidden", "img_size", "patch", "in_chans", "dtype_bytes"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                problems.append(f"{f} must be a positive integer, got {v!r}")
        for f in ("num_classes", "prefix_tokens", "class_heads"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                problems.append(f"{f} must be a non-negative integer, got {v!r}")
        if not problems:
            if self.dim % self.heads:
                problems.append(f"dim {self.dim} is not divisible by heads {self.heads}")
            if self.split_mlp and self.mlp_hidden % self.heads:
                problems.append(
                    f"mlp_hidden {self.mlp_hidden} is not divisible by heads {self.heads}; "
                    "use split_mlp=False (heads-only subnets) or a divisible width"
                )
            if self.img_size % self.patch:
                problems.append(f"img_size {self.img_size} is not a multiple of patch {self.patch}")
        if self.message_dtype_bytes not in (None, 2, 4):
            problems.append(f"message_dtype_bytes must be 2, 4 or None, got {self.message_dtype_bytes!r}")
        if self.optimizer not in ("adamw", "sgd"):
            problems.append(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        raise_problems(f"ModelSpec {self.name!r}", problems)

    # ---- builders -----------------------------------------------------------------
    @classmethod
    def vit(
        cls,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        img_size: int = 224,
        patch: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        dtype_bytes: int = 4,
        **kwargs,
    ) -> "ModelSpec":
        """A standard ViT from its hyper-parameters (timm's ``mlp_hidden = int(dim * mlp_ratio)``).

        >>> ModelSpec.vit(dim=768, depth=12, heads=12).params
        86567656
        """
        return cls(
            dim=dim, depth=depth, heads=heads, mlp_hidden=int(dim * mlp_ratio), img_size=img_size,
            patch=patch, in_chans=in_chans, num_classes=num_classes, dtype_bytes=dtype_bytes, **kwargs,
        )

    @classmethod
    def from_timm(cls, name: str, **overrides) -> "ModelSpec":
        """The spec of a timm ViT/DeiT by name, from a table (torch is not imported).

        A pretrained tag (``vit_base_patch16_224.augreg_in21k``) is accepted and ignored;
        keyword overrides (``num_classes=10``, ``split_mlp=False``) replace table values.
        """
        return cls(**{**timm_config(name), **overrides})

    def to_dict(self) -> dict:
        return fields_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        return from_fields(cls, data, "model spec")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(json.loads(text))

    # ---- shape --------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def patches(self) -> int:
        return (self.img_size // self.patch) ** 2

    @property
    def tokens(self) -> int:
        """Sequence length N = patches + prefix tokens."""
        return self.patches + self.prefix_tokens

    @property
    def mlp_slice(self) -> int:
        """MLP hidden units per subnet (0 in heads-only mode)."""
        return self.mlp_hidden // self.heads if self.split_mlp else 0

    @property
    def num_subnets(self) -> int:
        return self.depth * self.heads

    def activation_bytes(self, micro_batch_size: int) -> int:
        """One block half's activations in memory, b x N x D x dtype bytes."""
        return micro_batch_size * self.tokens * self.dim * self.dtype_bytes

    def message_size(self, micro_batch_size: int) -> int:
        """The execution model's message size a = b x N x D x bytes per element on the wire (design.md):
        the dtype's, or ``message_dtype_bytes``."""
        return micro_batch_size * self.tokens * self.dim * (self.message_dtype_bytes or self.dtype_bytes)

    @property
    def messages_per_block(self) -> int:
        """Halves of a block that a worker serves: attention, plus the MLP when it is split."""
        return 2 if self.split_mlp else 1

    # ---- work per sample ----------------------------------------------------------
    @property
    def subnet_attn(self) -> Work:
        """The attention half of one subnet: one head (all subnets of a model are equal)."""
        return _attention_work(self, self.head_dim, self.qkv_bias)

    @property
    def subnet_mlp(self) -> Work:
        """The MLP half of one subnet: a 1/H slice of the MLP (empty in heads-only mode)."""
        return _mlp_work(self, self.mlp_slice)

    @property
    def subnet(self) -> Work:
        """Work of one subnet: its attention head plus its MLP slice."""
        return self.subnet_attn + self.subnet_mlp

    @property
    def norm(self) -> Work:
        """One LayerNorm over the N x D tokens (each block has two, before each half)."""
        N, D, d = self.tokens, self.dim, self.dtype_bytes
        return Work(
            params=2 * D,  # weight and bias
            fwd_act_bytes=2 * N * D * d,  # read x, write norm(x)
            ig_act_bytes=2 * N * D * d,
            wg_act_bytes=2 * N * D * d,  # read x and the output gradient
            saved_bytes=N * D * d,  # its input
        )

    @property
    def residual(self) -> Work:
        """One half's residual update x + ls * (sum of contributions + bias), without the reduction."""
        N, D, d = self.tokens, self.dim, self.dtype_bytes
        ls = 1 if self.layer_scale else 0
        return Work(
            params=D + ls * D,  # the proj or fc2 bias, and the LayerScale gamma
            fwd_act_bytes=(3 + 2 * ls) * N * D * d,  # add reads two and writes one; scaling reads and writes one
            ig_act_bytes=(3 + 2 * ls) * N * D * d,
            wg_act_bytes=2 * ls * N * D * d,  # gamma's gradient reads the branch output and the grad
        )

    @property
    def block_shared(self) -> Work:
        """Per-block work outside the subnets: two norms and two residual updates.

        In heads-only mode this includes the whole MLP. Reductions of the workers'
        partial sums depend on the plan and are counted by the cost model.
        """
        return (self.norm + self.residual) * 2 + self.coordinator_mlp

    @property
    def coordinator_mlp(self) -> Work:
        """The whole MLP in heads-only mode (it stays on the coordinator); empty otherwise."""
        return Work() if self.split_mlp else _mlp_work(self, self.mlp_hidden)

    @property
    def embed(self) -> Work:
        """The stem: patch embedding (a strided conv), prefix tokens and position embedding."""
        N, Np, D, d = self.tokens, self.patches, self.dim, self.dtype_bytes
        k = self.in_chans * self.patch**2
        pos_tokens = N if self.pos_embed_prefix else Np
        macs = Np * k * D  # the conv is a (Np x k) @ (k x D) matmul
        pixels = self.in_chans * self.img_size**2
        return Work(
            params=k * D + D + self.prefix_tokens * D + pos_tokens * D,
            fwd_flop=FLOP_PER_MAC * macs,
            ig_flop=0.0,  # no gradient is needed with respect to the pixels
            wg_flop=FLOP_PER_MAC * macs,
            fwd_act_bytes=(pixels + Np * D + 3 * N * D) * d,  # conv, then concat + position add
            ig_act_bytes=2 * N * D * d,
            wg_act_bytes=(pixels + Np * D) * d,
            saved_bytes=pixels * d,
        )

    @property
    def classifier(self) -> Work:
        """Final norm and the classifier head(s) on the prefix token(s)."""
        N, D, K, d = self.tokens, self.dim, self.num_classes, self.dtype_bytes
        heads = self.class_heads if K else 0
        macs = heads * D * K  # each head maps one token (class or distillation) to K logits
        return Work(
            params=2 * D + heads * (D * K + K),
            fwd_flop=FLOP_PER_MAC * macs,
            ig_flop=FLOP_PER_MAC * macs,
            wg_flop=FLOP_PER_MAC * macs,
            fwd_act_bytes=(2 * N * D + heads * (D + K)) * d,
            ig_act_bytes=(2 * N * D + heads * (D + K)) * d,
            wg_act_bytes=(2 * N * D + heads * (D + K)) * d,
            saved_bytes=N * D * d,
        )

    @property
    def coordinator_work(self) -> Work:
        """All work outside the subnets: stem, every block's shared part and the classifier."""
        return self.embed + self.block_shared * self.depth + self.classifier

    @property
    def total(self) -> Work:
        """Work of the whole model."""
        return self.coordinator_work + self.subnet * self.num_subnets

    @property
    def params(self) -> int:
        """Parameter count; equals timm's ``sum(p.numel() for p in model.parameters())``."""
        return self.total.params

    @property
    def forward_macs(self) -> float:
        """Forward multiply-adds per sample (the figure papers quote as 'FLOPs')."""
        return self.total.fwd_flop / FLOP_PER_MAC


def _attention_work(spec: ModelSpec, hd: int, qkv_bias: bool) -> Work:
    """One head of width ``hd``: its qkv rows, Q K^T, softmax, A V and its proj columns."""
    N, D, d = spec.tokens, spec.dim, spec.dtype_bytes
    linear = N * D * 3 * hd + N * hd * D  # qkv slice (N x D @ D x 3hd) + proj slice (N x hd @ hd x D)
    attn = 2 * N * N * hd  # Q K^T (N x hd @ hd x N) and A V (N x N @ N x hd)
    return Work(
        params=3 * hd * D + (3 * hd if qkv_bias else 0) + D * hd,
        fwd_flop=FLOP_PER_MAC * (linear + attn),
        ig_flop=FLOP_PER_MAC * (linear + 2 * attn),  # dQ, dK and dA, dV: two products per matmul
        wg_flop=FLOP_PER_MAC * linear,
        # qkv: read x, write q,k,v; scores: read q,k, write N x N; softmax: read, write N x N;
        # A V: read A and v, write out; proj: read out, write N x D.
        fwd_act_bytes=(2 * N * D + 8 * N * hd + 4 * N * N) * d,
        ig_act_bytes=(2 * N * D + 8 * N * hd + 4 * N * N) * d,
        wg_act_bytes=(2 * N * D + 4 * N * hd) * d,  # (x, dqkv) for qkv; (out, dy) for proj
        saved_bytes=(4 * N * hd + N * N) * d,  # q, k, v, attention probabilities, head output
    )


def _mlp_work(spec: ModelSpec, m: int) -> Work:
    """An MLP slice of ``m`` hidden units: fc1 rows with their bias, GELU, fc2 columns.

    The fc2 bias belongs to the whole block and is counted in ``block_shared``.
    """
    if m == 0:
        return Work()
    N, D, d = spec.tokens, spec.dim, spec.dtype_bytes
    macs = 2 * N * D * m  # fc1 (N x D @ D x m) + fc2 (N x m @ m x D)
    return Work(
        params=2 * D * m + m,
        fwd_flop=FLOP_PER_MAC * macs,
        ig_flop=FLOP_PER_MAC * macs,
        wg_flop=FLOP_PER_MAC * macs,
        fwd_act_bytes=(2 * N * D + 4 * N * m) * d,  # fc1: read x, write h; GELU: read, write; fc2: read, write
        ig_act_bytes=(2 * N * D + 4 * N * m) * d,
        wg_act_bytes=(2 * N * D + 2 * N * m) * d,
        saved_bytes=2 * N * m * d,  # fc1 output and GELU output
    )
