"""d2ft.analysis: traces, plans and run logs as pandas DataFrames, comparisons and plots.

Imports ``d2ft`` (plus pandas and matplotlib), never torch, ``simulator`` or ``runtime``.
"""

from .compare import compare, rank_agreement, savings
from .frames import devices_frame, events_frame

__all__ = ["compare", "devices_frame", "events_frame", "rank_agreement", "savings"]
