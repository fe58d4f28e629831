"""The d2ft command line: real invocations through main(), errors as one clear line."""

import json

import pytest

from d2ft.app.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_whatif_runs(capsys):
    code, out, _ = run(capsys, "whatif", "--clusters", "lan-4x3090", "--micro-batches", "1")
    assert code == 0 and "86,567,656 parameters" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("lan-4x3090")]
    assert [r[1] for r in rows] == ["full", "backward", "shortcut", "hybrid", "random", "freeze", "layerdrop"]
    assert rows[0][4] == "0.0%" and all(float(r[5].rstrip("%")) >= 49.9 for r in rows[1:])  # comm-keep 0.5


def test_cost_json(capsys, tmp_path):
    trace = tmp_path / "trace.json"
    code, out, _ = run(capsys, "cost", "--model", "vit_small_patch16_224", "--cluster", "mixed-4", "--op", "O",
                       "--json", "--trace", str(trace))
    assert code == 0
    rec = json.loads(out)
    assert rec["comm_saving"] == pytest.approx(0.5)
    assert set(rec["devices"]) == {"h100", "a100", "v100", "t4"}
    assert json.loads(trace.read_text())["source"] == "cost-model"
    code, out, _ = run(capsys, "cost", "--model", "vit_small_patch16_224", "--cluster", "mixed-4", "--json",
                       "--optimizer", "sgd")
    sgd = json.loads(out)["memory_bytes"]["fp32"][0]["optimizer"]
    code, out, _ = run(capsys, "cost", "--model", "vit_small_patch16_224", "--cluster", "mixed-4", "--json")
    assert sgd == json.loads(out)["memory_bytes"]["fp32"][0]["optimizer"] / 2
    fp32 = json.loads(out)["comm_bytes"]
    code, out, _ = run(capsys, "cost", "--model", "vit_small_patch16_224", "--cluster", "mixed-4", "--json",
                       "--message-dtype", "bf16")
    assert json.loads(out)["comm_bytes"] * 2 == fp32 > 0


def test_cost_of_a_plan_file(capsys, tmp_path):
    from d2ft import Op, Plan
    from d2ft.loaders import load_cluster, load_model

    model, cluster = load_model("vit_tiny_patch16_224"), load_cluster("pcie-4x4090")
    path = tmp_path / "plan.txt"
    path.write_text(Plan.uniform(model, cluster, Op.SKIP, 2, 4).to_text())
    code, out, _ = run(capsys, "cost", "--model", "vit_tiny_patch16_224", "--cluster", "pcie-4x4090",
                       "--plan", str(path), "--json")
    assert code == 0 and json.loads(out)["comm_bytes"] == 0


@pytest.mark.parametrize("argv, message", [
    (["cost", "--model", "vit_bsae_patch16_224"], "did you mean vit_base_patch16_224"),
    (["cost", "--cluster", "dgx-a1000"], "unknown cluster preset 'dgx-a1000'"),
    (["cost", "--plan", "nope.json"], "plan file 'nope.json' does not exist"),
    (["cost", "--op", "Q"], "unknown op 'Q'"),
])
def test_errors_are_one_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_flag_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["cost", "--micro-batches", "0"])
    assert e.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_list(capsys):
    code, out, _ = run(capsys, "list", "devices", "--json")
    assert code == 0 and "h100-sxm" in json.loads(out)


def test_plan_json_and_out(capsys, tmp_path):
    out = tmp_path / "plan.txt"
    code, stdout, _ = run(capsys, "plan", "--model", "vit_small_patch16_224", "--cluster", "lan-4x3090",
                          "--strategy", "hybrid", "--solver", "mip", "--keep", "0.6", "--comm-keep", "0.8",
                          "--micro-batches", "2", "--micro-batch-size", "4", "--seed", "1", "--out", str(out),
                          "--json")
    assert code == 0
    rec = json.loads(stdout)
    for key in ("objective", "bound", "status", "solve_time_s", "op_counts", "compute_saving", "comm_saving"):
        assert key in rec
    for dev in rec["devices"].values():
        assert dev["load_s"] <= dev["capacity_s"] * (1 + 1e-9)
    from d2ft import Plan
    assert Plan.from_text(out.read_text()).summary() == rec["op_counts"]
    code, stdout, _ = run(capsys, "cost", "--model", "vit_small_patch16_224", "--cluster", "lan-4x3090",
                          "--plan", str(out), "--json")
    assert code == 0 and json.loads(stdout)["compute_saving"] == pytest.approx(rec["compute_saving"])


