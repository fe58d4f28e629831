"""Placement planner: counts balance speed and memory, layouts are valid, solvers agree."""

import pytest

from d2ft import ModelSpec
from d2ft.catalogue import cluster_preset, device, link
from d2ft.cluster import Cluster
from d2ft.placement import plan_counts, plan_placement


def test_faster_devices_get_more_subnets():
    model = ModelSpec.from_timm("vit_base_patch16_224")
    counts = plan_counts(model, cluster_preset("emulated-1124"), micro_batches=4, micro_batch_size=8)
    assert sum(counts) == model.num_subnets
    assert counts[1] > counts[2] > counts[3] > 0  # 1x > 2x > 4x slow workers


def test_mip_and_greedy_counts_balance_alike():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("mixed-4")
    mip = plan_counts(model, cluster, 2, 8, solver="mip")
    greedy = plan_counts(model, cluster, 2, 8, solver="greedy")
    assert sum(mip) == sum(greedy) == model.num_subnets
    assert abs(max(mip) - max(greedy)) <= 2


def test_width_layout_spreads_each_device_over_blocks():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("lan-4x3090")
    placement = plan_placement(model, cluster, micro_batches=2, micro_batch_size=8)
    assert len(placement) == model.depth and all(len(row) == model.heads for row in placement)
    for k in range(1, 4):
        assert sum(1 for row in placement if k in row) >= model.depth - 1


def test_depth_layout_gives_whole_consecutive_blocks():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("lan-4x3090")
    placement = plan_placement(model, cluster, mode="depth", micro_batches=2, micro_batch_size=8)
    owners = [row[0] for row in placement]
    assert all(len(set(row)) == 1 for row in placement)
    assert owners == sorted(owners)


def test_memory_limits_are_respected_and_explained():
    model = ModelSpec.from_timm("vit_huge_patch14_224")
    tiny = Cluster.star([(f"n{i}", device("jetson-nano")) for i in range(2)], link("1gbe"))
    with pytest.raises(ValueError, match="do not fit in the cluster's memory"):
        plan_counts(model, tiny, micro_batch_size=8)
    with pytest.raises(ValueError, match="unknown mode 'diagonal'"):
        plan_placement(model, tiny, mode="diagonal")
