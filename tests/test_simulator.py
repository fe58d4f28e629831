"""Simulator: hand-computed steps, scheduling invariants, agreement of the two paths, exports."""

import dataclasses
import json

import pytest
from hypothesis import given, settings, strategies as st

from d2ft import Cluster, CostModel, DeviceSpec, LinkSpec, ModelSpec, Op, Plan
from d2ft.catalogue import cluster_preset
from d2ft.placement import plan_placement
from simulator import Analytical, simulate, sweep, with_link_bandwidth, resized
from tests.conftest import plans, star, tiny_model

ONE_HEAD = ModelSpec.vit(dim=4, depth=1, heads=1, mlp_ratio=2, img_size=2, patch=1, in_chans=1, num_classes=3)


def _pair(link_bw=1e6, latency=0.5e-3, flops=1e9, overhead=0.0):
    dev = DeviceSpec("d", flops, flops, 1e18, 1e9, efficiency=1.0, task_overhead_s=overhead)
    return Cluster.star([("c", dev), ("w", dev)], LinkSpec("l", link_bw, latency))


@pytest.mark.parametrize("op, expected", [
    (Op.FULL, 8 * 1.08e-3 + 5040e-9 + 136e-9),
    (Op.FORWARD_ONLY, 4 * 1.08e-3 + 1680e-9 + 136e-9),
    (Op.SKIP, 136e-9),
])
def test_one_coordinator_one_worker_by_hand(op, expected):
    """D=4, one head (hd=4) with the whole MLP (m=8), N=5 tokens, one sample; devices 1 GFLOP/s,
    efficiency 1, memory and overheads free; each goes to the switch by a 1 MB/s link with
    0.5 ms latency, so a route has 1 ms latency.

    Subnet FLOP: forward 2 (5*4*12 + 5*4*4 + 2*25*4 + 2*5*4*8) = 1680; input-gradient
    2 (320 + 400 + 320) = 2080; weight-gradient 2 (320 + 320) = 1280; FULL = 5040.
    Coordinator FLOP (always FULL): stem 32 + 32, classifier 24 * 3 = 136.
    A message is a = 1 * 5 * 4 * 4 = 80 B: 1 ms + 80 us = 1.08 ms. Per half (attention, MLP)
    forward sends 2 messages, backward 2 more: 8 for FULL, 4 for FORWARD_ONLY, 0 for SKIP.
    One worker, one micro-batch: every step waits for the one before, so the step is the sum.
    """
    cluster = _pair()
    plan = Plan(cluster.device_names, [[1]], [[[op]]], micro_batch_size=1)
    graph = simulate(plan, ONE_HEAD, cluster)
    assert graph.step_time_s == pytest.approx(expected, rel=1e-9)
    assert simulate(plan, ONE_HEAD, cluster, path="analytical").step_time_s == pytest.approx(expected, rel=1e-9)
    assert graph.comm_bytes == {Op.FULL: 640, Op.FORWARD_ONLY: 320, Op.SKIP: 0}[op]


CLUSTER3 = Cluster.star([(f"k{i}", DeviceSpec(f"d{i}", 1e9 * (i + 1), 1e9 * (i + 1), 1e10, 1e9, 1.0, 1e-6))
                         for i in range(3)], LinkSpec("l", 1e7, 1e-5))
MODEL = tiny_model(depth=2, heads=3)


@settings(max_examples=40)
@given(plans(MODEL, CLUSTER3), st.sampled_from(["sequential", "interleaved"]))
def test_makespan_bounds_and_exact_bytes(plan, order):
    trace = simulate(plan, MODEL, CLUSTER3, order=order)
    assert trace.step_time_s >= max(d.busy_s for d in trace.devices.values()) * (1 - 1e-12)
    cost = CostModel(MODEL, CLUSTER3).step(plan)
    for d in cost.devices:
        assert trace.devices[d.name].sent_bytes == d.sent_bytes
        assert trace.devices[d.name].recv_bytes == d.recv_bytes
        assert trace.devices[d.name].busy_s == pytest.approx(d.compute_s, rel=1e-12)
    assert trace.comm_bytes == cost.comm_bytes


@settings(max_examples=30)
@given(plans(MODEL, CLUSTER3), st.sampled_from(["sequential", "interleaved"]), st.floats(1.1, 10.0),
       st.integers(0, 2))
