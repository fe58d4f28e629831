"""The learning-quality study: D2FT against full fine-tuning at convergence, by a fair protocol.

Backbones x tasks (``COMBOS``): the in-domain backbone pre-trained on Fashion-MNIST classes 0-4
(``data/pretrained/vit-fmnist0-4.safetensors``) on its unseen classes 5-9 (``fashion-mnist-5to9``)
and on MNIST digits (cross-domain), and the older backbone pre-trained on all of Fashion-MNIST
(``vit-fmnist.safetensors``) on the digits. (That backbone on classes 5-9 is not studied: it was
pre-trained on those very classes.)

Protocol, per combination:

1. ``epochs``: full fine-tuning on the task's validation view (``val:TASK``: a seeded 20% of its
   training images held out) at a constant learning rate for ``MAX_EPOCHS`` epochs, validation
   top-1 after each; the study's epochs E are the first at which the 3-epoch trailing mean of
   validation top-1 comes within ``PLATEAU`` of its best. Nothing is chosen on a test split.
2. ``rescale`` (first combination only): D2FT ``shortcut`` (FULL or SKIP) at keep 0.6 with and
   without SKIP rescaling (``--skip-rescale``) on the validation view for E epochs, seeds 0 and
   1; every arm then runs with the one of higher mean validation top-1 (a tie keeps the
   method's default, off). Shortcut, because hybrid at keep 0.6 on this cluster chooses almost
   no SKIP (FORWARD_ONLY is the cheaper cut here: 1 SKIP in 1,076 steps of a first try), so
   hybrid could not tell the two apart.
3. ``arm``: every arm of ``ARMS`` for E epochs on the task's own train/test split, seeds 0, 1, 2,
   paired (a seed fixes the init, the classifier, the data order and the augmentation), test top-1
   after every epoch (reported, never used to choose). The equal-compute full arm runs all-FULL
   for (1 - s) E epochs, s the hybrid arm's planned compute saving in the same seed.

Every run: 4 emulated ranks in one process (``--nproc 1 --emulate-ranks 4``: the placement,
knapsacks and ops of 4 ranks, no messages) planned on the assumed local cluster, so plans do
not depend on a calibration; micro-batches 2 x 16; AdamW, peak lr 2e-3 (LoRA and probe 5e-3),
cosine decay after a 5% warm-up, weight decay 0.05; no full warm-up steps.

Usage (from the repository root; finished runs in runs/results/ are reused)::

    .venv/bin/python benchmarks/learning.py                    # everything (hours on 2 cores)
    .venv/bin/python benchmarks/learning.py --combos A --seeds 0
    .venv/bin/python benchmarks/results.py --markdown-only     # tables and figures into RESULTS.md
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(_HERE)]  # benchmarks/runtime.py is no package
sys.path.insert(0, str(_HERE.parent))


def _results():
    """benchmarks/results.py (shared run, record and command helpers), loaded by path."""
    if "d2ft_results" not in sys.modules:
        spec = importlib.util.spec_from_file_location("d2ft_results", _HERE / "results.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["d2ft_results"] = module
        spec.loader.exec_module(module)
    return sys.modules["d2ft_results"]


BACKBONES = {"fmnist0-4": "data/pretrained/vit-fmnist0-4.safetensors", "fmnist": "data/pretrained/vit-fmnist.safetensors"}
TASKS = {"fmnist5-9": "fashion-mnist-5to9", "digits": "mnist-digits"}
COMBOS = {"A": ("fmnist0-4", "fmnist5-9"), "B": ("fmnist0-4", "digits"), "C": ("fmnist", "digits")}
ARMS = {  # name -> Job fields over the common ones
    "full": dict(strategy="full", keep=1.0),
    "hybrid": dict(strategy="hybrid", keep=0.6),
    "hybrid-comm": dict(strategy="hybrid", keep=1.0, comm_keep=0.5),
    "hybrid-bf16": dict(strategy="hybrid", keep=0.6, message_dtype="bf16"),
    "hybrid-fp32": dict(strategy="hybrid", keep=0.6, message_dtype="fp32"),
    "full-equal": dict(strategy="full", keep=1.0),
    "random": dict(strategy="random", keep=0.6),
    "layerdrop": dict(strategy="layerdrop", keep=0.6),
    "lora-full": dict(strategy="full", keep=1.0, lora=True),
    "lora-hybrid": dict(strategy="hybrid", keep=0.6, lora=True),
    "probe": dict(strategy="full", keep=1.0, lora=True),  # its fixed plan replaces the strategy (_probe)
}
"""``probe``: every subnet FORWARD_ONLY with LoRA's freezing, so only the classifier trains: the frozen probe.
``hybrid-fp32`` is ``hybrid`` again, the control of ``hybrid-bf16`` run at the same commit as it (the two differ
in nothing but the wire's rounding; ``hybrid`` itself may have run at an older commit whose data order differs)."""
MAX_EPOCHS, PLATEAU, SEEDS, BATCH = 30, 0.005, (0, 1, 2), (2, 16)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}
"""Student's t quantile at 0.975 by degrees of freedom (two-sided 95% interval)."""