def test_plan_with_scores_file(capsys, tmp_path):
    from d2ft.scores import synthetic

    path = tmp_path / "scores.json"
    path.write_text(synthetic(12, 6, seed=2).to_json())
    code, stdout, _ = run(capsys, "plan", "--model", "vit_small_patch16_224", "--scores", str(path),
                          "--micro-batches", "1", "--json")
    assert code == 0 and json.loads(stdout)["status"] == "heuristic"
    path.write_text(synthetic(3, 6, seed=2).to_json())
    code, _, err = run(capsys, "plan", "--model", "vit_small_patch16_224", "--scores", str(path))
    assert code == 2 and "scores have shape (3, 6)" in err


@pytest.mark.parametrize("argv, message", [
    (["plan", "--strategy", "backward", "--keep", "0.05"], "no plan fits the budget"),
    (["plan", "--solver", "cplex"], "unknown solver 'cplex'"),
])
def test_plan_errors(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_simulate_json_and_traces(capsys, tmp_path):
    trace, chrome = tmp_path / "t.json", tmp_path / "c.json"
    code, stdout, _ = run(capsys, "simulate", "--model", "vit_small_patch16_224", "--cluster", "mixed-4",
                          "--micro-batches", "1", "--trace", str(trace), "--chrome-trace", str(chrome), "--json")
    assert code == 0
    rec = json.loads(stdout)
    for key in ("step_time_s", "compute_flop", "comm_bytes", "compute_saving", "comm_saving", "bottleneck"):
        assert key in rec
    for dev in rec["devices"].values():
        assert {"busy_s", "sent_bytes", "recv_bytes", "peak_memory_bytes"} <= set(dev)
    from d2ft import Trace
    assert Trace.from_json(trace.read_text()).step_time_s == rec["step_time_s"]
    assert json.loads(chrome.read_text())["traceEvents"]


def test_sweep_writes_csv(capsys, tmp_path):
    import csv

    out = tmp_path / "sweep.csv"
    code, stdout, _ = run(capsys, "sweep", "--models", "vit_small_patch16_224", "--clusters", "lan-4x3090",
                          "--strategies", "full,hybrid", "--keeps", "0.5", "--micro-batches", "1",
                          "--devices", "2,3", "--out", str(out))
    assert code == 0 and "4 points" in stdout
    rows = list(csv.DictReader(out.open()))
    assert [int(r["devices"]) for r in rows] == [2, 2, 3, 3]
    assert all(float(r["step_time_s"]) > 0 for r in rows)


def test_version_and_env(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == "d2ft 0.1.0"
    assert main(["env", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["distributed"]["gloo"] is True and r["cores_usable"] >= 1 and r["versions"]["torch"]
    assert r["solvers"]["CBC"] is True and r["shipped"]["backbone"].endswith("vit-fmnist0-4.safetensors")
    assert main(["env"]) == 0 and "gloo (CPU ranks)  yes" in capsys.readouterr().out


def test_every_result_command_has_json_and_the_long_ones_quiet(capsys, tmp_path):
    code, out, _ = run(capsys, "whatif", "--clusters", "lan-4x3090", "--micro-batches", "1", "--json")
    rows = json.loads(out)["rows"]
    assert code == 0 and [r["strategy"] for r in rows][:2] == ["full", "backward"] and rows[0]["compute_saving"] == 0
    code, out, err = run(capsys, "sweep", "--out", str(tmp_path / "s.csv"), "--keeps", "0.6,0.8", "--json")
    assert code == 0 and json.loads(out) == {"out": str(tmp_path / "s.csv"), "points": 4, "infeasible": 0}
    assert run(capsys, "sweep", "--out", str(tmp_path / "s.csv"), "--quiet")[2] == ""  # no progress bar
    from d2ft.app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("run", "sweep", "demo", "calibrate", "pretrain"):
        assert "--quiet" in sub[name].format_help(), name
    for name in ("cost", "plan", "simulate", "sweep", "whatif", "compare", "list", "run", "demo", "calibrate", "env"):
        assert "--json" in sub[name].format_help(), name
