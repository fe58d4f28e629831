"""d2ft run: end to end on local ranks, emulated slowdown, and every failure a clear, clean exit."""

import json
import multiprocessing
import os
import signal
import socket
import threading
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

from d2ft.app.cli import main  # noqa: E402
from d2ft import rundir  # noqa: E402
from d2ft.cluster import Cluster, DeviceSpec, LinkSpec  # noqa: E402
from runtime.job import Job  # noqa: E402
from runtime.run import launch  # noqa: E402

TINY = '{"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 4, "num_classes": 5}'
BASE = ["--model", "vit_tiny_patch16_224", "--model-kwargs", TINY, "--checkpoint", "none", "--data", "synthetic", "--quiet"]


def test_run_end_to_end_with_emulated_slowdown(tmp_path, capsys):
    from d2ft import Plan
    from runtime.measure import traces

    # A placement of its own: the planner would keep this tiny model on the coordinator alone (a kernel's
    # dispatch outweighs its arithmetic), and the slowed rank is to hold subnets.
    plan = Plan(["rank0", "rank1"], [[0, 1, 1, 1], [1, 1, 0, 1]], [[["F"] * 4] * 2] * 2, micro_batch_size=2)
    (tmp_path / "plan.json").write_text(plan.to_json())
    out = tmp_path / "run"
    code = main(["run", "--nproc", "2", *BASE, "--steps", "3", "--plan", str(tmp_path / "plan.json"),
                 "--slowdown", "1,8", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["emulated_slowdown"] == [1.0, 8.0] and summary["bytes_exact"]
    assert summary["top1"] is None  # synthetic data has no test split
    prov = summary["provenance"]  # where the figures come from
    assert prov["command"].startswith("d2ft run --nproc 2") and prov["versions"]["torch"] and prov["host"]
    assert prov["git"] is None or len(prov["git"]["commit"]) == 40
    steps = traces(out)
    assert [t.meta["step"] for t in steps] == [0, 1, 2] and all(t.meta["loss"] > 0 for t in steps)
    for t in steps:  # the slowed rank's compute is stretched 8x (sleeping), so it is the busier one
        assert t.devices["rank1"].busy_s > t.devices["rank0"].busy_s
    # Each rank's compute also as its thread's CPU time by phase: never more than the wall time it took.
    for line in rundir.read_jsonl(out / rundir.METRICS_FILE):
        for dev in line["devices"]:
            assert {"fwd", "bwd"} <= set(dev["busy_cpu_s"]) and all(v >= 0 for v in dev["busy_cpu_s"].values())
            assert 0 < sum(dev["busy_cpu_s"].values()) <= dev["busy_s"] + 1e-3
    # The last step's measured timeline: its events add up to the step's own counters.
    from d2ft import Trace

    timeline = Trace.from_json((out / "timeline-step2.json").read_text())
    for name, stats in timeline.devices.items():
        sent = sum(e.nbytes for e in timeline.events if e.resource.startswith(f"{name}->"))
        busy = sum(e.duration_s for e in timeline.events if e.resource == name and e.kind == "compute")
        assert sent == stats.sent_bytes > 0 and busy == pytest.approx(stats.busy_s)
    assert main(["report", str(out), "--json"]) == 0
    assert (out / "figures" / "timelines.png").stat().st_size > 1000
    capsys.readouterr()
    step2 = str(out / "timeline-step2.json")
    assert main(["compare", step2, step2, "--json"]) == 0  # a measurement against itself: no error anywhere
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 1 + 2 * 3 and all(r["abs_error"] == 0 for r in rows)
    assert main(["compare", step2, str(out / "nope.json")]) == 2
    assert "trace file" in capsys.readouterr().err
    assert main(["compare", step2, str(out / "job.json")]) == 2  # a JSON file that is no trace
    assert f"{out / 'job.json'} is not a trace file (it has no 'source')" in capsys.readouterr().err
    # The run wrote its model and cluster: its last step simulates with no hand work, on the same plan.
    predicted = str(out / "predicted.json")
    assert main(["simulate", "--run", str(out), "--trace", predicted, "--json"]) == 0
    simulated = json.loads(capsys.readouterr().out)
    assert simulated["comm_bytes"] == timeline.comm_bytes  # bytes are exact
    assert main(["compare", predicted, step2, "--json"]) == 0
    assert main(["simulate", "--run", str(out), "--step", "9"]) == 2
    assert "has steps 0 to 2" in capsys.readouterr().err
    # The measured timeline for Perfetto: its messages as flows, bytes in flight as a counter.
    chrome = out / "chrome.json"
    assert main(["trace", str(out), "--chrome-trace", str(chrome)]) == 0
    phases = [e["ph"] for e in json.loads(chrome.read_text())["traceEvents"]]
    assert phases.count("s") == phases.count("f") == sum(e.kind == "transfer" for e in timeline.events) > 0
    assert "C" in phases and "open it in ui.perfetto.dev" in capsys.readouterr().out
    assert main(["trace", str(out), "--chrome-trace", str(chrome), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["messages"] == phases.count("s") and rec["out"] == str(chrome)
    assert main(["trace", str(out), "--step", "0", "--chrome-trace", str(chrome)]) == 2
    assert "recorded the timeline of step 2 only" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--model-kwargs", TINY, "--checkpoint", "/no/such/weights.safetensors"], "does not exist"),
    ([*BASE, "--plan", "PLAN"], "plan it for this model"),
    (["--model-kwargs", "{oops"], "--model-kwargs is not valid JSON"),
    ([*BASE[:4], "--data", "nmist-digits"], "unknown dataset 'nmist-digits' (did you mean mnist-digits?)"),
    ([*BASE[:6], "--data", "mnist-digits"], "has 1 x 28 x 28 images but the model takes 3 x 32 x 32"),
])
def test_bad_input_fails_before_any_rank_starts(tmp_path, capsys, extra, message):
    plan = tmp_path / "plan.json"  # a plan for another model
    main(["plan", "--model", "vit_small_patch16_224", "--cluster", "lan-4x3090", "--out", str(plan)])
    extra = [str(plan) if a == "PLAN" else a for a in extra]
    code = main(["run", "--nproc", "2", "--out", str(tmp_path / "run")] + extra)
    assert code == 2 and message in capsys.readouterr().err


def test_port_in_use(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["run", "--nproc", "2", *BASE, "--port", str(port), "--out", str(tmp_path)])
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_a_dying_rank_stops_the_job(tmp_path):
    from d2ft import Op, Plan

    plan = Plan(["c", "w"], [[1] * 4] * 2, [[[Op.FULL] * 4] * 2], micro_batch_size=2)
    job = Job(model="vit_tiny_patch16_224", model_kwargs=json.loads(TINY), checkpoint="none", plan=plan,
              strategy=None, nproc=2, steps=10_000, seed=0, slowdown=[1.0, 1.0], timeout_s=60, data="synthetic",
              progress=False, out_dir=str(tmp_path))
    import glob
    import tempfile

    error_files = set(glob.glob(os.path.join(tempfile.gettempdir(), "pytorch-errorfile-*")))
    errors = []
    thread = threading.Thread(target=lambda: _capture(errors, job))
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline and len(multiprocessing.active_children()) < 2:
        time.sleep(0.2)
    time.sleep(5)  # let both ranks get into their loop
    victim = multiprocessing.active_children()[-1]
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=30)  # every rank gone within 30 s of the kill
    assert not thread.is_alive(), "launch() hung after a rank died"
    assert errors and ("died" in errors[0] or "failed" in errors[0])
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
    # nothing is left outside the run directory (torch's per-rank error files are removed)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "pytorch-errorfile-*"))) <= error_files


def _capture(errors, job):
    try:
        launch(job)
    except RuntimeError as e:
        errors.append(str(e))


def test_calibrate_writes_a_cluster_the_simulator_loads(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert main(["calibrate", "--nproc", "2", "--out", str(out), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["peak_flops"] > 1e8 and figures["link_bandwidth"] > 1e6 and figures["link_latency_s"] >= 0
    assert figures["backward_efficiency"] == 1.0  # GEMMs say nothing about backward kernels
    assert figures["elementwise_overhead_s"] is None and figures["kernel_launch_s"] >= 0  # nor about light ones
    # Core sharing measured: the two ranks are one host with the usable cores the measurement found.
    cluster, raw = Cluster.from_json(out.read_text()), json.loads(out.with_suffix(".raw.json").read_text())
    (host,) = cluster.hosts
    assert host.devices == ("rank0", "rank1") and host.cores == figures["usable_cores"] == raw["cores"] >= 1
    rows = raw["core_sharing"]["rows"]
    assert [r["ranks"] for r in rows] == [1, 2] and rows[0]["speedup"] == 1.0 and rows[1]["speedup"] > 0.5
    assert raw["core_sharing"]["model"] in ("pool", "sharing") and figures["contention_slowdown"] >= 1
    # Fitted to the shipped backbone's own subnet tasks: a rate, an overhead, a backward efficiency.
    assert main(["calibrate", "--nproc", "2", "--checkpoint", "data/pretrained/vit-fmnist.safetensors",
                 "--micro-batch-size", "4", "--out", str(tmp_path / "model.json"), "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["peak_flops"] > 1e8 and 0 < fitted["backward_efficiency"] <= 1
    # ... then refitted to the runtime's own all-FULL steps: per rank the measured over the modelled CPU time.
    in_situ = json.loads((tmp_path / "model.raw.json").read_text())["in_situ"]
    assert [r["device"] for r in in_situ["ratios"]] == ["rank0", "rank1"] and in_situ["plan"] == "full"
    assert all(r["fwd"] > 0 and r["bwd"] > 0 for r in in_situ["ratios"])
    fitted_cluster = Cluster.from_json((tmp_path / "model.json").read_text())
    assert all("fitted in situ" in spec.name for _, spec in fitted_cluster.devices)
    assert fitted["elementwise_overhead_s"] >= 0 and fitted["kernel_launch_s"] >= 0
    # Every rank priced by the kernel model: one thread, no tile quantisation, fused attention.
    assert all((spec.sm_count, spec.gemm_tile, spec.fused_attention) == (1, 1, True) for _, spec in fitted_cluster.devices)
    assert 0 <= fitted["fit_median_abs_error"] < 1
    assert main(["simulate", "--cluster", str(out), "--model", "vit_tiny_patch16_224", "--micro-batches", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step_time_s"] > 0


def test_the_same_entry_point_runs_under_torchrun(tmp_path):
    import shutil
    import subprocess
    import sys

    from d2ft import Plan
    from runtime.run import free_port

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    plan = Plan(["c", "w"], [[1, 0, 1, 1], [1, 1, 0, 1]], [[["F", "O", "S", "F"], ["F", "F", "F", "O"]]],
                micro_batch_size=2)
    job = Job(model="vit_tiny_patch16_224", model_kwargs=json.loads(TINY), checkpoint="none", plan=plan,
              strategy=None, nproc=2, steps=1, seed=0, data="synthetic", progress=False, out_dir=str(tmp_path))
    (tmp_path / "job.json").write_text(job.to_json())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "runtime.run",
                           str(tmp_path / "job.json")], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "rank0.pt").exists() and (tmp_path / "rank1.pt").exists()


def test_a_checkpoint_for_another_task_loads_with_a_fresh_classifier(tmp_path):
    """Fine-tuning to a new task: every tensor but the classifier comes from the checkpoint."""
    import timm
    import torch
    from safetensors.torch import save_file

    from runtime.weights import load_weights

    kw = json.loads(TINY)
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**kw, "num_classes": 7})
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "src.safetensors"))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "src.pth")  # a wrapped torch checkpoint too
    for path in (tmp_path / "src.safetensors", tmp_path / "src.pth"):
        torch.manual_seed(2)
        target = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)
        head_before = target.head.weight.clone()
        assert sorted(load_weights(target, path)) == ["head.bias", "head.weight"]
        assert torch.equal(target.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
        assert torch.equal(target.head.weight, head_before)


def test_a_new_task_gets_a_fresh_classifier_even_of_the_same_size(tmp_path):
    """A checkpoint whose classifier has the task's size (Fashion-MNIST's 10 classes, then MNIST's 10)
    still starts the task from the seeded init: its class order means nothing there. --keep-classifier
    keeps it."""
    import timm
    import torch
    from safetensors.torch import save_file

    from runtime.job import Job
    from runtime.weights import build_model

    kw = json.loads(TINY)
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)
    path = tmp_path / "src.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(0)
    seeded = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)
    job = Job(model="vit_tiny_patch16_224", model_kwargs=kw, checkpoint=str(path), seed=0)
    fresh, kept = build_model(job), build_model(job.replace(keep_classifier=True))
    assert torch.equal(fresh.head.weight, seeded.head.weight) and not torch.equal(fresh.head.weight, source.head.weight)
    assert torch.equal(kept.head.weight, source.head.weight)
    assert torch.equal(fresh.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)