def _steps_per_epoch(data: str) -> int:
    from runtime.data import load_dataset

    return len(load_dataset(data).train.images) // (BATCH[0] * BATCH[1])


def _job(combo: str, arm: str, seed: int, epochs: float, data: str, name: str, **over):
    from runtime.job import Job, LoraSpec

    backbone, _ = COMBOS[combo]
    fields = dict(ARMS[arm])
    lora = fields.pop("lora", False)
    per_epoch = _steps_per_epoch(data)
    fields.update(over)
    return Job(nproc=1, emulate_ranks=4, checkpoint=BACKBONES[backbone], data=data, steps=max(1, round(epochs * per_epoch)),
               micro_batches=BATCH[0], micro_batch_size=BATCH[1], lr=5e-3 if lora else 2e-3,
               lora=LoraSpec() if lora else None, eval_every=per_epoch, checkpoint_every=0, seed=seed,
               out_dir=str(_results().RUNS / "learning" / name), **fields)


def _probe(job):
    """The frozen probe: the job's placement with every subnet FORWARD_ONLY, run as a fixed plan."""
    from d2ft.ops import Op
    from runtime.prepare import prepare

    plan = prepare(job.replace(strategy="full", plan=None)).plan
    frozen = plan.with_ops([[[Op.FORWARD_ONLY] * plan.heads for _ in range(plan.depth)]] * plan.micro_batches)
    return job.replace(plan=frozen, strategy=None)


def coverage(run_dir: Path, steps: int) -> list[list[float]]:
    """Per subnet [block][head], the share of the run's micro-batches in which it ran FULL (plans.jsonl)."""
    from d2ft import rundir

    plans = rundir.read_jsonl(run_dir / rundir.PLANS_FILE)
    grid = None
    for i, p in enumerate(plans):
        span = (plans[i + 1]["step"] if i + 1 < len(plans) else steps) - p["step"]
        ops = [mb.split("/") for mb in p["plan"]["ops"]]
        if grid is None:
            grid = [[0.0] * len(ops[0][0]) for _ in ops[0]]
        for mb in ops:
            for l, row in enumerate(mb):
                for h, op in enumerate(row):
                    grid[l][h] += span * (op == "F") / (len(ops) * steps)
    return grid or []


def curve(run_dir: Path) -> list[list[float]]:
    """[epochs of all-FULL compute spent, top-1] at every evaluation (cost model's compute, s)."""
    from d2ft import rundir

    lines = rundir.read_jsonl(run_dir / rundir.METRICS_FILE)
    per_step_full = lines[0].get("full_compute_s") or 1.0
    spent, out = 0.0, []
    for r in lines:
        spent += r.get("predicted_compute_s") or per_step_full
        if r.get("top1") is not None:
            out.append([spent / per_step_full, r["top1"]])
    return out


