"""Cutting a timm VisionTransformer into subnet shards, per the plan's placement.

Subnet (l, h) of a timm ``Block`` is (method.md, "Subnets"): head h's rows of the fused
``attn.qkv`` Linear (its q, k and v slices, weight and bias), its columns of
``attn.proj``, and the h-th 1/H slice of the MLP: rows of ``mlp.fc1`` (weight, bias) and
the matching input columns of ``mlp.fc2``. A ``Subnet`` holds copies of those slices as
its own parameters,

    qkv_w (3, hd, D)   qkv_b (3, hd)   proj_w (hd, D)   fc1_w (m, D)   fc1_b (m,)   fc2_w (m, D)

so that a subnet with no gradient in a step has ``grad is None`` and the optimizer leaves
it (and its AdamW moments) untouched, as the cost model assumes. A ``BlockShard`` holds
the subnets one device owns in one block and runs any subset of them in one batched
product (their weights stacked head-major).

The rest of each block (norms, the proj and fc2 biases, layer scales) and the stem and
classifier stay with the coordinator, as timm's own modules. Nothing of timm's classes is
forked: the shards compute with the sliced weights the same products timm does.

LoRA (Hu et al., ICLR 2022, eq. 3: W = W0 + (alpha / r) B A, B initialised to zero): with
``Subnet.add_lora`` each targeted per-head weight matrix W0 (q, k, v: (hd, D); proj:
(hd, D); fc1, fc2: (m, D)) gets its own A (r, D) and B (rows, r); the base weights are
frozen and the subnet computes with the merged weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from d2ft.model import LORA_TARGETS

_QKV = {"q": 0, "k": 1, "v": 2}


class Subnet(nn.Module):
    """One attention head and its 1/H slice of the MLP, copied out of a timm Block."""

    def __init__(self, block: nn.Module, head: int, split_mlp: bool = True) -> None:
        super().__init__()
        attn, mlp = block.attn, block.mlp
        H, D = attn.num_heads, attn.qkv.in_features
        hd = D // H
        with torch.no_grad():
            w = attn.qkv.weight.detach().view(3, H, hd, D)  # rows: q | k | v, each head-major
            self.qkv_w = nn.Parameter(w[:, head].clone())
            has_bias = attn.qkv.bias is not None
            b = attn.qkv.bias.detach().view(3, H, hd)[:, head] if has_bias else torch.zeros(3, hd)
            self.qkv_b = nn.Parameter(b.clone(), requires_grad=has_bias)
            self.proj_w = nn.Parameter(attn.proj.weight.detach().view(D, H, hd)[:, head].t().clone())  # (hd, D)
            self.split_mlp = split_mlp
            if split_mlp:
                m = mlp.fc1.out_features // H
                self.fc1_w = nn.Parameter(mlp.fc1.weight.detach().view(H, m, D)[head].clone())
                self.fc1_b = nn.Parameter(mlp.fc1.bias.detach().view(H, m)[head].clone())
                self.fc2_w = nn.Parameter(mlp.fc2.weight.detach().view(D, H, m)[:, head].t().clone())  # (m, D)
        self.lora_a = nn.ParameterDict()
        self.lora_b = nn.ParameterDict()
        self.lora_scale = 0.0

    def base(self) -> dict[str, torch.Tensor]:
        """The subnet's own slices (no adapters), timm-layout per head."""
        out = {"qkv_w": self.qkv_w, "qkv_b": self.qkv_b, "proj_w": self.proj_w}
        if self.split_mlp:
            out.update(fc1_w=self.fc1_w, fc1_b=self.fc1_b, fc2_w=self.fc2_w)
        return out

    def add_lora(self, rank: int, alpha: float, targets, generator: torch.Generator | None = None) -> None:
        """Freezes the base slices and adds rank-``rank`` adapters on ``targets`` (B = 0, so nothing changes yet)."""
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        bad = [t for t in targets if t not in LORA_TARGETS or (t in ("fc1", "fc2") and not self.split_mlp)]
        if bad or not targets:
            raise ValueError(f"LoRA targets {list(targets)}: choose from {', '.join(LORA_TARGETS)}")
        for p in self.base().values():
            p.requires_grad_(False)
        for t in targets:
            rows, cols = self._target(t).shape
            a = torch.empty(rank, cols)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # as nn.Linear's weight
            self.lora_a[t] = nn.Parameter(a)
            self.lora_b[t] = nn.Parameter(torch.zeros(rows, rank))
        self.lora_scale = alpha / rank

    def _target(self, t: str) -> torch.Tensor:
        return self.qkv_w[_QKV[t]] if t in _QKV else getattr(self, f"{t}_w")

    def weights(self) -> dict[str, torch.Tensor]:
        """The weights the subnet computes with: base, plus the adapters' (alpha / r) B A where it has them."""
        w = self.base()
        if not self.lora_a:
            return w
        delta = {t: self.lora_scale * (self.lora_b[t] @ self.lora_a[t]) for t in self.lora_a}
        if any(t in _QKV for t in delta):
            zero = torch.zeros_like(self.qkv_w[0])
            w["qkv_w"] = self.qkv_w + torch.stack([delta.get(t, zero) for t in _QKV])
        for t in ("proj", "fc1", "fc2"):
            if t in delta:
                w[f"{t}_w"] = getattr(self, f"{t}_w") + delta[t]
        return w

    def trainable(self) -> list[nn.Parameter]:
        """The parameters a FULL op trains: the adapters in LoRA mode, else the slices."""
        return list(self.lora_a.values()) + list(self.lora_b.values()) if self.lora_a else \
            [p for p in self.base().values() if p.requires_grad]


    def scored(self) -> list[nn.Parameter]:
        """The parameters whose gradient scores the subnet (method.md, "Contribution scores", "LoRA").

        In LoRA mode the B adapters only: B starts at zero, so A's gradient (alpha / r) B^T dL/dW
        is zero until B has trained and grows with it, which would rank every untrained adapter
        below every trained one for the whole run. B's gradient (alpha / r) dL/dW A^T is as
        large before the first update as after it. Otherwise the trained slices."""
        return list(self.lora_b.values()) if self.lora_a else self.trainable()


