"""Every bad input is answered before any rank starts: a clear message of at most three lines that
names the offending value, the documented exit status, and no traceback. Python API misuse raises
a TypeError or ValueError that says what was expected."""

import gzip
import json
import os
import pickle
import struct

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

from d2ft.app.cli import main  # noqa: E402
from d2ft.rundir import RunLock  # noqa: E402

TINY = json.dumps({"img_size": 16, "patch_size": 8, "in_chans": 1, "embed_dim": 48, "depth": 2, "num_heads": 4,
                   "num_classes": 4})
BASE = ["--model", "vit_tiny_patch16_224", "--model-kwargs", TINY, "--checkpoint", "none", "--data", "synthetic",
        "--nproc", "2", "--quiet"]


def _idx(path, arr):
    payload = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(payload)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bad files the table refers to, by name."""
    root = tmp_path_factory.mktemp("bad")
    (root / "garbage.pt").write_bytes(b"this is not a checkpoint")
    (root / "torn.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("keep me")
    (root / "empty").mkdir()
    cifar = root / "cifar"
    cifar.mkdir()
    marker = root / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (cifar / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}, protocol=2))
    unseen = root / "unseen"  # test labels 0-3, training labels 0-1 only
    unseen.mkdir()
    for split, labels in (("train", np.arange(16) % 2), ("t10k", np.arange(8) % 4)):
        _idx(unseen / f"{split}-images-idx3-ubyte.gz", np.zeros((len(labels), 16, 16)))
        _idx(unseen / f"{split}-labels-idx1-ubyte.gz", labels)
    (root / "bad.csv").write_text("a,b\n1,2\n")
    (root / "notatrace.json").write_text('{"a": 1}')
    (root / "scores.json").write_text("{oops")
    halfrun = root / "halfrun"  # a run's metrics with no checkpoint
    halfrun.mkdir()
    for name in ("metrics.jsonl", "plans.jsonl"):
        (halfrun / name).write_text('{"step": 0, "loss": 1.0}\n')
    assert main(["run", *BASE, "--dry-run", "--out", str(root / "halfrun2")]) == 0  # a real job.json
    (root / "halfrun2" / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    (root / "locked").mkdir()
    (root / "notademo").mkdir()
    (root / "notademo" / "mine.txt").write_text("mine")
    return root


CLI = [  # (argv, exit status, what stderr must say); FILES/ is the fixture's folder
    (["run", *BASE, "--strategy", "hybird"], 2, "unknown strategy 'hybird'"),
    (["run", *BASE, "--solver", "cplex"], 2, "unknown solver 'cplex'"),
    (["run", *BASE, "--comm-keep", "0"], 2, "--comm-keep: expected a number in (0, 1]"),
    (["run", *BASE, "--keep", "1.5"], 2, "got '1.5'"),
    (["run", *BASE, "--lora", "--lora-targets", "q,w"], 2, "targets must be some of q, k, v, proj, fc1, fc2, got q, w"),
    (["run", *BASE, "--lora", "--lora-rank", "0"], 2, "rank must be a positive integer, got 0"),
    (["run", *BASE, "--lora", "--lora-alpha", "-2"], 2, "alpha must be a positive number, got -2.0"),
    (["run", *BASE, "--lr", "0"], 2, "lr must be a positive number, got 0.0"),
    (["run", *BASE, "--lr", "-1"], 2, "lr must be a positive number, got -1.0"),
    (["run", *BASE, "--lr-warmup", "-1"], 2, "lr_warmup_steps must be an integer >= 0 or None, got -1"),
    (["run", *BASE, "--weight-decay", "-1"], 2, "weight_decay must be a number >= 0, got -1.0"),
    (["run", *BASE, "--momentum", "-0.5"], 2, "momentum must be a number >= 0, got -0.5"),
    (["run", *BASE, "--eval-batch-size", "0"], 2, "eval_batch_size must be a positive integer, got 0"),
    (["run", *BASE, "--replan-every", "-1"], 2, "replan_every must be an integer >= 0, got -1"),
    (["run", *BASE, "--checkpoint-every", "-1"], 2, "checkpoint_every must be an integer >= 0, got -1"),
    (["run", *BASE, "--full-warmup", "-2"], 2, "full_warmup must be an integer >= 0, got -2"),
    (["run", *BASE, "--eval-every", "-1"], 2, "eval_every must be an integer >= 0, got -1"),
    (["run", *BASE, "--keep-checkpoints", "0"], 2, "keep_checkpoints must be a positive integer, got 0"),
    (["run", *BASE, "--port", "0"], 2, "port must be in 1-65535, got 0"),
    (["run", *BASE, "--port", "70000"], 2, "port must be in 1-65535, got 70000"),
    (["run", *BASE, "--timeout", "0"], 2, "timeout_s must be a positive number, got 0.0"),
    (["run", *BASE, "--timeout", "-5"], 2, "timeout_s must be a positive number, got -5.0"),
    (["run", *BASE, "--steps", "0"], 2, "steps must be a positive integer, got 0"),
    (["run", *BASE, "--nproc", "0"], 2, "nproc must be a positive integer, got 0"),
    (["run", *BASE, "--micro-batches", "0"], 2, "--micro-batches: expected a positive integer, got '0'"),
    (["run", *BASE, "--micro-batch-size", "-3"], 2, "--micro-batch-size: expected a positive integer, got '-3'"),
    (["run", *BASE, "--optimizer", "adam"], 2, "invalid choice: 'adam'"),
    (["run", *BASE, "--device", "tpu"], 2, "invalid choice: 'tpu'"),
    (["run", *BASE, "--stpes", "3"], 2, "unrecognized arguments: --stpes"),
    (["run", *BASE[:6], "--model-kwargs", '{"num_classes": "x"}'], 2, '--model-kwargs {"num_classes": "x"}'),
    (["run", *BASE[:2], "--model-kwargs", "{oops"], 2, "--model-kwargs is not valid JSON"),
    (["run", *BASE[:2], "--model-kwargs", "[1]"], 2, "--model-kwargs must be a JSON object"),
    (["run", "--model", "vit_tinny_patch16_224", "--checkpoint", "none", "--data", "synthetic"], 2,
     "vit_tinny_patch16_224"),
    (["run", *BASE, "--slowdown", "1,a"], 2, "--slowdown '1,a'"),
    (["run", *BASE, "--slowdown", "1"], 2, "slowdown gives 1 factors for 2 ranks"),
    (["run", *BASE, "--slowdown", "1,0.5"], 2, "slowdown factors must be finite and >= 1, got [1.0, 0.5]"),
    (["run", *BASE[:6], "--data", "folder:FILES/empty@abc"], 2, "the size after @ must be a whole number"),
    (["run", *BASE[:6], "--data", "nmist-digits"], 2, "unknown dataset 'nmist-digits'"),
    (["run", *BASE[:6], "--data", "idx:FILES/empty"], 2, "no train-images-idx3-ubyte"),
    (["run", *BASE[:6], "--data", "cifar:FILES/cifar"], 2, "data_batch_1: not a CIFAR python batch"),
    (["run", *BASE[:6], "--data", "idx:FILES/unseen"], 2, "test split has labels the training split never shows (2, 3)"),
    (["run", "--checkpoint", "/no/such/weights.safetensors"], 2, "'/no/such/weights.safetensors' does not exist"),
    (["run", "--checkpoint", "FILES/garbage.pt"], 2, "garbage.pt' is not a checkpoint (cannot be read"),
    (["run", "--checkpoint", "FILES/torn.safetensors"], 2, "torn.safetensors' is not a checkpoint"),
    (["run", *BASE, "--nproc", "100000", "--dry-run"], 2, "--nproc 100000"),
    (["run", *BASE, "--cluster", "FILES/nope.json"], 2, "nope.json' does not exist"),
    (["run", *BASE, "--cluster", "dgx-a1000"], 2, "unknown cluster preset 'dgx-a1000'"),
    (["run", *BASE, "--cluster", "lan-4x3090"], 2, "has 4 devices but --nproc is 2"),
    (["run", *BASE, "--plan", "FILES/nope.json"], 2, "plan file 'FILES/nope.json' does not exist"),
    (["run", *BASE, "--resume", "--out", "FILES/empty"], 2, "holds no run to resume"),
    (["run", *BASE, "--out", "FILES/foreign"], 2, "holds files d2ft did not write (notes.txt)"),
    (["run", *BASE, "--out", "FILES/locked"], 2, "is in use by another d2ft run (pid"),
    (["run", *BASE, "--resume", "--out", "FILES/halfrun"], 2, "holds files d2ft did not write (metrics.jsonl, plans"),
    (["run", *BASE, "--resume", "--out", "FILES/halfrun2"], 2, "has the metrics of 1 steps but no checkpoint to resume"),
    (["run", "--resume", "--out", "FILES/halfrun2"], 2, "to start fresh, remove"),
    (["run", *BASE, "--out", "FILES/halfrun2"], 2, "already holds this run; pass --resume"),
    (["plan", "--micro-batches", "100000000"], 2, "--micro-batches 100000000"),
    (["plan", "--solver", "mip", "--time-limit", "-1"], 2, "--time-limit: expected a positive number, got '-1'"),
    (["plan", "--gap", "2"], 2, "--gap: expected a relative gap in [0, 1), got '2'"),
    (["plan", "--strategy", "hybird"], 2, "unknown strategy 'hybird'"),
    (["plan", "--keep", "0"], 2, "--keep: expected a number in (0, 1]"),
    (["plan", "--strategy", "backward", "--keep", "0.05"], 2, "no plan fits the budget"),
    (["plan", "--scores", "FILES/scores.json"], 2, "scores.json' is not valid JSON"),
    (["cost", "--model", "vit_bsae_patch16_224"], 2, "did you mean vit_base_patch16_224"),
    (["cost", "--op", "Q"], 2, "unknown op 'Q'"),
    (["cost", "--plan", "FILES/nope.json"], 2, "does not exist"),
    (["cost", "--dtype-bytes", "3"], 2, "invalid choice: 3"),
    (["simulate", "--path", "fast"], 2, "invalid choice: 'fast'"),
    (["sweep", "--keeps", "2", "--out", "FILES/s.csv"], 2, "keep ratio 2.0 is not in (0, 1]"),
    (["sweep", "--micro-batches", "x", "--out", "FILES/s.csv"], 2, "'x'"),
    (["sweep", "--link-bandwidths", "1e8:0:3", "--out", "FILES/s.csv"], 2, "'1e8:0:3': a range is lo:hi:n"),
    (["compare", "FILES/nope.json", "FILES/nope.json"], 2, "trace file 'FILES/nope.json' does not exist"),
    (["compare", "FILES/torn.safetensors", "FILES/torn.safetensors"], 2, "torn.safetensors"),
    (["compare", "FILES/notatrace.json", "FILES/notatrace.json"], 2,
     "notatrace.json is not a trace file (it has no 'source'); give one written by `d2ft simulate --trace`"),
    (["report", "FILES/empty"], 2, "holds no run"),
    (["report", "FILES/empty", "--sweep", "FILES/bad.csv"], 2, "is not a `d2ft sweep` CSV"),
    (["list", "gpus"], 2, "invalid choice: 'gpus'"),
    (["calibrate", "--nproc", "0"], 2, "--nproc must be at least 1, got 0"),
    (["demo", "--quick", "--out", "FILES/notademo"], 2, "is not a d2ft demo folder"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, status, message", CLI, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CLI])
def test_the_command_line_answers_in_one_clear_line(files, capsys, argv, status, message):
    argv = [a.replace("FILES", str(files)) for a in argv]
    message = message.replace("FILES", str(files))
    with RunLock(files / "locked"):  # another run holds this folder
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == status, err
    assert message in err, err
    assert len(lines) <= 3 and "Traceback" not in err, err


def test_bad_inputs_leave_no_trace(files):
    """After the whole table: the crafted pickle ran nothing, the foreign file is untouched, and no run
    directory was made."""
    assert not (files / "pwned").exists()
    assert (files / "foreign" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (files / "foreign").iterdir()) == ["notes.txt"]
    assert not (files / "empty" / "job.json").exists()


def _api_cases():
    from d2ft import CostModel, ModelSpec, Plan, plan_step
    from d2ft.catalogue import cluster_preset
    from d2ft.cluster import Cluster
    from runtime.job import Job, LoraSpec

    model, cluster = ModelSpec.from_timm("vit_tiny_patch16_224"), cluster_preset("lan-4x3090")
    plan_dict = {"devices": ["a"], "micro_batch_size": 1, "placement": [[0]], "ops": [1]}
    return [
        (lambda: CostModel("vit_base_patch16_224", cluster), TypeError, "model must be a ModelSpec"),
        (lambda: CostModel(model, "lan-4x3090"), TypeError, "cluster must be a Cluster"),
        (lambda: plan_step("vit_base_patch16_224", cluster), TypeError, "got str 'vit_base_patch16_224'"),
        (lambda: CostModel(model, cluster).step({"ops": []}), TypeError, "plan must be a Plan"),
        (lambda: Plan.from_dict(plan_dict), ValueError, "ops must be a list with one entry per micro-batch"),
        (lambda: Plan.from_dict("F"), ValueError, "plan: expected a JSON object, got str"),
        (lambda: ModelSpec.from_timm("vit_bsae_patch16_224"), ValueError, "did you mean vit_base_patch16_224"),
        (lambda: Cluster.from_dict({"devices": {"a": "h1000"}}), ValueError, "unknown device 'h1000'"),
        (lambda: Job(steps=0, keep=2), ValueError, "invalid job (2 problems)"),
        (lambda: Job.from_dict({"stepz": 3}), ValueError, "unknown keys stepz"),
        (lambda: LoraSpec(targets=("w",)), ValueError, "got w"),
    ]


def test_the_python_api_says_what_it_expected():
    import torch

    from runtime.data import ImageData
    from runtime.job import Job
    from runtime.run import launch
    from simulator import simulate

    cases = _api_cases() + [
        (lambda: simulate({"ops": []}, None, None), TypeError, "model must be a ModelSpec"),
        (lambda: ImageData(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, -1])), ValueError,
         "labels must be >= 0, got -1"),
        (lambda: launch(Job()), ValueError, "launch takes a prepared job"),
    ]
    for fn, kind, message in cases:
        with pytest.raises(kind) as e:
            fn()
        assert message in str(e.value)
    assert len(CLI) + len(cases) >= 60