def _measure(stage: str, combo: str, arm: str, seed: int, job, **extra) -> dict:
    """Runs ``job`` (or reads it back) and records it."""
    R = _results()
    t0 = time.perf_counter()
    print(f"[learning] {stage} {combo} {arm} seed {seed}: {job.steps} steps -> {job.out_dir}", file=sys.stderr, flush=True)
    summary = R._run(job)
    backbone, task = COMBOS[combo]
    per_epoch = _steps_per_epoch(job.data)
    c = curve(Path(job.out_dir))
    return R._record("learning", name=Path(job.out_dir).name, stage=stage, combo=combo, backbone=backbone, task=task,
                     data=job.data, arm=arm, seed=seed, steps=job.steps, epochs=job.steps / per_epoch,
                     top1=summary["top1"], curve=[[x / per_epoch, y] for x, y in c],
                     predicted_compute_saving=summary.get("predicted_compute_saving"),
                     predicted_comm_saving=summary.get("predicted_comm_saving"),
                     coverage=coverage(Path(job.out_dir), job.steps), skip_rescale=job.skip_rescale,
                     seconds=time.perf_counter() - t0, command=R._command(job),
                     code=(summary.get("provenance") or {}).get("git"), **extra)


def _records():
    import json

    path = _results().RESULTS
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    latest = {}
    for r in rows:
        if r.get("section") == "learning":
            latest[r["name"]] = r
    return list(latest.values())


def study_epochs(combo: str) -> int:
    """E for ``combo``: measured once (stage ``epochs``), then read from the records."""
    done = [r for r in _records() if r["stage"] == "epochs" and r["combo"] == combo]
    if not done:
        _, task = COMBOS[combo]
        data = f"val:{TASKS[task]}"
        job = _job(combo, "full", 0, MAX_EPOCHS, data, f"{combo}-epochs-full-s0", lr_schedule="constant")
        done = [_measure("epochs", combo, "full", 0, job)]
    return plateau([y for _, y in done[-1]["curve"]])


def plateau(top1: list[float], window: int = 3, within: float = PLATEAU) -> int:
    """The first epoch (1-based) at which the trailing ``window``-epoch mean of ``top1`` (one value per epoch)
    comes within ``within`` of its best.

    >>> plateau([0.5, 0.7, 0.8, 0.85, 0.86, 0.86, 0.87, 0.86])
    7
    """
    smooth = [statistics.fmean(top1[max(0, i - window + 1):i + 1]) for i in range(len(top1))]
    best = max(smooth)
    return next(i + 1 for i, v in enumerate(smooth) if v >= best - within)


RESCALE = dict(strategy="shortcut", keep=0.6)
"""The plan the SKIP-rescaling decision is measured on (module docstring, step 2)."""


def rescale_runs(combo: str = "A", seeds=(0, 1)) -> list[dict]:
    """The ``rescale`` records of ``combo`` for ``seeds``, both settings (run where missing)."""
    epochs = study_epochs(combo)
    _, task = COMBOS[combo]
    out = []
    for seed in seeds:
        for rescale in (False, True):
            name = f"{combo}-rescale{int(rescale)}-shortcut-s{seed}-e{epochs}"
            rec = next((r for r in _records() if r["name"] == name), None)
            if rec is None:
                job = _job(combo, "full", seed, epochs, f"val:{TASKS[task]}", name, skip_rescale=rescale, **RESCALE)
                rec = _measure("rescale", combo, "shortcut", seed, job)
            out.append(rec)
    return out


