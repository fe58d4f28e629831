"""Traces, plans and sweep records as tidy pandas DataFrames (run directories: ``analysis.runs``).

Columns carry their unit in the name (``_s`` seconds, ``_bytes`` bytes, ``_flop`` FLOP).
"""

from __future__ import annotations

import pandas as pd

from d2ft.plan import Plan
from d2ft.trace import Trace


def devices_frame(trace: Trace) -> pd.DataFrame:
    """One row per device: source, device, busy_s, comm_s, wait_s, flop, sent_bytes,
    recv_bytes, peak_memory_bytes, step_time_s."""
    rows = [
        {
            "source": trace.source,
            "device": name,
            "busy_s": s.busy_s,
            "comm_s": s.comm_s,
            "wait_s": s.wait_s,
            "flop": s.flop,
            "sent_bytes": s.sent_bytes,
            "recv_bytes": s.recv_bytes,
            "peak_memory_bytes": s.peak_memory_bytes,
            "step_time_s": trace.step_time_s,
        }
        for name, s in trace.devices.items()
    ]
    return pd.DataFrame(rows)


def events_frame(trace: Trace) -> pd.DataFrame:
    """One row per event: source, resource, kind, name, start_s, end_s, duration_s,
    micro_batch, layer, nbytes, flop."""
    columns = ["source", "resource", "kind", "name", "start_s", "end_s", "duration_s", "micro_batch", "layer", "nbytes", "flop"]
    rows = [
        {
            "source": trace.source, "resource": e.resource, "kind": e.kind, "name": e.name,
            "start_s": e.start_s, "end_s": e.end_s, "duration_s": e.duration_s,
            "micro_batch": e.micro_batch, "layer": e.layer, "nbytes": e.nbytes, "flop": e.flop,
        }
        for e in trace.events
    ]
    return pd.DataFrame(rows, columns=columns)


def plan_frame(plan: Plan) -> pd.DataFrame:
    """One row per micro-batch, layer and head: micro_batch, layer, head, device (index), device_name, op
    ("F", "O" or "S")."""
    rows = [{"micro_batch": m, "layer": l, "head": h, "device": k, "device_name": plan.devices[k], "op": op.char}
            for m, l, h, k, op in plan.items()]
    return pd.DataFrame(rows, columns=["micro_batch", "layer", "head", "device", "device_name", "op"])


def sweep_frame(records) -> pd.DataFrame:
    """Sweep records (``simulator.sweep``'s dicts, or the path of a ``d2ft sweep`` CSV) as a DataFrame with
    the columns of ``simulator.RECORD_FIELDS``: times in s, sizes in B, link_bandwidth in B/s; a failed
    point has its reason in ``error`` and NaN figures."""
    frame = pd.read_csv(records) if isinstance(records, (str, bytes)) or hasattr(records, "__fspath__") else \
        pd.DataFrame(list(records))
    if "error" in frame:
        frame["error"] = frame["error"].replace("", None)
    return frame
