"""``d2ft report``: one HTML page and a Markdown summary of a run directory or a folder of runs.

Ties the three packages above the core together: the runs are read by ``analysis``, the
recorded step is simulated by ``simulator`` beside its measurement, the page is written
by ``analysis.report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import rundir
from ..cluster import Cluster
from ..model import ModelSpec
from ..plan import Plan
from ..planner import STRATEGIES
from ..trace import Trace
from . import flags
from .whatif import emit



def run_spec(job: dict) -> ModelSpec:
    """The ``ModelSpec`` of a run's model, from its job (built on the meta device: no weights read)."""
    from runtime.job import Job
    from runtime.prepare import spec_of

    return spec_of(Job(model=job["model"], model_kwargs=job.get("model_kwargs", {}), checkpoint="none"))


def side_by_side(run_dir: Path, cluster: Cluster | None = None) -> dict:
    """The simulated and the measured timeline of a run's recorded step ({} when it recorded none).

    ``cluster`` defaults to the run's own (its job.json), with its emulated slowdown."""
    from simulator import simulate

    files = rundir.timelines(run_dir)
    job = rundir.read_job(run_dir) if (Path(run_dir) / rundir.JOB_FILE).is_file() else {}
    if not files or (cluster is None and "cluster" not in job):
        return {}
    measured = Trace.from_json(files[-1].read_text())
    if cluster is None:
        cluster = Cluster.from_dict(job["cluster"])
        if job.get("slowdown"):
            cluster = cluster.with_slowdown(job["slowdown"])
    simulated = simulate(Plan.from_dict(measured.meta["plan"]), run_spec(job), cluster)
    step = measured.meta["step"]
    return {f"simulated (step {step}'s plan)": simulated, f"measured (step {step})": measured}


def read_sweep(path: str):
    """A ``d2ft sweep`` CSV as a DataFrame; ValueError naming the file when it is not one."""
    import pandas as pd

    try:
        sweep = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"--sweep {path!r}: cannot read it as a `d2ft sweep` CSV ({e})") from None
    if not {"strategy", "step_time_s"} <= set(sweep.columns):
        raise ValueError(f"--sweep {path!r} is not a `d2ft sweep` CSV (no strategy and step_time_s columns)")
    return sweep


def cmd_report(args: argparse.Namespace) -> int:
    """One HTML page (figures embedded) and a Markdown summary of a run directory or a folder of runs."""
    from analysis.report import write_report

    sweep = read_sweep(args.sweep) if args.sweep else None
    recorded = [p for p in rundir.find_runs(args.run_dir) if rundir.timelines(p)]
    # One step side by side: of a D2FT run where there is one (its plan is the interesting one), else any.
    pick = next((p for p in recorded if rundir.read_job(p).get("strategy") in STRATEGIES),
                recorded[0] if recorded else None)
    timelines = side_by_side(pick) if pick is not None else {}
    html, md = write_report(args.run_dir, args.out, sweep=sweep, timelines=timelines,
                            command="d2ft " + " ".join(sys.argv[1:]))
    emit(args, {"html": str(html), "markdown": str(md)}, f"report: {html}\nsummary: {md}")
    return 0


def add_parsers(sub) -> None:
    """The parser of ``report``."""
    p = flags.command(sub, "report", cmd_report)
    p.add_argument("run_dir", help="a run directory (`d2ft run --out`) or a folder of them (e.g. out/demo/runs)")
    p.add_argument("--sweep", help="a `d2ft sweep` CSV to draw as what-if curves")
    p.add_argument("--out", help="folder for report.html, report.md and figures/ (default: RUN_DIR)")
    p.add_argument("--json", action="store_true", help="print the paths as one JSON object")