def rescale_choice(combo: str = "A", seeds=(0, 1)) -> bool:
    """Whether SKIP rescaling is used: the higher mean validation top-1 over ``seeds`` (stage ``rescale``)."""
    recs = rescale_runs(combo, seeds)
    means = {b: statistics.fmean(r["top1"] for r in recs if r["skip_rescale"] == b) for b in (False, True)}
    return means[True] > means[False]


def arms(combo: str, seeds=SEEDS, only=None) -> None:
    """Every arm of ``ARMS`` (or ``only``) for every seed, seed by seed (paired results come early)."""
    epochs, rescale = study_epochs(combo), rescale_choice()
    _, task = COMBOS[combo]
    have = {r["name"]: r for r in _records()}
    for seed in seeds:
        for arm in only or ARMS:
            e = epochs
            if arm == "full-equal":  # all-FULL for the hybrid arm's compute
                hybrid = have.get(f"{combo}-hybrid-s{seed}-e{epochs}-r{int(rescale)}")
                if hybrid is None:
                    continue
                e = epochs * (1 - hybrid["predicted_compute_saving"])
            name = f"{combo}-{arm}-s{seed}-e{epochs}-r{int(rescale)}"
            if name in have:
                continue
            job = _job(combo, arm, seed, e, TASKS[task], name, skip_rescale=rescale)
            if arm == "probe":
                job = _probe(job)
            have[name] = _measure("arm", combo, arm, seed, job, study_epochs=epochs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Runs go to runs/results/learning/; records to benchmarks/results/results.jsonl.")
    p.add_argument("--combos", default=",".join(COMBOS), help=f"of {', '.join(f'{k} ({b} -> {t})' for k, (b, t) in COMBOS.items())}")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds of the arms (default: 0,1,2)")
    p.add_argument("--arms", help=f"only these arms, of {', '.join(ARMS)}")
    p.add_argument("--stages", default="epochs,rescale,arm", help="of epochs, rescale, arm (each runs what it needs)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(_HERE.parent)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    stages = set(args.stages.split(","))
    for combo in args.combos.split(","):
        if combo not in COMBOS:
            p.error(f"unknown combination {combo!r}; choose from {', '.join(COMBOS)}")
        if "epochs" in stages:
            print(f"[learning] {combo}: {study_epochs(combo)} epochs", file=sys.stderr, flush=True)
        if "rescale" in stages:
            if args.seeds != ",".join(map(str, SEEDS)):  # only these seeds' runs (to share them out)
                rescale_runs(seeds=seeds)
            else:
                print(f"[learning] SKIP rescaling: {'on' if rescale_choice() else 'off'}", file=sys.stderr, flush=True)
        if "arm" in stages:
            arms(combo, seeds, args.arms.split(",") if args.arms else None)
    return 0


# ---- the results page -------------------------------------------------------------------------
def paired(diffs: list[float]) -> tuple[float, float]:
    """(mean, half-width of its 95% t interval) of paired differences; half-width nan for one pair.

    >>> [round(x, 3) for x in paired([0.01, 0.02, 0.03])]
    [0.02, 0.025]
    """
    m = statistics.fmean(diffs)
    if len(diffs) < 2:
        return m, math.nan
    return m, T_975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))


LABELS = {"full": "full", "hybrid": "D2FT hybrid, keep 0.6", "hybrid-comm": "D2FT hybrid, comm keep 0.5",
          "hybrid-bf16": "D2FT hybrid, keep 0.6, bf16 messages",
          "hybrid-fp32": "D2FT hybrid, keep 0.6, fp32 messages (bf16's control)",
          "full-equal": "full, equal compute (fewer steps)", "random": "random, keep 0.6",
          "layerdrop": "layerdrop, keep 0.6", "lora-full": "LoRA, full", "lora-hybrid": "D2FT-LoRA hybrid, keep 0.6",
          "probe": "frozen probe (classifier only)"}
