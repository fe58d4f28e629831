"""ModelSpec: golden numbers from published sources, hand-checked formulas, invariants."""

import pytest
from hypothesis import given, strategies as st

from d2ft import ModelSpec
from d2ft.zoo import timm_names
from tests.conftest import tiny_model


def test_vit_base_golden():
    m = ModelSpec.from_timm("vit_base_patch16_224")
    assert m.params == 86_567_656  # timm / Dosovitskiy et al. 2021, Table 1 ("86M")
    # 17.56 G multiply-adds per image, counting Q K^T and A V (the fvcore convention).
    assert m.forward_macs == pytest.approx(17.56e9, rel=0.005)
    assert m.tokens == 197 and m.head_dim == 64 and m.mlp_slice == 256


@pytest.mark.parametrize("name, macs", [
    ("vit_small_patch16_224", 4.61e9),   # DeiT-S: 4.6 G (Touvron et al. 2021, Table 1)
    ("vit_tiny_patch16_224", 1.26e9),    # DeiT-Ti: 1.3 G (Touvron et al. 2021, Table 1)
    ("vit_large_patch16_224", 61.6e9),   # ViT-L/16: 61.6 G (timm model card)
])
def test_other_sizes_macs(name, macs):
    assert ModelSpec.from_timm(name).forward_macs == pytest.approx(macs, rel=0.01)


def test_tiny_model_by_hand():
    """D=4, H=2, hd=2, M=8 (m=4 per subnet), N=4 patches + 1 class token = 5.

    Subnet forward MACs: qkv 5*4*6=120, proj 5*2*4=40, QK^T and AV 2*5*5*2=100, MLP 2*5*4*4=160:
    420 MACs = 840 FLOP. Input-gradient: linear 160+160, attention 2*100 -> 520 MACs = 1040 FLOP.
    Weight-gradient: 160+160 = 320 MACs = 640 FLOP.
    Parameters: qkv 24+6, proj 8, fc1 16+4, fc2 16 = 74 per subnet; stem 4+4+4+20 = 32;
    block shared 2 norms (16) + 2 biases (8) = 24; classifier norm 8 + head 12+3 = 23.
    """
    m = tiny_model(depth=1, heads=2)
    assert (m.tokens, m.head_dim, m.mlp_slice) == (5, 2, 4)
    assert (m.subnet.fwd_flop, m.subnet.ig_flop, m.subnet.wg_flop) == (840, 1040, 640)
    assert m.subnet.params == 74
    assert (m.embed.params, m.block_shared.params, m.classifier.params) == (32, 24, 23)
    assert m.params == 32 + 24 + 2 * 74 + 23


@given(dim_per_head=st.sampled_from([2, 8, 64]), heads=st.integers(1, 8), depth=st.integers(1, 4),
       patch=st.sampled_from([1, 2, 4]), grid=st.integers(1, 4), split=st.booleans())
def test_work_invariants(dim_per_head, heads, depth, patch, grid, split):
    m = ModelSpec.vit(dim=dim_per_head * heads, depth=depth, heads=heads, img_size=patch * grid, patch=patch,
                      split_mlp=split)
    # Backward is twice forward for every part with weights on its input side (method.md).
    assert m.subnet.bwd_flop == 2 * m.subnet.fwd_flop
    # Heads-only and split give the same model; only the bookkeeping moves.
    other = ModelSpec.vit(dim=m.dim, depth=depth, heads=heads, img_size=m.img_size, patch=patch, split_mlp=not split)
    assert other.params == m.params
    assert other.total.fwd_flop == m.total.fwd_flop
    assert m.total.params == m.coordinator_work.params + m.num_subnets * m.subnet.params


def test_json_round_trip():
    m = ModelSpec.from_timm("deit_small_distilled_patch16_224", dtype_bytes=2)
    assert ModelSpec.from_json(m.to_json()) == m


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="did you mean vit_base_patch16_224"):
        ModelSpec.from_timm("vit_bsae_patch16_224")


def test_tagged_name_is_accepted():
    assert ModelSpec.from_timm("vit_base_patch16_224.augreg2_in21k_ft_in1k").params == 86_567_656


def test_bad_specs_list_every_problem():
    with pytest.raises(ValueError) as e:
        ModelSpec(dim=-1, depth=0, heads=2, mlp_hidden=8)
    assert "dim must be a positive integer" in str(e.value) and "depth must be" in str(e.value)
    with pytest.raises(ValueError, match="not divisible by heads"):
        ModelSpec(dim=10, depth=1, heads=3, mlp_hidden=8)
    with pytest.raises(ValueError, match="split_mlp=False"):
        ModelSpec(dim=6, depth=1, heads=3, mlp_hidden=8)
    with pytest.raises(ValueError, match="unknown key 'width'"):
        ModelSpec.from_dict({"width": 3, "dim": 4, "depth": 1, "heads": 1, "mlp_hidden": 4})


def test_table_covers_the_families():
    names = timm_names()
    for size in ("tiny", "small", "base", "large", "huge"):
        assert any(f"_{size}_" in n for n in names)
    for fragment in ("patch14", "patch16", "patch32", "_224", "_384", "deit_", "deit3_", "distilled"):
        assert any(fragment in n for n in names)
