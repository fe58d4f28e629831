"""Devices, links and clusters: the hardware a plan runs on.

A ``Cluster`` is a networkx graph. Node attributes: ``kind`` ("device" or "switch")
and, on devices, ``spec`` (a DeviceSpec). Edge attribute: ``link`` (a LinkSpec). One
device is the coordinator, which holds the residual stream (design.md, "Execution
model"). Routes are least-latency paths; a transfer's rate is the bottleneck bandwidth
on its route.

Hosts: every device belongs to a host, the machine whose resources it shares with the
other devices there. A ``Host`` with ``cores`` C runs at most C of its devices' compute
tasks at once, each at full speed (CPU ranks sharing a machine's cores; the simulator
schedules the cores as a pool); with ``cores`` None its devices compute independently
(GPUs, each with its own SMs). A device no host lists is a host of its own, so a cluster
without hosts means what it always did. A host's uplink (the NIC or PCIe link that all its
devices' off-host traffic crosses) is a switch of the host's with one link to the rest:
its devices' messages share it in the simulator like any link.

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

from . import hardware
from .device import DeviceSpec, LinkSpec
from .errors import raise_problems, unknown_name


@dataclass(frozen=True)
class Host:
    """A machine whose devices share its compute cores (module docstring)."""

    name: str
    devices: tuple[str, ...]
    """Names of the devices on it."""
    cores: int | None = None
    """Compute tasks of its devices that run at once at full speed; None: no sharing (GPUs)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(str(d) for d in self.devices))
        problems = []
        if self.cores is not None and (not isinstance(self.cores, int) or isinstance(self.cores, bool)
                                       or self.cores < 1):
            problems.append(f"cores must be a positive integer or None, got {self.cores!r}")
        if not self.devices:
            problems.append("a host needs at least one device")
        raise_problems(f"host {self.name!r}", problems)

    def to_dict(self) -> dict:
        return {"name": self.name, "cores": self.cores, "devices": list(self.devices)}


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
    hosts: tuple[Host, ...] = ()
    """The hosts that hold several devices (or limit their cores); any other device is a host of its own."""
    measured_on: dict | None = dataclasses.field(default=None, compare=False, hash=False)
    """For a measured profile (``d2ft calibrate``): the machine it was measured on (host, cores, threads,
    versions, date), so that using it on another machine is never silent."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple((str(n), s) for n, s in self.devices))
        object.__setattr__(self, "hosts", tuple(self.hosts))
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
        problems += self._host_problems({n for n, _ in self.devices})
        if not problems and len(self.devices) > 1:
            g = self._build_graph()
            cut = sorted(n for n, _ in self.devices if not nx.has_path(g, self.coordinator, n))
            if cut:
                problems.append(f"devices not connected to the coordinator: {', '.join(cut)}")
        return problems

    def _host_problems(self, devices: set[str]) -> list[str]:
        problems, seen = [], {}
        for h in self.hosts:
            if not isinstance(h, Host):
                problems.append(f"hosts must be Host objects, got {type(h).__name__}")
                continue
            for d in h.devices:
                if d not in devices:
                    problems.append(f"host {h.name!r}: unknown device {d!r}")
                elif d in seen:
                    problems.append(f"device {d!r} is on two hosts, {seen[d]!r} and {h.name!r}")
                seen.setdefault(d, h.name)
        names = [h.name for h in self.hosts if isinstance(h, Host)]
        if len(set(names)) != len(names):
            problems.append(f"duplicate host names: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
        return problems

    def core_pools(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """(host name, cores, device indices) of every host whose devices share a limited number of cores."""
        index = {n: k for k, (n, _) in enumerate(self.devices)}
        return [(h.name, h.cores, tuple(index[d] for d in h.devices)) for h in self.hosts if h.cores is not None]

    def host_of(self, device: str) -> Host:
        """The host of ``device`` (a host of its own, with no core limit, when none lists it)."""
        for h in self.hosts:
            if device in h.devices:
                return h
        self.device(device)  # an unknown name says so
        return Host(device, (device,), None)

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
    @cached_property
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
    def with_link_bandwidth(self, bandwidth: float) -> "Cluster":
        """A copy whose every link carries ``bandwidth`` B/s per direction (latencies kept)."""
        if not (isinstance(bandwidth, (int, float)) and bandwidth > 0):
            raise ValueError(f"link bandwidth must be > 0 B/s, got {bandwidth!r}")
        links = tuple((a, b, dataclasses.replace(l, bandwidth=bandwidth)) for a, b, l in self.links)
        return dataclasses.replace(self, links=links)

    def with_slowdown(self, factors: Iterable[float]) -> "Cluster":
        """A copy whose device i computes ``factors[i]`` times slower (emulated heterogeneity)."""
        factors = list(factors)
        if len(factors) != len(self.devices):
            raise ValueError(f"got {len(factors)} slowdown factors for {len(self.devices)} devices")
        devices = tuple((n, s.scaled(f)) for (n, s), f in zip(self.devices, factors))
        return dataclasses.replace(self, devices=devices)

    def with_hosts(self, hosts: Iterable[Host]) -> "Cluster":
        """A copy with ``hosts`` instead of its own."""
        return dataclasses.replace(self, hosts=tuple(hosts))

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
        out = {
            "name": self.name,
            "coordinator": self.coordinator,
            "devices": {n: s.to_dict() for n, s in self.devices},
            "switches": list(self.switches),
            "links": [{"a": a, "b": b, "link": l.to_dict()} for a, b, l in self.links],
        }
        if self.hosts:
            out["hosts"] = [h.to_dict() for h in self.hosts]
        if self.measured_on:
            out["measured_on"] = dict(self.measured_on)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "Cluster":
        """Builds a cluster from a dict; devices and links may name catalogue entries.

        A device is a DeviceSpec dict or a catalogue key ("a100-sxm4-80gb"), optionally as
        ``{"catalogue": key, "slowdown": 2}``; a link likewise ("10gbe").
        """
        if not isinstance(data, dict):
            raise ValueError(f"cluster: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"name", "coordinator", "devices", "switches", "links", "hosts", "measured_on"})
        if unknown or "devices" not in data:
            raise ValueError(
                f"cluster: unknown keys {unknown}" if unknown else "cluster: missing key 'devices'"
            )
        raw = data["devices"]
        pairs = raw.items() if isinstance(raw, dict) else [(d.get("node"), d) for d in raw]
        devices = tuple((n, hardware.resolve_device(v)) for n, v in pairs)
        links = tuple((l["a"], l["b"], hardware.resolve_link(l["link"])) for l in data.get("links", []))
        return cls(
            devices=devices,
            links=links,
            coordinator=data.get("coordinator", devices[0][0] if devices else ""),
            switches=tuple(data.get("switches", ())),
            name=data.get("name", "cluster"),
            hosts=_hosts(data.get("hosts", [])),
            measured_on=data.get("measured_on"),
        )

    @classmethod
    def from_json(cls, text: str) -> "Cluster":
        return cls.from_dict(json.loads(text))


def _hosts(raw) -> tuple[Host, ...]:
    """Hosts from JSON: a list of {"name", "cores", "devices"} or a dict name -> {"cores", "devices"}."""
    items = raw.items() if isinstance(raw, dict) else [(h.get("name") if isinstance(h, dict) else None, h) for h in raw]
    out = []
    for name, h in items:
        if not isinstance(h, dict) or set(h) - {"name", "cores", "devices"} or "devices" not in h:
            raise ValueError(f"cluster: host {name!r} must be an object with 'devices' (a list of device names) and "
                             f"optionally 'cores' (an integer, or null for devices that compute independently)")
        out.append(Host(str(name), tuple(h["devices"]), h.get("cores")))
    return tuple(out)
