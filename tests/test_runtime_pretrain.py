"""d2ft pretrain: a real (tiny) run on IDX files writes a loadable checkpoint and an honest manifest."""

import gzip
import json
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from d2ft.app.cli import main  # noqa: E402
from runtime.pretrain import MODEL, MODEL_KWARGS, sha256  # noqa: E402


def _idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_pretrain_writes_checkpoint_and_manifest(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    images = (rng.random((300, 28, 28)) * 60 + labels[:, None, None] * 19).astype(np.uint8)  # learnable: brightness
    for prefix, n in (("train", 256), ("t10k", 44)):
        sl = slice(0, n) if prefix == "train" else slice(256, 300)
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[sl])
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[sl])
    out = tmp_path / "ckpt" / "vit.safetensors"
    code = main(["pretrain", "--data", str(tmp_path), "--out", str(out), "--epochs", "2", "--batch-size", "32",
                 "--threads", "1", "--json"])
    assert code == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["sha256"] == sha256(out)
    assert json.loads(out.with_suffix(".manifest.json").read_text())["test_top1"] == manifest["test_top1"]
    assert set(manifest["data"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                     "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    model = timm.create_model(MODEL, pretrained=False, checkpoint_path=str(out), **MODEL_KWARGS)
    assert sum(p.numel() for p in model.parameters()) == manifest["params"]


def test_missing_data_is_explained(tmp_path, capsys):
    code = main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "x.safetensors")])
    assert code == 2 and "dataset-fashion-mnist" in capsys.readouterr().err
