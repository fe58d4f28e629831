"""simulator: predicts what a plan costs on a cluster, as a timeline or analytically.

Imports ``d2ft`` (and numpy), never torch or ``runtime``. ``simulate`` returns the same
``d2ft.Trace`` the runtime measures; ``sweep`` plans and simulates grids of what-ifs.
"""

from .analytical import Analytical
from .graph import flat_step_graph, schedule, schedule_flat, step_graph
from .simulate import PATHS, simulate
from .sweep import RECORD_FIELDS, resized, sweep, with_link_bandwidth

__all__ = ["Analytical", "PATHS", "RECORD_FIELDS", "flat_step_graph", "resized", "schedule", "schedule_flat",
           "simulate", "step_graph", "sweep", "with_link_bandwidth"]
