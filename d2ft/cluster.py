"""Devices, links and clusters: the hardware a plan runs on.

A ``Cluster`` is a networkx graph. Node attributes: ``kind`` ("device" or "switch")
and, on devices, ``spec`` (a DeviceSpec). Edge attribute: ``link`` (a LinkSpec). One
device is the coordinator, which holds the residual stream (design.md, "Execution
model"). Routes are least-latency paths; a transfer's rate is the bottleneck bandwidth
on its route.

Not modelled here: congestion (the simulator shares links between concurrent
transfers), switch buffering and store-and-forward delay (routes are cut-through), and
protocol overhead (bandwidths are line rates after encoding).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Mapping

import networkx as nx

from .errors import raise_problems, unknown_name
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
    None: ``task_overhead_s``. Such a task is one kernel where a matrix task is several."""
    backward_efficiency: float = 1.0
    """Backward FLOP rate relative to forward, in (0, 1]: below 1 where a framework's backward
    kernels run slower than its forward ones (``d2ft calibrate --model`` measures it)."""
    source: str = ""
    """Where the figures come from."""

    def __post_init__(self) -> None:
        problems = []
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
        overhead = self.task_overhead_s if flop > 0 or self.elementwise_overhead_s is None else self.elementwise_overhead_s
        return overhead + self.roofline_s(flop, bytes_moved, dtype_bytes, backward)

    def scaled(self, slowdown: float) -> "DeviceSpec":
        """A copy that computes ``slowdown`` times slower (peaks and bandwidth divided)."""
        if not slowdown > 0:
            raise ValueError(f"slowdown must be > 0, got {slowdown!r}")
        if slowdown == 1:
            return self
        return dataclasses.replace(
            self,
            name=f"{self.name} (x{slowdown:g} slower, emulated)",
            peak_flops=self.peak_flops / slowdown,
            peak_flops_fp32=self.peak_flops_fp32 / slowdown,
            mem_bandwidth=self.mem_bandwidth / slowdown,
            task_overhead_s=self.task_overhead_s * slowdown,
            elementwise_overhead_s=None if self.elementwise_overhead_s is None else self.elementwise_overhead_s * slowdown,
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


@dataclass(frozen=True)
class Cluster:
    """Devices and switches joined by links, with one device as the coordinator.

    Device order is significant: a plan's placement refers to devices by index.
    """

    devices: tuple[tuple[str, DeviceSpec], ...]
    """(node name, spec) per device, in plan order."""
    links: tuple[tuple[str, str, LinkSpec], ...]
    """(node, node, spec) per link; nodes are device or switch names."""
    coordinator: str
    """Name of the device that holds the residual stream, stem and classifier."""
    switches: tuple[str, ...] = ()
    """Names of switch nodes (no compute)."""
    name: str = "cluster"

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple((str(n), s) for n, s in self.devices))
        object.__setattr__(self, "links", tuple((str(a), str(b), l) for a, b, l in self.links))
        object.__setattr__(self, "switches", tuple(str(s) for s in self.switches))
        raise_problems(f"cluster {self.name!r}", self._problems())

    def _problems(self) -> list[str]:
        problems = []
        names = [n for n, _ in self.devices] + list(self.switches)
        if not self.devices:
            problems.append("a cluster needs at least one device")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"duplicate node names: {', '.join(dupes)}")
        for n, spec in self.devices:
            if not isinstance(spec, DeviceSpec):
                problems.append(f"device {n!r}: expected a DeviceSpec, got {type(spec).__name__}")
        known = set(names)
        for a, b, link in self.links:
            for end in (a, b):
                if end not in known:
                    problems.append(f"link {a}-{b}: unknown node {end!r}")
            if a == b:
                problems.append(f"link {a}-{b} joins a node to itself")
            if not isinstance(link, LinkSpec):
                problems.append(f"link {a}-{b}: expected a LinkSpec, got {type(link).__name__}")
        if self.coordinator not in {n for n, _ in self.devices}:
            problems.append(f"coordinator {self.coordinator!r} is not one of the devices")
        if not problems and len(self.devices) > 1:
            g = self._build_graph()
            cut = sorted(n for n, _ in self.devices if not nx.has_path(g, self.coordinator, n))
            if cut:
                problems.append(f"devices not connected to the coordinator: {', '.join(cut)}")
        return problems

    def _build_graph(self) -> nx.Graph:
        g = nx.Graph(name=self.name)
        for n, spec in self.devices:
            g.add_node(n, kind="device", spec=spec)
        for n in self.switches:
            g.add_node(n, kind="switch")
        for a, b, link in self.links:
            g.add_edge(a, b, link=link)
        return g

    @cached_property
    def graph(self) -> nx.Graph:
        """The cluster as a frozen networkx Graph (node kind/spec, edge link)."""
        return nx.freeze(self._build_graph())

    # ---- lookups ------------------------------------------------------------------
    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.devices)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def coordinator_index(self) -> int:
        return self.device_names.index(self.coordinator)

    def device(self, name_or_index: str | int) -> DeviceSpec:
        """A device's spec by name or plan index."""
        if isinstance(name_or_index, int):
            if not 0 <= name_or_index < len(self.devices):
                raise IndexError(f"device index {name_or_index} out of range: the cluster has {len(self.devices)} devices")
            return self.devices[name_or_index][1]
        for n, spec in self.devices:
            if n == name_or_index:
                return spec
        raise unknown_name("device", name_or_index, self.device_names)

    # ---- routes -------------------------------------------------------------------
    def route(self, a: str, b: str) -> list[str]:
        """Least-latency path of node names from ``a`` to ``b`` (fewest hops on ties)."""
        for n in (a, b):
            if n not in self.graph:
                raise unknown_name("node", n, self.graph.nodes)
        return nx.shortest_path(self.graph, a, b, weight=lambda u, v, e: e["link"].latency_s + 1e-12)

    def route_links(self, a: str, b: str) -> list[tuple[str, str, LinkSpec]]:
        """The links along ``route(a, b)``, as (from, to, spec)."""
        path = self.route(a, b)
        return [(u, v, self.graph.edges[u, v]["link"]) for u, v in zip(path, path[1:])]

    def bottleneck_bandwidth(self, a: str, b: str) -> float:
        """Lowest link bandwidth on the route from ``a`` to ``b``, B/s (inf for a == b)."""
        return min((l.bandwidth for _, _, l in self.route_links(a, b)), default=math.inf)

    def latency(self, a: str, b: str) -> float:
        """Sum of link latencies on the route, s."""
        return sum(l.latency_s for _, _, l in self.route_links(a, b))

    def transfer_time(self, a: str, b: str, nbytes: float) -> float:
        """Time to send ``nbytes`` from ``a`` to ``b`` with nothing else on the route, s."""
        if nbytes <= 0 or a == b:
            return 0.0
        return self.latency(a, b) + nbytes / self.bottleneck_bandwidth(a, b)

    # ---- derived clusters ---------------------------------------------------------
    def with_slowdown(self, factors: Iterable[float]) -> "Cluster":
        """A copy whose device i computes ``factors[i]`` times slower (emulated heterogeneity)."""
        factors = list(factors)
        if len(factors) != len(self.devices):
            raise ValueError(f"got {len(factors)} slowdown factors for {len(self.devices)} devices")
        devices = tuple((n, s.scaled(f)) for (n, s), f in zip(self.devices, factors))
        return dataclasses.replace(self, devices=devices)

    # ---- builders -----------------------------------------------------------------
    @classmethod
    def star(
        cls,
        devices: Mapping[str, DeviceSpec] | Iterable[tuple[str, DeviceSpec]],
        link: LinkSpec,
        coordinator: str | None = None,
        coordinator_link: LinkSpec | None = None,
        name: str = "star",
    ) -> "Cluster":
        """Every device on one switch by ``link``; the coordinator may have a faster uplink."""
        devices = tuple(devices.items() if isinstance(devices, Mapping) else devices)
        coordinator = coordinator if coordinator is not None else devices[0][0]
        links = tuple(
            ("switch", n, coordinator_link if (n == coordinator and coordinator_link) else link) for n, _ in devices
        )
        return cls(devices=devices, links=links, coordinator=coordinator, switches=("switch",), name=name)

    @classmethod
    def ring(
        cls,
        devices: Mapping[str, DeviceSpec] | Iterable[tuple[str, DeviceSpec]],
        link: LinkSpec,
        coordinator: str | None = None,
        name: str = "ring",
    ) -> "Cluster":
        """Devices in a ring, each joined to the next by ``link``."""
        devices = tuple(devices.items() if isinstance(devices, Mapping) else devices)
        names = [n for n, _ in devices]
        pairs = list(zip(names, names[1:] + names[:1])) if len(names) > 2 else list(zip(names, names[1:]))
        return cls(
            devices=devices,
            links=tuple((a, b, link) for a, b in pairs),
            coordinator=coordinator if coordinator is not None else names[0],
            name=name,
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "coordinator": self.coordinator,
            "devices": {n: s.to_dict() for n, s in self.devices},
            "switches": list(self.switches),
            "links": [{"a": a, "b": b, "link": l.to_dict()} for a, b, l in self.links],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "Cluster":
        """Builds a cluster from a dict; devices and links may name catalogue entries.

        A device is a DeviceSpec dict or a catalogue key ("a100-sxm4-80gb"), optionally as
        ``{"catalogue": key, "slowdown": 2}``; a link likewise ("10gbe").
        """
        from . import catalogue

        if not isinstance(data, dict):
            raise ValueError(f"cluster: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"name", "coordinator", "devices", "switches", "links"})
        if unknown or "devices" not in data:
            raise ValueError(
                f"cluster: unknown keys {unknown}" if unknown else "cluster: missing key 'devices'"
            )
        raw = data["devices"]
        pairs = raw.items() if isinstance(raw, dict) else [(d.get("node"), d) for d in raw]
        devices = tuple((n, catalogue.resolve_device(v)) for n, v in pairs)
        links = tuple((l["a"], l["b"], catalogue.resolve_link(l["link"])) for l in data.get("links", []))
        return cls(
            devices=devices,
            links=links,
            coordinator=data.get("coordinator", devices[0][0] if devices else ""),
            switches=tuple(data.get("switches", ())),
            name=data.get("name", "cluster"),
        )

    @classmethod
    def from_json(cls, text: str) -> "Cluster":
        return cls.from_dict(json.loads(text))
