"""Trace: the one output type of both the simulator (predicted) and the runtime (measured).

A trace describes one training step: timed events per resource, per-device totals, bytes
per link, the step time and peak memory. Because the simulator and the runtime return
the same type, analysis can put prediction and measurement side by side field by field.
``Trace.from_cost`` builds the untimed trace the analytical cost model implies.

Not modelled here: anything about how the numbers were obtained; see the producer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from .serial import fields_dict, from_fields

SOURCES = ("cost-model", "simulator", "runtime")


class Event(NamedTuple):
    """One interval on one resource (a device's compute, or a link's transfer).

    A NamedTuple, not a dataclass: a trace holds thousands; ``Trace`` validates them.
    """

    resource: str
    """Device name, or link "a->b"."""
    kind: str
    """"compute", "send", "recv", "transfer", "wait" or "optimizer"."""
    name: str
    """What ran, e.g. "fwd attn L3" or "grad mlp L3"."""
    start_s: float
    end_s: float
    micro_batch: int = -1
    layer: int = -1
    nbytes: int = 0
    flop: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class DeviceStats:
    """One device's totals over one step."""

    busy_s: float
    """Time spent computing, s."""
    sent_bytes: int
    recv_bytes: int
    peak_memory_bytes: float
    flop: float = 0.0
    comm_s: float = 0.0
    """Time spent in sends and receives, s (measured or scheduled; 0 when untimed)."""
    wait_s: float = 0.0
    """Time idle, waiting for data, s."""


@dataclass(frozen=True)
class Trace:
    """One step of one plan, predicted or measured."""

    source: str
    """"cost-model", "simulator" or "runtime"."""
    step_time_s: float
    """Wall-clock time of the step, s (for the cost model: the busiest device's compute time)."""
    devices: Mapping[str, DeviceStats]
    links: Mapping[str, int] = field(default_factory=dict)
    """Bytes carried per link "a->b"."""
    events: tuple[Event, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Free-form: plan meta, emulation labels, loss, ..."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"trace source {self.source!r} is not one of {', '.join(SOURCES)}")
        if not self.step_time_s >= 0:
            raise ValueError(f"step_time_s must be >= 0, got {self.step_time_s!r}")
        object.__setattr__(self, "devices", dict(self.devices))
        object.__setattr__(self, "links", dict(self.links))
        object.__setattr__(self, "events", tuple(self.events))
        object.__setattr__(self, "meta", dict(self.meta))
        bad = next((e for e in self.events if not e.end_s >= e.start_s), None)
        if bad is not None:
            raise ValueError(f"event {bad.name!r} on {bad.resource!r} ends ({bad.end_s}) before it starts ({bad.start_s})")

    @property
    def comm_bytes(self) -> int:
        """Bytes of all messages, each counted once (= total sent = total received)."""
        return sum(d.sent_bytes for d in self.devices.values())

    @property
    def compute_flop(self) -> float:
        return sum(d.flop for d in self.devices.values())

    @classmethod
    def from_cost(cls, cost, meta: Mapping[str, Any] | None = None) -> "Trace":
        """The untimed trace of a ``StepCost``: totals only, step time = busiest device."""
        devices = {
            d.name: DeviceStats(d.compute_s, d.sent_bytes, d.recv_bytes, d.peak_memory_bytes, d.flop)
            for d in cost.devices
        }
        return cls("cost-model", cost.max_compute_s, devices, meta=dict(meta or {}))

    def to_chrome(self) -> dict:
        """The timeline in the Chrome trace-event format (open in ui.perfetto.dev or chrome://tracing).

        Devices are one process, links (transfers, named "src->dst") another; each resource is
        a thread; times are in microseconds, as the format requires. Every transfer is also a
        flow arrow from its slice to the receiving device at its end, and the bytes in flight
        over all links are a counter track (Trace Event Format, Google, 2016: phases "s"/"f"
        for flows, "C" for counters).
        """
        tids: dict[str, tuple[int, int]] = {}
        out = []
        for pid, label in ((1, "devices"), (2, "transfers")):
            out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": label}})
        for e in self.events:
            if e.resource not in tids:
                pid = 2 if e.kind == "transfer" else 1
                tids[e.resource] = (pid, len(tids) + 1)
                out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tids[e.resource][1],
                            "args": {"name": e.resource}})
            pid, tid = tids[e.resource]
            args = {"micro_batch": e.micro_batch, "layer": e.layer}
            if e.nbytes:
                args["bytes"] = e.nbytes
            if e.flop:
                args["flop"] = e.flop
            out.append({"ph": "X", "name": e.name, "cat": e.kind, "pid": pid, "tid": tid,
                        "ts": e.start_s * 1e6, "dur": e.duration_s * 1e6, "args": args})
        out += self._flows_and_counters(tids)
        return {"traceEvents": out, "displayTimeUnit": "ms",
                "otherData": {"source": self.source, "step_time_s": self.step_time_s,
                              **{k: v for k, v in self.meta.items() if isinstance(v, (str, int, float))}}}

    def _flows_and_counters(self, tids: dict[str, tuple[int, int]]) -> list[dict]:
        """Chrome flow events (transfer slice -> receiving device) and the bytes-in-flight counter."""
        out, changes = [], []
        transfers = [e for e in self.events if e.kind == "transfer"]
        for i, e in enumerate(transfers):
            changes += [(e.start_s, e.nbytes), (e.end_s, -e.nbytes)]
            dst = e.resource.split("->", 1)[-1]
            if dst not in tids:
                continue
            pid, tid = tids[e.resource]
            dpid, dtid = tids[dst]
            out.append({"ph": "s", "id": i, "name": "message", "cat": "flow", "pid": pid, "tid": tid,
                        "ts": e.start_s * 1e6})
            out.append({"ph": "f", "bp": "e", "id": i, "name": "message", "cat": "flow", "pid": dpid, "tid": dtid,
                        "ts": e.end_s * 1e6})
        level = 0
        for t, delta in sorted(changes, key=lambda c: (c[0], c[1])):  # ends before starts at the same instant
            level += delta
            out.append({"ph": "C", "name": "bytes in flight", "pid": 2, "ts": t * 1e6, "args": {"bytes": level}})
        return out

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "step_time_s": self.step_time_s,
            "devices": {n: fields_dict(s) for n, s in self.devices.items()},
            "links": dict(self.links),
            "events": [e._asdict() for e in self.events],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Trace":
        if not isinstance(data, dict):
            raise ValueError(f"trace: expected a JSON object, got {type(data).__name__}")
        return cls(
            source=data["source"],
            step_time_s=data["step_time_s"],
            devices={n: from_fields(DeviceStats, s, f"trace device {n!r}") for n, s in data["devices"].items()},
            links=data.get("links", {}),
            events=tuple(_event(e) for e in data.get("events", [])),
            meta=data.get("meta", {}),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        return cls.from_dict(json.loads(text))


def _event(data: Any) -> Event:
    if not isinstance(data, dict) or set(data) - set(Event._fields) or not {"resource", "kind", "name", "start_s",
                                                                             "end_s"} <= set(data):
        raise ValueError(f"trace event: expected an object with keys {', '.join(Event._fields)}, got {data!r}")
    return Event(**data)
