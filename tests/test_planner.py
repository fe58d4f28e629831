"""Op planner: exactness against brute force, budgets, baselines, heterogeneity, bad input."""

import dataclasses
import itertools

import pytest
from hypothesis import given, settings, strategies as st

from d2ft import Cluster, CostModel, DeviceSpec, LinkSpec, ModelSpec, Op, Plan
from d2ft.catalogue import cluster_preset, link
from d2ft.knapsack import BlockArrays, Budget, block_cost, build_problem
from d2ft.plan import even_placement
from d2ft.planner import BASELINES, STRATEGIES, plan_step
from d2ft.scores import Scores, random_scores, synthetic
from d2ft.exact import mip_exact
from d2ft.solvers import dp_two_stage, greedy
from tests.conftest import tiny_model


@st.composite
def small_problems(draw, max_items=12, kernel=False):
    """Random instances: tiny model, 3 devices of random speed and overhead, random scores and budget;
    ``kernel``: devices priced kernel by kernel (random SM counts and launch costs), or a mix."""
    strategy = draw(st.sampled_from(sorted(STRATEGIES)))
    depth, heads = draw(st.integers(1, 2)), draw(st.integers(2, 3))
    limit = max_items if strategy != "hybrid" else 8
    mbs = draw(st.integers(1, max(1, limit // (depth * heads))))
    model = tiny_model(depth=depth, heads=heads, img_size=4, patch=2)
    specs = [DeviceSpec(f"d{i}", draw(st.floats(1e8, 1e9)), draw(st.floats(1e8, 1e9)), draw(st.floats(1e8, 1e10)),
                        1e9, efficiency=1.0, task_overhead_s=draw(st.sampled_from([0.0, 1e-6, 1e-5])))
             for i in range(3)]
    if kernel:
        specs = [dataclasses.replace(s, sm_count=draw(st.integers(1, 8)), kernel_launch_s=draw(st.sampled_from([0.0, 1e-6])))
                 if draw(st.booleans()) else s for s in specs]
    cluster = Cluster.star([(f"k{i}", s) for i, s in enumerate(specs)], LinkSpec("l", 1e9))
    placement = [[draw(st.integers(0, 2)) for _ in range(heads)] for _ in range(depth)]
    skeleton = Plan.uniform(model, cluster, Op.FULL, mbs, draw(st.integers(1, 4)), placement=placement)
    scores = random_scores(depth, heads, seed=draw(st.integers(0, 999)), micro_batches=mbs)
    keep = draw(st.floats(0.2, 1.0))
    comm = draw(st.one_of(st.none(), st.floats(0.3, 1.0)))
    try:
        problem = build_problem(model, cluster, skeleton, scores, Budget(keep=keep, comm_keep=comm), STRATEGIES[strategy])
    except ValueError:
        problem = build_problem(model, cluster, skeleton, scores, Budget(keep=1.0), STRATEGIES[strategy])
    return model, cluster, problem


def brute_force(dp) -> float:
    best = -1.0
    for choice in itertools.product(dp.levels, repeat=len(dp.items)):
        choice = list(choice)
        if dp.fits(choice):
            best = max(best, dp.objective(choice))
    return best


@settings(max_examples=40)
@given(small_problems())
def test_mip_equals_brute_force_and_dominates_heuristics(case):
    _, _, problem = case
    for dp in problem.devices:
        exact = brute_force(dp)
        mip = mip_exact(dp, time_limit_s=10, gap=1e-9)
        assert mip.objective == pytest.approx(exact, rel=1e-9, abs=1e-12)
        assert mip.status == "optimal"
        for heuristic in (dp_two_stage(dp), greedy(dp)):
            assert heuristic.objective <= mip.objective + 1e-9


@settings(max_examples=25)
@given(small_problems(max_items=8, kernel=True))
def test_on_kernel_model_devices_the_mip_is_exact_too(case):
    """Where a task's cost per subnet depends on its size (the knapsack's linear model is only a lower
    bound), the MIP prices block configurations exactly: it equals brute force over the exact load, and
    every heuristic's choice fits that load."""
    _, _, problem = case
    for dp in problem.devices:
        exact = brute_force(dp)
        mip = mip_exact(dp, time_limit_s=10, gap=1e-9)
        assert dp.fits(mip.choice) and mip.objective == pytest.approx(exact, rel=1e-9, abs=1e-12)
        assert mip.status == "optimal" and mip.bound >= exact - 1e-9 * max(1.0, abs(exact))
        for heuristic in (dp_two_stage(dp), greedy(dp)):
            assert dp.fits(heuristic.choice) and heuristic.objective <= exact + 1e-9


@settings(max_examples=30)
@given(small_problems(max_items=12, kernel=True), st.integers(0, 2**31), st.sampled_from([(0, 1), (1, 2), (0, 2)]))
def test_batched_block_pricing_equals_the_scalar_block_cost(case, seed, move):
    """dp prices every block of a stage at once (``BlockArrays``): the costs of moving a block's first j pool
    items equal ``block_cost`` differences, the pool is the block's items at ``frm`` with a positive score,
    best first, and the first increments come sorted as a heap would pop them."""
    import random
    _, _, problem = case
    rng, (frm, to) = random.Random(seed), move
    for dp in problem.devices:
        if dp.block_table is None or not dp.items:
            continue
        arr = BlockArrays(dp)
        choice = [rng.choice((0, 1, 2)) for _ in dp.items]
        score = [rng.choice((-1.0, 0.0, rng.random())) for _ in dp.items]
        pools, sizes, ct, cb, first, floor = arr.stage(choice, score, frm, to, 1.0, 0.5)
        assert first == sorted(first) and floor == [min(ct[b * arr.width + j - 1] for _, b, _, j in first[k:])
                                                       for k in range(len(first))]
        for b, idx in enumerate(dp.blocks.values()):
            pool = sorted((i for i in idx if choice[i] == frm and score[i] > 0), key=lambda i: -score[i])
            assert sizes[b] == len(pool) and pools[b * arr.width:b * arr.width + len(pool)] == pool
            n = [sum(choice[i] == lv for i in idx) for lv in (0, 1, 2)]
            t0, b0 = block_cost(dp, n)
            for j in range(1, len(pool) + 1):
                after = list(n)
                after[frm], after[to] = after[frm] - j, after[to] + j
                t1, b1 = block_cost(dp, after)
                assert (ct[b * arr.width + j - 1], cb[b * arr.width + j - 1]) == (t1 - t0, b1 - b0)


@settings(max_examples=40)
@given(small_problems(kernel=True), st.sampled_from(["mip", "dp", "greedy"]))
def test_every_solver_plan_fits_every_capacity(case, solver):
    model, cluster, problem = case
    solve = {"mip": lambda d: mip_exact(d, 5, 1e-6), "dp": dp_two_stage, "greedy": greedy}[solver]
    plan = problem.assemble([solve(d).choice for d in problem.devices])
    loads, nbytes = problem.loads(plan)
    cost = CostModel(model, cluster).step(plan)
    for k, dp in enumerate(problem.devices):
        assert loads[k] <= problem.capacity_s[k] * (1 + 1e-9) + 1e-15
        if problem.capacity_bytes[k] is not None:
            assert nbytes[k] <= problem.capacity_bytes[k]
        # The planner's load bounds the cost model's compute time from above.
        assert cost.devices[k].compute_s <= loads[k] * (1 + 1e-9) + 1e-15
        assert cost.devices[k].sent_bytes + cost.devices[k].recv_bytes == nbytes[k] or k == cluster.coordinator_index


def test_planned_load_equals_cost_model_for_all_full():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("lan-4x3090")
    plan = Plan.uniform(model, cluster, Op.FULL, 2, 4)
    problem = build_problem(model, cluster, plan, synthetic(12, 6), Budget(keep=1.0), STRATEGIES["hybrid"])
    loads, _ = problem.loads(plan)
    cost = CostModel(model, cluster).step(plan)
    assert loads == pytest.approx([d.compute_s for d in cost.devices], rel=1e-9)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES) + list(BASELINES))
def test_strategies_keep_their_ops_and_budget(strategy):
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("mixed-4")
    report = plan_step(model, cluster, strategy, "dp", keep=0.6, micro_batches=2, micro_batch_size=4, seed=3)
    counts = report.plan.summary()
    allowed = {op.char for op in STRATEGIES.get(strategy, tuple(Op))}
    assert {c for c, n in counts.items() if n} <= allowed
    if strategy == "full":
        assert counts == {"F": 2 * model.num_subnets, "O": 0, "S": 0}
    else:
        assert all(l <= c * (1 + 1e-9) for l, c in zip(report.load_s, report.capacity_s))
        assert report.compute_saving > 0.2
    assert report.to_dict()["op_counts"] == counts


def test_freeze_freezes_the_lowest_blocks_and_layerdrop_whole_blocks():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("lan-4x3090")
    frozen = plan_step(model, cluster, "freeze", keep=0.7, micro_batches=2, micro_batch_size=4).plan
    rows = [set(row) for row in frozen.ops[0]]
    first_full = next(l for l, r in enumerate(rows) if r == {Op.FULL})
    assert all(r == {Op.FORWARD_ONLY} for r in rows[:first_full]) and first_full > 0
    dropped = plan_step(model, cluster, "layerdrop", keep=0.7, micro_batches=2, micro_batch_size=4, seed=1).plan
    assert all(len(set(row)) == 1 for grid in dropped.ops for row in grid)


@pytest.mark.parametrize("kernel_model", [False, True])
def test_mip_is_deterministic_and_reports_its_bound(kernel_model):
    """The MIP is deterministic and proves its gap, on roofline devices (the linear model) and on
    kernel-model GPUs (block configurations priced exactly)."""
    model = ModelSpec.from_timm("vit_small_patch16_224")
    cluster = cluster_preset("lan-4x3090")
    if not kernel_model:
        cluster = Cluster.star([(n, dataclasses.replace(s, sm_count=None)) for n, s in cluster.devices], link("10gbe"))
    runs = [plan_step(model, cluster, "hybrid", "mip", keep=0.5, micro_batches=2, micro_batch_size=4, seed=5,
                      gap=1e-4) for _ in range(2)]
    assert runs[0].plan == runs[1].plan
    assert runs[0].bound >= runs[0].objective and runs[0].gap <= 1e-3 + 1e-9
    dp = plan_step(model, cluster, "hybrid", "dp", keep=0.5, micro_batches=2, micro_batch_size=4, seed=5)
    assert runs[0].objective >= dp.objective - 1e-9


def test_heterogeneous_devices_are_balanced():
    """Devices 1x, 1x, 2x and 4x slow: with the speed-aware placement every device's planned step
    time is within 5% of the step; a speed-oblivious even split leaves the slowest far behind."""
    model, cluster = ModelSpec.from_timm("vit_base_patch16_224"), cluster_preset("emulated-1124")
    balanced = plan_step(model, cluster, "hybrid", "dp", keep=0.6, micro_batches=4, micro_batch_size=8)
    step = max(balanced.load_s)
    assert (step - min(balanced.load_s)) / step <= 0.05
    even = plan_step(model, cluster, "full", keep=0.6, micro_batches=4, micro_batch_size=8,
                     placement=even_placement(model, cluster))
    loads = sorted(even.load_s)
    assert loads[-1] >= 1.5 * loads[-2]


def test_bad_input_is_explained():
    model, cluster = ModelSpec.from_timm("vit_small_patch16_224"), cluster_preset("lan-4x3090")
    with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
        plan_step(model, cluster, keep=1.5)
    with pytest.raises(ValueError, match="node1.*short by.*raise keep to at least"):
        plan_step(model, cluster, "backward", keep=0.1, micro_batches=2)
    with pytest.raises(ValueError, match=r"scores have shape \(2, 2\)"):
        plan_step(model, cluster, scores=Scores([[1, 1], [1, 1]], [[1, 1], [1, 1]]))
    with pytest.raises(KeyError, match="did you mean hybrid"):
        plan_step(model, cluster, "hybird")
    with pytest.raises(KeyError, match="unknown solver 'cplex'"):
        plan_step(model, cluster, solver="cplex")