GOALS = (  # (arm, against, at least (points), what)
    ("hybrid", "full", -1.0, "hybrid at -40% compute within 1 point of full"),
    ("hybrid-comm", "full", -2.0, "hybrid at -50% communication within 2 points of full"),
    ("hybrid", "full-equal", 2.0, "hybrid ahead of equal-compute full by 2 points"),
    ("hybrid", "random", 2.0, "hybrid ahead of random by 2 points"),
    ("hybrid", "layerdrop", 2.0, "hybrid ahead of layerdrop by 2 points"),
    ("lora-hybrid", "lora-full", -3.0, "D2FT-LoRA at -40% compute within 3 points of full LoRA"),
)


def _code_line(recs: list[dict]) -> str:
    """" Code: commit ..." from the records' ``code`` (the git commit each run recorded), or nothing."""
    commits = sorted({r["code"]["commit"][:12] + (" (uncommitted changes)" if r["code"].get("dirty") else "")
                      for r in recs if isinstance(r.get("code"), dict) and r["code"].get("commit")})
    return f" Code: {'commits' if len(commits) > 1 else 'commit'} {', '.join(commits)} (as each run recorded it)." \
        if commits else ""


def markdown(records: list[dict], figures: Path) -> tuple[list[str], list[tuple[str, str, bool]]]:
    """The results page's learning section, and its goals (goal, measured, met)."""
    from analysis import plots
    from analysis.report import markdown_table
    import pandas as pd

    recs = [r for r in records if r.get("section") == "learning"]
    if not recs:
        return [], []
    lines = ["## Learning quality at convergence", "",
             "The fair protocol of `benchmarks/learning.py` (its docstring has every setting): epochs chosen where full "
             "fine-tuning plateaus on a validation split held out of the training images, every arm for those epochs, "
             "seeds paired, test top-1 reported only. 4 emulated ranks in one process (same placement, knapsacks, ops and "
             "sums as 4 ranks; no messages), so savings are the cost model's (planned) figures for those 4 ranks, whose "
             "bytes the runtime matches exactly on real ranks. \"vs full\" is the mean over seeds of (arm - full of the "
             "same seed), with its 95% t interval." + _code_line(recs), ""]
    goals, hybrid_vs = [], {}
    epochs_recs = {c: [r for r in recs if r["combo"] == c and r["stage"] == "epochs"] for c in COMBOS}
    curves = {f"{BACKBONES[b].split('/')[-1].split('.')[0]} -> {TASKS[t]}": [y for _, y in epochs_recs[c][-1]["curve"]]
              for c, (b, t) in COMBOS.items() if epochs_recs[c]}
    if curves:
        plots.save(plots.plateau_curves(curves, {k: plateau(v) for k, v in curves.items()}), figures / "learning-epochs")
        lines += ["![validation top-1 along full fine-tuning, and the epochs chosen](figures/learning-epochs.png)", ""]
    for combo, (backbone, task) in COMBOS.items():
        mine = [r for r in recs if r["combo"] == combo]
        epochs_rec = [r for r in mine if r["stage"] == "epochs"]
        arms_rec = [r for r in mine if r["stage"] == "arm"]
        if not epochs_rec:
            continue
        E = plateau([y for _, y in epochs_rec[-1]["curve"]])
        val = epochs_rec[-1]["curve"]
        lines += [f"### {BACKBONES[backbone].split('/')[-1]} on {TASKS[task]}", "",
                  f"Epochs: {E} (full fine-tuning at a constant lr on `val:{TASKS[task]}`: validation top-1 "
                  f"{100 * val[0][1]:.1f}% after 1 epoch, {100 * val[E - 1][1]:.1f}% after {E}, best "
                  f"{100 * max(y for _, y in val):.1f}% over {len(val)} epochs).", ""]
        resc = [r for r in mine if r["stage"] == "rescale"]
        if resc:
            by = {b: [r["top1"] for r in resc if r["skip_rescale"] == b] for b in (False, True)}
            if by[False] and by[True]:
                lines += [f"SKIP rescaling, shortcut keep 0.6 on the validation split ({len(by[True])} seeds): "
                          f"{100 * statistics.fmean(by[True]):.2f}% with, {100 * statistics.fmean(by[False]):.2f}% "
                          f"without; the arms use {'it' if statistics.fmean(by[True]) > statistics.fmean(by[False]) else 'none'}.", ""]
        if not arms_rec:
            continue
        top = {}
        for r in arms_rec:
            top.setdefault(r["arm"], {})[r["seed"]] = r
        rows = []
        full_seeds = top.get("full", {})
        target = statistics.fmean(r["top1"] for r in full_seeds.values()) - 0.01 if full_seeds else None
        for arm in ARMS:
            if arm not in top:
                continue
            runs = top[arm]
            base = top.get("lora-full" if arm == "lora-hybrid" else "full", {})
            diffs = [runs[s]["top1"] - base[s]["top1"] for s in runs if s in base]
            m, hw = paired(diffs) if diffs and arm not in ("full", "lora-full") else (math.nan, math.nan)
            tops = [r["top1"] for r in runs.values()]
            reach = [next((x for x, y in r["curve"] if y >= target), None) for r in runs.values()] if target else []
            rows.append({"arm": LABELS[arm], "seeds": len(runs), "epochs": f"{statistics.fmean(r['epochs'] for r in runs.values()):.1f}",
                         "top-1 (%)": f"{100 * statistics.fmean(tops):.2f}",
                         "sd (points)": f"{100 * statistics.stdev(tops):.2f}" if len(tops) > 1 else "-",
                         "vs full (points)": "-" if m != m else (f"{100 * m:+.2f}" + (f" [{100 * (m - hw):+.2f}, {100 * (m + hw):+.2f}]" if hw == hw else "")),
                         "compute saved (%)": f"{100 * statistics.fmean(r['predicted_compute_saving'] or 0 for r in runs.values()):.1f}",
                         "bytes saved (%)": f"{100 * statistics.fmean(r['predicted_comm_saving'] or 0 for r in runs.values()):.1f}",
                         "compute-epochs to target": ", ".join("-" if x is None else f"{x:.1f}" for x in reach),
                         "subnets FULL < 1%": ", ".join(str(_starved(r)) for r in runs.values())})
        lines += [markdown_table(pd.DataFrame(rows)), "",
                  "LoRA rows are against full LoRA; target for time-to-accuracy: full's mean top-1 minus 1 point, in "
                  "epochs of all-FULL compute, per seed (\"-\": not reached).", ""]
        control = next((a for a in ("hybrid-fp32", "hybrid") if a in top), None)
        if "hybrid-bf16" in top and control:
            diffs = [top["hybrid-bf16"][s]["top1"] - top[control][s]["top1"] for s in top["hybrid-bf16"] if s in top[control]]
            if diffs:
                m, hw = paired(diffs)
                lines += [f"bf16 messages (`--message-dtype bf16`: half the bytes on the wire) against fp32 "
                          f"(`{control}`), same arm otherwise, paired: {100 * m:+.2f} points"
                          + (f" [{100 * (m - hw):+.2f}, {100 * (m + hw):+.2f}]" if hw == hw else "")
                          + f" over {len(diffs)} seed{'s' if len(diffs) != 1 else ''}."
                          + (" The two ran at a later commit than the other arms (augmentation drawn per image under a "
                             "seed per batch since), so their rows' \"vs full\" pair runs of two commits; this "
                             "difference does not." if control == "hybrid-fp32" else ""), ""]
        if "probe" in top and full_seeds:
            ratio = statistics.fmean(r["top1"] for r in top["probe"].values()) / statistics.fmean(r["top1"] for r in full_seeds.values())
            lines += [f"Frozen probe / full fine-tuning: {ratio:.3f} (how task-ready the frozen backbone is).", ""]
        grids = {LABELS[a]: top[a][min(top[a])]["coverage"] for a in ("hybrid", "lora-hybrid", "layerdrop") if a in top}
        if grids:
            fig_name = f"learning-coverage-{combo}"
            plots.save(plots.coverage_heatmaps(grids), figures / fig_name)
            lines += [f"![share of micro-batches each subnet ran FULL](figures/{fig_name}.png)", "",
                      "Coverage: the share of the run's micro-batches in which each subnet ran FULL (lowest seed). "
                      "\"Subnets FULL < 1%\" in the table counts, per seed, the subnets that trained in under 1% of the "
                      "run's micro-batches (of 24): a subnet's Fisher score is re-measured only when it runs FULL, so "
                      "one that scored low early can stay untrained.", ""]
        if "hybrid" in top:
            hybrid_vs[combo] = {"starved": [_starved(r) for r in top["hybrid"].values()]}
        for arm, against, least, what in GOALS:
            if arm in top and against in top:
                diffs = [top[arm][s]["top1"] - top[against][s]["top1"] for s in top[arm] if s in top[against]]
                if diffs:
                    m, hw = paired(diffs)
                    if arm == "hybrid":
                        hybrid_vs[combo][against] = m
                    shown = f"{100 * m:+.2f} points" + (f" [{100 * (m - hw):+.2f}, {100 * (m + hw):+.2f}]" if hw == hw else "")
                    goals.append((f"{what} ({backbone} -> {task})", f"{shown}, {len(diffs)} seed{'s' if len(diffs) != 1 else ''}",
                                  bool(100 * m >= least - 1e-4)))  # top-1: float32 ratios of counts
    return lines + _reading(hybrid_vs), goals


