"""The what-if commands' tables: a step's costs, its memory by dtype, a plan's loads (and their JSON)."""

from __future__ import annotations

from ..cost import CostModel, StepCost
from ..units import fmt_bytes, fmt_flop, fmt_time


def step_record(cost: StepCost) -> dict:
    """A StepCost as a plain JSON-ready dict (units in the key names)."""
    return {
        "compute_flop": cost.compute_flop,
        "comm_bytes": cost.comm_bytes,
        "compute_saving": cost.compute_saving,
        "comm_saving": cost.comm_saving,
        "max_compute_s": cost.max_compute_s,
        "devices": {
            d.name: {
                "compute_s": d.compute_s, "flop": d.flop, "mem_bytes": d.mem_bytes,
                "sent_bytes": d.sent_bytes, "recv_bytes": d.recv_bytes,
                "peak_memory_bytes": d.peak_memory_bytes, "fits_memory": d.fits_memory,
            }
            for d in cost.devices
        },
    }


def step_table(cost: StepCost) -> str:
    rows = [f"{'device':<10} {'compute':>10} {'FLOP':>12} {'sent':>11} {'received':>11} {'peak mem':>11}  fits"]
    for d in cost.devices:
        rows.append(
            f"{d.name:<10} {fmt_time(d.compute_s):>10} {fmt_flop(d.flop):>12} {fmt_bytes(d.sent_bytes):>11} "
            f"{fmt_bytes(d.recv_bytes):>11} {fmt_bytes(d.peak_memory_bytes):>11}  {'yes' if d.fits_memory else 'NO'}"
        )
    rows.append(
        f"total: {fmt_flop(cost.compute_flop)} compute ({cost.compute_saving:+.1%} saved), "
        f"{fmt_bytes(cost.comm_bytes)} communication ({cost.comm_saving:+.1%} saved); "
        f"busiest device {fmt_time(cost.max_compute_s)}"
    )
    return "\n".join(rows)


MEMORY_DTYPES = {"fp32": 4, "bf16": 2, "fp16": 2}
"""Element sizes of the memory estimate (bf16 and fp16: mixed precision with fp32 master weights)."""


def memory_by_dtype(model, cluster, plan, inference: bool = False) -> dict[str, list[dict[str, float]]]:
    """Per dtype of ``MEMORY_DTYPES``, per device: params, grads, optimizer, activations (B) of one step
    (``inference``: of a forward pass)."""
    from ..model import ModelSpec

    out = {}
    for name, d in MEMORY_DTYPES.items():
        m = model if model.dtype_bytes == d else ModelSpec.from_dict(
            {**model.to_dict(), "dtype_bytes": d, "autocast": model.autocast and d == 2})
        out[name] = CostModel(m, cluster).memory_breakdown(plan, inference=inference)
    return out


def memory_table(memory: dict, devices: list[str], cluster, optimizer: str = "adamw", autocast: bool = False) -> str:
    """The memory estimate as a table: per device and dtype, each part and the total against capacity."""
    from ..cost import state_bytes_per_param
    parts = ("params", "grads", "optimizer", "activations", "framework")
    rows = [f"{'memory':<10} {'dtype':<6} " + " ".join(f"{p:>11}" for p in parts) + f" {'total':>11} {'capacity':>11}  fits"]
    for k, dev in enumerate(devices):
        capacity = cluster.device(k).memory_bytes
        for dtype, per_device in memory.items():
            m = per_device[k]
            total = sum(m.values())
            rows.append(f"{dev:<10} {dtype:<6} " + " ".join(f"{fmt_bytes(m[p]):>11}" for p in parts)
                        + f" {fmt_bytes(total):>11} {fmt_bytes(capacity):>11}  {'yes' if total <= capacity else 'NO'}")
    state = {"adamw": "AdamW moments", "sgd": "SGD momentum"}[optimizer]
    if autocast:
        sixteen = (f"bf16/fp16 by autocast: fp32 parameters, gradients and {state} ({sum(state_bytes_per_param(4, optimizer))}"
                   " B per trained parameter), 16-bit activations but fp32 norm inputs and attention probabilities kept "
                   "at both widths")
    else:
        sixteen = (f"bf16/fp16: 16-bit parameters, gradients and activations with fp32 master weights and {state} "
                   f"({sum(state_bytes_per_param(2, optimizer))} B per trained parameter)")
    rows.append(sixteen + "; framework: the device's CUDA context and allocator reserve (DeviceSpec.framework_bytes)")
    return "\n".join(rows)


def plan_table(report) -> str:
    rows = [f"{'device':<10} {'load':>10} {'capacity':>10} {'use':>6} {'traffic':>11} {'comm cap':>11}"]
    for n, l, c, b, cb in zip(report.device_names, report.load_s, report.capacity_s, report.comm_bytes,
                              report.capacity_bytes):
        rows.append(f"{n:<10} {fmt_time(l):>10} {fmt_time(c):>10} {l / c if c else 0:>6.1%} {fmt_bytes(b):>11} "
                    f"{fmt_bytes(cb) if cb is not None else '-':>11}")
    bound = f"{report.bound:.4f} (gap {report.gap:.2%})" if report.bound is not None else "-"
    rows.append(
        f"{report.strategy}/{report.solver}: status {report.status}, objective {report.objective:.4f}, bound {bound}, "
        f"solved in {fmt_time(report.solve_time_s)}"
    )
    rows.append(f"ops {report.plan.summary()}; compute {report.compute_saving:.1%} saved, "
                f"communication {report.comm_saving:.1%} saved (cost model, against all-FULL)")
    return "\n".join(rows)
