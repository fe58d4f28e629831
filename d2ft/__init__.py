"""d2ft: distributed dynamic fine-tuning (D2FT) of transformer foundation models.

The core package: specs of models, devices and clusters; the plan that says which op
each subnet runs per micro-batch; the analytical cost model; and the trace that the
simulator and the runtime both return. It imports no torch, pandas or matplotlib.
"""

from .cluster import Cluster, DeviceSpec, LinkSpec
from .cost import CostModel, DeviceCost, StepCost
from .model import ModelSpec, Work
from .ops import Op, SubnetId
from .plan import Plan
from .trace import DeviceStats, Event, Trace

__version__ = "0.1.0"

__all__ = [
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
    "StepCost",
    "SubnetId",
    "Trace",
    "Work",
]