def test_more_bandwidth_or_a_faster_device_never_slows_the_step(plan, order, factor, k):
    base = simulate(plan, MODEL, CLUSTER3, order=order).step_time_s
    faster_links = with_link_bandwidth(CLUSTER3, 1e7 * factor)
    assert simulate(plan, MODEL, faster_links, order=order).step_time_s <= base * (1 + 1e-12)
    name, spec = CLUSTER3.devices[k]
    quick = dataclasses.replace(spec, peak_flops=spec.peak_flops * factor, peak_flops_fp32=spec.peak_flops_fp32 * factor,
                                mem_bandwidth=spec.mem_bandwidth * factor)
    devices = tuple((n, quick if i == k else s) for i, (n, s) in enumerate(CLUSTER3.devices))
    assert simulate(plan, MODEL, dataclasses.replace(CLUSTER3, devices=devices), order=order).step_time_s \
        <= base * (1 + 1e-12)


@settings(max_examples=30)
@given(plans(MODEL, CLUSTER3), st.data(), st.sampled_from(["sequential", "interleaved"]))
def test_less_work_never_slows_the_step(plan, data, order):
    m = data.draw(st.integers(0, plan.micro_batches - 1))
    l, h = data.draw(st.integers(0, MODEL.depth - 1)), data.draw(st.integers(0, MODEL.heads - 1))
    if plan.ops[m][l][h] is Op.SKIP:
        return
    ops = [[list(r) for r in g] for g in plan.ops]
    ops[m][l][h] = Op.SKIP if plan.ops[m][l][h] is Op.FORWARD_ONLY else data.draw(st.sampled_from([Op.FORWARD_ONLY, Op.SKIP]))
    assert simulate(plan.with_ops(ops), MODEL, CLUSTER3, order=order).step_time_s \
        <= simulate(plan, MODEL, CLUSTER3, order=order).step_time_s * (1 + 1e-12)


@settings(max_examples=30)
@given(st.data(), st.booleans())
def test_paths_agree_without_contention(data, one_device):
    """One device (any micro-batches), or one worker with one micro-batch: within 1%."""
    n = 1 if one_device else 2
    cluster = Cluster.star([(f"k{i}", DeviceSpec(f"d{i}", 1e9, 1e9, 1e10, 1e9, 0.8, 2e-6)) for i in range(n)],
                           LinkSpec("l", 1e7, 1e-5))
    plan = data.draw(plans(MODEL, cluster, max_mb=3 if one_device else 1))
    plan = Plan(plan.devices, [[n - 1] * MODEL.heads] * MODEL.depth, plan.ops, plan.micro_batch_size)
    graph = simulate(plan, MODEL, cluster).step_time_s
    assert simulate(plan, MODEL, cluster, path="analytical").step_time_s == pytest.approx(graph, rel=0.01)


def test_paths_track_each_other_under_contention():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("lan-4x3090")
    placement = plan_placement(model, cluster, micro_batches=2, micro_batch_size=8)
    plan = Plan.uniform(model, cluster, Op.FULL, 2, 8, placement=placement)
    graph = simulate(plan, model, cluster)
    analytical = Analytical(model, cluster, placement, 8).trace(plan)
    assert analytical.step_time_s == pytest.approx(graph.step_time_s, rel=0.05)
    assert graph.meta["bottleneck"]["kind"] == "link"  # 10 GbE is what limits width-wise ViT-S here


def test_depth_mode_pipelines_whole_blocks():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("lan-4x3090")
    placement = plan_placement(model, cluster, mode="depth", micro_batches=2, micro_batch_size=8)
    full = Plan.uniform(model, cluster, Op.FULL, 2, 8, placement=placement)
    skip = full.with_ops([[[Op.SKIP] * model.heads] * model.depth] * 2)
    a, b = simulate(full, model, cluster, mode="depth"), simulate(skip, model, cluster, mode="depth")
    assert a.comm_bytes == b.comm_bytes > 0  # the residual stream passes every stage whatever the ops
    assert b.step_time_s < a.step_time_s
    split = Plan.uniform(model, cluster, Op.FULL, 1, 8, placement=plan_placement(model, cluster, micro_batch_size=8))
    with pytest.raises(ValueError, match="whole blocks per device"):
        simulate(split, model, cluster, mode="depth")
    with pytest.raises(ValueError, match="width-wise placement only"):
        simulate(full, model, cluster, path="analytical", mode="depth")


