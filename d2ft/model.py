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

LoRA (``lora_rank`` > 0) is priced as the runtime trains it (``d2ft.work.lora_linear``): the frozen
base gets no weight gradient and no optimizer state, the adapted weights' merged gradient and the
adapters do; the coordinator's parts are frozen but the classifier's head.

Not modelled: fused kernels (flash attention never writes the N x N scores), dropout,
the softmax and GELU FLOP, the loss, global-average-pooling heads, relative position
biases and register tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import raise_problems
from .serial import fields_dict, from_fields
from .units import FLOP_PER_MAC
from .work import LORA_TARGETS, Work, attention_work, frozen, mlp_work
from .zoo import timm_config


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
    autocast: bool = False
    """16 bits by autocast (PyTorch's automatic mixed precision; ``dtype_bytes`` 2): fp32 weights and
    gradients, each GEMM run in 16 bits on its inputs cast down, the residual stream, LayerNorm and
    softmax in fp32 (``d2ft.kernels`` prices the kernels and casts this adds on a GPU). False: every
    parameter and activation at ``dtype_bytes`` (a model cast to 16 bits, with fp32 master weights)."""
    optimizer: str = "adamw"
    """The update the cost model prices: "adamw" (what d2ft trains with: m and v, fp32) or "sgd"
    (with momentum: one fp32 buffer), ``d2ft.cost.OPTIMIZER_STATE_BYTES``."""
    lora_rank: int = 0
    """LoRA (``d2ft run --lora``): every subnet's ``lora_targets`` get rank-r adapters and only they
    and the classifier train, the rest frozen; 0: no LoRA, everything trains."""
    lora_targets: tuple[str, ...] = ("q", "v")
    """The subnet weights with adapters, of ``LORA_TARGETS`` (read only with ``lora_rank`` > 0)."""
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
        if not isinstance(self.autocast, bool) or (self.autocast and self.dtype_bytes != 2):
            problems.append(f"autocast needs dtype_bytes 2 (16-bit GEMMs; --dtype-bytes 2), got autocast={self.autocast!r} with "
                            f"dtype_bytes {self.dtype_bytes!r}")
        if self.optimizer not in ("adamw", "sgd"):
            problems.append(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if not isinstance(self.lora_rank, int) or isinstance(self.lora_rank, bool) or self.lora_rank < 0:
            problems.append(f"lora_rank must be a non-negative integer, got {self.lora_rank!r}")
        elif self.lora_rank:
            bad = [t for t in self.lora_targets
                   if t not in LORA_TARGETS or (t in ("fc1", "fc2") and not self.split_mlp)]
            if bad or not self.lora_targets:
                problems.append(f"lora_targets must be some of {', '.join(LORA_TARGETS)} (fc1 and fc2 only with "
                                f"split_mlp), got {', '.join(self.lora_targets) or 'none'}")
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
    def weight_bytes(self) -> int:
        """Bytes per stored weight and gradient element: 4 under autocast (fp32 weights), else ``dtype_bytes``."""
        return 4 if self.autocast else self.dtype_bytes

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
        return attention_work(self, self.head_dim, self.qkv_bias)

    @property
    def subnet_mlp(self) -> Work:
        """The MLP half of one subnet: a 1/H slice of the MLP (empty in heads-only mode)."""
        return mlp_work(self, self.mlp_slice)

    @property
    def subnet(self) -> Work:
        """Work of one subnet: its attention head plus its MLP slice."""
        return self.subnet_attn + self.subnet_mlp

    @property
    def norm(self) -> Work:
        """One LayerNorm over the N x D tokens (each block has two, before each half); frozen under LoRA."""
        N, D, d = self.tokens, self.dim, self.dtype_bytes
        return self._coordinator_part(Work(
            params=2 * D,  # weight and bias
            fwd_act_bytes=2 * N * D * d,  # read x, write norm(x)
            ig_act_bytes=2 * N * D * d,
            wg_act_bytes=2 * N * D * d,  # read x and the output gradient
            # its input; under autocast an fp32 input, and the 16-bit cast of its output that the next
            # product keeps for its weight gradient
            saved_bytes=N * D * (4 + d if self.autocast else d),
        ))

    @property
    def residual(self) -> Work:
        """One half's residual update x + ls * (sum of contributions + bias), without the reduction; frozen
        under LoRA."""
        N, D, d = self.tokens, self.dim, self.dtype_bytes
        ls = 1 if self.layer_scale else 0
        return self._coordinator_part(Work(
            params=D + ls * D,  # the proj or fc2 bias, and the LayerScale gamma
            fwd_act_bytes=(3 + 2 * ls) * N * D * d,  # add reads two and writes one; scaling reads and writes one
            ig_act_bytes=(3 + 2 * ls) * N * D * d,
            wg_act_bytes=2 * ls * N * D * d,  # gamma's gradient reads the branch output and the grad
        ))

    def _coordinator_part(self, work: Work) -> Work:
        """``work`` of a coordinator part as this spec trains it: frozen under LoRA (only the adapters and
        the classifier's head train there: ``runtime.train.apply_lora``)."""
        return frozen(work) if self.lora_rank else work

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
        return Work() if self.split_mlp else mlp_work(self, self.mlp_hidden)

    @property
    def embed(self) -> Work:
        """The stem: patch embedding (a strided conv), prefix tokens and position embedding; frozen under
        LoRA (then its backward does nothing: no gradient is needed with respect to the pixels)."""
        N, Np, D, d = self.tokens, self.patches, self.dim, self.dtype_bytes
        k = self.in_chans * self.patch**2
        pos_tokens = N if self.pos_embed_prefix else Np
        macs = Np * k * D  # the conv is a (Np x k) @ (k x D) matmul
        pixels = self.in_chans * self.img_size**2
        return self._coordinator_part(Work(
            params=k * D + D + self.prefix_tokens * D + pos_tokens * D,
            fwd_flop=FLOP_PER_MAC * macs,
            ig_flop=0.0,  # no gradient is needed with respect to the pixels
            wg_flop=FLOP_PER_MAC * macs,
            fwd_act_bytes=(pixels + Np * D + 3 * N * D) * d,  # conv, then concat + position add
            ig_act_bytes=2 * N * D * d,
            wg_act_bytes=(pixels + Np * D) * d,
            saved_bytes=pixels * d,
        ))

    @property
    def classifier(self) -> Work:
        """Final norm and the classifier head(s) on the prefix token(s); under LoRA the norm is frozen and
        the head(s) train."""
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
            saved_bytes=N * D * (4 if self.autocast else d),  # the final norm's input (fp32 under autocast)
            frozen_params=2 * D if self.lora_rank else 0,
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