class BlockShard(nn.Module):
    """The subnets of one block that live on one device (``heads``, sorted)."""

    def __init__(self, block: nn.Module, heads: list[int], split_mlp: bool = True) -> None:
        super().__init__()
        self.heads = sorted(heads)
        self.subnets = nn.ModuleDict({str(h): Subnet(block, h, split_mlp) for h in self.heads})
        self.scale = (block.attn.qkv.in_features // block.attn.num_heads) ** -0.5
        self.split_mlp = split_mlp
        self.act = block.mlp.act  # timm's GELU module (stateless)

    def subnet(self, h: int) -> Subnet:
        return self.subnets[str(h)]

    def _stack(self, heads: list[int], names: tuple[str, ...]) -> list[torch.Tensor]:
        ws = [self.subnet(h).weights() for h in heads]
        return [torch.stack([w[n] for w in ws]) for n in names]

    def attn(self, x: torch.Tensor, heads: list[int]) -> torch.Tensor:
        """Sum of ``heads``' attention outputs through their proj columns (no bias): (B, N, D).

        As timm computes a block, as two matrix products with the heads' rows side by side (for every
        head, the block's own ``qkv`` and ``proj``)."""
        w, b, proj = self._stack(heads, ("qkv_w", "qkv_b", "proj_w"))  # (h, 3, hd, D), (h, 3, hd), (h, hd, D)
        h, _, hd, D = w.shape
        B, N = x.shape[:2]
        qkv = F.linear(x, w.reshape(-1, D), b.reshape(-1)).view(B, N, h, 3, hd)
        qkv = qkv.permute(3, 0, 2, 1, 4)  # (3, B, h, N, hd)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)  # (B, h, N, hd)
        return out.transpose(1, 2).reshape(B, N, h * hd) @ proj.reshape(h * hd, D)

    def mlp(self, x: torch.Tensor, heads: list[int]) -> torch.Tensor:
        """Sum of ``heads``' MLP slices through their fc2 columns (no bias): (B, N, D), as timm's fc1 and fc2."""
        w1, b1, w2 = self._stack(heads, ("fc1_w", "fc1_b", "fc2_w"))  # (h, m, D), (h, m), (h, m, D)
        D = w1.shape[-1]
        return self.act(F.linear(x, w1.reshape(-1, D), b1.reshape(-1))) @ w2.reshape(-1, D)

    def merged(self) -> dict[int, dict[str, torch.Tensor]]:
        """Per head, the weights it computes with (LoRA merged in), detached: what an export holds."""
        return {h: {n: t.detach().clone() for n, t in self.subnet(h).weights().items()} for h in self.heads}


def assemble_block_weights(block: nn.Module, heads: dict[int, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """timm-layout qkv, proj and (split) MLP weights of ``block`` from per-head slices.

    ``heads`` maps every head index to its tensors as ``Subnet.base()`` names them (or
    ``BlockShard.merged()`` gives them); heads not in it keep ``block``'s values.
    """
    attn, mlp = block.attn, block.mlp
    H, D = attn.num_heads, attn.qkv.in_features
    hd = D // H
    qkv_w = attn.qkv.weight.detach().clone().view(3, H, hd, D)
    qkv_b = (attn.qkv.bias.detach().clone() if attn.qkv.bias is not None else torch.zeros(3 * D)).view(3, H, hd)
    proj_w = attn.proj.weight.detach().clone().view(D, H, hd)
    split = any("fc1_w" in t for t in heads.values())
    if split:
        M = mlp.fc1.out_features
        m = M // H
        fc1_w = mlp.fc1.weight.detach().clone().view(H, m, D)
        fc1_b = mlp.fc1.bias.detach().clone().view(H, m)
        fc2_w = mlp.fc2.weight.detach().clone().view(D, H, m)
    for h, t in heads.items():
        qkv_w[:, h] = t["qkv_w"].detach()
        qkv_b[:, h] = t["qkv_b"].detach()
        proj_w[:, h] = t["proj_w"].detach().t()
        if split:
            fc1_w[h] = t["fc1_w"].detach()
            fc1_b[h] = t["fc1_b"].detach()
            fc2_w[:, h] = t["fc2_w"].detach().t()
    out = {"attn.qkv.weight": qkv_w.reshape(3 * D, D), "attn.proj.weight": proj_w.reshape(D, D)}
    if attn.qkv.bias is not None:
        out["attn.qkv.bias"] = qkv_b.reshape(3 * D)
    if split:
        out.update({"mlp.fc1.weight": fc1_w.reshape(M, D), "mlp.fc1.bias": fc1_b.reshape(M),
                    "mlp.fc2.weight": fc2_w.reshape(D, M)})
    return out


def heads_from_state(state: dict[str, torch.Tensor], layer: int) -> dict[int, dict[str, torch.Tensor]]:
    """Per-head base slices of block ``layer`` in a rank's saved state dict (keys ``shards.L.subnets.H.*``,
    or ``peers.K.L.subnets.H.*`` for the devices an emulating coordinator plays)."""
    prefix = f"{layer}.subnets."
    out: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        owner, _, rest = key.partition(".")
        if owner == "peers":
            rest = rest.partition(".")[2]
        if owner in ("shards", "peers") and rest.startswith(prefix):
            head, name = rest[len(prefix):].split(".", 1)
            if "." not in name:  # skip the adapters (lora_a.q, ...)
                out.setdefault(int(head), {})[name] = value
    return out


def full_state_dict(template: nn.Module, plan, states: dict[int, dict], coordinator: int,
                    merged: dict[int, dict] | None = None) -> dict[str, torch.Tensor]:
    """A timm state dict rebuilt from every rank's saved state (``Coordinator`` / ``Worker``).

    ``template`` is a model of the same architecture (its values fill nothing that matters:
    every key is overwritten). ``merged``, if given, maps layer -> head -> tensors with
    LoRA merged in (``BlockShard.merged``) and takes precedence over the base slices.
    """
    coord = states[coordinator]
    out = {}
    for key in template.state_dict():
        parts = key.split(".")
        if parts[0] == "blocks" and parts[2] in ("attn", "mlp"):
            if key.endswith("attn.proj.bias"):
                out[key] = coord[f"model.blocks.{parts[1]}.proj_bias"]
            elif key.endswith("mlp.fc2.bias"):
                out[key] = coord[f"model.blocks.{parts[1]}.fc2_bias"]
            continue  # sliced weights: assembled below
        out[key] = coord[f"model.{key}"]
    for l in range(len(plan.placement)):
        heads = {}
        for state in states.values():
            heads.update(heads_from_state(state, l))
        if merged is not None:
            heads.update(merged.get(l, {}))
        for name, value in assemble_block_weights(template.blocks[l], heads).items():
            out[f"blocks.{l}.{name}"] = value
    return out