def test_d2ft_run_under_torchrun_on_two_nodes(tmp_path):
    """torchrun is a first-class launcher: two "nodes" on 127.0.0.1, one rank each, run `d2ft run` itself (no
    dry run, --nproc from the world size); the coordinator's node prints and writes the summary."""
    import subprocess
    import sys

    from runtime.run import free_port

    port, out = free_port(), tmp_path / "run"
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(i),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "d2ft.app.cli", "run", *BASE, "--steps", "3", "--strategy", "hybrid",
                               "--out", str(out), "--json"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [n.communicate(timeout=240) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [e[-1500:] for _, e in outputs]
    printed = [json.loads(line) for line in outputs[0][0].splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["nproc"] == 2 and printed[0]["steps"] == 3 and printed[0]["bytes_exact"]
    assert json.loads((out / "summary.json").read_text())["final_loss"] == printed[0]["final_loss"]
    assert not any(line.startswith("{") for line in outputs[1][0].splitlines())  # the worker's node prints none
    job = json.loads((out / "job.json").read_text())
    assert job["nproc"] == 2 and len(job["plan"]["devices"]) == 2


def test_the_task_sizes_a_fresh_classifier():
    """The shipped backbone's classifier has 5 classes (Fashion-MNIST 0-4); a 10-class task gets a fresh
    10-class one unless the checkpoint's is kept."""
    from runtime.job import Job
    from runtime.prepare import prepare

    assert prepare(Job(data="mnist-digits", nproc=2)).model_kwargs["num_classes"] == 10
    assert prepare(Job(nproc=2)).model_kwargs["num_classes"] == 5
    with pytest.raises(ValueError, match="10 classes but the model's classifier has 5"):
        prepare(Job(data="mnist-digits", nproc=2, keep_classifier=True))


def test_calibrate_under_torchrun_measures_every_rank_and_link(tmp_path):
    """Two torchrun "nodes" on 127.0.0.1: each rank times its own compute, rank 0 times its link to the other,
    and writes one cluster (per-rank devices, a measured link) that the simulator loads."""
    import os
    import subprocess
    import sys

    from d2ft.loaders import load_cluster
    from runtime.run import free_port

    port, out = free_port(), tmp_path / "profile.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(i),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "d2ft.app.cli", "calibrate", "--out", str(out), "--json"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [n.communicate(timeout=240) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [e[-1500:] for _, e in outputs]
    summary = json.loads(next(line for line in outputs[0][0].splitlines() if line.startswith("{")))
    assert summary["ranks"] == 2 and len(summary["links"]) == 1 and summary["links"][0]["bandwidth"] > 1e6
    cluster = load_cluster(str(out))
    assert list(cluster.device_names) == ["rank0", "rank1"] and all(s.peak_flops > 1e8 for _, s in cluster.devices)
    assert "measured by d2ft calibrate under torchrun" in cluster.links[0][2].source


def test_a_dry_run_folder_starts_with_its_own_config(tmp_path, capsys):
    """`--dry-run` writes RUN_DIR/job.json and job.toml; running that config into the same folder starts the
    run (it never started), and a second start is refused as a run already there."""
    out = tmp_path / "run"
    flags = ["--nproc", "1", "--emulate-ranks", "2", *BASE, "--steps", "2", "--out", str(out)]
    assert main(["run", *flags, "--dry-run"]) == 0
    assert main(["run", "--config", str(out / "job.toml"), "--out", str(out), "--quiet"]) == 0
    assert (out / "summary.json").exists()
    capsys.readouterr()
    assert main(["run", "--config", str(out / "job.toml"), "--out", str(out), "--quiet"]) == 2
    assert "already holds this run" in capsys.readouterr().err


def test_a_profile_measured_elsewhere_is_never_used_silently(tmp_path, caplog):
    """A calibrated profile records the machine it was measured on; prepared on another one, the job says so."""
    import dataclasses
    import logging

    from runtime.job import Job
    from runtime.prepare import local_cluster, prepare
    from runtime.provenance import machine

    here = dataclasses.replace(local_cluster(2), measured_on=machine())
    there = dataclasses.replace(here, measured_on={**machine(), "host": "a-bigger-box", "cores": 64})
    for name, cluster in (("here", here), ("there", there)):
        (tmp_path / f"{name}.json").write_text(cluster.to_json())
    with caplog.at_level(logging.WARNING, logger="runtime.prepare"):
        prepare(Job(nproc=2, cluster=str(tmp_path / "here.json")))
        assert not caplog.records
        prepare(Job(nproc=2, cluster=str(tmp_path / "there.json")))
    assert "was measured on another machine (host 'a-bigger-box' there" in caplog.text and "cores 64 there" in caplog.text


def test_the_in_situ_refit_gives_the_measured_time_on_the_calibration_plans():
    """Ratios pooled by role (the coordinator alone, the workers together); at two sizes the fixed times and the
    rate get factors of their own; the refitted cost model gives the measured forward and backward time of the
    plans it was fitted on."""
    import dataclasses

    from d2ft import CostModel, ModelSpec, Op, Plan
    from runtime.insitu import _predicted, _without_fixed, refit
    from runtime.prepare import LOCAL_CPU, LOOPBACK

    model = ModelSpec.vit(dim=64, depth=2, heads=4, img_size=32, patch=8, num_classes=5)
    cluster = Cluster.star([(f"rank{i}", LOCAL_CPU) for i in range(3)], LOOPBACK)
    plans = [Plan.uniform(model, cluster, Op.FULL, 2, b) for b in (4, 8)]
    predicted = [_predicted(p, model, cluster) for p in plans]
    work = [_predicted(p, model, _without_fixed(cluster)) for p in plans]
    # The coordinator dispatches 3x slower and computes 1.5x slower; the workers 2x and 1x (pooled: equal shares).
    factor = {0: (3.0, 1.5), 1: (2.0, 1.0), 2: (2.0, 1.0)}
    measured = [[{"fwd": a * (p[k]["fwd"] - w[k]["fwd"]) + b * w[k]["fwd"], "bwd": 3 * p[k]["bwd"]}
                 for k, (a, b) in factor.items()] for p, w in zip(predicted, work)]
    fitted, ratios = refit(cluster, list(zip(plans, measured)), model)
    assert (ratios[0]["fixed"], ratios[0]["rate"]) == (pytest.approx(3.0), pytest.approx(1.5))
    assert (ratios[1]["fixed"], ratios[2]["rate"]) == (pytest.approx(2.0), pytest.approx(1.0))
    total = lambda rows, p, ks: sum(rows[k][p] for k in ks)  # noqa: E731
    for plan, m in zip(plans, measured):
        again = _predicted(plan, model, fitted)
        assert again[0]["fwd"] == pytest.approx(m[0]["fwd"], rel=1e-6)
        assert total(again, "fwd", [1, 2]) == pytest.approx(total(m, "fwd", [1, 2]), rel=1e-6)
    both = lambda rows, ks: sum(total(r, "bwd", ks) for r in rows)  # noqa: E731
    again = [_predicted(p, model, fitted) for p in plans]
    assert both(again, [0]) == pytest.approx(both(measured, [0]), rel=1e-6)
    assert both(again, [1, 2]) == pytest.approx(both(measured, [1, 2]), rel=1e-6)
    # One size: one factor for both, the measured total over the predicted one.
    one, r1 = refit(cluster, [(plans[0], [{"fwd": 2 * p["fwd"], "bwd": 3 * p["bwd"]} for p in predicted[0]])], model)
    assert r1[0] == {"device": "rank0", "fwd": pytest.approx(2.0), "bwd": pytest.approx(3.0), "fixed": pytest.approx(2.0),
                     "rate": pytest.approx(2.0)}
    # A backward faster than backward efficiency 1 allows: it stays at 1 (and the forward still fits).
    fast, _ = refit(cluster, [(plans[0], [{"fwd": p["fwd"], "bwd": 0.1 * p["bwd"]} for p in predicted[0]])], model)
    assert all(spec.backward_efficiency == 1.0 for _, spec in fast.devices)
    slower, before = CostModel(model, one).step(plans[0]), CostModel(model, cluster).step(plans[0])
    assert slower.devices[0].compute_s > before.devices[0].compute_s
    # Noise that no positive pair explains (fixed times that would have to be negative): one factor again.
    noisy = [[dict(r, fwd=0.5 * w[k]["fwd"] * (1 if i else 3)) for k, r in enumerate(m)]
             for i, (m, w) in enumerate(zip(measured, work))]
    _, r2 = refit(cluster, list(zip(plans, noisy)), model)
    assert r2[0]["fixed"] == r2[0]["rate"] > 0
    assert dataclasses.replace(LOCAL_CPU.scaled(2.0, fixed=0.5), name="x").kernel_launch_s == pytest.approx(10e-6)
    # Every subnet on the coordinator (as the planner places a tiny model): the idle workers keep their spec.
    alone = [Plan.uniform(model, cluster, Op.FULL, 2, b, placement=[[0] * 4] * 2) for b in (4, 8)]
    idle = [[{"fwd": 2 * r["fwd"] or 1e-4, "bwd": 2 * r["bwd"] or 1e-4} for r in _predicted(p, model, cluster)]
            for p in alone]  # an idle worker's thread still records a little CPU time
    kept, r3 = refit(cluster, list(zip(alone, idle)), model)
    assert r3[1]["fwd"] == 1.0 and kept.device(1).peak_flops == LOCAL_CPU.peak_flops
    assert kept.device(1).backward_efficiency == LOCAL_CPU.backward_efficiency
    assert r3[0]["rate"] == pytest.approx(2.0) and r3[0]["fixed"] == pytest.approx(2.0)

def _kernel_tasks(model, b, seconds):
    """(kernels, backward, s) of every subnet task of ``model`` and its norm and add, timed by ``seconds``."""
    from d2ft import kernels

    parts = [(p, ph, n) for n in range(1, model.heads + 1) for p in ("attn", "mlp") for ph in ("fwd", "bwd")]
    parts += [("norm", "fwd", 0), ("add", "fwd", 0)]
    return [(k := kernels.task_kernels(model, p, ph, n, b, True), ph == "bwd", seconds(k, ph == "bwd"))
            for p, ph, n in parts]


def test_the_task_fit_recovers_a_rank_priced_by_the_kernel_model():
    """Timings that the kernel model itself gives (with memory-bound kernels among them) fit back to the constants
    that gave them; the fitted device prices every task as measured."""
    from d2ft import CostModel, ModelSpec, kernels
    from runtime.calibrate import _device_spec, fit

    model = ModelSpec.vit(dim=96, depth=2, heads=4, img_size=32, patch=8, num_classes=5)
    truth = DeviceSpec("cpu", 6e10, 6e10, 1e10, 1e9, efficiency=1.0, sm_count=1, gemm_tile=1, kernel_launch_s=40e-6,
                       elementwise_overhead_s=8e-6, backward_efficiency=0.7)
    tasks = _kernel_tasks(model, 16, lambda ks, bwd: sum(kernels.kernel_time(truth, k, 4, bwd) for k in ks))
    assert any(kernels.memory_bytes(k, 4, 1, 1) / 1e10 > k.flop / 6e10 for t in tasks for k in t[0] if k.kind == "gemm")
    got = fit(tasks, 1e10)
    assert got["rate"] == pytest.approx(6e10) and got["backward_efficiency"] == pytest.approx(0.7)
    assert got["kernel_launch_s"] == pytest.approx(40e-6) and got["elementwise_overhead_s"] == pytest.approx(8e-6)
    assert got["median_abs_error"] < 1e-9
    spec = _device_spec("fitted", {"mem_bandwidth": 1e10}, got, Job(model="vit"), 16, 1e9)
    cluster = Cluster.star([("rank0", spec)], LinkSpec("l", 1e9))
    cm = CostModel(model, cluster)
    for half in ("attn", "mlp"):
        for phase in ("fwd", "bwd"):
            assert cm.task_time(0, phase, half, 3, 16) == pytest.approx(
                sum(kernels.kernel_time(truth, k, 4, phase == "bwd")
                    for k in kernels.task_kernels(model, half, phase, 3, 16, True)), rel=1e-9)


def test_a_noisy_task_fit_still_gives_a_usable_device():
    """Timings that fall with the work (noise on a busy machine) fit no positive rate on their own: the fit keeps a
    positive rate and every constant in range, so the profile loads, instead of a negative or infinite one."""
    from d2ft import ModelSpec
    from runtime.calibrate import _device_spec, fit

    model = ModelSpec.vit(dim=96, depth=2, heads=4, img_size=32, patch=8, num_classes=5)
    falling = _kernel_tasks(model, 16, lambda ks, bwd: 3e-3 - 1e-13 * sum(k.flop for k in ks))
    got = fit(falling, 2e10)
    assert got["rate"] > 0 and 0 < got["backward_efficiency"] <= 1
    assert got["kernel_launch_s"] >= 0 and got["elementwise_overhead_s"] >= 0
    _device_spec("noisy", {"mem_bandwidth": 2e10}, got, Job(model="vit"), 16, 1e9)  # a valid DeviceSpec: no ValueError
