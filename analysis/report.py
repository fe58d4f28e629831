"""A run's (or a set of runs') report: one self-contained HTML page with its figures embedded,
and a Markdown summary beside it whose figures are PNG files in ``figures/``.

``write_report(folder)`` takes a run directory or a folder of run directories (``d2ft demo``
makes one). An all-FULL run among them is the reference for measured savings. Optional
inputs come from the parts of the project analysis does not import: predicted step times
(the simulator), a fidelity table over many plans, and what-if sweep records.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from d2ft import rundir
from d2ft.serial import atomic_write_text

from . import plots
from .compare import rank_agreement
from .runs import Run, read_run, runs_frame

NOT_MODELLED = (
    "The cost model and simulator do not model: overlap of compute and communication inside a rank, "
    "kernel fusion, the FLOP of softmax, GELU and LayerNorm (counted as memory traffic), framework memory, "
    "LoRA's smaller weight-gradient work (a LoRA run is predicted as full fine-tuning), and the control "
    "messages of the runtime (plan broadcast and statistics, outside the measured bytes too). Ranks that "
    "share a host's cores are modelled as if each had its own, so where ranks outnumber cores the measured "
    "times include waiting for a core and the predictions do not."
)


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Student's t quantile at 0.975 by degrees of freedom (a two-sided 95% interval); 1.96 beyond 9."""
TIMING_SPREAD = 0.2
"""Runs of one configuration whose median step times differ by more than this (a fraction) are flagged."""


