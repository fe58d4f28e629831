"""Traces as tidy pandas DataFrames, one row per device or per event.

Columns carry their unit in the name (``_s`` seconds, ``_bytes`` bytes, ``_flop`` FLOP).
"""

from __future__ import annotations

import pandas as pd

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
