"""Faults, kept few and small: a torn or corrupt checkpoint, a killed rank under torchrun restarts, Ctrl-C.

Each resumed run is compared with an uninterrupted one of the same seed: the losses and the
final weights are bit-identical.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from d2ft.app.cli import main  # noqa: E402

TINY = json.dumps({"img_size": 16, "patch_size": 8, "in_chans": 1, "embed_dim": 48, "depth": 2, "num_heads": 4,
                   "num_classes": 4})
ARGS = ["--nproc", "2", "--model", "vit_tiny_patch16_224", "--model-kwargs", TINY, "--checkpoint", "none",
        "--data", "synthetic", "--micro-batches", "2", "--micro-batch-size", "2", "--strategy", "hybrid",
        "--checkpoint-every", "1", "--keep-checkpoints", "4", "--quiet"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run):
    from safetensors.torch import load_file

    return load_file(run / "model.safetensors")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted 4-step run, checkpointed after every step."""
    run = tmp_path_factory.mktemp("faults") / "whole"
    assert main(["run", *ARGS, "--steps", "4", "--out", str(run)]) == 0
    return run


def _assert_same_run(a, b):
    assert _losses(a) == _losses(b)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_killed_while_writing_a_checkpoint_resumes_exactly(finished, tmp_path, capsys):
    """What a kill during the step-4 write leaves: the set half written (a temporary file, rank 1's
    file missing) and the pointer still at step 3. --resume continues from step 3."""
    run = tmp_path / "killed"
    shutil.copytree(finished, run)
    _rewind(run, 3)
    torn = run / "checkpoints" / "step-0000004"
    (torn / "rank1.pt").unlink()
    (torn / "rank0.pt").rename(torn / ".rank0.pt.tmp")
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0
    _assert_same_run(finished, run)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(finished, tmp_path, capsys):
    run = tmp_path / "corrupt"
    shutil.copytree(finished, run)
    bad = run / "checkpoints" / "step-0000004" / "rank1.pt"
    bad.write_bytes(bad.read_bytes()[:100])
    (run / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: resuming from an earlier checkpoint: checkpoint at step 4:" in err and "rank1.pt is corrupt" in err
    _assert_same_run(finished, run)
    for f in run.glob("checkpoints/*/rank*.pt"):  # every set left is intact again
        assert f.stat().st_size > 1000
    # Nothing intact at all: a clear error naming the files, and nothing is changed.
    for f in run.glob("checkpoints/*/rank0.pt"):
        f.write_bytes(b"x")
    before = (run / "metrics.jsonl").read_bytes()
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err and "rank0.pt is corrupt" in err and len(err.splitlines()) <= 3
    assert (run / "metrics.jsonl").read_bytes() == before


def _rewind(run, step):
    """The run as a kill after the step-``step`` checkpoint leaves it: later sets and the model gone."""
    pointer = json.loads((run / "checkpoint.json").read_text())
    pointer["sets"] = [s for s in pointer["sets"] if s["step"] <= step]
    pointer.update(step=step, path=pointer["sets"][-1]["path"])
    (run / "checkpoint.json").write_text(json.dumps(pointer))
    (run / "model.safetensors").unlink()


def test_pruning_removes_only_recorded_checkpoints(finished, tmp_path):
    """A user's folder among the checkpoints (it sorts after the real ones) survives the prune; only the
    sets checkpoint.json records are removed."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _rewind(run, 3)
    shutil.rmtree(run / "checkpoints" / "step-0000004")
    (run / "checkpoints" / "step-mine").mkdir()
    (run / "checkpoints" / "step-mine" / "notes.txt").write_text("mine")
    assert main(["run", "--resume", "--out", str(run), "--keep-checkpoints", "1", "--quiet"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000004", "step-mine"]
    assert (run / "checkpoints" / "step-mine" / "notes.txt").read_text() == "mine"
    assert [s["step"] for s in json.loads((run / "checkpoint.json").read_text())["sets"]] == [4]
    _assert_same_run(finished, run)


def test_ctrl_c_says_where_the_run_stopped_and_how_to_resume(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "d2ft.app.cli", "run", *ARGS, "--steps", "100000", "--slowdown", "1,5",
           "--out", str(run)]
    # A shell's background job starts with SIGINT ignored, and Python then keeps ignoring it (as a program run
    # under nohup should): give the run the default disposition a terminal's foreground job has.
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 180
    while time.time() < deadline and not (run / "checkpoint.json").exists():
        time.sleep(0.2)
    assert (run / "checkpoint.json").exists(), "the run wrote no checkpoint in 180 s"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole process group
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # leave nothing running behind the failure
        raise
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(lines) <= 3, err
    assert f"resume with: d2ft run --resume --out {run}" in lines[-1]


def _kill_a_worker_after(proc, run, step: int) -> None:
    """SIGKILLs one worker of the torchrun ``proc`` once ``run`` has checkpointed ``step`` (waits up to 120 s)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        pointer = run / "checkpoint.json"
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= step:
            break
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "torchrun started no workers"
    os.kill(int(workers[-1]), signal.SIGKILL)


def test_a_killed_torchrun_job_resumes_exactly(tmp_path):
    """A worker of a 2-rank torchrun job killed mid-run: every rank is gone and torchrun fails; the same
    job relaunched with --resume continues from its last checkpoint, and its losses equal an
    uninterrupted run's. A job that torchrun restarts by itself (--max-restarts) resumes on its own
    (TORCHELASTIC_RESTART_COUNT > 0), joining its process group under fresh store keys: with the dead
    attempt's gloo addresses still in torchrun's store, the restarted ranks hung in
    init_process_group."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    from runtime.run import free_port

    def launch(out, *extra):
        return [torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "runtime.run", *extra,
                str(out / "job.json")]

    for out in (tmp_path / "whole", tmp_path / "killed"):
        assert main(["run", *ARGS, "--steps", "12", "--slowdown", "1,4", "--out", str(out), "--dry-run"]) == 0
    whole = subprocess.run(launch(tmp_path / "whole"), env=ENV, capture_output=True, text=True, timeout=240)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(launch(killed), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_a_worker_after(proc, killed, step=3)
    proc.communicate(timeout=120)
    assert proc.returncode != 0 and json.loads((killed / "checkpoint.json").read_text())["step"] < 12
    again = subprocess.run(launch(killed), env=ENV, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "add --resume" in again.stderr  # never restarted from step 0 over its metrics
    resumed = subprocess.run(launch(killed, "--resume"), env=ENV, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((killed / "checkpoint.json").read_text())["step"] == 12
    assert _losses(killed) == _losses(tmp_path / "whole")
    # torchrun restarting the job by itself (--max-restarts), launched as `d2ft run` is (without --nproc: the
    # world size is torchrun's): it resumes on its own.
    restarted = tmp_path / "restarted"
    cmd = [torchrun, "--nproc-per-node", "2", "--max-restarts", "1", "--master-port", str(free_port()), "-m",
           "d2ft.app.cli", "run", *ARGS[2:], "--steps", "12", "--slowdown", "1,4", "--out", str(restarted)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_a_worker_after(proc, restarted, step=3)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:  # leave no process behind (a restarted group that hangs is the failure)
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)])
        proc.kill()
        raise
    assert proc.returncode == 0, "\n".join(line for line in err.splitlines() if "d2ft" in line or "rror" in line)[-3000:]
    assert _losses(restarted) == _losses(tmp_path / "whole") and (restarted / "summary.json").is_file()
