"""A table of timm ViT and DeiT configurations, so specs need no torch.

Each entry mirrors the arguments timm's model registry passes to
``VisionTransformer`` for that name (timm 1.0, ``timm/models/vision_transformer.py``
and ``deit.py``): width, depth, heads, MLP width, image and patch size, and the
variant flags. ``tests/test_zoo.py`` builds every entry with timm on the meta device
and checks the parameter count, so the table cannot drift silently.

Not covered: timm ViTs with other block types (relative position, EVA, CLIP with
pre-norm, register tokens, global-average-pool heads).
"""

from __future__ import annotations

from .errors import unknown_name

# size -> (dim, depth, heads); MLP width is 4 x dim for all of them.
_SIZES = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "medium": (512, 12, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}

# timm names and their variant flags. vit_* : class token with position embedding over it;
# deit_*_distilled: class + distillation tokens and two heads; deit3_*: LayerScale and no
# position embedding on the class token. Two entries default to num_classes=0 in timm
# (their default weights are ImageNet-21k backbones without a head).
_ENTRIES: dict[str, dict] = {}


def _add(family: str, size: str, patch: int, img: int, **flags) -> None:
    name = f"{family}_{size}_patch{patch}_{img}"
    if flags.pop("distilled", False):
        name = f"{family}_{size}_distilled_patch{patch}_{img}"
    _ENTRIES[name] = dict(size=size, patch=patch, img_size=img, **flags)


for _size, _patch, _img in [
    ("tiny", 16, 224), ("tiny", 16, 384),
    ("small", 16, 224), ("small", 16, 384), ("small", 32, 224), ("small", 32, 384),
    ("base", 16, 224), ("base", 16, 384), ("base", 32, 224), ("base", 32, 384),
    ("large", 14, 224), ("large", 16, 224), ("large", 16, 384), ("large", 32, 384),
]:
    _add("vit", _size, _patch, _img)
_add("vit", "large", 32, 224, num_classes=0)
_add("vit", "huge", 14, 224, num_classes=0)

for _size, _img in [("tiny", 224), ("small", 224), ("base", 224), ("base", 384)]:
    _add("deit", _size, 16, _img)
    _add("deit", _size, 16, _img, distilled=True, prefix_tokens=2, class_heads=2)

for _size, _patch, _img in [
    ("small", 16, 224), ("small", 16, 384), ("medium", 16, 224), ("base", 16, 224),
    ("base", 16, 384), ("large", 16, 224), ("large", 16, 384), ("huge", 14, 224),
]:
    _add("deit3", _size, _patch, _img, layer_scale=True, pos_embed_prefix=False)


def timm_names() -> list[str]:
    """Every timm model name the table knows, sorted."""
    return sorted(_ENTRIES)


def timm_config(name: str) -> dict:
    """The ``ModelSpec`` fields of a timm name; a ``.tag`` suffix is ignored (``ModelSpec.from_timm`` builds it).

    >>> timm_config("vit_small_patch16_224.augreg_in21k_ft_in1k")["heads"]
    6
    """
    arch = name.split(".", 1)[0]
    if arch not in _ENTRIES:
        raise unknown_name("timm model", arch, _ENTRIES)
    entry = dict(_ENTRIES[arch])
    dim, depth, heads = _SIZES[entry.pop("size")]
    return dict(dim=dim, depth=depth, heads=heads, mlp_hidden=4 * dim, name=arch, **entry)
