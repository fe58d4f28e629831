"""Shared fixtures and hypothesis strategies. Tests never touch a model hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hypothesis import HealthCheck, settings, strategies as st  # noqa: E402

from d2ft import Cluster, DeviceSpec, LinkSpec, ModelSpec, Op, Plan  # noqa: E402

settings.register_profile("d2ft", deadline=None, derandomize=True, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("d2ft")

OPS = list(Op)


def tiny_model(depth: int = 2, heads: int = 2, split_mlp: bool = True, **kw) -> ModelSpec:
    """A ViT small enough that hand arithmetic works: D = 4 heads, N = 5 tokens by default."""
    args = dict(dim=2 * heads, depth=depth, heads=heads, mlp_ratio=2, img_size=2, patch=1, in_chans=1, num_classes=3)
    args.update(kw)
    return ModelSpec.vit(split_mlp=split_mlp, **args)


def simple_device(name: str = "dev", flops: float = 1e9, bw: float = 1e18, overhead: float = 0.0) -> DeviceSpec:
    return DeviceSpec(name, flops, flops, bw, 1e12, efficiency=1.0, task_overhead_s=overhead)


def star(n: int, flops: float = 1e9, bw: float = 1e18, link_bw: float = 1e9, latency: float = 0.0) -> Cluster:
    devs = [(f"d{i}", simple_device(f"dev{i}", flops, bw)) for i in range(n)]
    return Cluster.star(devs, LinkSpec("l", link_bw, latency))


@st.composite
def plans(draw, model: ModelSpec | None = None, cluster: Cluster | None = None, max_mb: int = 3):
    """Random valid plans; for ``model``/``cluster`` when given, else of random shape."""
    depth = model.depth if model else draw(st.integers(1, 4))
    heads = model.heads if model else draw(st.integers(1, 4))
    devices = cluster.device_names if cluster else tuple(f"dev{i}" for i in range(draw(st.integers(1, 4))))
    placement = draw(st.lists(st.lists(st.integers(0, len(devices) - 1), min_size=heads, max_size=heads),
                              min_size=depth, max_size=depth))
    grid = st.lists(st.lists(st.sampled_from(OPS), min_size=heads, max_size=heads), min_size=depth, max_size=depth)
    ops = draw(st.lists(grid, min_size=1, max_size=max_mb))
    b = draw(st.integers(1, 16))
    meta = draw(st.dictionaries(st.sampled_from(["strategy", "solver", "keep"]),
                                st.one_of(st.text(max_size=5), st.floats(0, 1), st.integers(0, 9)), max_size=2))
    return Plan(devices, placement, ops, b, meta)
