"""Fitting the kernel model's constants (``d2ft.kernels``) to measured task times.

``d2ft calibrate`` times a CPU rank's own subnet and elementwise tasks and fits them here; the same
fit applies to any device whose tasks were timed (``sms`` and ``tile`` as its ``DeviceSpec`` has them).
What it does not model is what ``d2ft.kernels`` does not.
"""

from __future__ import annotations

from typing import NamedTuple

from .kernels import Kernel, elementwise, gemm, kernel_time, memory_bytes, utilisation  # noqa: F401 (doctest)


class KernelFit(NamedTuple):
    """A device's kernel-model constants fitted to measured task times (``fit_constants``)."""

    rate: float
    """FLOP/s of a matrix product at full utilisation (``DeviceSpec`` peak x efficiency)."""
    kernel_launch_s: float
    """Fixed time per GEMM kernel, s."""
    elementwise_overhead_s: float | None
    """Fixed time per elementwise kernel, s; None when no measured task had one."""
    backward_efficiency: float
    """Backward GEMM rate over forward, in (0, 1]."""
    median_abs_error: float
    """Median |fitted / measured - 1| over the measured tasks."""


def fit_constants(tasks: list[tuple[list[Kernel], bool, float]], mem_bandwidth: float, dtype_bytes: int = 4,
                  sms: int = 1, tile: int = 1) -> KernelFit:
    """The kernel-model constants that best explain measured tasks, each a (kernels, backward, seconds).

    Every task's time is its kernels' (``kernel_time``): a GEMM's launch plus max(FLOP / (rate x
    util), bytes / bandwidth), the rate times the backward efficiency in a backward task, an
    elementwise kernel's overhead plus its bytes over the (measured) bandwidth. Given which GEMMs are
    memory-bound that is linear in (GEMM launch, elementwise overhead, 1 / rate, 1 / backward rate -
    1 / rate), all four non-negative: a least-squares fit of the relative errors (weights 1 /
    measured, so that short tasks count as much as long ones; Lawson & Hanson, "Solving Least Squares
    Problems", 1974, ch. 23: non-negative least squares, here by trying every set of free
    variables), repeated until the memory-bound GEMMs are the fit's own.

    >>> from d2ft.device import DeviceSpec
    >>> cpu = DeviceSpec("cpu", 1e10, 1e10, 1e10, 1e9, efficiency=1.0, sm_count=1, gemm_tile=1, kernel_launch_s=1e-5,
    ...                  elementwise_overhead_s=2e-6, backward_efficiency=0.5)
    >>> ks = [[gemm(64 * n, 64, 64), elementwise(1000)] for n in (1, 2, 4, 8)] + [[elementwise(5000)]]
    >>> fit = fit_constants([(k, b, sum(kernel_time(cpu, x, 4, b) for x in k)) for k in ks for b in (False, True)], 1e10)
    >>> [float(f"{v:.6g}") for v in fit[:4]]
    [10000000000.0, 1e-05, 2e-06, 0.5]
    """
    import numpy as np

    rows = []
    for kerns, backward, seconds in tasks:
        gemms = [(k.flop / utilisation(k, sms, tile), memory_bytes(k, dtype_bytes, sms, tile) / mem_bandwidth)
                 for k in kerns if k.kind == "gemm"]
        light = [k.bytes_moved(dtype_bytes) / mem_bandwidth for k in kerns if k.kind != "gemm"]
        rows.append((gemms, light, backward, max(seconds, 1e-12)))
    measured = np.array([r[3] for r in rows])
    bound: list[set[int]] = [set() for _ in rows]  # per task, its memory-bound GEMMs
    for _ in range(20):
        flop = [sum(f for j, (f, _) in enumerate(g) if j not in m) for (g, *_), m in zip(rows, bound)]  # compute-bound
        A = np.array([[len(g), len(e), x, b * x] for (g, e, b, _), x in zip(rows, flop)])
        y = measured - np.array([sum(e) + sum(s for j, (_, s) in enumerate(g) if j in m) for (g, e, _, _), m in zip(rows, bound)])
        x = _nnls(A / measured[:, None], y / measured)
        a, d = x[2], x[3]
        new = [{j for j, (f, s) in enumerate(g) if s > f * (a + b * d)} for g, _, b, _ in rows]
        if new == bound:
            break
        bound = new
    fitted = A @ x + (measured - y)
    return KernelFit(rate=float(1 / a), kernel_launch_s=float(x[0]),
                     elementwise_overhead_s=float(x[1]) if A[:, 1].any() else None,
                     backward_efficiency=float(a / (a + d)),
                     median_abs_error=float(np.median(np.abs(fitted / measured - 1))))


def _nnls(A, y):
    """argmin |A x - y| over x >= 0 with x[2] > 0 (the inverse rate), by every set of free columns."""
    import itertools

    import numpy as np

    best, best_res = None, np.inf
    cols = [j for j in range(A.shape[1]) if A[:, j].any() and j != 2]
    for r in range(len(cols) + 1):
        for free in itertools.combinations(cols, r):
            idx = [2, *free]
            sol = np.linalg.lstsq(A[:, idx], y, rcond=None)[0]
            if sol[0] <= 0 or (sol < 0).any():
                continue
            res = float(np.sum((A[:, idx] @ sol - y) ** 2))
            if res < best_res:
                best_res, best = res, np.zeros(A.shape[1])
                best[idx] = sol
    if best is None:  # no positive rate fits (every task slower than its memory alone says): through the origin
        best = np.zeros(A.shape[1])
        best[2] = max(float(y.sum() / A[:, 2].sum()), 1e-30) if A[:, 2].sum() > 0 else 1e-30
    return best


__all__ = ["KernelFit", "fit_constants"]
