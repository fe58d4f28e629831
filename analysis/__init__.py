"""analysis: traces, plans and run logs as pandas DataFrames, comparisons and plots.

Imports ``d2ft`` (plus pandas and matplotlib), never torch, ``simulator`` or ``runtime``.
"""

from .compare import compare, rank_agreement, savings
from .frames import devices_frame, events_frame, plan_frame, sweep_frame
from .runs import Run, find_runs, read_run, runs_frame

__all__ = ["Run", "compare", "devices_frame", "events_frame", "find_runs", "plan_frame", "rank_agreement", "read_run",
           "runs_frame", "savings", "sweep_frame"]