def test_chrome_trace_export(tmp_path):
    cluster = _pair()
    plan = Plan(cluster.device_names, [[1]], [[[Op.FULL]]] * 2, micro_batch_size=1)
    trace = simulate(plan, ONE_HEAD, cluster, order="interleaved")
    chrome = json.loads(json.dumps(trace.to_chrome()))
    spans = [e for e in chrome["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(trace.events)
    assert max(e["ts"] + e["dur"] for e in spans) == pytest.approx(trace.step_time_s * 1e6)
    names = {e["args"]["name"] for e in chrome["traceEvents"] if e["name"] == "thread_name"}
    assert {"c", "w", "c->w", "w->c"} <= names
    # Every message is a flow from its transfer slice to the receiving device, ending when it arrives.
    transfers = [e for e in trace.events if e.kind == "transfer"]
    starts = [e for e in chrome["traceEvents"] if e["ph"] == "s"]
    ends = {e["id"]: e for e in chrome["traceEvents"] if e["ph"] == "f"}
    assert len(starts) == len(ends) == len(transfers) > 0
    tid = {e["args"]["name"]: e["tid"] for e in chrome["traceEvents"] if e["name"] == "thread_name"}
    for s, t in zip(starts, transfers):
        assert s["tid"] == tid[t.resource] and ends[s["id"]]["tid"] == tid[t.resource.split("->")[1]]
        assert ends[s["id"]]["ts"] == pytest.approx(t.end_s * 1e6)
    # Bytes in flight: never negative, back to zero at the end, at most all transfers' bytes at once.
    levels = [e["args"]["bytes"] for e in chrome["traceEvents"] if e["ph"] == "C"]
    assert min(levels) >= 0 and levels[-1] == 0 and max(levels) <= sum(t.nbytes for t in transfers)
    assert max(levels) >= max(t.nbytes for t in transfers)


def test_sweep_records_and_errors():
    records = sweep(["vit_small_patch16_224"], ["lan-4x3090"], strategies=["full", "hybrid", "backward"],
                    keeps=[0.05], micro_batches=[1], link_bandwidths=[1.25e8, 1.25e9])
    by = {(r["strategy"], r["link_bandwidth"]): r for r in records}
    assert by["backward", 1.25e8]["error"] and by["backward", 1.25e8]["step_time_s"] is None
    assert by["hybrid", 1.25e9]["step_time_s"] < by["hybrid", 1.25e8]["step_time_s"]
    assert by["hybrid", 1.25e9]["speedup"] > 1 and by["full", 1.25e9]["speedup"] == 1
    assert resized(cluster_preset("lan-4x3090"), 6).num_devices == 6
    with pytest.raises(ValueError, match="star cluster"):
        resized(Cluster.ring({f"n{i}": cluster_preset("lan-4x3090").device(0) for i in range(3)},
                             LinkSpec("l", 1e9)), 4)


def test_a_sweep_over_bandwidths_equals_every_point_planned_and_simulated_alone():
    """The analytical sweep plans each point once and evaluates all its bandwidths together
    (Analytical.evaluate_batch with link_bandwidth): every record equals planning and simulating that
    point on its own, in the grid's order, the as-built links (None) included."""
    import itertools

    from simulator.sweep import _point

    axes = dict(strategies=["hybrid"], keeps=[0.5, 0.8], micro_batches=[2], micro_batch_sizes=[4],
                link_bandwidths=[None, 1.25e8, 3e9], device_counts=[None, 3], comm_keeps=[None, 0.5])
    model, cluster = ModelSpec.from_timm("vit_tiny_patch16_224"), cluster_preset("lan-4x3090")
    seen = []
    records = sweep([model], [cluster], **axes, progress=lambda done, total: seen.append((done, total)))
    grid = list(itertools.product([model], [cluster], axes["device_counts"], axes["link_bandwidths"],
                                  axes["strategies"], axes["keeps"], axes["comm_keeps"], axes["micro_batches"],
                                  axes["micro_batch_sizes"]))
    assert len(records) == len(grid) and seen[-1] == (len(grid), len(grid))
    for point, rec in zip(grid, records):
        alone = _point(*point, solver="dp", path="analytical", seed=0)
        for key in alone:
            if key != "solve_time_s":
                assert rec[key] == (pytest.approx(alone[key], rel=1e-9) if isinstance(alone[key], float) else alone[key]), key
    assert len({r["link_bandwidth"] for r in records}) == 3 and any(r["error"] is None for r in records)


def test_a_sweep_in_worker_processes_gives_the_same_records_in_the_same_order():
    """workers=2 plans the grid's plans in two spawned processes: the same records (solve times aside) in
    the grid's order, on both paths, and progress counts every point once; a bad worker count is refused."""
    axes = dict(strategies=["hybrid", "backward"], keeps=[0.05, 0.6], micro_batches=[2], micro_batch_sizes=[4],
                link_bandwidths=[None, 1.25e8])
    models, clusters = ["vit_tiny_patch16_224"], ["lan-4x3090", "mixed-4"]
    for path in ("analytical", "graph"):
        seen = []
        alone = sweep(models, clusters, **axes, path=path)
        together = sweep(models, clusters, **axes, path=path, workers=2, progress=lambda d, t: seen.append((d, t)))
        strip = lambda rs: [{k: v for k, v in r.items() if k != "solve_time_s"} for r in rs]  # noqa: E731
        assert strip(together) == strip(alone) and any(r["error"] for r in alone)
        assert seen[-1] == (len(alone), len(alone)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        sweep(models, clusters, workers=0)


def test_bad_input_is_explained():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("lan-4x3090")
    other = Plan.uniform(tiny_model(), cluster, Op.FULL)
    with pytest.raises(ValueError, match="plan it for this model"):
        simulate(other, model, cluster)
    with pytest.raises(ValueError, match="differ from cluster"):
        simulate(Plan.uniform(model, cluster_preset("mixed-4"), Op.FULL), model, cluster)
    with pytest.raises(ValueError, match="bandwidth must be a positive number"):
        LinkSpec("dead", 0.0)
    with pytest.raises(ValueError, match="link bandwidth must be > 0"):
        with_link_bandwidth(cluster, 0)
    with pytest.raises(ValueError, match="unknown path"):
        simulate(Plan.uniform(model, cluster, Op.FULL), model, cluster, path="magic")


@settings(max_examples=25)
@given(st.data())
def test_batched_analytical_evaluation_equals_one_plan_at_a_time(data):
    """evaluate_batch over N plans of one placement gives each plan's evaluate() figures (to 1e-9)."""
    import numpy as np

    model, cluster = tiny_model(depth=3, heads=2), star(3, latency=1e-6)
    order = data.draw(st.sampled_from(["sequential", "interleaved"]))
    first = data.draw(plans(model, cluster, max_mb=3))
    n = data.draw(st.integers(1, 5))
    batch = [first] + [first.with_ops([[[data.draw(st.sampled_from(list(Op))) for _ in range(2)] for _ in range(3)]
                                       for _ in range(first.micro_batches)]) for _ in range(n)]
    an = Analytical(model, cluster, first.placement, first.micro_batch_size, order=order)
    together = an.evaluate_batch(an.levels(batch))
    for i, plan in enumerate(batch):
        alone = an.evaluate(plan)
        for key, value in alone.items():
            np.testing.assert_allclose(together[key][i], value, rtol=1e-9, atol=1e-15, err_msg=key)


def _hosted(cluster, cores):
    from d2ft import Host

    return cluster.with_hosts([Host("machine", cluster.device_names, cores)])


@settings(max_examples=30)
@given(st.data())
def test_a_host_of_cores_only_ever_slows_and_more_cores_never_do(data):
    """Ranks on one host of C cores: never faster than without the limit, never slower with a core more, exactly
    as without it once C covers every device and every message (a star of K devices moves at most K messages at
    once, each holding a core: 2K); a host of one device (each device its own) changes nothing."""
    from d2ft import Host

    model, cluster = tiny_model(depth=3, heads=2), star(4, latency=1e-6, flops=2e8)
    plan = data.draw(plans(model, cluster, max_mb=3))
    order = data.draw(st.sampled_from(["sequential", "interleaved"]))
    free = simulate(plan, model, cluster, order=order).step_time_s
    times = [simulate(plan, model, _hosted(cluster, c), order=order).step_time_s for c in (1, 2, 3, 4, 8)]
    assert all(t >= free - 1e-12 for t in times)
    assert all(later <= earlier + 1e-12 for earlier, later in zip(times, times[1:]))
    assert times[-1] == pytest.approx(free, rel=1e-12, abs=1e-15)
    own = cluster.with_hosts([Host(f"h{k}", (n,), 1) for k, n in enumerate(cluster.device_names)])
    assert simulate(plan, model, own, order=order).step_time_s == free
    for path_order in ("sequential", "interleaved"):  # the analytical path: at least a host's work over its cores
        an = Analytical(model, _hosted(cluster, 1), plan.placement, plan.micro_batch_size, order=path_order)
        r = an.evaluate(plan)
        assert r["step_time_s"] >= r["busy_s"].sum() - 1e-12
        assert Analytical(model, own, plan.placement, plan.micro_batch_size, order=path_order).evaluate(plan)[
            "step_time_s"] == Analytical(model, cluster, plan.placement, plan.micro_batch_size,
                                         order=path_order).evaluate(plan)["step_time_s"]


def test_a_message_within_a_core_limited_host_holds_one_of_its_cores():
    """Two ranks on a host of one core: the worker's task and the messages take turns on that core, so the
    step is the sum of every task's and every message's hold, in both paths; on two cores, or on two hosts,
    the messages travel beside the compute."""
    from d2ft import Host, Op, Plan

    model, cluster = tiny_model(depth=1, heads=2), star(2, latency=0.0, flops=2e8)
    plan = Plan(cluster.device_names, [[0, 1]], [[[Op.FULL, Op.FULL]], [[Op.FULL, Op.FULL]]], micro_batch_size=2)
    one_core = _hosted(cluster, 1)
    cost = CostModel(model, one_core)
    tasks, messages = cost.tasks_and_messages(plan)
    hold = sum(m.nbytes / one_core.bottleneck_bandwidth(one_core.device_names[m.src], one_core.device_names[m.dst])
               for m in messages)
    work = sum(t.time_s for t in tasks)
    assert simulate(plan, model, one_core, path="graph").step_time_s == pytest.approx(work + hold, rel=1e-9)
    an = Analytical(model, one_core, plan.placement, plan.micro_batch_size).evaluate(plan)
    assert an["step_time_s"] >= work + hold - 1e-12
    apart = cluster.with_hosts([Host("a", ("d0",), 1), Host("b", ("d1",), 1)])
    for other in (_hosted(cluster, 2), apart):
        assert simulate(plan, model, other, path="graph").step_time_s < work + hold


def test_hosts_round_trip_and_bad_hosts_are_named():
    from d2ft import Cluster, Host

    model = tiny_model(depth=3, heads=2)
    four = star(4, latency=1e-6, flops=2e8)
    plan = Plan.uniform(model, four, Op.FULL, 2, 4, placement=[[1, 2], [3, 1], [2, 3]])
    free, one, two = (simulate(plan, model, c).step_time_s for c in (four, _hosted(four, 1), _hosted(four, 2)))
    assert one > two > free  # three workers computing at once wait for a core
    cluster = _hosted(star(3), 2)
    assert Cluster.from_json(cluster.to_json()) == cluster and cluster.core_pools() == [("machine", 2, (0, 1, 2))]
    assert "hosts" not in star(3).to_dict()  # a cluster without hosts writes what it always did
    with pytest.raises(ValueError, match="device 'd0' is on two hosts"):
        star(3).with_hosts([Host("a", ("d0",), 1), Host("b", ("d0", "d1"), 1)])
    with pytest.raises(ValueError, match="cores must be a positive integer"):
        Host("a", ("d0",), 0)
    with pytest.raises(ValueError, match="host 'x' must be an object with 'devices'"):
        Cluster.from_dict({**star(2).to_dict(), "hosts": {"x": {"cpus": 2}}})


@settings(max_examples=30)
@given(st.data())
def test_the_flat_scheduler_equals_the_networkx_one_event_for_event(data):
    """simulate schedules flat lists (schedule_flat); the networkx graph and its scheduler stay the reference
    and the exported view: every node's start and end, the makespan and the critical path agree exactly."""
    from simulator import flat_step_graph, schedule, schedule_flat, step_graph

    model, cluster = tiny_model(depth=3, heads=2), star(4, latency=1e-6, flops=2e8)
    if data.draw(st.booleans()):
        cluster = _hosted(cluster, data.draw(st.integers(1, 4)))
    plan = data.draw(plans(model, cluster, max_mb=3))
    order = data.draw(st.sampled_from(["sequential", "interleaved"]))
    flat = schedule_flat(flat_step_graph(plan, model, cluster, order))
    g = step_graph(plan, model, cluster, order)
    ref = schedule(g)
    assert flat["start"] == [ref["start"][n] for n in g.nodes] and flat["end"] == [ref["end"][n] for n in g.nodes]
    assert flat["makespan_s"] == ref["makespan_s"] and flat["critical_path"] == ref["critical_path"]
    assert simulate(plan, model, cluster, order=order).step_time_s == ref["makespan_s"]


@settings(max_examples=20)
@given(st.data())
def test_batched_evaluation_over_link_bandwidths_equals_a_cluster_rebuilt_at_each(data):
    """evaluate_batch(levels, link_bandwidth) gives plan i at bandwidth i what an Analytical built on the
    cluster with every link at that bandwidth gives (to 1e-9), in both orders."""
    import numpy as np

    model, cluster = tiny_model(depth=3, heads=2), star(3, latency=1e-6)
    order = data.draw(st.sampled_from(["sequential", "interleaved"]))
    plan = data.draw(plans(model, cluster, max_mb=2))
    bws = data.draw(st.lists(st.floats(1e6, 1e12), min_size=1, max_size=4))
    an = Analytical(model, cluster, plan.placement, plan.micro_batch_size, order=order)
    together = an.evaluate_batch(an.levels([plan] * len(bws)), np.array(bws))
    for i, bw in enumerate(bws):
        alone = Analytical(model, with_link_bandwidth(cluster, bw), plan.placement, plan.micro_batch_size,
                           order=order).evaluate(plan)
        for key, value in alone.items():
            np.testing.assert_allclose(together[key][i], value, rtol=1e-9, atol=1e-15, err_msg=key)


def test_the_interleaved_bound_counts_a_full_subnets_messages_in_both_phases():
    """Golden: one worker running every subnet FULL over a slow link; with enough micro-batches the link is the
    bound, and it carries one message each way per micro-batch, block, half and phase (forward activations and
    backward gradients): M x L x 2 halves x 2 phases messages of model.message_size(b) bytes each way."""
    import numpy as np

    model, cluster = tiny_model(depth=2, heads=2), star(2, link_bw=1e3)
    plan = Plan.uniform(model, cluster, Op.FULL, 6, 1, placement=[[1, 1]] * 2)
    an = Analytical(model, cluster, plan.placement, 1, order="interleaved")
    expected = 6 * 2 * 2 * 2 * model.message_size(1) / 1e3
    assert an.evaluate(plan)["step_time_s"] == pytest.approx(expected, rel=1e-9)
    assert an.evaluate_batch(an.levels([plan]))["step_time_s"][0] == pytest.approx(expected, rel=1e-9)
    assert an.evaluate_batch(an.levels([plan]), np.array([1e3]))["step_time_s"][0] == pytest.approx(expected, rel=1e-9)


def test_batched_evaluation_names_what_is_wrong_with_its_input():
    import numpy as np

    model, cluster = tiny_model(depth=3, heads=2), star(3)
    plan = Plan.uniform(model, cluster, Op.FULL, 2, 1)
    an = Analytical(model, cluster, plan.placement, 1)
    levels = an.levels([plan])
    with pytest.raises(ValueError, match=r"levels must be \(plans, micro_batches, 3, 2\), got \(2, 3, 2\)"):
        an.evaluate_batch(levels[0])
    bad = levels.copy()
    bad[0, 0, 0, 0] = 3
    with pytest.raises(ValueError, match="op levels 0 .* found 2 to 3"):
        an.evaluate_batch(bad)
    with pytest.raises(ValueError, match=r"one bandwidth > 0 B/s per plan \(1\)"):
        an.evaluate_batch(levels, np.array([1e9, 1e9]))
    with pytest.raises(ValueError, match="one bandwidth > 0 B/s"):
        an.evaluate_batch(levels, np.array([0.0]))