def mean_interval(values) -> tuple[float, float | None]:
    """(mean, half-width of its 95% t interval) of ``values``; None for one value.

    >>> [round(x, 3) for x in mean_interval([0.70, 0.72, 0.74])]
    [0.72, 0.05]
    """
    v = [float(x) for x in values]
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, None
    sd = (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5
    return m, T_975.get(len(v) - 1, 1.96) * sd / len(v) ** 0.5


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    figures: list[tuple[str, str]] = field(default_factory=list)
    """(file stem under figures/, caption)."""


def write_report(folder: str | Path, out: str | Path | None = None, *, title: str | None = None,
                 command: str | None = None, predicted_step_s: dict[str, float] | None = None,
                 fidelity: pd.DataFrame | None = None, sweep: pd.DataFrame | None = None,
                 timelines: dict | None = None, notes: list[str] | None = None,
                 caveats: list[str] | None = None) -> tuple[Path, Path]:
    """Writes OUT/report.html and OUT/report.md (OUT defaults to ``folder``); returns both paths.

    ``predicted_step_s``: run label -> the simulator's step time (s) for that run's plans.
    ``fidelity``: one row per plan with columns plan, predicted_step_time_s, measured_step_time_s
    (and optionally predicted_compute_s, measured_compute_s, predicted_sent_bytes, measured_sent_bytes).
    ``sweep``: records of ``d2ft sweep`` (columns strategy, link_bandwidth, step_time_s, ...).
    ``timelines``: title -> ``d2ft.Trace`` with events, drawn side by side (e.g. the simulator's and the
    runtime's ``timeline-stepN.json`` of one step). ``caveats``: sentences shown first, before any figure
    (e.g. that the runs are too short to judge accuracy).
    """
    folder = Path(folder)
    runs = [read_run(p) for p in rundir.find_runs(folder)]
    if not runs:
        raise ValueError(f"{folder} holds no run: give a run directory (`d2ft run --out`) or a folder of them")
    out = Path(out) if out is not None else folder
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    reference = next((r for r in runs if r.job.get("strategy") == "full"), None)
    table = runs_frame(runs, reference)
    sections = [Section("Read this first", " ".join(caveats))] if caveats else []
    sections.append(_configuration(runs[0], len(runs)))
    sections.append(_results(table, reference))
    seeds = _seeds(table)
    if seeds is not None:
        sections.append(seeds)
    warnings = _timing_warnings(table)
    if warnings:
        sections.append(Section("Timing warnings", " ".join(warnings)))
    sections += _figures(runs, table, reference, figdir)
    sections += [_fidelity_runs(runs)]
    if predicted_step_s or fidelity is not None:
        sections.append(_fidelity_plans(runs, predicted_step_s or {}, fidelity, figdir))
    if timelines:
        fig = plots.timelines(timelines)
        sections.append(Section("One step, side by side", "Every rank's compute and every message of one step "
                                "(messages on the sender's link a->b).",
                                figures=[_save(fig, figdir, "timelines", "Timelines of one step: " +
                                               ", ".join(timelines) + ".")]))
    if sweep is not None and len(sweep):
        sections.append(_sweep(sweep, figdir))
    sections.append(Section("What the predictions leave out", NOT_MODELLED + "".join(f" {n}" for n in notes or [])))
    title = title or f"d2ft report: {runs[0].job['model']} on {len(runs[0].job['plan']['devices'])} ranks"
    stamp = f"{datetime.datetime.now().isoformat(timespec='seconds')} on {platform.node()} " \
            f"({platform.machine()}, Python {platform.python_version()})"
    html_path = atomic_write_text(out / "report.html", _html(title, stamp, command, sections, figdir))
    md_path = atomic_write_text(out / "report.md", _markdown(title, stamp, command, sections))
    return html_path, md_path


# ---- sections -----------------------------------------------------------------------------------------
def _configuration(run: Run, n: int) -> Section:
    j = run.job
    plan = j["plan"]
    rows = [
        ("model", f"{j['model']} {j.get('model_kwargs') or ''}"),
        ("starting weights", j.get("checkpoint") or "seeded random init"),
        ("data", j.get("data")),
        ("ranks", f"{len(plan['devices'])} (coordinator: rank {j.get('coordinator', 0)})"),
        ("batch", f"{len(plan['ops'])} micro-batches x {plan['micro_batch_size']} images"),
        ("steps", j["steps"]),
        ("optimizer", f"{j.get('optimizer', 'adamw')}, peak lr {j.get('lr')}, {j.get('lr_schedule', 'cosine')} schedule"),
        ("re-planning", f"every {j.get('replan_every')} steps, solver {j.get('solver')}, "
                        f"{j.get('full_warmup', 0)} all-FULL warm-up steps"),
        ("seed", j.get("seed")),
        ("runs in this report", n),
    ]
    prov = _provenance(run)
    if prov:
        git = prov.get("git") or {}
        code = f"d2ft {prov['versions'].get('d2ft')}" + (f", git {git['commit'][:12]}" + (" (uncommitted changes)"
                                                          if git.get("dirty") else "") if git else "")
        rows += [("code", code + f"; torch {prov['versions'].get('torch')}, timm {prov['versions'].get('timm')}"),
                 ("measured on", f"{prov.get('host')} ({prov.get('cores')} cores), {prov.get('date')}"),
                 ("command", prov.get("command"))]
    return Section("Configuration", table=pd.DataFrame(rows, columns=["setting", "value"]))


def _provenance(run: Run) -> dict | None:
    """The provenance a run's summary.json records (None for runs that have none)."""
    path = run.path / rundir.SUMMARY_FILE
    try:
        import json

        return json.loads(path.read_text()).get("provenance") if path.is_file() else None
    except (ValueError, OSError):
        return None


def _seeds(table: pd.DataFrame) -> Section | None:
    """Top-1 per configuration over its seeds: the mean and its 95% interval (None: every configuration has one seed)."""
    groups = [(label, g) for label, g in table.groupby("label", sort=False)]
    if all(len(g) == 1 for _, g in groups):
        return None
    rows = []
    for label, g in groups:
        tops = g["top1"].dropna()
        if not len(tops):
            continue
        m, hw = mean_interval(tops)
        rows.append({"configuration": label, "seeds": len(tops), "top-1 mean (%)": 100 * m,
                     "95% interval (points)": "one seed" if hw is None else f"+- {100 * hw:.2f}"})
    return Section("Across seeds", "Top-1 per configuration: the mean over its seeds and the half-width of the "
                   "95% t interval of that mean.", table=pd.DataFrame(rows))


def _timing_warnings(table: pd.DataFrame) -> list[str]:
    """One sentence per configuration whose runs' median step times differ by more than ``TIMING_SPREAD``."""
    out = []
    for label, g in table.groupby("label", sort=False):
        t = g["median_step_time_s"].dropna()
        if len(t) > 1 and t.max() > (1 + TIMING_SPREAD) * t.min():
            out.append(f"The runs of {label} measured median steps from {1e3 * t.min():.0f} ms to {1e3 * t.max():.0f} ms "
                       f"({t.max() / t.min() - 1:.0%} apart): the machine's load changed between them, so compare "
                       "their step times with care.")
    return out


def _results(table: pd.DataFrame, reference: Run | None) -> Section:
    t = pd.DataFrame({"run": table["label"], "top-1 (%)": 100 * table["top1"]})
    if reference is not None:
        t["vs full (points)"] = 100 * (table["top1"] - reference.final_top1)
    t["compute saved, planned (%)"] = 100 * table["predicted_compute_saving"]
    if "measured_compute_saving" in table:
        t["compute saved, measured (%)"] = 100 * table["measured_compute_saving"]
    t["bytes saved, planned (%)"] = 100 * table["predicted_comm_saving"]
    if "measured_comm_saving" in table:
        t["bytes saved, measured (%)"] = 100 * table["measured_comm_saving"]
        t["step time saved (%)"] = 100 * table["step_time_saving"]
    t["median step (ms)"] = 1e3 * table["median_step_time_s"]
    t["bytes = cost model"] = np.where(table["bytes_exact"], "exact", "DIFFER")
    text = ("Planned savings come from the cost model for the plans each run used, against all-FULL plans "
            "on the same placement. ")
    if reference is not None:
        text += ("Measured savings compare each run's median per-step compute (busy time summed over ranks) and "
                 f"its bytes sent with the all-FULL run ({reference.path.name}). ")
    text += "Top-1 is on the test split, every subnet running, after the last step."
    if table["seed"].nunique() <= 1 and not table["label"].duplicated().any():
        text += " One seed per configuration: differences of a point or two may be noise."
    return Section("Results", text, table=t)


def _figures(runs: list[Run], table: pd.DataFrame, reference: Run | None, figdir: Path) -> list[Section]:
    out = []
    fig = plots.training_curves({r.label: r.steps for r in runs})
    out.append(Section("Training", figures=[_save(fig, figdir, "training", "Training loss and test top-1 against step.")]))
    if reference is not None and len(runs) > 1 and table["top1"].notna().all():
        acc = pd.DataFrame({"strategy": table["label"], "accuracy": table["top1"],
                            "compute_saving": table["measured_compute_saving"],
                            "comm_saving": table["measured_comm_saving"]})
        figs = [_save(plots.accuracy_vs_saving(acc, "compute_saving"), figdir, "accuracy-compute",
                      "Top-1 against the measured compute saving."),
                _save(plots.accuracy_vs_saving(acc, "comm_saving"), figdir, "accuracy-comm",
                      "Top-1 against the measured communication saving.")]
        out.append(Section("Accuracy against savings", figures=figs))
    dynamic = [r for r in runs if len(r.plans) > 1]
    if dynamic:
        r = dynamic[0]
        fig = plots.op_mix_over_training(r.plans, len(r.steps))
        out.append(Section(f"Op mix over training ({r.label})",
                           "Which subnets the planner kept FULL as the measured scores changed.",
                           figures=[_save(fig, figdir, "op-mix", f"Share of micro-batches each subnet ran FULL, {r.label}.")]))
    loads = {}
    for r in runs:
        med = r.devices.groupby("rank")[["busy_s", "predicted_compute_s"]].median()
        loads[f"{r.label}: measured"] = med["busy_s"].to_list()
        loads[f"{r.label}: predicted"] = med["predicted_compute_s"].to_list()
    names = list(runs[0].devices.groupby("rank")["device"].first())
    fig = plots.device_loads(loads, names)
    out.append(Section("Per-rank compute", "Median compute per step on each rank, measured (busy time between "
                       "messages) and predicted by the cost model.",
                       figures=[_save(fig, figdir, "device-loads", "Per-rank compute per step, measured and predicted.")]))
    return out


def _fidelity_runs(runs: list[Run]) -> Section:
    rows = []
    for r in runs:
        med = r.devices.groupby("device", sort=False).median(numeric_only=True)
        for name, d in med.iterrows():
            rows.append({"run": r.label, "rank": name,
                         "compute predicted (ms)": 1e3 * d["predicted_compute_s"],
                         "compute measured (ms)": 1e3 * d["busy_s"],
                         "error (%)": 100 * (d["predicted_compute_s"] - d["busy_s"]) / d["busy_s"],
                         "sent predicted (B)": int(d["predicted_sent_bytes"]), "sent measured (B)": int(d["sent_bytes"])})
    return Section("Predicted against measured, per rank",
                   "Medians over steps. Bytes are counted from the tensors each rank sent.",
                   table=pd.DataFrame(rows))


def _fidelity_plans(runs: list[Run], predicted_step_s: dict[str, float], fidelity: pd.DataFrame | None,
                    figdir: Path) -> Section:
    pred, meas, labels = [], [], []
    for r in runs:
        if r.label in predicted_step_s:
            labels.append(r.label)
            pred.append(predicted_step_s[r.label])
            meas.append(float(r.steps["step_time_s"].median()))
    if fidelity is not None:
        labels += list(fidelity["plan"])
        pred += list(fidelity["predicted_step_time_s"])
        meas += list(fidelity["measured_step_time_s"])
    t = pd.DataFrame({"plan": labels, "predicted step (ms)": 1e3 * np.array(pred), "measured step (ms)": 1e3 * np.array(meas)})
    t["error (%)"] = 100 * (t["predicted step (ms)"] - t["measured step (ms)"]) / t["measured step (ms)"]
    err = t["error (%)"].abs()
    text = f"{len(t)} plans: median absolute step-time error {err.median():.1f}%, worst {err.max():.1f}%"
    by_plan = t.groupby("plan")["measured step (ms)"]  # one plan measured in two runs (a run and the fidelity run)
    for plan, times in by_plan:
        if len(times) > 1 and times.max() > (1 + TIMING_SPREAD) * times.min():
            text += (f". Warning: plan {plan} measured {times.min():.0f} ms and {times.max():.0f} ms per step in "
                     "different runs: the machine's load changed between them")
    if len(t) >= 3:
        text += f"; Spearman rank agreement of predicted and measured step times {rank_agreement(pred, meas):.2f}"
    figs = [_save(plots.predicted_vs_measured(1e3 * np.array(pred), 1e3 * np.array(meas), "step time", "ms"),
                  figdir, "step-time-fidelity", "Measured against predicted step time, one point per plan.")]
    return Section("Predicted against measured step time", text + ".", table=t, figures=figs)


def _sweep(sweep: pd.DataFrame, figdir: Path) -> Section:
    x = "link_bandwidth" if "link_bandwidth" in sweep and sweep["link_bandwidth"].nunique() > 1 else "devices"
    figs = [_save(plots.sweep_curves(sweep, x, "step_time_s"), figdir, "sweep-step", "Simulated step time."),
            _save(plots.sweep_curves(sweep, x, "compute_saving"), figdir, "sweep-saving", "Planned compute saving.")]
    return Section("What-if sweep (simulated)", f"{len(sweep)} simulated configurations.", figures=figs)


# ---- rendering --------------------------------------------------------------------------------------------
def _save(fig, figdir: Path, stem: str, caption: str) -> tuple[str, str]:
    plots.save(fig, figdir / stem)
    return stem, caption


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}" if abs(v) >= 1 or v == 0 else f"{v:.3g}"
    return str(v)


