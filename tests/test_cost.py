"""The analytical cost model: hand-computed cases and invariants over random plans."""

import dataclasses

import pytest
from hypothesis import given, strategies as st

from d2ft import CostModel, ModelSpec, Op, Plan
from d2ft.cost import optimizer_bytes_per_param
from tests.conftest import plans, star, tiny_model

MODEL = tiny_model(depth=2, heads=3)
CLUSTER = star(3, flops=1e9, bw=1e9)


def test_single_device_all_full_by_hand():
    """One compute-bound device (1 GFLOP/s, efficiency 1, no overhead), tiny ViT, one sample.

    FLOP: 2 subnets x (840 fwd + 1040 ig + 640 wg) = 5040; stem 32 fwd + 0 ig + 32 wg = 64;
    classifier 3 x 24 = 72. Total 5176 FLOP -> 5.176 us. No messages: all on one device.
    """
    model, cluster = tiny_model(depth=1, heads=2), star(1, flops=1e9, bw=1e18)
    cost = CostModel(model, cluster).step(Plan.uniform(model, cluster, Op.FULL))
    assert cost.compute_flop == 5176
    assert cost.devices[0].compute_s == pytest.approx(5176 / 1e9 + _optimizer_s(model, cluster, model.params))
    assert cost.comm_bytes == 0 and cost.comm_saving == 0


def _optimizer_s(model, cluster, params):
    return params * optimizer_bytes_per_param(model.dtype_bytes) / cluster.device(0).mem_bandwidth


@pytest.mark.parametrize("op, factor", [(Op.FULL, 8), (Op.FORWARD_ONLY, 4), (Op.SKIP, 0)])
@pytest.mark.parametrize("split_mlp", [True, False])
def test_traffic_per_block_by_hand(op, factor, split_mlp):
    """All subnets on one worker; a = b N D dtype = 2 x 5 x 4 x 4 = 160 B. Per block and micro-batch
    the worker moves 8a (FULL), 4a (FORWARD_ONLY), 0 (SKIP); half that in heads-only mode."""
    model, cluster = tiny_model(depth=2, heads=2, split_mlp=split_mlp), star(2)
    assert model.activation_bytes(2) == 160
    plan = Plan(cluster.device_names, [[1, 1], [1, 1]], [[[op] * 2] * 2] * 3, micro_batch_size=2)
    cost = CostModel(model, cluster).step(plan)
    expected = factor * 160 * 2 * 3 // (1 if split_mlp else 2)  # x 2 blocks x 3 micro-batches
    assert cost.comm_bytes == expected
    assert cost.devices[1].sent_bytes == cost.devices[1].recv_bytes == expected // 2
    assert cost.devices[0].sent_bytes == expected // 2


def test_traffic_follows_the_most_active_subnet():
    model, cluster = tiny_model(depth=1, heads=3), star(2)
    cm = CostModel(model, cluster)
    mixed = Plan(cluster.device_names, [[1, 1, 1]], [[["F", "O", "S"]]], micro_batch_size=1)
    full = mixed.with_ops([[["F", "F", "F"]]])
    assert cm.step(mixed).comm_bytes == cm.step(full).comm_bytes == 8 * model.activation_bytes(1)


def test_subnets_on_the_coordinator_send_nothing():
    model, cluster = tiny_model(), star(2)
    plan = Plan.uniform(model, cluster, Op.FULL, placement=[[0] * model.heads] * model.depth)
    assert CostModel(model, cluster).step(plan).comm_bytes == 0


@given(plans(MODEL, CLUSTER))
def test_all_skip_has_no_subnet_work_or_traffic(plan):
    cm = CostModel(MODEL, CLUSTER)
    skip = plan.with_ops([[[Op.SKIP] * MODEL.heads] * MODEL.depth] * plan.micro_batches)
    tasks, msgs = cm.tasks_and_messages(skip)
    assert not msgs
    assert not [t for t in tasks if t.part in ("attn", "mlp")]
    cost = cm.step(skip)
    assert cost.compute_flop == cm.step(Plan.uniform(MODEL, CLUSTER, Op.SKIP, plan.micro_batches,
                                                     plan.micro_batch_size)).compute_flop
    assert cost.comm_saving == (1.0 if cost.full_comm_bytes else 0.0)


