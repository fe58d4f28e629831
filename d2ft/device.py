"""Devices and links: the spec-sheet figures of the hardware a plan runs on.

A ``DeviceSpec`` prices compute: a device with ``sm_count`` (a GPU described kernel by
kernel) has each task priced as the sum of its kernels (``d2ft.kernels``); any other device
prices a task as one roofline with a fixed per-task overhead. A ``LinkSpec`` prices a transfer (latency + bytes /
bandwidth). Both are frozen, validated on construction, and round-trip through dicts.

Not modelled here: clock boost and throttling, power limits, and contention (the
simulator shares devices and links between concurrent work).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import raise_problems
from .kernels import TILE
from .serial import fields_dict, from_fields


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator or CPU, from its spec sheet or from ``d2ft calibrate``."""

    name: str
    """Product name, e.g. "NVIDIA A100 SXM4 80GB"."""
    peak_flops: float
    """Dense 16-bit (FP16/BF16) peak, FLOP/s; the tensor-core figure where there is one."""
    peak_flops_fp32: float
    """Dense 32-bit peak, FLOP/s (TF32 tensor cores where there are, else FP32)."""
    mem_bandwidth: float
    """Memory bandwidth, B/s."""
    memory_bytes: float
    """Memory capacity, B."""
    efficiency: float = 0.5
    """Fraction of peak that a large matrix product reaches, in (0, 1]."""
    task_overhead_s: float = 0.0
    """Fixed time per compute task, s (kernel launches; see ``compute_time``)."""
    elementwise_overhead_s: float | None = None
    """Fixed time of a task with no matrix products (norms, residual adds, the optimizer), s;
    None: ``task_overhead_s`` (on the kernel model ``kernel_launch_s``). Such a task is one kernel where
    a matrix task is several; on the kernel model every elementwise kernel takes it (a CPU rank
    dispatches a light operator far faster than a matrix product with its weights)."""
    backward_efficiency: float = 1.0
    """Backward FLOP rate relative to forward, in (0, 1]: below 1 where a framework's backward
    kernels run slower than its forward ones (``d2ft calibrate --model`` measures it); on the kernel
    model it scales the backward's matrix products."""
    sm_count: int | None = None
    """Streaming multiprocessors. Set: every task is priced as the sum of its kernels, matrix products
    with tile and wave quantisation over these SMs (``d2ft.kernels``), and ``efficiency`` is what a
    large matrix product reaches; None: one roofline per task (CPUs, and devices with no kernel
    constants)."""
    gemm_tile: int = TILE
    """Kernel model: output tile edge of a matrix product, elements (tile and wave quantisation,
    ``d2ft.kernels.utilisation``): 128 for a GPU's BLAS; 1 for a CPU rank (``d2ft calibrate``), whose
    BLAS register blocks of a few elements quantise too little to model."""
    kernel_launch_s: float = 0.0
    """Kernel model: fixed time per kernel, s (launch and framework dispatch); an elementwise kernel's is
    ``elementwise_overhead_s`` where that is set."""
    fused_attention: bool = True
    """Kernel model: attention runs as one fused kernel that never writes the N x N scores
    (PyTorch's ``scaled_dot_product_attention``); False: scores, softmax and weighted sum apart."""
    framework_bytes: float = 0.0
    """Memory the framework holds on the device beside the step's tensors, B: the CUDA context with its
    libraries' kernels and handles, and the caching allocator's reserve (freed blocks it keeps). Counted
    in every peak-memory estimate; 0 for a CPU (the host's memory is not the process's alone)."""
    source: str = ""
    """Where the figures come from."""

    def __post_init__(self) -> None:
        problems = []
        if self.sm_count is not None and not (isinstance(self.sm_count, int) and self.sm_count > 0):
            problems.append(f"sm_count must be a positive integer or None, got {self.sm_count!r}")
        if not (isinstance(self.gemm_tile, int) and self.gemm_tile > 0):
            problems.append(f"gemm_tile must be a positive integer, got {self.gemm_tile!r}")
        if not (isinstance(self.framework_bytes, (int, float)) and self.framework_bytes >= 0
                and (not isinstance(self.memory_bytes, (int, float)) or self.framework_bytes < self.memory_bytes)):
            problems.append(f"framework_bytes must be >= 0 and below memory_bytes, got {self.framework_bytes!r}")
        if not (isinstance(self.kernel_launch_s, (int, float)) and self.kernel_launch_s >= 0):
            problems.append(f"kernel_launch_s must be >= 0, got {self.kernel_launch_s!r}")
        for f in ("peak_flops", "peak_flops_fp32", "mem_bandwidth", "memory_bytes"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                problems.append(f"{f} must be a positive number, got {v!r}")
        if not (isinstance(self.efficiency, (int, float)) and 0 < self.efficiency <= 1):
            problems.append(f"efficiency must be in (0, 1], got {self.efficiency!r}")
        if not (isinstance(self.backward_efficiency, (int, float)) and 0 < self.backward_efficiency <= 1):
            problems.append(f"backward_efficiency must be in (0, 1], got {self.backward_efficiency!r}")
        if self.elementwise_overhead_s is not None and not (
                isinstance(self.elementwise_overhead_s, (int, float)) and self.elementwise_overhead_s >= 0):
            problems.append(f"elementwise_overhead_s must be >= 0 or None, got {self.elementwise_overhead_s!r}")
        if not (isinstance(self.task_overhead_s, (int, float)) and self.task_overhead_s >= 0):
            problems.append(f"task_overhead_s must be >= 0, got {self.task_overhead_s!r}")
        raise_problems(f"DeviceSpec {self.name!r}", problems)

    def peak(self, dtype_bytes: int) -> float:
        """Peak FLOP/s for elements of ``dtype_bytes`` bytes (2: 16-bit, 4: 32-bit)."""
        return self.peak_flops if dtype_bytes <= 2 else self.peak_flops_fp32

    @property
    def kernel_model(self) -> bool:
        """Whether tasks are priced kernel by kernel (``sm_count`` set)."""
        return self.sm_count is not None

    @property
    def memory_task_overhead_s(self) -> float:
        """Fixed time of a task or kernel with no matrix products (a norm, the optimizer's update), s:
        ``elementwise_overhead_s`` where set, else one kernel launch on the kernel model and
        ``task_overhead_s`` on the roofline."""
        if self.elementwise_overhead_s is not None:
            return self.elementwise_overhead_s
        return self.kernel_launch_s if self.kernel_model else self.task_overhead_s

    def roofline_s(self, flop: float, bytes_moved: float, dtype_bytes: int = 4, backward: bool = False) -> float:
        """max(FLOP / achieved rate, bytes / bandwidth), s: ``compute_time`` without the overhead.

        >>> DeviceSpec("x", 1e12, 1e12, 1e11, 1e9, efficiency=1.0, backward_efficiency=0.5).roofline_s(1e9, 0, backward=True)
        0.002
        """
        rate = self.peak(dtype_bytes) * self.efficiency * (self.backward_efficiency if backward else 1.0)
        return max(flop / rate, bytes_moved / self.mem_bandwidth)

    def compute_time(self, flop: float, bytes_moved: float, dtype_bytes: int = 4, backward: bool = False) -> float:
        """Roofline time of one task, s: overhead + max(FLOP / achieved peak, bytes / bandwidth).

        Roofline: Williams, Waterman, Patterson, CACM 52(4), 2009. A size-dependent
        efficiency e(F) = e * F / (F + F_half) gives F / (peak e(F)) = F / (peak e) +
        F_half / (peak e): exactly a fixed per-task overhead, so ``task_overhead_s``
        carries the small-matrix slowdown. An empty task costs nothing.

        >>> DeviceSpec("x", 1e12, 1e12, 1e11, 1e9, efficiency=0.5).compute_time(1e9, 1e6)
        0.002
        """
        if flop <= 0 and bytes_moved <= 0:
            return 0.0
        overhead = self.task_overhead_s if flop > 0 else self.memory_task_overhead_s
        return overhead + self.roofline_s(flop, bytes_moved, dtype_bytes, backward)

    def scaled(self, slowdown: float, fixed: float | None = None) -> "DeviceSpec":
        """A copy that computes ``slowdown`` times slower: peaks and bandwidth divided, the fixed times
        (per task, per kernel) multiplied by ``fixed`` (default: ``slowdown`` too)."""
        fixed = slowdown if fixed is None else fixed
        if not slowdown > 0 or not fixed >= 0:
            raise ValueError(f"slowdown must be > 0 and fixed >= 0, got {slowdown!r} and {fixed!r}")
        if slowdown == 1 and fixed == 1:
            return self
        return dataclasses.replace(
            self,
            name=f"{self.name} (x{slowdown:g} slower, emulated)",
            peak_flops=self.peak_flops / slowdown,
            peak_flops_fp32=self.peak_flops_fp32 / slowdown,
            mem_bandwidth=self.mem_bandwidth / slowdown,
            task_overhead_s=self.task_overhead_s * fixed,
            kernel_launch_s=self.kernel_launch_s * fixed,
            elementwise_overhead_s=None if self.elementwise_overhead_s is None else self.elementwise_overhead_s * fixed,
        )

    def to_dict(self) -> dict:
        return fields_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DeviceSpec":
        return from_fields(cls, data, "device spec")


@dataclass(frozen=True)
class LinkSpec:
    """A network or bus link, from its standard or spec sheet."""

    name: str
    """Name, e.g. "PCIe 4.0 x16"."""
    bandwidth: float
    """Data rate per direction after line encoding, B/s."""
    latency_s: float = 0.0
    """One-way latency, s."""
    duplex: bool = True
    """Full duplex; False for a shared medium (Wi-Fi), where both directions share ``bandwidth``."""
    source: str = ""
    """Where the figures come from."""

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.bandwidth, (int, float)) and math.isfinite(self.bandwidth) and self.bandwidth > 0):
            problems.append(f"bandwidth must be a positive number of B/s, got {self.bandwidth!r}")
        if not (isinstance(self.latency_s, (int, float)) and math.isfinite(self.latency_s) and self.latency_s >= 0):
            problems.append(f"latency_s must be >= 0, got {self.latency_s!r}")
        raise_problems(f"LinkSpec {self.name!r}", problems)

    def transfer_time(self, nbytes: float) -> float:
        """Time to move ``nbytes`` alone on this link, s: latency + bytes / bandwidth.

        >>> LinkSpec("l", bandwidth=1e9, latency_s=1e-6).transfer_time(1e6)
        0.001001
        """
        return 0.0 if nbytes <= 0 else self.latency_s + nbytes / self.bandwidth

    def to_dict(self) -> dict:
        return fields_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LinkSpec":
        return from_fields(cls, data, "link spec")


__all__ = ["DeviceSpec", "LinkSpec"]
