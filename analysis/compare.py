"""Predicted against measured: errors per device and step, savings, and rank agreement of plans.

All inputs are ``d2ft.Trace`` objects (the simulator's or cost model's prediction, the
runtime's measurement); outputs are tidy DataFrames whose columns carry their units.
Relative errors are (predicted - measured) / measured, NaN where the measurement is 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from d2ft.trace import Trace

QUANTITIES = ("busy_s", "sent_bytes", "recv_bytes")


def compare(predicted: Trace, measured: Trace) -> pd.DataFrame:
    """One row per device and quantity (busy_s, sent_bytes, recv_bytes), plus the step time.

    Columns: device ("step" for the step time), quantity, predicted, measured, abs_error,
    rel_error.
    """
    missing = sorted(set(predicted.devices) ^ set(measured.devices))
    if missing:
        raise ValueError(f"the traces cover different devices: {', '.join(missing)} in only one of them")
    rows = [("step", "step_time_s", predicted.step_time_s, measured.step_time_s)]
    for name in predicted.devices:
        p, m = predicted.devices[name], measured.devices[name]
        rows += [(name, q, float(getattr(p, q)), float(getattr(m, q))) for q in QUANTITIES]
    frame = pd.DataFrame(rows, columns=["device", "quantity", "predicted", "measured"])
    frame["abs_error"] = frame["predicted"] - frame["measured"]
    frame["rel_error"] = frame["abs_error"] / frame["measured"].where(frame["measured"] != 0)
    return frame


def savings(predicted: Trace, predicted_full: Trace, measured: Trace, measured_full: Trace) -> pd.DataFrame:
    """Savings against all-FULL, predicted and measured, for compute (busy time), bytes and step time.

    Columns: quantity, predicted_saving, measured_saving, error_points (percentage points).
    """
    def saving(trace: Trace, full: Trace, what: str) -> float:
        value = {"compute_s": lambda t: sum(d.busy_s for d in t.devices.values()),
                 "comm_bytes": lambda t: t.comm_bytes,
                 "step_time_s": lambda t: t.step_time_s}[what]
        base = value(full)
        return 1 - value(trace) / base if base else 0.0

    rows = [(q, saving(predicted, predicted_full, q), saving(measured, measured_full, q))
            for q in ("compute_s", "comm_bytes", "step_time_s")]
    frame = pd.DataFrame(rows, columns=["quantity", "predicted_saving", "measured_saving"])
    frame["error_points"] = 100 * (frame["predicted_saving"] - frame["measured_saving"])
    return frame


def rank_agreement(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Spearman's rank correlation of predicted and measured values (ties take average ranks).

    >>> rank_agreement([1.0, 2.0, 3.0], [10.0, 30.0, 20.0])
    0.5
    """
    if len(predicted) != len(measured) or len(predicted) < 2:
        raise ValueError(f"need two equally long sequences of at least 2 values, got {len(predicted)} and {len(measured)}")
    a = pd.Series(predicted, dtype=float).rank().to_numpy()
    b = pd.Series(measured, dtype=float).rank().to_numpy()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
