"""Distributed runtime (gloo, CPU): parity with stock timm, op semantics, bytes against the cost model.

Each test spawns real torch.distributed processes on 127.0.0.1; models are tiny ViTs so
that a test takes seconds.
"""

import itertools
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from d2ft import Cluster, CostModel, DeviceSpec, LinkSpec, Op, Plan  # noqa: E402
from runtime import model_spec_from_timm  # noqa: E402
from d2ft.schedule import Message, messages  # noqa: E402
from runtime.feed import synthetic_batches  # noqa: E402
from runtime.job import Job  # noqa: E402
from runtime.run import launch  # noqa: E402
from runtime.weights import build_model  # noqa: E402
from runtime.shard import full_state_dict  # noqa: E402

KW = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=5)


def _job(plan, tmp_path, steps=3, optimizer="sgd"):
    return Job(model="vit_tiny_patch16_224", model_kwargs=KW, checkpoint="none", plan=plan, strategy=None,
               nproc=len(plan.devices), optimizer=optimizer, lr=0.1, weight_decay=0.0, steps=steps, seed=0,
               data="synthetic", lr_schedule="constant", record_logits=True, record_messages=True, progress=False,
               out_dir=str(tmp_path))


def _results(tmp_path, n):
    return {r: torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(n)}


def _reference(job, steps):
    model = build_model(job)
    opt = torch.optim.SGD(model.parameters(), lr=job.lr)
    losses, logits = [], []
    for x, y in itertools.islice(synthetic_batches(job, model), steps):
        opt.zero_grad()
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        logits.append(out.detach())
    return model, losses, logits


