"""Figures: each function takes plain data and returns a matplotlib Figure; ``save`` writes PNG and SVG.

Colours are the Okabe-Ito palette (Okabe & Ito 2008, "Color Universal Design"), which
stays distinguishable with the common colour-vision deficiencies. Axis labels carry units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files, not windows: these figures go to reports

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from d2ft.plan import Plan  # noqa: E402
from d2ft.trace import Trace  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "^", "s", "D", "v", "P", "X", "*"]
"""Marker shapes that, with five of the colours above, tell up to 40 groups apart."""


def save(fig, path: str | Path) -> list[Path]:
    """Writes ``fig`` as PATH.png and PATH.svg (any suffix of ``path`` is replaced), then closes it (pyplot
    keeps every open figure alive); returns both paths.

    The same figure gives the same bytes: no creation date, and the SVG's element ids from a fixed salt
    (so a regenerated page changes only the figures whose data changed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    with plt.rc_context({"svg.hashsalt": "d2ft"}):
        for p in out:
            meta = {"Date": None} if p.suffix == ".svg" else {"Software": None}
            fig.savefig(p, dpi=150, bbox_inches="tight", metadata=meta)
    plt.close(fig)
    return out


def accuracy_vs_saving(results: pd.DataFrame, saving: str = "compute_saving"):
    """Top-1 accuracy against a saving, one colour per strategy.

    ``results`` columns: strategy, accuracy (0..1), and ``saving`` (0..1); optional
    ``spread`` (0..1, drawn as +- error bars, e.g. the standard deviation over seeds) and
    ``comm_keep`` (rows with a value are drawn as open squares, apart from the line that
    joins a strategy's other points in order of saving).
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    results = results.reset_index(drop=True)
    comm = results["comm_keep"].notna() if "comm_keep" in results else pd.Series(False, index=results.index)
    for colour, (strategy, rows) in zip(_colours(), results.groupby("strategy", sort=False)):
        for open_marker, part in ((False, rows[~comm.loc[rows.index]]), (True, rows[comm.loc[rows.index]])):
            if part.empty:
                continue
            part = part.sort_values(saving)
            x, y = 100 * part[saving], 100 * part["accuracy"]
            yerr = 100 * part["spread"].fillna(0) if "spread" in part else None
            ax.errorbar(x, y, yerr=yerr, color=colour, marker="s" if open_marker else "o", ms=6,
                        mfc="white" if open_marker else colour, ls="" if open_marker else "-", lw=1, capsize=2,
                        label=None if open_marker else strategy)
    if comm.any():
        ax.plot([], [], "s", mfc="white", mec="0.3", label="comm keep 0.5" if set(results.loc[comm, "comm_keep"]) == {0.5}
                else "comm-keep rows")
    ax.set_xlabel(("compute" if "compute" in saving else "communication") + " saved against all-FULL (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(title="strategy", frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def predicted_vs_measured(predicted: Sequence[float], measured: Sequence[float], label: str, unit: str,
                          band: float = 0.1, groups: Sequence[str] | None = None):
    """Measured against predicted with the y = x line and a +-``band`` relative error band.

    ``groups`` (one label per point) marks the points by group (a colour and a marker shape each, so that
    no two groups look alike), with a legend entry each beside the axes."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    fig, ax = plt.subplots(figsize=(4.5 if groups is None else 6.0, 4.5))
    top = max(p.max(initial=0), m.max(initial=0)) * 1.05 or 1.0
    line = np.linspace(0, top, 50)
    ax.plot(line, line, color=OKABE_ITO[7], lw=1, label="y = x")
    ax.fill_between(line, line * (1 - band), line * (1 + band), color=OKABE_ITO[5], alpha=0.25,
                    label=f"+-{band:.0%}")
    if groups is None:
        ax.scatter(p, m, color=OKABE_ITO[0], s=30, zorder=3)
    else:
        g = np.asarray(groups, dtype=object)
        for i, name in enumerate(dict.fromkeys(g)):
            ax.scatter(p[g == name], m[g == name], color=OKABE_ITO[i % 5], marker=MARKERS[i % len(MARKERS)], s=30,
                       zorder=3, label=name)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"predicted {label} ({unit})")
    ax.set_ylabel(f"measured {label} ({unit})")
    if groups is None:
        ax.legend(frameon=False)
    else:
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
        fig.tight_layout()
    ax.grid(alpha=0.3)
    return fig


