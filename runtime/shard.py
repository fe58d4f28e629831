"""Cutting a timm VisionTransformer into subnet shards, per the plan's placement.

Subnet (l, h) of a timm ``Block`` is (method.md, "Subnets"): head h's rows of the fused
``attn.qkv`` Linear (its q, k and v slices, weight and bias), its columns of
``attn.proj``, and the h-th 1/H slice of the MLP: rows of ``mlp.fc1`` (weight, bias) and
the matching columns of ``mlp.fc2``. A ``BlockShard`` holds, as its own parameters, copies
of those slices for the heads one device owns in one block, stored head-major so that
running any subset of them is an index on the first dimension:

    qkv_w (h, 3, hd, D)   qkv_b (h, 3, hd)   proj_w (h, hd, D)
    fc1_w (h, m, D)       fc1_b (h, m)       fc2_w (h, m, D)

The rest of each block (norms, the proj and fc2 biases, layer scales) and the stem and
classifier stay with the coordinator, as timm's own modules. Nothing of timm's classes is
forked: the shards compute with the sliced weights the same products timm does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BlockShard(nn.Module):
    """The subnets of one block that live on one device (``heads``, sorted)."""

    def __init__(self, block: nn.Module, heads: list[int], split_mlp: bool = True) -> None:
        super().__init__()
        attn, mlp = block.attn, block.mlp
        H = attn.num_heads
        D = attn.qkv.in_features
        hd = D // H
        self.heads = sorted(heads)
        self.head_dim = hd
        self.scale = hd ** -0.5
        idx = torch.tensor(self.heads)
        with torch.no_grad():
            w = attn.qkv.weight.detach().view(3, H, hd, D)  # rows: q | k | v, each head-major
            self.qkv_w = nn.Parameter(w[:, idx].permute(1, 0, 2, 3).contiguous().clone())  # (h, 3, hd, D)
            b = attn.qkv.bias.detach().view(3, H, hd) if attn.qkv.bias is not None else torch.zeros(3, H, hd)
            self.qkv_b = nn.Parameter(b[:, idx].permute(1, 0, 2).contiguous().clone(),
                                      requires_grad=attn.qkv.bias is not None)  # (h, 3, hd)
            p = attn.proj.weight.detach().view(D, H, hd)  # columns, head-major
            self.proj_w = nn.Parameter(p[:, idx].permute(1, 2, 0).contiguous().clone())  # (h, hd, D)
            self.split_mlp = split_mlp
            if split_mlp:
                M = mlp.fc1.out_features
                m = M // H
                f1 = mlp.fc1.weight.detach().view(H, m, D)
                self.fc1_w = nn.Parameter(f1[idx].contiguous().clone())  # (h, m, D)
                self.fc1_b = nn.Parameter(mlp.fc1.bias.detach().view(H, m)[idx].contiguous().clone())  # (h, m)
                f2 = mlp.fc2.weight.detach().view(D, H, m)
                self.fc2_w = nn.Parameter(f2[:, idx].permute(1, 2, 0).contiguous().clone())  # (h, m, D)
        self.act = mlp.act  # timm's GELU module (stateless)

    def _rows(self, heads: list[int]) -> torch.Tensor:
        return torch.tensor([self.heads.index(h) for h in heads])

    def attn(self, x: torch.Tensor, heads: list[int]) -> torch.Tensor:
        """Sum of ``heads``' attention outputs through their proj columns (no bias): (B, N, D)."""
        r = self._rows(heads)
        w, b = self.qkv_w[r], self.qkv_b[r]  # (h, 3, hd, D), (h, 3, hd)
        qkv = torch.einsum("bnd,hcjd->cbhnj", x, w) + b.permute(1, 0, 2)[:, None, :, None, :]  # (3, B, h, N, hd)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)  # (B, h, N, hd)
        return torch.einsum("bhnj,hjd->bnd", out, self.proj_w[r])

    def mlp(self, x: torch.Tensor, heads: list[int]) -> torch.Tensor:
        """Sum of ``heads``' MLP slices through their fc2 columns (no bias): (B, N, D)."""
        r = self._rows(heads)
        h = torch.einsum("bnd,hmd->bhnm", x, self.fc1_w[r]) + self.fc1_b[r][None, :, None, :]  # (B, h, N, m)
        return torch.einsum("bhnm,hmd->bnd", self.act(h), self.fc2_w[r])

    def full_weights(self) -> dict[str, torch.Tensor]:
        """This shard's slices laid out as in timm's tensors (for checks and checkpoint export)."""
        return {"qkv_w": self.qkv_w, "qkv_b": self.qkv_b, "proj_w": self.proj_w,
                **({"fc1_w": self.fc1_w, "fc1_b": self.fc1_b, "fc2_w": self.fc2_w} if self.split_mlp else {})}


def assemble_block_weights(block: nn.Module, shards) -> dict[str, torch.Tensor]:
    """timm-layout qkv, proj and (split) MLP weights of ``block`` rebuilt from shards of its heads.

    ``shards``: BlockShards, or (heads, {"qkv_w": ..., ...}) pairs such as saved state dicts.
    """
    attn, mlp = block.attn, block.mlp
    H, D = attn.num_heads, attn.qkv.in_features
    hd = D // H
    parts = [(s.heads, s.full_weights()) if isinstance(s, BlockShard) else s for s in shards]
    split = bool(parts) and "fc1_w" in parts[0][1]
    qkv_w, qkv_b, proj_w = torch.empty(3, H, hd, D), torch.empty(3, H, hd), torch.empty(D, H, hd)
    if split:
        M = mlp.fc1.out_features
        m = M // H
        fc1_w, fc1_b, fc2_w = torch.empty(H, m, D), torch.empty(H, m), torch.empty(D, H, m)
    for heads, t in parts:
        idx = torch.tensor(sorted(heads))
        qkv_w[:, idx] = t["qkv_w"].detach().permute(1, 0, 2, 3)
        qkv_b[:, idx] = t["qkv_b"].detach().permute(1, 0, 2)
        proj_w[:, idx] = t["proj_w"].detach().permute(2, 0, 1)
        if split:
            fc1_w[idx] = t["fc1_w"].detach()
            fc1_b[idx] = t["fc1_b"].detach()
            fc2_w[:, idx] = t["fc2_w"].detach().permute(2, 0, 1)
    out = {"attn.qkv.weight": qkv_w.reshape(3 * D, D), "attn.qkv.bias": qkv_b.reshape(3 * D),
           "attn.proj.weight": proj_w.reshape(D, D)}
    if split:
        out.update({"mlp.fc1.weight": fc1_w.reshape(M, D), "mlp.fc1.bias": fc1_b.reshape(M),
                    "mlp.fc2.weight": fc2_w.reshape(D, M)})
    return out


def full_state_dict(template: nn.Module, plan, states: dict[int, dict], coordinator: int) -> dict[str, torch.Tensor]:
    """A timm state dict rebuilt from every rank's saved state (``Coordinator`` / ``Worker``).

    ``template`` is a model of the same architecture (its values are not used).
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
    for l, row in enumerate(plan.placement):
        shards = []
        for k in sorted(set(row)):
            prefix = f"shards.{l}."
            tensors = {n[len(prefix):]: v for n, v in states[k].items() if n.startswith(prefix)}
            shards.append(([h for h, d in enumerate(row) if d == k], tensors))
        for name, value in assemble_block_weights(template.blocks[l], shards).items():
            out[f"blocks.{l}.{name}"] = value
    return out