def _starved(run: dict) -> int:
    """Subnets of a run that ran FULL in under 1% of its micro-batches."""
    return sum(v < 0.01 for row in run["coverage"] for v in row)


def _reading(hybrid_vs: dict[str, dict]) -> list[str]:
    """What the hybrid arm's misses point to, from its paired differences per combination (mean points against
    full, equal-compute full and random) and its starved subnets per seed."""
    done = {c: v for c, v in hybrid_vs.items() if {"full", "full-equal", "random"} <= set(v)}
    if not done:
        return []

    def span(key: str) -> str:
        values = sorted(100 * v[key] for v in done.values())
        return f"{values[0]:+.1f}" if len(values) == 1 else f"{values[0]:+.1f} to {values[-1]:+.1f}"

    starved = [n for v in done.values() for n in v["starved"]]
    equal = [100 * v["full-equal"] for v in done.values()]
    text = (f"Over {len(done)} combination(s) ({', '.join(done)}), computed from the tables above: hybrid at keep 0.6 "
            f"lies {span('full')} points from full fine-tuning, {span('full-equal')} from full fine-tuning given the "
            f"same compute (fewer steps) and {span('random')} from a random choice of subnets at the same keep.")
    if min(100 * v["random"] for v in done.values()) >= 2:
        text += " The scores choose far better than chance"
        text += (", but the accuracy D2FT gives up is about what spending its compute on every subnet for fewer steps "
                 "gives up (within 2 points of that arm everywhere): its choice of subnets adds little over training "
                 "all of them for less time here." if max(map(abs, equal)) < 2 else ".")
    text += (f" In every hybrid run {min(starved)} to {max(starved)} of the 24 subnets ran FULL in under 1% of the "
             "micro-batches (the coverage maps): a subnet's Fisher score is refreshed only when it runs FULL, so a "
             "subnet that scored low at first keeps that stale score.")
    if min(starved) >= 6:
        text += (" With a quarter or more of the model left untrained in every run, revisiting stale subnets (an "
                 "exploration share of the budget) is the lever these measurements point to; it is not measured yet.")
    return ["### What the misses point to", "", text, ""]


if __name__ == "__main__":
    sys.exit(main())
