"""The commands on timelines: ``compare`` (predicted against measured) and ``trace`` (a run's
measured timeline for Perfetto). Neither imports torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import rundir
from ..serial import atomic_write_text, read_json
from ..trace import Trace
from ..units import fmt_bytes, fmt_time
from . import flags


def cmd_compare(args: argparse.Namespace) -> int:
    """Predicted against measured: two Trace JSON files (e.g. `d2ft simulate --trace` and a run's
    timeline-stepN.json), per device and quantity, with absolute and relative errors."""
    from analysis import compare

    predicted, measured = (_trace(path) for path in (args.predicted, args.measured))
    frame = compare(predicted, measured)
    if args.json:
        print(json.dumps({"rows": frame.to_dict(orient="records")}, default=float))
        return 0
    units = {"step_time_s": fmt_time, "busy_s": fmt_time, "sent_bytes": fmt_bytes, "recv_bytes": fmt_bytes}
    print(f"{'device':<10} {'quantity':<12} {'predicted':>11} {'measured':>11} {'error':>8}")
    for r in frame.itertuples(index=False):
        fmt = units[r.quantity]
        err = "-" if r.rel_error != r.rel_error else f"{100 * r.rel_error:+.1f}%"
        print(f"{r.device:<10} {r.quantity:<12} {fmt(r.predicted):>11} {fmt(r.measured):>11} {err:>8}")
    return 0


def _trace(path: str) -> Trace:
    """The Trace in ``path``; ValueError naming the file and what a trace file is, if it holds none."""
    data = read_json(path, "trace file")
    try:
        return Trace.from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        why = f"it has no {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{path} is not a trace file ({why}); give one written by `d2ft simulate --trace` or a "
                         "run's timeline-stepN.json") from None


def cmd_trace(args: argparse.Namespace) -> int:
    """Export a run's measured timeline (a recorded step) in the Chrome trace-event format for Perfetto."""
    run = Path(args.run_dir)
    recorded = rundir.timelines(run)
    if not recorded:
        raise FileNotFoundError(f"{run}: no timeline-stepN.json; a run records the steps of its timeline_steps "
                                "(by default the last): is it a finished run directory?")
    if args.step is None:
        path = recorded[-1]
    else:
        path = rundir.timeline_path(run, args.step)
        if not path.is_file():
            steps = ", ".join(p.stem.removeprefix(rundir.TIMELINE_PREFIX) for p in recorded)
            raise FileNotFoundError(f"--step {args.step}: {run} recorded the timeline of step {steps} only")
    trace = _trace(str(path))
    atomic_write_text(args.chrome_trace, json.dumps(trace.to_chrome()))
    n_flows = sum(1 for e in trace.events if e.kind == "transfer")
    if args.json:
        print(json.dumps({"timeline": str(path), "out": str(args.chrome_trace), "events": len(trace.events),
                          "messages": n_flows, "step_time_s": trace.step_time_s}))
        return 0
    print(f"{path.name}: {len(trace.events)} events ({n_flows} messages as flows), step "
          f"{fmt_time(trace.step_time_s)}, written to {args.chrome_trace} (open it in ui.perfetto.dev)")
    return 0


def add_parsers(sub) -> None:
    """The parsers of ``compare`` and ``trace``."""
    _add_compare(sub)
    p = flags.command(sub, "trace", cmd_trace)
    p.add_argument("run_dir", help="a run directory (`d2ft run --out`)")
    p.add_argument("--step", type=int, help="the recorded step (default: the last one recorded)")
    p.add_argument("--chrome-trace", required=True, metavar="FILE",
                   help="write the timeline here in Chrome trace-event JSON: compute per rank, messages as slices "
                        "and flow arrows, bytes in flight as a counter")
    flags.add_json(p, "one JSON object: the timeline read, the file written, event and message counts, step time (s)")


def _add_compare(sub) -> None:
    p = flags.command(sub, "compare", cmd_compare)
    p.add_argument("predicted", help="Trace JSON of the prediction (`d2ft simulate --trace FILE`)")
    p.add_argument("measured", help="Trace JSON of the measurement (a run's timeline-stepN.json)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (s, B; rel_error a fraction)")