@pytest.mark.parametrize("placement", [
    [[1, 1, 1, 1], [1, 1, 1, 1]],  # 2 ranks, all subnets on the worker
    [[1, 2, 3, 0], [3, 3, 2, 1]],  # 4 ranks, the coordinator holds subnets too
])
def test_all_full_matches_stock_timm(tmp_path, placement):
    n = max(max(r) for r in placement) + 1
    plan = Plan([f"d{i}" for i in range(n)], placement, [[[Op.FULL] * 4] * 2] * 2, micro_batch_size=2)
    job = _job(plan, tmp_path)
    launch(job)
    res = _results(tmp_path, n)
    model, losses, logits = _reference(job, job.steps)
    for step, rec in enumerate(res[0]["log"]):
        torch.testing.assert_close(rec["loss"], losses[step])
        torch.testing.assert_close(rec["logits"], logits[step])
    rebuilt = full_state_dict(build_model(job), plan, {r: res[r]["state"] for r in res}, coordinator=0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(rebuilt[name], value, msg=lambda m: f"{name}: {m}")


def test_measured_bytes_equal_the_cost_model_and_idle_ranks_are_silent(tmp_path):
    rng = random.Random(3)
    placement = [[rng.randrange(3) for _ in range(4)] for _ in range(2)]
    ops = [[[rng.choice(list(Op)) for _ in range(4)] for _ in range(2)] for _ in range(2)]
    ops[0][1] = [Op.SKIP] * 4  # nothing runs in block 1 of micro-batch 0
    plan = Plan(["c", "w1", "w2"], placement, ops, micro_batch_size=2)
    job = _job(plan, tmp_path, steps=1)
    launch(job)
    res = _results(tmp_path, 3)
    cost = _predicted(job, plan)
    for r in range(3):
        counters = res[r]["log"][0]["counters"]
        assert counters["sent_bytes"] == cost.devices[r].sent_bytes
        assert counters["recv_bytes"] == cost.devices[r].recv_bytes
        assert not [m for m in map(Message._make, counters["messages"]) if m.layer == 1 and m.micro_batch == 0]


def test_forward_only_subnets_keep_their_weights(tmp_path):
    plan = Plan(["c", "w"], [[1, 1, 1, 1], [1, 1, 1, 1]],
                [[["F", "O", "F", "S"], ["O", "O", "F", "F"]]] * 2, micro_batch_size=2)
    job = _job(plan, tmp_path, steps=1)
    launch(job)
    res = _results(tmp_path, 2)
    before = build_model(job)
    after = full_state_dict(build_model(job), plan, {r: res[r]["state"] for r in res}, coordinator=0)
    qkv_before = before.blocks[0].attn.qkv.weight.view(3, 4, 12, 48)
    qkv_after = after["blocks.0.attn.qkv.weight"].view(3, 4, 12, 48)
    for h, op in enumerate(plan.ops[0][0]):
        changed = not torch.equal(qkv_before[:, h], qkv_after[:, h])
        assert changed == (op is Op.FULL), (h, op)


def _single_process_d2ft(job, plan, steps):
    """The same plan in one process: one shard per block holding every head, ops as method.md says."""
    from runtime.shard import BlockShard, assemble_block_weights

    model = build_model(job)
    shards = [BlockShard(b, list(range(4))) for b in model.blocks]
    sliced = (".attn.qkv.", ".attn.proj.weight", ".mlp.fc1.", ".mlp.fc2.weight")  # now held by the shards
    params = [p for n, p in model.named_parameters() if not (n.startswith("blocks.") and any(k in n for k in sliced))]
    params += [p for s in shards for p in s.parameters()]
    opt = torch.optim.SGD(params, lr=job.lr)
    losses, logits = [], []
    for x, y in itertools.islice(synthetic_batches(job, model), steps):
        opt.zero_grad()
        step_loss, step_logits = 0.0, []
        for m, (xm, ym) in enumerate(zip(x.chunk(plan.micro_batches), y.chunk(plan.micro_batches))):
            h = model._pos_embed(model.patch_embed(xm))
            for l, (blk, shard) in enumerate(zip(model.blocks, shards)):
                ops = plan.ops[m][l]
                full = [i for i, op in enumerate(ops) if op is Op.FULL]
                fwd = [i for i, op in enumerate(ops) if op is Op.FORWARD_ONLY]
                for half, norm, ls, bias in (("attn", blk.norm1, blk.ls1, blk.attn.proj.bias),
                                             ("mlp", blk.norm2, blk.ls2, blk.mlp.fc2.bias)):
                    z = norm(h)
                    total = getattr(shard, half)(z, full) if full else torch.zeros_like(z)
                    if fwd:
                        with torch.no_grad():
                            frozen = getattr(shard, half)(z, fwd)
                        total = total + frozen
                    h = h + ls(total + bias)
            out = model.forward_head(model.norm(h))
            loss = torch.nn.functional.cross_entropy(out, ym) / plan.micro_batches
            loss.backward()
            step_loss += loss.detach()
            step_logits.append(out.detach())
        opt.step()
        losses.append(step_loss)
        logits.append(torch.cat(step_logits))
    state = model.state_dict()
    for l, (blk, shard) in enumerate(zip(model.blocks, shards)):
        for name, value in assemble_block_weights(blk, shard.merged()).items():
            state[f"blocks.{l}.{name}"] = value
    return state, losses, logits


def _run_against_the_reference(job, plan, tmp_path) -> dict:
    """Runs ``job`` and checks its losses, logits and weights against ``_single_process_d2ft``; its rank files."""
    launch(job)
    res = _results(tmp_path, len(plan.devices))
    state, losses, logits = _single_process_d2ft(job, plan, job.steps)
    for step, rec in enumerate(res[0]["log"]):
        torch.testing.assert_close(rec["loss"], losses[step])
        torch.testing.assert_close(rec["logits"], logits[step])
    rebuilt = full_state_dict(build_model(job), plan, {r: res[r]["state"] for r in res}, coordinator=0)
    for name, value in state.items():
        torch.testing.assert_close(rebuilt[name], value, msg=lambda m: f"{name}: {m}")
    return res


def test_random_hybrid_plan_matches_the_single_process_reference(tmp_path):
    """Distributed equals single-process for a hybrid plan: F, O and S mixed, the coordinator holding some."""
    rng = random.Random(7)
    placement = [[rng.randrange(3) for _ in range(4)] for _ in range(2)]
    ops = [[[rng.choice(list(Op)) for _ in range(4)] for _ in range(2)] for _ in range(2)]
    plan = Plan(["c", "w1", "w2"], placement, ops, micro_batch_size=2)
    job = _job(plan, tmp_path, steps=2)
    res = _run_against_the_reference(job, plan, tmp_path)
    cost = _predicted(job, plan)
    for r in range(3):
        for step in res[r]["log"]:
            assert step["counters"]["sent_bytes"] == cost.devices[r].sent_bytes
            assert step["counters"]["recv_bytes"] == cost.devices[r].recv_bytes
    # Message for message: every rank sends and receives exactly the schedule's messages, in its order.
    schedule = messages(plan, model_spec_from_timm(build_model(job)), coordinator=0)
    for r in range(3):
        for step in res[r]["log"]:
            recorded = [Message._make(m) for m in step["counters"]["messages"]]
            assert [m for m in recorded if m.src == r] == [m for m in schedule if m.src == r]
            assert [m for m in recorded if m.dst == r] == [m for m in schedule if m.dst == r]


def _predicted(job, plan):
    """The core cost model's step for ``plan`` on ranks of this machine (bytes do not depend on speeds)."""
    spec = model_spec_from_timm(build_model(job))
    dev = DeviceSpec("cpu", 1e11, 1e11, 1e10, 1e10)
    cluster = Cluster.star([(n, dev) for n in plan.devices], LinkSpec("loopback", 1e9))
    return CostModel(spec, cluster).step(plan)


@pytest.mark.parametrize("seed, ranks, micro_batches", [(7, 3, 3), (11, 4, 2)])
def test_the_interleaved_order_computes_what_the_sequential_one_does(tmp_path, seed, ranks, micro_batches):
    """Every micro-batch in flight at once (Job.order "interleaved"): the single-process reference's losses,
    logits and weights, and the schedule's messages (in another order), on a random hybrid plan whose
    coordinator holds subnets and in which one block of one micro-batch runs nothing."""
    rng = random.Random(seed)
    placement = [rng.sample(range(ranks), ranks) + [rng.randrange(ranks) for _ in range(4 - ranks)],
                 [rng.randrange(ranks) for _ in range(4)]]  # every rank holds a subnet
    ops = [[[rng.choice(list(Op)) for _ in range(4)] for _ in range(2)] for _ in range(micro_batches)]
    ops[0][1] = [Op.SKIP] * 4
    plan = Plan([f"d{i}" for i in range(ranks)], placement, ops, micro_batch_size=2)
    job = _job(plan, tmp_path, steps=2).replace(order="interleaved")
    res = _run_against_the_reference(job, plan, tmp_path)
    schedule = messages(plan, model_spec_from_timm(build_model(job)), coordinator=0)
    for r in range(ranks):
        for step in res[r]["log"]:
            recorded = [Message._make(m) for m in step["counters"]["messages"]]
            assert sorted(m for m in recorded if m.src == r) == sorted(m for m in schedule if m.src == r)
            assert sorted(m for m in recorded if m.dst == r) == sorted(m for m in schedule if m.dst == r)
    sent = [Message._make(m) for m in res[0]["log"][0]["counters"]["messages"] if m[0] == 0]
    assert sent != [m for m in schedule if m.src == 0]  # not the sequential order: micro-batches side by side


def test_lora_runs_the_same_in_either_order(tmp_path):
    """LoRA (a frozen stem and base weights, adapters and the classifier trained) on 3 ranks: the interleaved
    order gives the sequential order's losses and trained weights."""
    from runtime.job import LoraSpec

    rng = random.Random(5)
    placement = [[0, 1, 2, 1], [2, 1, 0, 2]]
    ops = [[[rng.choice(list(Op)) for _ in range(4)] for _ in range(2)] for _ in range(2)]
    plan = Plan(["c", "w1", "w2"], placement, ops, micro_batch_size=2)
    runs = {}
    for order in ("sequential", "interleaved"):
        job = _job(plan, tmp_path / order, steps=2, optimizer="adamw").replace(order=order, lora=LoraSpec(rank=2))
        launch(job)
        runs[order] = _results(tmp_path / order, 3)
    for a, b in zip(runs["sequential"][0]["log"], runs["interleaved"][0]["log"]):
        torch.testing.assert_close(a["loss"], b["loss"])
    for r in range(3):
        for name, value in runs["sequential"][r]["state"].items():
            torch.testing.assert_close(runs["interleaved"][r]["state"][name], value, msg=lambda m: f"{name}: {m}")