@given(plans(MODEL, CLUSTER), st.data())
def test_less_work_never_costs_more(plan, data):
    """Downgrading any item (FULL -> FORWARD_ONLY -> SKIP) never raises any device's cost."""
    m = data.draw(st.integers(0, plan.micro_batches - 1))
    l, h = data.draw(st.integers(0, MODEL.depth - 1)), data.draw(st.integers(0, MODEL.heads - 1))
    old = plan.ops[m][l][h]
    if old is Op.SKIP:
        return
    lower = Op.SKIP if old is Op.FORWARD_ONLY else data.draw(st.sampled_from([Op.FORWARD_ONLY, Op.SKIP]))
    ops = [[list(row) for row in grid] for grid in plan.ops]
    ops[m][l][h] = lower
    cm = CostModel(MODEL, CLUSTER)
    before, after = cm.step(plan), cm.step(plan.with_ops(ops))
    for a, b in zip(after.devices, before.devices):
        assert a.compute_s <= b.compute_s + 1e-15
        assert a.flop <= b.flop and a.mem_bytes <= b.mem_bytes
        assert a.sent_bytes <= b.sent_bytes and a.recv_bytes <= b.recv_bytes
        assert a.peak_memory_bytes <= b.peak_memory_bytes
    assert after.compute_flop < before.compute_flop


@given(st.integers(0, 2), st.integers(1, 64), st.sampled_from([True, False]))
def test_subnet_time_is_ordered(device, b, split):
    model = dataclasses.replace(MODEL, split_mlp=split)
    cm = CostModel(model, CLUSTER)
    assert cm.subnet_time(device, Op.FULL, b) > cm.subnet_time(device, Op.FORWARD_ONLY, b) > 0
    assert cm.subnet_time(device, Op.SKIP, b) == 0


@given(plans(MODEL, CLUSTER, max_mb=2), st.integers(2, 5))
def test_flop_and_bytes_scale_linearly_with_micro_batch_size(plan, k):
    cm = CostModel(MODEL, CLUSTER)
    one = cm.step(dataclasses.replace(plan, micro_batch_size=1))
    big = cm.step(dataclasses.replace(plan, micro_batch_size=k))
    assert big.compute_flop == pytest.approx(k * one.compute_flop, rel=1e-12)
    assert big.comm_bytes == k * one.comm_bytes
    # Memory traffic is affine: weights once per micro-batch, activations per sample.
    mem = [sum(d.mem_bytes for d in cm.step(dataclasses.replace(plan, micro_batch_size=b)).devices) for b in (1, 2, 3)]
    assert mem[2] - mem[1] == pytest.approx(mem[1] - mem[0], rel=1e-9)


@given(plans(MODEL, CLUSTER))
def test_compute_saving_matches_the_op_mix_formula(plan):
    """All subnets are equal, backward = 2 x forward: FORWARD_ONLY saves 2/3 of an item, SKIP all of it."""
    cost = CostModel(MODEL, CLUSTER).step(plan)
    counts, n = plan.summary(), plan.micro_batches * MODEL.num_subnets
    subnet_share = n * MODEL.subnet.train_flop / (n * MODEL.subnet.train_flop + plan.micro_batches *
                                                 (MODEL.coordinator_work.train_flop))
    expected = (2 / 3 * counts["O"] + counts["S"]) / n * subnet_share
    assert cost.compute_saving == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_peak_memory_shrinks_with_sharding():
    model = tiny_model(depth=4, heads=4)
    one, four = star(1), star(5)
    alone = CostModel(model, one).step(Plan.uniform(model, one, Op.FULL))
    spread = CostModel(model, four).step(Plan.uniform(model, four, Op.FULL))
    assert max(d.peak_memory_bytes for d in spread.devices[1:]) < alone.devices[0].peak_memory_bytes / 3


def test_plan_for_another_model_is_rejected():
    other = tiny_model(depth=3, heads=3)
    plan = Plan.uniform(other, CLUSTER, Op.FULL)
    with pytest.raises(ValueError, match="plan it for this model"):
        CostModel(MODEL, CLUSTER).step(plan)


