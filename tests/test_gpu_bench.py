"""benchmarks/gpu.py: the prepared GPU check, its pipeline run on the CPU (real timm steps, real cost model)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu)


def test_the_pipeline_measures_and_prices_each_model_and_mode(capsys):
    import json

    assert gpu.main(["--device", "cpu", "--catalogue", "epyc-9654", "--models", "vit_tiny_patch16_224", "--batch", "2",
                     "--steps", "1", "--warmup", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    rows = [r for r in lines if "model" in r]
    assert [(r["model"], r["mode"]) for r in rows] == [("vit_tiny_patch16_224", "train"), ("vit_tiny_patch16_224", "infer")]
    for r in rows:
        assert r["measured_samples_per_s"] > 0 and r["predicted_samples_per_s"] > 0 and r["source"] == "measured here"
        assert r["ratio"] == pytest.approx(r["predicted_samples_per_s"] / r["measured_samples_per_s"])
    train, infer = rows
    assert train["predicted_peak_allocated_bytes"] > infer["predicted_peak_allocated_bytes"] > 0
    assert {s["summary"] for s in lines if "summary" in s} == {"train", "infer"}


def test_catalogue_names_and_bad_input_are_one_line():
    assert gpu.catalogue_key("NVIDIA A100-SXM4-80GB") == "a100-sxm4-80gb" and gpu.catalogue_key("Radeon") is None
    script = str(ROOT / "benchmarks" / "gpu.py")
    out = subprocess.run([sys.executable, script, "--device", "cpu", "--catalogue", "no-such-gpu"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 2 and "give --catalogue" in out.stderr and "Traceback" not in out.stderr
    import torch

    if not torch.cuda.is_available():
        out = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 2 and "no GPU is visible" in out.stderr and "Traceback" not in out.stderr
