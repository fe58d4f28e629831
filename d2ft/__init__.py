"""d2ft: distributed dynamic fine-tuning (D2FT) of transformer foundation models.

The core package: specs of models, devices and clusters; the plan that says which op
each subnet runs per micro-batch; the execution schedule of a step (``d2ft.schedule``);
the analytical cost model; the planner and the re-planner; the trace that the simulator
and the runtime both return; and the run-directory contract (``d2ft.rundir``). It imports
only the standard library, numpy, networkx and mip; ``d2ft.app`` (the command line and
the demo) is the one part that imports the packages above it.
"""

from .cluster import Cluster, DeviceSpec, Host, LinkSpec
from .cost import CostModel, DeviceCost, StepCost
from .knapsack import Budget
from .model import ModelSpec, Work
from .ops import Op, SubnetId
from .placement import plan_placement
from .plan import Plan
from .planner import PlanReport, plan_step
from .scores import Scores
from .trace import DeviceStats, Event, Trace

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "Cluster",
    "CostModel",
    "DeviceCost",
    "DeviceSpec",
    "DeviceStats",
    "Event",
    "Host",
    "LinkSpec",
    "ModelSpec",
    "Op",
    "Plan",
    "PlanReport",
    "Scores",
    "StepCost",
    "SubnetId",
    "Trace",
    "Work",
    "plan_placement",
    "plan_step",
]