def test_memory_estimate_by_dtype(capsys):
    """d2ft cost gives each device's parameters, gradients, optimizer state and activations for fp32,
    bf16 and fp16: 16 B of state per parameter either way (fp32: 4 + 4 + 8; 16-bit mixed precision:
    2 + 2 + 12, ZeRO's accounting), and 16-bit activations half of fp32's."""
    import json

    from d2ft.app.cli import main

    assert main(["cost", "--model", "vit_base_patch16_224", "--cluster", "lan-4x3090", "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory_bytes"]
    assert set(memory) == {"fp32", "bf16", "fp16"} and memory["bf16"] == memory["fp16"]
    model = ModelSpec.from_timm("vit_base_patch16_224")
    held = sum(m["params"] for m in memory["fp32"]) / 4
    assert held == model.params  # every parameter is on exactly one device
    for fp32, bf16 in zip(memory["fp32"], memory["bf16"]):
        n = fp32["params"] / 4
        assert (fp32["grads"], fp32["optimizer"]) == (4 * n, 8 * n)
        assert (bf16["params"], bf16["grads"], bf16["optimizer"]) == (2 * n, 2 * n, 12 * n)
        assert bf16["activations"] == fp32["activations"] / 2
    assert main(["cost", "--model", "vit_base_patch16_224", "--cluster", "lan-4x3090"]) == 0
    assert "node1      bf16" in capsys.readouterr().out


def test_inference_prices_the_forward_pass_only(capsys):
    """An inference step: forward tasks only (no backward, no optimizer), 2 FLOP per multiply-add of the
    model's forward pass per image (FULL and FORWARD_ONLY alike), memory without gradients or moments."""
    import json

    from d2ft.app.cli import main
    from d2ft.catalogue import device
    from d2ft.cluster import Cluster

    model = ModelSpec.from_timm("vit_small_patch16_224")
    one = Cluster(devices=(("g", device("rtx-4090")),), links=(), coordinator="g")
    cost = CostModel(model, one)
    for op in (Op.FULL, Op.FORWARD_ONLY):
        plan = Plan.uniform(model, one, op, 2, 16)
        tasks, _ = cost.tasks_and_messages(plan, inference=True)
        assert {t.phase for t in tasks} == {"fwd"}
        step = cost.step(plan, inference=True)
        assert step.compute_flop == pytest.approx(2 * model.forward_macs * 32, rel=1e-12)
        assert step.devices[0].compute_s < cost.step(plan).devices[0].compute_s  # training costs more
        memory = cost.memory_breakdown(plan, inference=True)[0]
        assert memory["grads"] == memory["optimizer"] == 0 and memory["params"] == 4 * model.params
    skipped = cost.step(Plan.uniform(model, one, Op.SKIP, 2, 16), inference=True)
    assert skipped.compute_saving > 0.9  # only the stem, norms and classifier run
    assert main(["cost", "--model", "vit_small_patch16_224", "--cluster", "lan-4x3090", "--inference", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["inference"] and record["images_per_s"] > 0 and record["compute_saving"] == 0


# ---- the kernel model (GPUs: d2ft.kernels) ----------------------------------------------------
def _gpu_cluster(sms: int, launch: float) -> "Cluster":
    from d2ft.catalogue import device, link
    from d2ft.cluster import Cluster

    spec = dataclasses.replace(device("a100-sxm4-80gb"), sm_count=sms, kernel_launch_s=launch)
    return Cluster.star([(f"g{i}", spec) for i in range(3)], link("nvlink3"))


VIT_S = ModelSpec.from_timm("vit_small_patch16_224", dtype_bytes=2)


def test_a_gpu_task_costs_the_sum_of_its_kernels():
    """Golden numbers: ViT-S/16 attention half, 3 heads, 8 images, on the A100 entry (108 SMs)."""
    from d2ft import kernels
    from d2ft.catalogue import device
    from d2ft.schedule import Compute

    cluster = _gpu_cluster(108, 19e-6)
    spec, cm = cluster.device(0), CostModel(VIT_S, cluster)
    task = cm.price(Compute(1, "fwd", "attn", 0, 0, VIT_S.subnet_attn, copies=3, samples=8, subnets=3))
    kerns = kernels.task_kernels(VIT_S, "attn", "fwd", 3, 8, True)
    # qkv (1576 x 576 x 384), fused attention (8 x 3 images x heads of 197 x 197 x 128), proj (1576 x 384 x 192)
    assert [(k.m, k.n, k.k, k.batch) for k in kerns] == [(1576, 576, 384, 1), (197, 197, 128, 24), (1576, 384, 192, 1)]
    assert task.time_s == pytest.approx(sum(kernels.kernel_time(spec, k, 2) for k in kerns), rel=1e-12)
    assert task.time_s >= 3 * 19e-6 and device("a100-sxm4-80gb").kernel_model
    # The qkv product: 13 x 5 = 65 tiles of 128 x 128 on 108 SMs, one wave, too many tiles to split K (108 // 65 = 1)
    qkv = kerns[0]
    assert kernels.utilisation(qkv, 108) == pytest.approx((1576 * 576) / (13 * 128 * 5 * 128) * 65 / 108)


def test_autocast_moves_fp32_elements_and_casts_between_them():
    """Golden numbers: ViT-S/16 attention half of 2 heads, 2 images, unfused, under autocast. Forward: the
    input cast to 16 bits (6 B per residual element), qkv's and proj's fp32 weights and biases cast (6 B per
    parameter), the scores scaled, cast up, softmaxed in fp32 and cast down (4 + 6 + 8 + 6 B per score), the
    heads merged (4 B per element); backward: 6, a bias reduction (2 B per output-gradient element) and 6 per
    parameter, 4 + 6 + 12 + 6 per score, 4."""
    from d2ft import kernels

    amp = ModelSpec.from_timm("vit_small_patch16_224", dtype_bytes=2, autocast=True)
    N, D, b, n, hd = 197, 384, 2, 2, 64
    E, S, Q = b * N * D, b * n * N * N, b * N * n * hd
    qkv_p, proj_p = D * 3 * n * hd + 3 * n * hd, n * hd * D + D
    def moved(phase):
        return sum(k.bytes_moved(2) for k in kernels.task_kernels(amp, "attn", phase, n, b, False) if k.kind == "elementwise")
    assert moved("fwd") == 6 * E + 6 * qkv_p + 24 * S + 4 * Q + 6 * proj_p
    assert moved("bwd") == 6 * E + (2 * b * N * 3 * n * hd + 6 * qkv_p) + 28 * S + 4 * Q + (2 * b * N * D + 6 * proj_p)
    fp16 = ModelSpec.from_timm("vit_small_patch16_224", dtype_bytes=2)  # the same GEMMs, no casts
    gemms = [k for k in kernels.task_kernels(amp, "attn", "bwd", n, b, False) if k.kind == "gemm"]
    assert gemms == [k for k in kernels.task_kernels(fp16, "attn", "bwd", n, b, False) if k.kind == "gemm"]
    # weights and gradients are fp32: the optimizer and the memory estimate count 4 B per element
    assert amp.weight_bytes == 4 and fp16.weight_bytes == 2
    # attention keeps its probabilities twice (fp32 for softmax's backward, 16-bit for A V's)
    assert amp.subnet_attn.saved_bytes - fp16.subnet_attn.saved_bytes == 4 * N * N


def test_autocast_needs_16_bit_gemms():
    with pytest.raises(ValueError, match="autocast needs dtype_bytes 2"):
        ModelSpec.from_timm("vit_small_patch16_224", dtype_bytes=4, autocast=True)


def test_a_gpus_peak_memory_holds_the_frameworks_own():
    """Every GPU's estimate includes its ``framework_bytes`` (CUDA context, allocator reserve); a CPU's none."""
    from d2ft.catalogue import device, link
    from d2ft.cluster import Cluster
    from d2ft.units import GiB

    gpu, cpu = device("rtx-3090"), device("epyc-9654")
    assert gpu.memory_bytes == 24 * GiB and 0 < gpu.framework_bytes < gpu.memory_bytes and cpu.framework_bytes == 0
    cluster = Cluster.star([("g", gpu), ("c", cpu)], link("pcie4-x16"))
    plan = Plan.uniform(VIT_S, cluster, Op.FULL, 1, 8)
    parts = CostModel(VIT_S, cluster).memory_breakdown(plan)
    assert [p["framework"] for p in parts] == [gpu.framework_bytes, 0]
    without = CostModel(VIT_S, Cluster.star([("g", dataclasses.replace(gpu, framework_bytes=0)), ("c", cpu)],
                                            link("pcie4-x16"))).peak_memory(plan)
    assert CostModel(VIT_S, cluster).peak_memory(plan)[0] == pytest.approx(without[0] + gpu.framework_bytes)


@given(st.integers(1, 132), st.sampled_from([0.0, 5e-6, 3e-5]), st.integers(1, 32))
def test_the_knapsack_linear_model_bounds_every_gpu_task_from_below(sms, launch, b):
    """block_overhead_s + n x subnet_time never exceeds the kernel model's task of n subnets, and equals
    it for the task size where a subnet's share is least (the relaxation the planner's MIP bound needs)."""
    cm = CostModel(VIT_S, _gpu_cluster(sms, launch))
    for op, phases in ((Op.FORWARD_ONLY, ("fwd",)), (Op.FULL, ("fwd", "bwd"))):
        over = sum(cm.block_overhead_s(1, b, p) for p in phases)
        per = cm.subnet_time(1, op, b)
        exact = [sum(cm.task_time(1, p, h, n, b) for p in phases for h in cm.halves) for n in range(1, VIT_S.heads + 1)]
        assert all(over + n * per <= t * (1 + 1e-12) for n, t in enumerate(exact, 1))
    table = cm.block_table(1, b, 3)
    assert [len(row) for row in table] == [4, 3, 2, 1] and table[0][0] == 0
    assert table[2][1] == pytest.approx(sum(cm.task_time(1, "fwd", h, 3, b) + cm.task_time(1, "bwd", h, 2, b)
                                            for h in cm.halves))


@given(plans(ModelSpec.vit(dim=64, depth=2, heads=4, img_size=32, patch=8, dtype_bytes=2), max_mb=2),
       st.integers(1, 132), st.sampled_from([0.0, 1e-5]))
def test_the_analytical_path_prices_gpu_tasks_as_the_cost_model_does(plan, sms, launch):
    """On kernel-model devices (task cost not linear in its subnets) the analytical path's per-device
    compute is still exactly the cost model's."""
    import numpy as np

    from simulator.analytical import Analytical

    model = ModelSpec.vit(dim=64, depth=2, heads=4, img_size=32, patch=8, dtype_bytes=2)
    cluster = _gpu_cluster(sms, launch)
    plan = Plan(cluster.device_names, [[k % 3 for k in row] for row in plan.placement], plan.ops, plan.micro_batch_size)
    cost = CostModel(model, cluster).step(plan)
    busy = Analytical(model, cluster, plan.placement, plan.micro_batch_size).evaluate(plan)["busy_s"]
    np.testing.assert_allclose(busy, [d.compute_s for d in cost.devices], rtol=1e-9)


def test_sgd_is_priced_with_one_momentum_buffer():
    """SGD with momentum keeps 4 B of fp32 state per parameter where AdamW keeps 8: less optimizer traffic
    and memory, the same forward and backward."""
    from d2ft.cost import optimizer_bytes_per_param, state_bytes_per_param

    assert optimizer_bytes_per_param(4, "sgd") == optimizer_bytes_per_param(4) - 8
    assert state_bytes_per_param(2, "sgd") == (2, 2, 8) and state_bytes_per_param(2) == (2, 2, 12)
    sgd = dataclasses.replace(MODEL, optimizer="sgd")
    plan = Plan.uniform(MODEL, CLUSTER, Op.FULL, 2, 4)
    a, s = CostModel(MODEL, CLUSTER).step(plan), CostModel(sgd, CLUSTER).step(plan)
    assert s.compute_flop == a.compute_flop and all(x.compute_s < y.compute_s for x, y in zip(s.devices, a.devices))
    opt = CostModel(sgd, CLUSTER).memory_breakdown(plan)[0]["optimizer"]
    assert opt == CostModel(MODEL, CLUSTER).memory_breakdown(plan)[0]["optimizer"] / 2
    with pytest.raises(ValueError, match="optimizer must be 'adamw' or 'sgd'"):
        dataclasses.replace(MODEL, optimizer="lion")


def test_16_bit_messages_halve_the_bytes_and_nothing_else():
    """message_dtype_bytes=2 (bf16 or fp16 messages of an fp32 model): every message is half as large; the
    compute, FLOP and memory of the step are the same."""
    half = dataclasses.replace(MODEL, message_dtype_bytes=2)
    plan = Plan.uniform(MODEL, CLUSTER, Op.FULL, 2, 4)
    a, b = CostModel(MODEL, CLUSTER).step(plan), CostModel(half, CLUSTER).step(plan)
    assert b.comm_bytes * 2 == a.comm_bytes > 0 and b.compute_flop == a.compute_flop
    assert [d.compute_s for d in b.devices] == [d.compute_s for d in a.devices]
    assert [d.peak_memory_bytes for d in b.devices] == [d.peak_memory_bytes for d in a.devices]
    assert half.message_size(4) * 2 == MODEL.message_size(4) == MODEL.activation_bytes(4)


def test_lora_is_priced_as_lora_by_hand():
    """ViT-B/16 with rank-8 adapters on q and v of every subnet (``d2ft run --lora``): 144 subnets x 2
    adapters x 8 x (768 + 64) parameters plus the classifier's head (768 x 1000 + 1000) train; the base is
    frozen, so a subnet's weight gradient is only the merged qkv slice's (2 N D 3hd FLOP per sample) and
    the stem has no backward at all."""
    base = ModelSpec.from_timm("vit_base_patch16_224")
    lora = dataclasses.replace(base, lora_rank=8, lora_targets=("q", "v"))
    assert lora.total.trained_params == 144 * 2 * 8 * (768 + 64) + 768 * 1000 + 1000 == 2_685_928
    assert lora.params == base.params + 144 * 2 * 8 * (768 + 64)
    N, D, hd, m = 197, 768, 64, 256
    assert lora.subnet.wg_flop == 2 * N * D * 3 * hd == 58_097_664
    assert lora.subnet.fwd_flop == base.subnet.fwd_flop and lora.subnet.ig_flop == base.subnet.ig_flop
    assert lora.embed.bwd_flop == 0 and lora.classifier.wg_flop == base.classifier.wg_flop
    proj = dataclasses.replace(base, lora_rank=4, lora_targets=("proj", "fc1"))
    assert proj.subnet_attn.wg_flop == 2 * N * hd * D and proj.subnet_mlp.wg_flop == 2 * N * D * m
    assert proj.subnet.trained_params == 4 * (D + hd) + 4 * (D + m)


def test_a_lora_step_costs_less_and_holds_state_for_its_adapters_only():
    """Less backward work, an optimizer over the adapters and the head only, gradient and optimizer memory
    for them only; the same messages. The analytical path prices it as the cost model does, and the GPU
    kernel model leaves out the frozen weights' gradient products."""
    import numpy as np

    from d2ft import kernels
    from d2ft.schedule import trained_params
    from simulator import Analytical

    lora = dataclasses.replace(MODEL, lora_rank=2, lora_targets=("q", "v"))
    plan = Plan.uniform(MODEL, CLUSTER, Op.FULL, 2, 4)
    full, low = CostModel(MODEL, CLUSTER).step(plan), CostModel(lora, CLUSTER).step(plan)
    assert low.compute_flop < full.compute_flop and low.comm_bytes == full.comm_bytes
    assert all(x.compute_s < y.compute_s for x, y in zip(low.devices, full.devices))
    counts = trained_params(plan, lora, CLUSTER.coordinator_index)
    held = CostModel(lora, CLUSTER).memory_breakdown(plan)
    for k, (count, parts) in enumerate(zip(counts, held)):
        assert parts["grads"] == count * 4 and parts["optimizer"] == count * 8  # fp32: gradient, m and v
        assert parts["params"] > parts["grads"] or count == 0
    an = Analytical(lora, CLUSTER, plan.placement, plan.micro_batch_size).evaluate(plan)
    np.testing.assert_allclose(an["busy_s"], [d.compute_s for d in low.devices], rtol=1e-12)
    vit = ModelSpec.from_timm("vit_base_patch16_224")
    n = len(kernels.task_kernels(vit, "attn", "bwd", 12, 8, False))
    adapted = dataclasses.replace(vit, lora_rank=8)
    assert len(kernels.task_kernels(adapted, "attn", "bwd", 12, 8, False)) == n - 1  # proj frozen
    assert len(kernels.task_kernels(adapted, "mlp", "bwd", 12, 8, False)) == len(
        kernels.task_kernels(vit, "mlp", "bwd", 12, 8, False)) - 2  # fc1 and fc2 frozen
    with pytest.raises(ValueError, match="lora_targets must be some of"):
        dataclasses.replace(MODEL, lora_rank=2, lora_targets=("qkv",))
    with pytest.raises(ValueError, match="lora_rank must be a non-negative integer"):
        dataclasses.replace(MODEL, lora_rank=-1)