def timelines(traces: Mapping[str, Trace]):
    """One Gantt chart per trace (e.g. simulated and measured), side by side; rows are devices and links."""
    fig, axes = plt.subplots(1, len(traces), figsize=(6 * len(traces), 4), squeeze=False)
    colour = dict(zip(sorted({e.kind for t in traces.values() for e in t.events}), _colours()))  # one key for all
    for ax, (title, trace) in zip(axes[0], traces.items()):
        resources = list(dict.fromkeys(e.resource for e in trace.events))
        row = {r: i for i, r in enumerate(resources)}
        kinds = sorted({e.kind for e in trace.events})
        for e in trace.events:
            ax.barh(row[e.resource], 1e3 * e.duration_s, left=1e3 * e.start_s, color=colour[e.kind], height=0.8)
        ax.set_yticks(range(len(resources)), resources)
        ax.invert_yaxis()
        ax.set_xlabel("time in step (ms)")
        ax.set_title(f"{title}: {1e3 * trace.step_time_s:.1f} ms")
        handles = [plt.Rectangle((0, 0), 1, 1, color=colour[k]) for k in kinds]
        if handles:
            ax.legend(handles, kinds, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def device_loads(loads: Mapping[str, Sequence[float]], devices: Sequence[str]):
    """Per-device load (s) for several plans, e.g. balanced against a speed-oblivious split."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    width = 0.8 / max(len(loads), 1)
    x = np.arange(len(devices))
    for i, ((name, values), colour) in enumerate(zip(loads.items(), _colours())):
        ax.bar(x + i * width, 1e3 * np.asarray(values, float), width, label=name, color=colour)
    ax.set_xticks(x + width * (len(loads) - 1) / 2, devices)
    ax.set_ylabel("compute per step (ms)")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def op_mix(plans: Sequence[Plan]):
    """Heatmap of the share of micro-batches and steps each subnet ran FULL (and FORWARD_ONLY)."""
    depth, heads = plans[0].depth, plans[0].heads
    full, fwd = np.zeros((depth, heads)), np.zeros((depth, heads))
    items = 0
    for plan in plans:
        for grid in plan.ops:
            items += 1
            for l, row in enumerate(grid):
                for h, op in enumerate(row):
                    full[l, h] += op.level == 2
                    fwd[l, h] += op.level == 1
    fig, axes = plt.subplots(1, 2, figsize=(8, 0.35 * depth + 2), sharey=True)
    for ax, data, title in ((axes[0], full, "FULL"), (axes[1], fwd, "FORWARD_ONLY")):
        image = ax.imshow(data / max(items, 1), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(title)
        ax.set_xlabel("head")
    axes[0].set_ylabel("block")
    fig.suptitle("share of micro-batches in which each subnet ran")
    fig.colorbar(image, ax=axes, label="share (0..1)")
    return fig


def sweep_curves(records: pd.DataFrame, x: str = "link_bandwidth", y: str = "step_time_s"):
    """``y`` against ``x`` from sweep records, one line per strategy; an axis is logarithmic where its values
    span two decades or more, and the title names what was swept."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ok = records[records["error"].isna()] if "error" in records else records
    for colour, (strategy, rows) in zip(_colours(), ok.groupby("strategy", sort=False)):
        rows = rows.sort_values(x)
        ax.plot(rows[x], rows[y], marker="o", color=colour, label=strategy)
    for axis, column in (("x", x), ("y", y)):
        values = ok[column][ok[column] > 0] if column in ok else []
        if len(values) and values.max() >= 100 * values.min():
            getattr(ax, f"set_{axis}scale")("log")
    xlabel = {"link_bandwidth": "link bandwidth (B/s)", "devices": "devices"}.get(x, x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel({"step_time_s": "step time (s)", "speedup": "speed-up over all-FULL (x)",
                   "compute_saving": "compute saved (fraction)"}.get(y, y))
    ax.set_title(f"swept: {xlabel.split(' (')[0]}, {ok[x].nunique() if x in ok else 0} values", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="strategy", frameon=False)
    return fig


def training_curves(curves: Mapping[str, pd.DataFrame]):
    """Loss (left) and test top-1 (right) against step, one colour per run.

    Each frame has columns step, loss and top1 (NaN between evaluations), as ``Run.steps``.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for colour, (name, s) in zip(_colours(), curves.items()):
        smooth = s["loss"].rolling(10, min_periods=1).mean()
        left.plot(s["step"], smooth, color=colour, label=name)
        ev = s.dropna(subset=["top1"])
        right.plot(ev["step"] + 1, 100 * ev["top1"], marker="o", color=colour, label=name)
    left.set_xlabel("step")
    left.set_ylabel("training loss (mean of 10 steps)")
    right.set_xlabel("step")
    right.set_ylabel("test top-1 (%)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(frameon=False)
    fig.tight_layout()
    return fig


def op_mix_over_training(plans: Sequence[tuple[int, Plan]], total_steps: int, bins: int = 30):
    """Heatmap: for every subnet (rows, block-major) and stretch of training (columns), the share of
    micro-batches it ran FULL. ``plans``: (first step, plan) pairs in order, as ``Run.plans``."""
    depth, heads = plans[0][1].depth, plans[0][1].heads
    edges = np.linspace(0, total_steps, min(bins, total_steps) + 1)
    share = np.zeros((depth * heads, len(edges) - 1))
    starts = [s for s, _ in plans] + [total_steps]
    per_step = np.zeros((depth * heads, total_steps))
    for (first, plan), end in zip(plans, starts[1:]):
        full = np.array([[[op.level == 2 for op in row] for row in grid] for grid in plan.ops]).mean(0).reshape(-1)
        per_step[:, first:end] = full[:, None]
    for j in range(len(edges) - 1):
        a, b = int(edges[j]), max(int(edges[j + 1]), int(edges[j]) + 1)
        share[:, j] = per_step[:, a:b].mean(1)
    fig, ax = plt.subplots(figsize=(8, 0.16 * depth * heads + 1.8))
    image = ax.imshow(share, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest",
                      extent=(0, total_steps, depth * heads - 0.5, -0.5))
    ax.set_yticks([l * heads for l in range(depth)], [f"block {l}" for l in range(depth)])
    ax.set_xlabel("step")
    ax.set_title("share of micro-batches each subnet ran FULL (rows: heads, block by block)")
    fig.colorbar(image, ax=ax, label="share FULL (0..1)")
    return fig


def scale_study(records: pd.DataFrame):
    """Per cluster (columns): step time (top) and the busiest device's compute share of the step
    (bottom) against the device count, one colour per model, solid D2FT hybrid, dashed all-FULL.

    ``records``: sweep records with columns model, cluster, devices, strategy, step_time_s and
    compute_share (the busiest device's compute time / step time)."""
    ok = records[records["error"].isna()] if "error" in records else records
    clusters = list(dict.fromkeys(ok["cluster"]))
    fig, axes = plt.subplots(2, len(clusters), figsize=(4.2 * len(clusters), 6.5), sharex=True, squeeze=False)
    for j, cluster in enumerate(clusters):
        top, bottom = axes[0, j], axes[1, j]
        for colour, (model, rows) in zip(_colours(), ok[ok["cluster"] == cluster].groupby("model", sort=False)):
            for strategy, style in (("hybrid", "-"), ("full", "--")):
                r = rows[rows["strategy"] == strategy].sort_values("devices")
                label = f"{model}, {'D2FT hybrid' if strategy == 'hybrid' else 'all-FULL'}"
                top.plot(r["devices"], r["step_time_s"], style, marker="o", ms=3, color=colour, label=label)
                bottom.plot(r["devices"], 100 * r["compute_share"], style, marker="o", ms=3, color=colour)
        top.set_title(cluster)
        top.set_yscale("log")
        bottom.set_xscale("log", base=2)
        bottom.set_ylim(0, 100)
        bottom.set_xlabel("devices")
        for ax in (top, bottom):
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("step time (s)")
    axes[1, 0].set_ylabel("busiest device's compute / step (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * -(-len(labels) // 3), 1, 1))  # room for the legend rows
    return fig


def plateau_curves(curves: Mapping[str, Sequence[float]], chosen: Mapping[str, int]):
    """Validation top-1 after each epoch, one line per curve, the chosen epoch of each marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for colour, (label, values) in zip(_colours(), curves.items()):
        epochs = np.arange(1, len(values) + 1)
        ax.plot(epochs, 100 * np.asarray(values), color=colour, label=label)
        e = chosen.get(label)
        if e:
            ax.axvline(e, color=colour, linestyle=":", alpha=0.8)
            ax.plot([e], [100 * values[e - 1]], marker="o", color=colour)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("full fine-tuning at a constant lr; dotted: the epochs chosen", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return fig


def coverage_heatmaps(grids: Mapping[str, Sequence[Sequence[float]]]):
    """One heatmap per run: the share of its training micro-batches in which each subnet (block, head)
    ran FULL, on one 0-1 colour scale (a starved subnet is dark)."""
    fig, axes = plt.subplots(1, len(grids), figsize=(2.2 + 2.0 * len(grids), 3.2), squeeze=False)
    image = None
    for ax, (label, grid) in zip(axes[0], grids.items()):
        arr = np.asarray(grid, dtype=float)
        image = ax.imshow(arr, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (l, h), v in np.ndenumerate(arr):
            ax.text(h, l, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("head")
        ax.set_xticks(range(arr.shape[1]))
        ax.set_yticks(range(arr.shape[0]))
    axes[0][0].set_ylabel("block")
    fig.colorbar(image, ax=axes[0].tolist(), label="share of micro-batches FULL")
    return fig


def _colours():
    while True:
        yield from OKABE_ITO