def _html(title: str, stamp: str, command: str | None, sections: list[Section], figdir: Path) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
             "figure{margin:1em 0}figcaption{color:#555;font-size:14px}code{background:#f3f3f3;padding:2px 4px}"
             "</style></head><body>", f"<h1>{html.escape(title)}</h1><p>Made {html.escape(stamp)}.</p>"]
    if command:
        parts.append(f"<p>Command: <code>{html.escape(command)}</code></p>")
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        if s.table is not None:
            parts.append(s.table.to_html(index=False, formatters={c: _fmt for c in s.table.columns}, border=0))
        for stem, caption in s.figures:
            data = base64.b64encode((figdir / f"{stem}.png").read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _markdown(title: str, stamp: str, command: str | None, sections: list[Section]) -> str:
    lines = [f"# {title}", "", f"Made {stamp}.", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        if s.table is not None:
            lines += [markdown_table(s.table), ""]
        for stem, caption in s.figures:
            lines += [f"![{caption}](figures/{stem}.png)", ""]
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (numbers formatted for reading)."""
    buf = io.StringIO()
    buf.write("| " + " | ".join(map(str, frame.columns)) + " |\n")
    buf.write("|" + "|".join("---" for _ in frame.columns) + "|\n")
    for row in frame.itertuples(index=False):
        buf.write("| " + " | ".join(_fmt(v) for v in row) + " |\n")
    return buf.getvalue().rstrip("\n")
