"""The timm table and the live-model spec agree with timm itself (built on the meta device)."""

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from d2ft import ModelSpec  # noqa: E402
from d2ft.zoo import timm_names  # noqa: E402
from runtime import model_spec_from_timm  # noqa: E402
from tests.conftest import tiny_model  # noqa: E402


def _meta_model(name, **kw):
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kw)


@pytest.mark.parametrize("name", timm_names())
def test_table_matches_timm(name):
    model = _meta_model(name)
    spec = ModelSpec.from_timm(name)
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert model_spec_from_timm(model, name=name) == spec


def test_custom_vit_matches_timm():
    spec = tiny_model(depth=1, heads=2)
    model = _meta_model("vit_tiny_patch16_224", img_size=2, patch_size=1, in_chans=1, embed_dim=4, depth=1,
                        num_heads=2, mlp_ratio=2, num_classes=3)
    assert sum(p.numel() for p in model.parameters()) == spec.params == 227


def test_unsupported_model_is_named():
    model = _meta_model("vit_tiny_patch16_224", global_pool="avg")
    with pytest.raises(ValueError, match="global_pool='avg'"):
        model_spec_from_timm(model)
