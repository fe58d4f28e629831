"""The typed Job: validation that lists every problem, JSON and TOML round trips, the CLI's mapping."""

import pytest

from d2ft import Op, Plan
from d2ft.catalogue import cluster_preset
from runtime.job import Job, LoraSpec


def _prepared_like() -> Job:
    """A job with everything a prepared one holds: a Plan, a Cluster, LoRA, a schedule, slowdown."""
    cluster = cluster_preset("lan-4x3090")
    plan = Plan(cluster.device_names, [[1, 2, 3, 0]] * 2, [[["F", "O", "S", "F"], ["F", "F", "O", "S"]]] * 2, 4,
                meta={"strategy": "hybrid", "keep": 0.6})
    return Job(model="vit_tiny_patch16_224", model_kwargs={"num_classes": 5, "img_size": 32}, checkpoint="none",
               nproc=4, cluster=cluster, plan=plan, schedule=(plan, plan.with_ops([[[Op.FULL] * 4] * 2] * 2)),
               schedule_steps_each=3, lora=LoraSpec(rank=2, targets=("q", "fc1")), slowdown=(1, 1, 2, 4),
               comm_keep=0.5, lr=3e-4, timeline_steps=(0, -1))


def test_json_and_toml_round_trips():
    job = _prepared_like()
    assert Job.from_json(job.to_json()) == job
    assert Job.from_toml(job.to_toml()) == job
    assert Job.from_toml(Job().to_toml()) == Job()  # the defaults, with None fields left out of the TOML
    assert job.prepared and job.batch_size == 8 and job.coordinator == 0


def test_load_reads_either_format(tmp_path):
    job = _prepared_like()
    (tmp_path / "job.toml").write_text(job.to_toml())
    (tmp_path / "job.json").write_text(job.to_json())
    assert Job.load(tmp_path / "job.toml") == Job.load(tmp_path / "job.json") == job
    (tmp_path / "bad.toml").write_text("steps = [")
    with pytest.raises(ValueError, match="bad.toml.* is not valid TOML"):
        Job.load(tmp_path / "bad.toml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Job.load(tmp_path / "none.json")


def test_every_problem_is_listed_at_once():
    with pytest.raises(ValueError) as e:
        Job(steps=0, keep=1.5, comm_keep=0, lr=-1, eval_every=-1, port=70000, timeout_s=0, optimizer="adam",
            nproc=2, slowdown=(1, 0.5, 2))
    text = str(e.value)
    for fragment in ("steps must be a positive integer", "keep must be a number in (0, 1]", "comm_keep must be",
                     "lr must be a positive number", "eval_every must be an integer >= 0", "port must be in 1-65535",
                     "timeout_s must be a positive number", "optimizer must be one of adamw, sgd",
                     "slowdown gives 3 factors for 2 ranks", "slowdown factors must be finite and >= 1"):
        assert fragment in text
    with pytest.raises(ValueError, match="targets must be some of q, k, v, proj, fc1, fc2, got q, w"):
        LoraSpec(targets=("q", "w"))
    with pytest.raises(ValueError, match="unknown keys stepz"):
        Job.from_dict({"stepz": 3})


def test_the_run_command_maps_its_flags_onto_the_job_defaults():
    """`d2ft run` with no flags is Job() (the CLI only maps flags); every flag reaches its field."""
    from d2ft.app.cli import build_parser
    from d2ft.app.runs import command_line, job_from_args

    parse = build_parser().parse_args
    assert job_from_args(parse(["run"])) == Job()
    argv = ["run", "--nproc", "2", "--strategy", "shortcut", "--keep", "0.5", "--steps", "7", "--lr", "0.002",
            "--no-augment", "--lora", "--lora-targets", "q,k", "--slowdown", "1,3", "--timeout", "30"]
    job = job_from_args(parse(argv))
    assert (job.nproc, job.strategy, job.keep, job.steps, job.lr, job.augment) == (2, "shortcut", 0.5, 7, 2e-3, False)
    assert job.lora == LoraSpec(targets=("q", "k")) and job.slowdown == (1.0, 3.0) and job.timeout_s == 30
    assert job_from_args(parse(command_line(job).split()[1:])) == job


def test_under_torchrun_the_flags_are_checked_at_its_world_size(monkeypatch):
    """`torchrun --nproc-per-node 2 -m d2ft.app.cli run --slowdown 1,4`: the job has 2 ranks, so its two
    slowdown factors fit; not the default 4 ranks (which failed before every rank started)."""
    from d2ft.app.cli import build_parser
    from d2ft.app.runs import job_from_args

    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    argv = ["run", "--slowdown", "1,4"]
    args = build_parser().parse_args(argv)
    args.argv = argv
    assert job_from_args(args).nproc == 2
    argv = ["run", "--nproc", "3", "--slowdown", "1,4,1"]
    args = build_parser().parse_args(argv)
    args.argv = argv
    assert job_from_args(args).nproc == 3  # given: kept, and run_under_torchrun names the mismatch


def test_a_config_file_with_flags_over_it(tmp_path, capsys):
    """`d2ft run --config job.toml`: the file's fields, with the flags given on the command line over them;
    `--dry-run` writes such a file."""
    pytest.importorskip("torch")
    from d2ft.app.cli import main

    (tmp_path / "mine.toml").write_text('strategy = "shortcut"\nkeep = 0.5\nsteps = 9\ndata = "synthetic"\n'
                                        'model = "vit_tiny_patch16_224"\ncheckpoint = "none"\nnproc = 2\n'
                                        '[model_kwargs]\nimg_size = 16\npatch_size = 8\nembed_dim = 48\ndepth = 2\n'
                                        'num_heads = 4\nnum_classes = 4\n')
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", "--config", str(tmp_path / "mine.toml"), "--steps", "5", "--out", str(a), "--dry-run"]) == 0
    first = Job.load(a / "job.json")
    assert (first.strategy, first.keep, first.steps, first.nproc) == ("shortcut", 0.5, 5, 2)  # --steps wins
    assert main(["run", "--config", str(a / "job.toml"), "--keep=0.4", "--out", str(b), "--dry-run"]) == 0
    second = Job.load(b / "job.json")
    assert second == first.replace(keep=0.4, out_dir=str(b))
    (tmp_path / "typo.toml").write_text("stepz = 3\n")
    assert main(["run", "--config", str(tmp_path / "typo.toml"), "--dry-run", "--out", str(tmp_path / "c")]) == 2
    assert "typo.toml': unknown keys stepz" in capsys.readouterr().err


def test_the_readme_lists_every_job_field_with_its_default():
    import dataclasses
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text, flags=re.M))
    for f in dataclasses.fields(Job):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = "none" if default is None else (f'"{default}"' if isinstance(default, str) else repr(default))
        assert rows.get(f.name, "").strip() == shown, f.name
    example = re.search(r"```toml\n(.*?)```", text, flags=re.S).group(1)
    assert Job.from_toml(example) == Job(strategy="hybrid", keep=0.6, steps=300, lr=2e-3, eval_every=100,
                                         out_dir="runs/hybrid")


def test_the_terminal_says_what_starts_and_names_emulation():
    from d2ft.app.runs import starting_line

    assert starting_line(Job(nproc=2, slowdown=(1, 3), steps=5, out_dir="r")) == \
        "d2ft run: starting 2 ranks (gloo), ranks slowed x1 x3 (emulated) for 5 steps into r ..."
    assert starting_line(Job(nproc=1, emulate_ranks=4, resume=True, out_dir="r")).startswith(
        "d2ft run: resuming 1 process playing 4 ranks for 100 steps")
