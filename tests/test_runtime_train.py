"""d2ft run as a training tool: real data files, exact resume, LoRA, live re-planning, bad input.

Every test runs real ranks (gloo on 127.0.0.1) on a tiny ViT and tiny IDX files written here.
"""

import gzip
import json
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from d2ft.app.cli import main  # noqa: E402

KW = {"img_size": 16, "patch_size": 8, "in_chans": 1, "embed_dim": 48, "depth": 2, "num_heads": 4,
      "num_classes": 4}


def _write_idx(path, arr):
    payload = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()
    with gzip.open(path, "wb") as f:
        f.write(payload)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """Four classes of noisy 16 x 16 textures (horizontal and vertical stripes, a checkerboard, none)."""
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    textures = [(yy // 2) % 2, (xx // 2) % 2, (yy // 2 + xx // 2) % 2, np.zeros((16, 16), int)]
    for split, n in (("train", 128), ("t10k", 32)):
        labels = np.arange(n, dtype=np.uint8) % 4
        images = rng.integers(0, 60, (n, 16, 16)) + 150 * np.stack([textures[c] for c in labels])
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", images.astype(np.uint8))
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def _run(idx_dir, out, *extra, nproc="2", steps="4"):
    return main(["run", "--nproc", nproc, "--model", "vit_tiny_patch16_224", "--model-kwargs", json.dumps(KW),
                 "--checkpoint", "none", "--data", f"idx:{idx_dir}", "--micro-batches", "2", "--micro-batch-size",
                 "4", "--steps", steps, "--lr", "3e-3", "--no-augment", "--quiet", "--out", str(out), *extra])


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_continues_exactly(idx_dir, tmp_path, capsys):
    """A run resumed from its step-2 checkpoint repeats steps 2 and 3 bit for bit."""
    run = tmp_path / "run"
    assert _run(idx_dir, run, "--checkpoint-every", "2", "--keep-checkpoints", "3", "--strategy", "hybrid") == 0
    first = _metrics(run)
    assert [r["step"] for r in first] == [0, 1, 2, 3] and first[-1]["top1"] is not None
    assert all(r["predicted_sent_bytes"] == r["measured_sent_bytes"] for r in first)
    from safetensors.torch import load_file

    model_before = load_file(run / "model.safetensors")
    # Interrupted after the step-2 checkpoint: the pointer is there, the later metrics lines too.
    pointer = json.loads((run / "checkpoint.json").read_text())
    sets = [s for s in pointer["sets"] if s["step"] <= 2]
    (run / "checkpoint.json").write_text(json.dumps({"step": 2, "path": sets[-1]["path"], "sets": sets}))
    assert _run(idx_dir, run, "--checkpoint-every", "2", "--keep-checkpoints", "3", "--strategy", "hybrid",
                "--resume") == 0
    again = _metrics(run)
    assert [r["step"] for r in again] == [0, 1, 2, 3]
    assert [r["loss"] for r in again] == [r["loss"] for r in first]
    assert [(r["n_full"], r["n_forward_only"], r["n_skip"]) for r in again] == \
           [(r["n_full"], r["n_forward_only"], r["n_skip"]) for r in first]
    assert again[-1]["top1"] == first[-1]["top1"]
    model_after = load_file(run / "model.safetensors")
    assert model_after.keys() == model_before.keys()
    assert all(torch.equal(model_after[k], model_before[k]) for k in model_before)
    _check_tracking(run, again)
    capsys.readouterr()


def _check_tracking(run, metrics):
    """metrics.csv and the TensorBoard scalars hold each step once, as metrics.jsonl does."""
    import csv

    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [m["step"] for m in metrics]
    assert [float(r["loss"]) for r in rows] == pytest.approx([m["loss"] for m in metrics], rel=1e-12)
    assert rows[-1]["top1"] != "" and rows[0]["top1"] == ""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [m["step"] for m in metrics]  # the resumed steps once, not twice
    assert [e.value for e in losses] == pytest.approx([m["loss"] for m in metrics], rel=1e-6)
    assert [e.step for e in events.Scalars("eval/top1")] == [metrics[-1]["step"]]


def test_the_exported_model_is_the_trained_one(idx_dir, tmp_path, capsys):
    """model.safetensors loads into stock timm and scores what the run's last evaluation scored; the loss falls."""
    import timm
    from safetensors.torch import load_file

    from runtime.data import load_dataset

    run = tmp_path / "run"
    assert _run(idx_dir, run, "--strategy", "full", "--json", steps="40") == 0
    summary = json.loads(capsys.readouterr().out)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **KW)
    model.load_state_dict(load_file(run / "model.safetensors"))
    data = load_dataset(f"idx:{idx_dir}")
    mean, std = data.train.stats()
    x = (data.test.images.float() / 255 - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        top1 = float((model(x).argmax(1) == data.test.labels).float().mean())
    assert top1 == pytest.approx(summary["top1"])
    losses = summary["loss"]
    assert sum(losses[-10:]) < 0.9 * sum(losses[:10])


def test_lora_changes_only_adapters_and_the_classifier(idx_dir, tmp_path):
    run = tmp_path / "run"
    assert _run(idx_dir, run, "--lora", "--lora-rank", "2", "--strategy", "full", steps="1") == 0
    states = {r: torch.load(run / f"rank{r}.pt", weights_only=True)["state"] for r in range(2)}
    torch.manual_seed(0)
    import timm

    init = timm.create_model("vit_tiny_patch16_224", pretrained=False, **KW).state_dict()
    H, hd, D = 4, 12, 48
    adapters = 0
    for r, state in states.items():
        for key, value in state.items():
            if ".lora_b." in key:
                adapters += 1
                assert value.abs().sum() > 0, key  # B starts at zero: a FULL step moved it
            elif key.startswith("shards.") and ".lora_" not in key:
                _, l, _, h, name = key.split(".")
                l, h = int(l), int(h)
                base = {"qkv_w": init[f"blocks.{l}.attn.qkv.weight"].view(3, H, hd, D)[:, h],
                        "fc1_w": init[f"blocks.{l}.mlp.fc1.weight"].view(H, 4 * D // H, D)[h]}.get(name)
                if base is not None:
                    torch.testing.assert_close(value, base, rtol=0, atol=0)
            elif key.startswith("model."):
                name = key[len("model."):]
                if name.startswith("head"):
                    assert not torch.equal(value, init[name]), key
                elif name in init:
                    assert torch.equal(value, init[name]), key
    assert adapters == 2 * 4 * 2  # 2 blocks x 4 heads x (q, v)
    # The run's model (what `d2ft simulate --run` prices) is LoRA's: rank 2 on q, v; the trained parameters
    # the cost model counts are what the ranks hold as adapters plus the classifier's head.
    from d2ft import ModelSpec

    spec = ModelSpec.from_json((run / "model.json").read_text())
    assert (spec.lora_rank, spec.lora_targets) == (2, ("q", "v"))
    held = sum(v.numel() for state in states.values() for k, v in state.items() if ".lora_" in k)
    head = sum(init[k].numel() for k in init if k.startswith("head"))
    assert spec.total.trained_params == held + head


def test_replanning_keeps_the_subnet_with_dominant_gradients_full(idx_dir, tmp_path):
    """Subnet (1, 2)'s MLP output is scaled up 30x in the checkpoint: its fc1 gradients dominate the
    measured Fisher scores, and every re-plan after the warm-up keeps it FULL in every micro-batch. The ranks
    are priced as one roofline per task (cost linear in the subnets): on the kernel model a backward's kernel
    launches outweigh this tiny model's arithmetic, so the planner rightly trains whole blocks, and the block
    whose scores sum highest need not hold the dominant subnet."""
    import dataclasses

    import timm
    from safetensors.torch import save_file

    from runtime.prepare import LOCAL_CPU, local_cluster

    linear = dataclasses.replace(LOCAL_CPU, sm_count=None, kernel_launch_s=0.0, task_overhead_s=20e-6)
    cluster = local_cluster(2)
    cluster = dataclasses.replace(cluster, devices=tuple((n, linear) for n, _ in cluster.devices))
    (tmp_path / "cluster.json").write_text(cluster.to_json())

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **KW)
    state = model.state_dict()
    m = 4 * 48 // 4
    state["blocks.1.mlp.fc2.weight"][:, 2 * m:3 * m] *= 30
    ckpt = tmp_path / "boosted.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    run = tmp_path / "run"
    assert main(["run", "--nproc", "2", "--model", "vit_tiny_patch16_224", "--model-kwargs", json.dumps(KW),
                 "--checkpoint", str(ckpt), "--data", f"idx:{idx_dir}", "--micro-batches", "2",
                 "--micro-batch-size", "4", "--steps", "4", "--full-warmup", "1", "--keep", "0.6",
                 "--strategy", "backward", "--cluster", str(tmp_path / "cluster.json"), "--quiet",
                 "--out", str(run)]) == 0
    plans = [json.loads(line) for line in (run / "plans.jsonl").read_text().splitlines()]
    assert [p["reason"] for p in plans] == ["warm-up", "initial", "re-plan", "re-plan"]
    for p in plans[1:]:
        ops = [grid.split("/")[1][2] for grid in p["plan"]["ops"]]  # block 1, head 2, per micro-batch
        assert ops == ["F", "F"], p["plan"]["ops"]
        assert p["summary"]["O"] > 0  # the budget did bind: others were cut
        fisher = p["scores"]["backward"]  # what the ranks measured, as the planner saw it
        assert max(max(row) for row in fisher) == fisher[1][2]
    assert all(p["solve_time_s"] >= 0 for p in plans)


def test_bad_input_is_refused_and_nothing_is_overwritten(idx_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(idx_dir, run, "--strategy", "full", steps="1") == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()

    assert _run(idx_dir, run, "--strategy", "full", steps="1") == 2
    assert "already holds this run" in capsys.readouterr().err
    assert _run(idx_dir, run, "--strategy", "hybrid", steps="1") == 2
    assert "already holds a different run (it differs in strategy)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in idx_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    assert _run(broken, tmp_path / "r2", steps="1") == 2
    assert "train-images-idx3-ubyte.gz: cannot read IDX data" in capsys.readouterr().err
    (broken / "t10k-labels-idx1-ubyte.gz").unlink()
    assert _run(broken, tmp_path / "r2", steps="1") == 2
    assert "no t10k-labels-idx1-ubyte" in capsys.readouterr().err

    other = tmp_path / "other.safetensors"  # a checkpoint of another width
    import timm
    from safetensors.torch import save_file

    wide = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**KW, "embed_dim": 64})
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(other))
    code = main(["run", "--nproc", "2", "--model", "vit_tiny_patch16_224", "--model-kwargs", json.dumps(KW),
                 "--checkpoint", str(other), "--data", f"idx:{idx_dir}", "--quiet", "--out", str(tmp_path / "r3")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a VisionTransformer of this shape" in err and "differ in shape" in err
    (tmp_path / "torn.safetensors").write_bytes(other.read_bytes()[:1000])
    code = main(["run", "--nproc", "2", "--checkpoint", str(tmp_path / "torn.safetensors"), "--out", str(tmp_path / "r4")])
    assert code == 2 and "cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "r3").exists() and not (tmp_path / "r4").exists()


def _plans(run_dir):
    return [json.loads(line) for line in (run_dir / "plans.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("ranks, extra", [
    ("3", ("--strategy", "hybrid", "--keep", "0.5", "--skip-rescale")),
    ("2", ("--strategy", "hybrid", "--keep", "0.6", "--lora", "--lora-rank", "2")),
    ("2", ("--strategy", "hybrid", "--keep", "0.6", "--message-dtype", "bf16")),
])
def test_emulated_ranks_equal_real_ranks(idx_dir, tmp_path, ranks, extra):
    """--nproc 1 --emulate-ranks K runs K real ranks' placement, plans, losses and updates, without a message."""
    from safetensors.torch import load_file

    real, emulated = tmp_path / "real", tmp_path / "emulated"
    assert _run(idx_dir, real, *extra, nproc=ranks, steps="4") == 0
    assert _run(idx_dir, emulated, *extra, "--emulate-ranks", ranks, nproc="1", steps="4") == 0
    assert [p["plan"] for p in _plans(emulated)] == [p["plan"] for p in _plans(real)]
    assert any(p["summary"].get("S", 0) + p["summary"].get("O", 0) for p in _plans(real))  # the budget bound
    a, b = _metrics(real), _metrics(emulated)
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-5)
    assert b[-1]["top1"] == a[-1]["top1"]
    assert sum(r["measured_sent_bytes"] for r in b) == 0 < sum(r["measured_sent_bytes"] for r in a)
    ours, theirs = load_file(emulated / "model.safetensors"), load_file(real / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-5)
    if "bf16" in extra:  # the bytes measured on the wire are the cost model's at 2 B per element (fp32's are twice)
        assert json.loads((real / "summary.json").read_text())["bytes_exact"]


@pytest.mark.xfail(strict=True, reason=(
    "known limitation (issue 15): a subnet that is not FULL keeps its first score, and once LoRA's backward "
    "is priced as LoRA (no weight gradient for the frozen base) the knapsack packs this 2-block toy's FULL "
    "subnets into block 0 from step 1 on, so (1, 0) and (1, 3) never train; the scoring defect this test was "
    "written for is guarded by tests/test_runtime_shard.py::test_lora_scores_are_as_large_before_an_adapter_"
    "trains_as_after"))
def test_lora_adapters_do_not_lock_in(idx_dir, tmp_path):
    """LoRA at keep 0.8, no warm-up: every subnet's adapters train within the first steps. B starts at
    zero, so scoring on A's gradient too ranked every untrained adapter last for the whole run."""
    run = tmp_path / "run"
    assert _run(idx_dir, run, "--lora", "--lora-rank", "2", "--strategy", "backward", "--keep", "0.8",
                "--emulate-ranks", "2", nproc="1", steps="8") == 0
    trained = set()
    for p in _plans(run):
        for grid in p["plan"]["ops"]:
            for l, row in enumerate(grid.split("/")):
                trained |= {(l, h) for h, op in enumerate(row) if op == "F"}
    assert trained == {(l, h) for l in range(2) for h in range(4)}
