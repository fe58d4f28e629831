"""Runtime shards: slices of a real timm block reproduce it, and the ops mean what method.md says."""

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from runtime.shard import BlockShard, assemble_block_weights  # noqa: E402


def _block(seed=0):
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=1,
                              num_heads=4, num_classes=5, pretrained=False)
    return model.blocks[0]


def _run(block, shards, x, attn_heads=None):
    """The block's forward with its attention and MLP computed by ``shards`` (all heads unless given)."""
    y = block.norm1(x)
    a = sum(s.attn(y, [h for h in s.heads if attn_heads is None or h in attn_heads]) for s in shards)
    x = x + block.ls1(a + block.attn.proj.bias)
    y = block.norm2(x)
    return x + block.ls2(sum(s.mlp(y, s.heads) for s in shards) + block.mlp.fc2.bias)


def test_shards_reproduce_the_block_and_its_gradients():
    block = _block()
    shards = [BlockShard(block, [0, 3]), BlockShard(block, [2, 1])]
    x = torch.randn(2, 17, 48, requires_grad=True)
    ref = block(x)
    out = _run(block, shards, x)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    gx_ref, = torch.autograd.grad(ref, x, g, retain_graph=True)
    gx, = torch.autograd.grad(out, x, g, retain_graph=True)
    torch.testing.assert_close(gx, gx_ref)
    # Weight gradients of the slices equal the matching slices of timm's gradients.
    ref.backward(g)
    out.backward(g)
    grads = {h: {n: p.grad for n, p in s.subnet(h).base().items()} for s in shards for h in s.heads}
    assert all(g is not None for per_head in grads.values() for g in per_head.values())
    rebuilt_grads = assemble_block_weights(block, grads)
    torch.testing.assert_close(rebuilt_grads["attn.qkv.weight"], block.attn.qkv.weight.grad)
    torch.testing.assert_close(rebuilt_grads["mlp.fc2.weight"], block.mlp.fc2.weight.grad)
    rebuilt = assemble_block_weights(block, {h: w for s in shards for h, w in s.merged().items()})
    for name in ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"):
        torch.testing.assert_close(rebuilt[name], block.get_parameter(name))


def test_forward_only_and_skip_heads():
    block = _block(1)
    shard = BlockShard(block, [0, 1, 2, 3])
    x = torch.randn(1, 17, 48)
    y = block.norm1(x)
    full = shard.attn(y, [0, 1, 2, 3])
    with torch.no_grad():
        frozen = shard.attn(y, [2])  # FORWARD_ONLY: computed, a constant in backward
    live = shard.attn(y, [0, 1, 3])
    torch.testing.assert_close(live + frozen, full)  # the forward output is unchanged
    live.sum().backward()
    assert shard.subnet(2).qkv_w.grad is None and shard.subnet(2).proj_w.grad is None  # not trained at all
    assert shard.subnet(0).qkv_w.grad.abs().sum() > 0
    # SKIP: the block with head 2's attention contribution removed.
    with torch.no_grad():
        ref = block.attn(y) - frozen
    torch.testing.assert_close(shard.attn(y, [0, 1, 3]) + block.attn.proj.bias, ref)


def _lora_scores(b_scale: float):
    """Fisher scores of a 1-device LoRA step (no messages: no process group needed) after setting every
    adapter's B to ``b_scale`` times a seeded normal draw (0: untrained)."""
    from d2ft import Op, Plan
    from runtime.executor import Coordinator, Counters, Link
    from runtime.job import LoraSpec
    from runtime.measure import subnet_scores
    from runtime.train import apply_lora

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2,
                              num_heads=4, num_classes=5, pretrained=False)
    plan = Plan(["d0"], [[0] * 4] * 2, [[[Op.FULL] * 4] * 2], micro_batch_size=4)
    part = Coordinator(model, plan, 0)
    apply_lora(part, LoraSpec(rank=2, alpha=4.0, targets=("q", "v")), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, shard in part.held():
            for h in shard.heads:
                for b in shard.subnet(h).lora_b.values():
                    b.copy_(b_scale * torch.randn(b.shape, generator=g))
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.arange(4) % 5
    part.step(x, y, Link(Counters()))
    return part, {(l, h): f for l, h, _, f in subnet_scores(part)}


def test_lora_scores_are_as_large_before_an_adapter_trains_as_after():
    """An untrained adapter (B = 0) has no gradient on A, so a score that counted A's gradient ranked
    every untrained adapter below every trained one. The score is B's gradient: nonzero at B = 0 and
    about as large once B has trained."""
    _, untrained = _lora_scores(0.0)
    part, trained = _lora_scores(0.3)
    assert all(v > 0 for v in untrained.values())
    for key in untrained:
        assert 0.25 < trained[key] / untrained[key] < 4, key
    for l, shard in part.held():  # and it is exactly the sum of B's squared gradients
        for h in shard.heads:
            b_grads = [p.grad for p in shard.subnet(h).lora_b.values()]
            assert trained[(int(l), h)] == pytest.approx(sum(float(g.pow(2).sum()) for g in b_grads))
