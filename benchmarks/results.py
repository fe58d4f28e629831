"""The evidence page: regenerate benchmarks/RESULTS.md from measurements on this machine.

Sections (each writes JSON lines to benchmarks/results/results.jsonl and figures to
benchmarks/figures/; RESULTS.md is then written from all of them):

- ``accuracy``: the shipped backbone fine-tuned on MNIST digits on 4 local ranks for
  ``full``, the three strategies and the baselines at several compute keep ratios and at a
  communication keep of 0.5, several seeds: top-1, measured compute and byte savings
  against the all-FULL run of the same seed;
- ``lora``: the same with LoRA adapters at keep 0.6 and at comm keep 0.5;
- ``hetero``: an emulated 1x, 1x, 2x, 4x cluster: the balanced D2FT plan against a
  speed-oblivious one (planned as if every rank were 1x) and against all-FULL;
- ``scale``: simulation only, ViT-B/L/H on 4 to 256 catalogue devices over several
  networks: savings and where the coordinator's link becomes the bottleneck.

Usage (from the repository root)::

    .venv/bin/python benchmarks/results.py            # everything (hours on 2 cores)
    .venv/bin/python benchmarks/results.py --quick    # one seed, fewer configurations (< 15 min)
    .venv/bin/python benchmarks/results.py --sections scale --markdown-only

Every measured record is one JSON line; the Markdown is regenerated from the file, so a
section can be rerun alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

# This script shares its folder with ``runtime.py``: keep the folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

ROOT = Path(_HERE).parent
RESULTS = ROOT / "benchmarks" / "results" / "results.jsonl"
FIGURES = ROOT / "benchmarks" / "figures"
RUNS = Path("runs") / "results"  # relative to the repository root (main() changes into it)
SECTIONS = ("accuracy", "lora", "hetero", "scale")


def _run(argv: list[str]) -> dict:
    """One ``d2ft run`` (its summary dict); a run directory that is complete is reused, not rerun."""
    from d2ft.cli import main

    out = Path(argv[argv.index("--out") + 1])
    if (out / "summary.json").exists():
        return json.loads((out / "summary.json").read_text())
    if out.exists():
        argv = argv + ["--resume"]
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the summary is read from summary.json below
        code = main(["run", *argv, "--quiet"])
    if code != 0:
        raise RuntimeError(f"d2ft run {' '.join(argv)} failed (exit {code})")
    return json.loads((out / "summary.json").read_text())


def _record(section: str, **fields) -> dict:
    rec = {"section": section, "date": datetime.date.today().isoformat(), "machine": _machine(), **fields}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _savings(run_dir: Path, full_dir: Path) -> dict:
    from analysis.runs import read_run, runs_frame

    run, full = read_run(run_dir), read_run(full_dir)
    row = runs_frame([run], reference=full).iloc[0]
    return {k: (None if row[k] != row[k] else float(row[k])) for k in (
        "top1", "predicted_compute_saving", "predicted_comm_saving", "measured_compute_saving",
        "measured_comm_saving", "step_time_saving", "median_step_time_s")}


def accuracy(quick: bool, lora: bool = False, seeds=None, keeps=None, strategies=None) -> None:
    section = "lora" if lora else "accuracy"
    steps = 60 if quick else 300
    seeds = seeds or ((0,) if quick else (0, 1, 2))
    keeps = keeps or (0.8, 0.6, 0.4)
    if lora:
        configs = [("full", 1.0, None), ("hybrid", 0.6, None), ("hybrid", 1.0, 0.5)]
    elif quick:
        configs = [("full", 1.0, None), ("hybrid", 0.6, None), ("random", 0.6, None), ("hybrid", 1.0, 0.5)]
    else:
        configs = [("full", 1.0, None)] + [(s, k, None) for k in keeps for s in
                                            ("hybrid", "backward", "shortcut", "random", "freeze", "layerdrop")]
        configs += [("hybrid", 1.0, 0.5), ("random", 1.0, 0.5)]
    if strategies:  # the all-FULL reference always runs: savings are measured against it
        configs = [c for c in configs if c[0] == "full" or (c[0] in strategies and c[2] is None)]
    profile = RUNS / "profile.json"
    if not profile.exists():
        from d2ft.cli import main

        main(["calibrate", "--nproc", "4", "--checkpoint", "data/pretrained/vit-fmnist.safetensors",
              "--out", str(profile)])
    tag = "lora-" if lora else ""
    for seed in seeds:
        for strategy, keep, comm in configs:
            name = f"{tag}{strategy}-k{keep:g}" + (f"-c{comm:g}" if comm else "") + f"-s{seed}-n{steps}"
            argv = ["--nproc", "4", "--cluster", str(profile), "--strategy", strategy, "--keep", str(keep),
                    "--steps", str(steps), "--lr", "2e-3" if not lora else "5e-3", "--eval-every", "0",
                    "--checkpoint-every", "0", "--seed", str(seed), "--out", str(RUNS / name)]
            if comm:
                argv += ["--comm-keep", str(comm)]
            if lora:
                argv += ["--lora"]
            t0 = time.perf_counter()
            print(f"[{section}] {name} ...", file=sys.stderr, flush=True)
            _run(argv)
            full = RUNS / f"{tag}full-k1-s{seed}-n{steps}"
            _record(section, name=name, strategy=strategy, keep=keep, comm_keep=comm, seed=seed, steps=steps,
                    lora=lora, seconds=time.perf_counter() - t0, command="d2ft run " + " ".join(argv),
                    **_savings(RUNS / name, full))


def hetero(quick: bool) -> None:
    """Emulated 1x, 1x, 2x, 4x ranks: balanced D2FT against a speed-oblivious plan, and all-FULL."""
    steps = 30 if quick else 150
    slow = "1,1,2,4"
    base = ["--nproc", "4", "--slowdown", slow, "--keep", "0.6", "--steps", str(steps), "--lr", "2e-3",
            "--eval-every", "0", "--checkpoint-every", "0", "--seed", "0"]
    results = {}
    for name, extra in (("full", ["--strategy", "full"]), ("balanced", ["--strategy", "hybrid"])):
        results[name] = _run(base + extra + ["--out", str(RUNS / f"hetero-{name}-n{steps}")])
    # Speed-oblivious: the same D2FT, placed and planned as if the four ranks were equal, run slowed.
    results["oblivious"] = _run(base + ["--strategy", "hybrid", "--speed-oblivious",
                                        "--out", str(RUNS / f"hetero-oblivious-n{steps}")])
    for name, s in results.items():
        _record("hetero", name=name, slowdown=slow, steps=steps, top1=s["top1"],
                median_step_time_s=s["median_step_time_s"])


def scale(quick: bool) -> None:
    """Simulated step time and savings of ViT-B/L/H on 4..256 devices of real kinds over several networks."""
    from simulator import sweep

    models = ["vit_base_patch16_224"] if quick else ["vit_base_patch16_224", "vit_large_patch16_224",
                                                     "vit_huge_patch14_224"]
    counts = [4, 16, 64] if quick else [4, 8, 16, 32, 64, 128, 256]
    for cluster in ("lan-4x3090", "dgx-a100", "edge-orin-wifi"):
        rows = sweep(models, [cluster], ["full", "hybrid"], keeps=[0.6], comm_keeps=[0.5], micro_batches=[4],
                     micro_batch_sizes=[8], device_counts=counts)
        for r in rows:
            share = r["max_busy_s"] / r["step_time_s"] if not r["error"] and r["step_time_s"] else None
            _record("scale", compute_share=share, **{k: r[k] for k in (
                "model", "cluster", "devices", "strategy", "step_time_s", "speedup", "compute_saving", "comm_saving",
                "max_busy_s", "error")})


DISCUSSION = """\
The paper reports -40% compute and -50% communication for a 0.9-2 point top-1 drop (ViT on CIFAR-10/100,
Stanford Cars). Here, with two seeds for full, hybrid, shortcut and random at keep 0.6 and one for the
rest: at keep 0.6 (38-39% planned, 32-40% measured compute saving) hybrid trails full fine-tuning by 3.1
points on average after 300 steps (-4.1 and -2.1 in the two seeds), shortcut by 4.8 (-2.6 and -6.9), backward by 4.8 (one
seed); at comm keep 0.5 (50% fewer bytes, exactly) hybrid trails by 7.6 (one seed). The goal of "within 2
points" is not met at this scale. D2FT does beat the baselines at the same budget by wide margins: random
ops trail full by 24.5 points, freezing the lowest blocks by 17.6, LayerDrop by 26.3. Why the gap is larger
than the paper's: the runs stop far from convergence (full reaches 69.6% on a task where the backbone's
Fashion-MNIST features transfer weakly), so a step that trains 40% fewer subnets learns measurably less;
the paper fine-tunes to convergence, where skipped work matters less. Open: three seeds, keeps 0.8 and 0.4,
longer runs and equal-compute comparisons (D2FT given the steps its savings buy)."""


def write_markdown() -> Path:
    """RESULTS.md from every record in results.jsonl (the newest record of each name wins)."""
    import pandas as pd

    from analysis import plots
    from analysis.report import markdown_table

    records = [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()] if RESULTS.exists() else []
    frame = pd.DataFrame(records)
    lines = ["# Results", "",
             "Every number here was measured by `benchmarks/results.py` (the command of each section is given); "
             "regenerate with `.venv/bin/python benchmarks/results.py` (hours) or `--quick` (under 15 minutes). "
             f"Machine: {_machine()}. Medians unless stated.", ""]
    FIGURES.mkdir(parents=True, exist_ok=True)
    for section, title in (("accuracy", "Accuracy against savings"), ("lora", "LoRA")):
        if frame.empty or section not in set(frame["section"]):
            continue
        acc = frame[frame["section"] == section].drop_duplicates("name", keep="last")
        acc = acc[acc["steps"] == acc["steps"].max()]  # the longest runs measured; --quick ones only without them
        full_of_seed = acc[acc["strategy"] == "full"].set_index("seed")["top1"]
        acc = acc.assign(vs_full=acc["top1"] - acc["seed"].map(full_of_seed))  # against its own seed's full run
        group = acc.groupby(["strategy", "keep", "comm_keep"], dropna=False)
        table = group.agg(runs=("top1", "size"), top1=("top1", "mean"), top1_spread=("top1", "std"),
                          vs_full=("vs_full", "mean"),
                          compute=("measured_compute_saving", "mean"), comm=("measured_comm_saving", "mean"),
                          planned=("predicted_compute_saving", "mean"), step=("step_time_saving", "mean")).reset_index()
        order = {name: i for i, name in enumerate(("full", "hybrid", "backward", "shortcut", "random", "freeze",
                                                   "layerdrop"))}
        rank = table["comm_keep"].notna() * 1000 - table["keep"] * 100 + table["strategy"].map(order)
        table = table.iloc[rank.argsort(kind="stable")].reset_index(drop=True)  # full, then by keep, comm keep last
        shown = pd.DataFrame({
            "strategy": table["strategy"], "keep": table["keep"],
            "comm keep": table["comm_keep"].astype(object).where(table["comm_keep"].notna(), "-"),
            "seeds": table["runs"], "top-1 (%)": 100 * table["top1"], "spread (points)": 100 * table["top1_spread"],
            "vs full (points)": 100 * table["vs_full"],
            "compute saved, planned (%)": 100 * table["planned"], "compute saved, measured (%)": 100 * table["compute"],
            "bytes saved (%)": 100 * table["comm"], "step time saved (%)": 100 * table["step"]})
        steps = " or ".join(str(int(x)) for x in sorted(set(acc["steps"])))
        dates = sorted(set(acc["date"]))
        lines += [f"## {title}", ""]
        if max(acc["steps"]) < 300:
            lines += ["> These rows come from `--quick` (60 steps, one seed): a smoke test of the pipeline, far "
                      "from converged, not evidence for or against the paper's claims.", ""]
        lines += [
                  f"The shipped backbone (`data/pretrained/`, a ViT pre-trained on Fashion-MNIST) fine-tuned on the "
                  f"5,000 MNIST digits (4,000 train, 1,000 test) on 4 local ranks, {steps} steps of 32 images, "
                  f"planned on a calibrated profile of this machine; measured {', '.join(dates)}. Savings are against "
                  "the all-FULL run of the same seed, and so is \"vs full\" (then averaged over seeds); spread is the "
                  "standard deviation of top-1 over seeds.", "",
                  f"Command of one run: `{acc.iloc[-1]['command']}`", "", markdown_table(shown), ""]
        fig = plots.accuracy_vs_saving(pd.DataFrame({
            "strategy": table["strategy"], "accuracy": table["top1"], "compute_saving": table["compute"].fillna(0)}))
        plots.save(fig, FIGURES / f"{section}-accuracy-compute")
        lines += [f"![top-1 against measured compute saving](figures/{section}-accuracy-compute.png)", ""]
    if not frame.empty and "hetero" in set(frame["section"]):
        h = frame[frame["section"] == "hetero"]
        h = h[h["steps"] == h["steps"].max()].drop_duplicates("name", keep="last").set_index("name")
        shown = pd.DataFrame({"plan": h.index, "median step (ms)": 1e3 * h["median_step_time_s"],
                              "top-1 (%)": 100 * h["top1"]})
        ratio = h.loc["oblivious", "median_step_time_s"] / h.loc["balanced", "median_step_time_s"] \
            if {"oblivious", "balanced"} <= set(h.index) else float("nan")
        steps_h = int(h["steps"].max())
        lines += ["## Heterogeneous ranks (emulated)", "",
                  f"{steps_h} steps" + (" (`--quick`: a smoke test)" if steps_h < 150 else "") + ". "
                  f"Four local ranks slowed 1x, 1x, 2x, 4x (emulation: a rank sleeps to stretch its compute). The "
                  f"balanced D2FT plan places and budgets by speed; the speed-oblivious one plans as if all were equal. "
                  f"Balanced is {ratio:.2f}x faster per step than speed-oblivious (goal: at least 1.3x).", "",
                  markdown_table(shown.reset_index(drop=True)), ""]
    if not frame.empty and "scale" in set(frame["section"]):
        sc = frame[frame["section"] == "scale"]
        ok = sc[sc["error"].isna() | (sc["error"] == "")] if "error" in sc else sc
        hyb = ok[ok["strategy"] == "hybrid"]
        shown = pd.DataFrame({"model": hyb["model"], "cluster": hyb["cluster"], "devices": hyb["devices"],
                              "step (s)": hyb["step_time_s"], "speed-up over full": hyb["speedup"],
                              "compute saved (%)": 100 * hyb["compute_saving"],
                              "bytes saved (%)": 100 * hyb["comm_saving"],
                              "busiest compute / step (%)": 100 * hyb["compute_share"]})
        lines += ["## Scale study (simulated)", "",
                  "D2FT hybrid at keep 0.6 and comm keep 0.5 against all-FULL, 4 micro-batches of 8 images, "
                  "analytical simulator, the preset's devices replicated to the device count" +
                  (" (`--quick`: ViT-B only)" if hyb["model"].nunique() == 1 else "") + ". The last column is "
                  "the busiest device's compute time over the step time: near 100% the step is compute-bound; far "
                  "below it, the devices wait on the coordinator's link.", "",
                  markdown_table(shown.reset_index(drop=True)), ""]
    lines += ["## Against the paper (reading of 2026-11-23; revisit when the tables change)", "", DISCUSSION, ""]
    out = ROOT / "benchmarks" / "RESULTS.md"
    from d2ft.serial import atomic_write_text

    atomic_write_text(out, "\n".join(lines))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed, fewer configurations and steps (< 15 min)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated of {', '.join(SECTIONS)}")
    p.add_argument("--markdown-only", action="store_true", help="only rewrite RESULTS.md from the records")
    p.add_argument("--seeds", help="comma-separated seeds of the accuracy runs (default: 0,1,2; --quick: 0)")
    p.add_argument("--keeps", help="comma-separated compute keep ratios of the accuracy table (default: 0.8,0.6,0.4)")
    p.add_argument("--strategies", help="only these strategies and baselines in the accuracy table (and full); "
                                        "no comm-keep rows")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = sorted(set(wanted) - set(SECTIONS))
    if bad:
        p.error(f"unknown sections {bad}; choose from {', '.join(SECTIONS)}")
    if not args.markdown_only:
        for s in wanted:
            seeds = tuple(int(x) for x in args.seeds.split(",")) if args.seeds else None
            keeps = tuple(float(x) for x in args.keeps.split(",")) if args.keeps else None
            strategies = tuple(args.strategies.split(",")) if args.strategies else None
            {"accuracy": lambda: accuracy(args.quick, seeds=seeds, keeps=keeps, strategies=strategies),
             "lora": lambda: accuracy(args.quick, lora=True, seeds=seeds),
             "hetero": lambda: hetero(args.quick), "scale": lambda: scale(args.quick)}[s]()
    print(f"written: {write_markdown()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
