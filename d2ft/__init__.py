"""d2ft: distributed dynamic fine-tuning (D2FT) of transformer foundation models.

The core package: specs of models, devices and clusters; the plan that says which op
each subnet runs per micro-batch; the analytical cost model; and the trace that the
simulator and the runtime both return. It imports no torch, pandas or matplotlib.
"""

from .cluster import Cluster, DeviceSpec, LinkSpec
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
