"""ModelSpec from a live timm VisionTransformer, so a loaded model and its spec agree."""

from __future__ import annotations

from d2ft.errors import raise_problems
from d2ft.model import ModelSpec


def model_spec_from_timm(model, name: str | None = None, split_mlp: bool = True) -> ModelSpec:
    """The ModelSpec of a timm ``VisionTransformer`` (or ``VisionTransformerDistilled``) instance.

    Raises ValueError listing every feature of the model that the spec cannot describe
    (global-average pooling, register tokens, q/k norms, non-standard blocks, ...).
    """
    import torch.nn as nn

    problems = []
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks) or not hasattr(blocks[0], "attn") or not hasattr(blocks[0], "mlp"):
        raise ValueError(f"{type(model).__name__} is not a timm VisionTransformer with standard blocks")
    blk = blocks[0]
    if getattr(model, "global_pool", "token") != "token":
        problems.append(f"global_pool={model.global_pool!r}: only class-token pooling is modelled")
    if not isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity):
        problems.append("fc_norm is not modelled")
    if not isinstance(getattr(model, "norm_pre", nn.Identity()), nn.Identity):
        problems.append("norm_pre is not modelled")
    if getattr(model, "reg_token", None) is not None:
        problems.append("register tokens are not modelled")
    if not isinstance(getattr(blk.attn, "q_norm", nn.Identity()), nn.Identity):
        problems.append("q/k norms are not modelled")
    if not hasattr(blk.mlp, "fc1") or not hasattr(blk.mlp, "fc2"):
        problems.append(f"MLP {type(blk.mlp).__name__} is not the fc1/GELU/fc2 Mlp")
    raise_problems(f"timm model {name or type(model).__name__}", problems)

    param = next(model.parameters())
    img = model.patch_embed.img_size
    patch = model.patch_embed.patch_size
    return ModelSpec(
        dim=model.embed_dim,
        depth=len(blocks),
        heads=blk.attn.num_heads,
        mlp_hidden=blk.mlp.fc1.out_features,
        img_size=img[0] if isinstance(img, (tuple, list)) else img,
        patch=patch[0] if isinstance(patch, (tuple, list)) else patch,
        in_chans=model.patch_embed.proj.in_channels,
        num_classes=model.num_classes,
        dtype_bytes=param.element_size(),
        prefix_tokens=model.num_prefix_tokens,
        class_heads=2 if getattr(model, "head_dist", None) is not None and model.num_classes else 1,
        pos_embed_prefix=not getattr(model, "no_embed_class", False),
        layer_scale=not isinstance(getattr(blk, "ls1", nn.Identity()), nn.Identity),
        qkv_bias=blk.attn.qkv.bias is not None,
        split_mlp=split_mlp,
        name=name or getattr(model, "default_cfg", {}).get("architecture", "vit"),
    )


def job_spec(model, job) -> ModelSpec:
    """The ModelSpec of ``job``'s timm ``model`` as the job trains it: its optimizer, its LoRA adapters
    (``Job.lora``: rank and targets), and its messages' element size (``Job.message_dtype``) where that
    differs from the parameters'."""
    import dataclasses

    from .job import MESSAGE_DTYPES

    spec = model_spec_from_timm(model, name=job.model)
    wire = MESSAGE_DTYPES[job.message_dtype]
    lora = {"lora_rank": job.lora.rank, "lora_targets": tuple(job.lora.targets)} if job.lora else {}
    return dataclasses.replace(spec, optimizer=job.optimizer,
                               message_dtype_bytes=None if wire == spec.dtype_bytes else wire, **lora)
