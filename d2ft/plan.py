"""Plan: where each subnet lives and what it does in each micro-batch of one step.

The one plan type of the project: the planner writes it, the simulator predicts its
cost, the runtime executes it. It round-trips through JSON and through a text grid
a person can read and edit::

    # d2ft plan
    devices: ["coord", "w0", "w1"]
    micro_batch_size: 8
    meta: {"strategy": "hybrid"}
    placement:
      L0  1 2 1 2
    micro-batch 0:
      L0  F O S F

Rows are layers, columns heads; placement cells are device indices into ``devices``,
op cells are F (FULL), O (FORWARD_ONLY) or S (SKIP).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from .errors import raise_problems
from .ops import Op, SubnetId

MAX_PLAN_OPS = 1_000_000
"""The most subnet choices (micro-batches x blocks x heads) one step may have: planning takes about
3 KB of memory and 0.16 ms per choice (measured with the dp solver, ViT-B/16 on 4 devices), so a
million is about 3 GB and under 3 minutes."""


def check_plan_size(micro_batches: int, depth: int, heads: int) -> None:
    """ValueError when a step of ``micro_batches`` would exceed ``MAX_PLAN_OPS`` subnet choices.

    >>> check_plan_size(10**8, 12, 12)
    Traceback (most recent call last):
    ...
    ValueError: --micro-batches 100000000: a step of 100000000 micro-batches x 12 blocks x 12 heads is 1.4e+10 subnet choices; a plan holds at most 1,000,000 (about 3 KB of planner memory each): use at most 6944 micro-batches
    """
    if not isinstance(micro_batches, int) or isinstance(micro_batches, bool) or micro_batches < 1:
        raise ValueError(f"--micro-batches must be a positive integer, got {micro_batches!r}")
    n = micro_batches * depth * heads
    if n > MAX_PLAN_OPS:
        raise ValueError(f"--micro-batches {micro_batches}: a step of {micro_batches} micro-batches x {depth} blocks x "
                         f"{heads} heads is {n:.2g} subnet choices; a plan holds at most {MAX_PLAN_OPS:,} (about 3 KB "
                         f"of planner memory each): use at most {MAX_PLAN_OPS // (depth * heads)} micro-batches")

Grid = tuple[tuple[Op, ...], ...]


@dataclass(frozen=True)
class Plan:
    """Placement (layer, head) -> device index, and ops[micro-batch][layer][head]."""

    devices: tuple[str, ...]
    """Device names; placement cells index into this (the cluster's device order)."""
    placement: tuple[tuple[int, ...], ...]
    """placement[layer][head] = index of the device holding subnet (layer, head)."""
    ops: tuple[Grid, ...]
    """ops[micro_batch][layer][head] = the subnet's operation in that micro-batch."""
    micro_batch_size: int = 1
    """Samples per micro-batch."""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Free-form provenance (strategy, solver, keep ratio, ...); JSON-serialisable."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("devices", tuple(self.devices))
        set_("placement", tuple(tuple(row) for row in self.placement))
        try:
            set_("ops", tuple(tuple(tuple(_as_op(o) for o in row) for row in grid) for grid in self.ops))
        except ValueError as e:
            problems.append(str(e))
        set_("meta", dict(self.meta))
        if not problems:
            problems += self._shape_problems()
        raise_problems("plan", problems)

    def _shape_problems(self) -> list[str]:
        problems = []
        if not self.devices:
            problems.append("no devices")
        if len(set(self.devices)) != len(self.devices):
            problems.append(f"duplicate device names in {list(self.devices)}")
        if not isinstance(self.micro_batch_size, int) or self.micro_batch_size < 1:
            problems.append(f"micro_batch_size must be a positive integer, got {self.micro_batch_size!r}")
        if not self.placement or not self.placement[0]:
            return problems + ["placement is empty: it needs one row per layer and one column per head"]
        depth, heads = len(self.placement), len(self.placement[0])
        for l, row in enumerate(self.placement):
            if len(row) != heads:
                problems.append(f"placement row {l} has {len(row)} heads, row 0 has {heads}")
            for h, k in enumerate(row):
                if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(self.devices):
                    problems.append(f"placement[{l}][{h}] = {k!r} is not a device index in 0..{len(self.devices) - 1}")
        if not self.ops:
            problems.append("no micro-batches: ops needs at least one grid")
        for m, grid in enumerate(self.ops):
            if len(grid) != depth:
                problems.append(f"micro-batch {m} has {len(grid)} layers, placement has {depth}")
            for l, row in enumerate(grid):
                if len(row) != heads:
                    problems.append(f"micro-batch {m} layer {l} has {len(row)} heads, placement has {heads}")
        return problems

    # ---- shape --------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.placement)

    @property
    def heads(self) -> int:
        return len(self.placement[0])

    @property
    def micro_batches(self) -> int:
        return len(self.ops)

    @property
    def batch_size(self) -> int:
        """Samples per step: micro-batches x micro-batch size."""
        return self.micro_batches * self.micro_batch_size

    def subnets_of(self, device: int) -> list[SubnetId]:
        """The subnets placed on device index ``device``."""
        return [SubnetId(l, h) for l, row in enumerate(self.placement) for h, k in enumerate(row) if k == device]

    def items(self) -> Iterator[tuple[int, int, int, int, Op]]:
        """Every (micro_batch, layer, head, device, op)."""
        for m, grid in enumerate(self.ops):
            for l, row in enumerate(grid):
                for h, op in enumerate(row):
                    yield m, l, h, self.placement[l][h], op

    def summary(self) -> dict[str, int]:
        """Counts of each op over all (micro-batch, subnet) items, keyed by op char.

        >>> Plan(["d"], [[0, 0]], [[["F", "S"]]]).summary()
        {'F': 1, 'O': 0, 'S': 1}
        """
        counts = Counter(op for grid in self.ops for row in grid for op in row)
        return {op.char: counts.get(op, 0) for op in Op}

    # ---- validation against a model and a cluster ------------------------------------
    def problems(self, model=None, cluster=None) -> list[str]:
        """Every way this plan does not fit ``model`` (a ModelSpec) and ``cluster`` (a Cluster)."""
        problems = []
        if model is not None and (self.depth, self.heads) != (model.depth, model.heads):
            problems.append(
                f"plan is {self.depth} layers x {self.heads} heads but model {model.name!r} is "
                f"{model.depth} x {model.heads}: plan it for this model"
            )
        if cluster is not None and tuple(self.devices) != tuple(cluster.device_names):
            problems.append(
                f"plan devices {list(self.devices)} differ from cluster {cluster.name!r} devices "
                f"{list(cluster.device_names)} (names and order must match)"
            )
        return problems

    def validate(self, model=None, cluster=None) -> "Plan":
        """Raises one ValueError listing every problem; returns the plan when there is none."""
        raise_problems("plan", self.problems(model, cluster))
        return self

    # ---- builders -----------------------------------------------------------------
    @classmethod
    def uniform(
        cls,
        model,
        cluster,
        op: Op = Op.FULL,
        micro_batches: int = 1,
        micro_batch_size: int = 1,
        placement: Sequence[Sequence[int]] | None = None,
        **meta,
    ) -> "Plan":
        """Every subnet runs ``op`` in every micro-batch (all-FULL is the baseline)."""
        check_plan_size(micro_batches, model.depth, model.heads)
        placement = placement if placement is not None else even_placement(model, cluster)
        grid = tuple(tuple(op for _ in range(model.heads)) for _ in range(model.depth))
        return cls(cluster.device_names, placement, (grid,) * micro_batches, micro_batch_size, meta)

    def with_ops(self, ops: Sequence, **meta) -> "Plan":
        """The same placement with other ops (meta merged)."""
        return Plan(self.devices, self.placement, ops, self.micro_batch_size, {**self.meta, **meta})

    # ---- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "devices": list(self.devices),
            "micro_batch_size": self.micro_batch_size,
            "meta": dict(self.meta),
            "placement": [list(r) for r in self.placement],
            "ops": ["/".join("".join(o.char for o in row) for row in grid) for grid in self.ops],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        if not isinstance(data, dict):
            raise ValueError(f"plan: expected a JSON object, got {type(data).__name__}")
        missing = sorted({"devices", "placement", "ops"} - set(data))
        unknown = sorted(set(data) - {"devices", "placement", "ops", "micro_batch_size", "meta"})
        if missing or unknown:
            raise ValueError(f"plan: missing keys {missing}, unknown keys {unknown}")
        ops = data["ops"]
        if not isinstance(ops, list) or not all(isinstance(g, (str, list)) for g in ops):
            raise ValueError("plan: ops must be a list with one entry per micro-batch, each a grid string "
                             "(\"FOS/FFF\": blocks separated by /) or a list of rows of op characters")
        ops = [[list(row) for row in g.split("/")] if isinstance(g, str) else g for g in ops]
        return cls(data["devices"], data["placement"], ops, data.get("micro_batch_size", 1), data.get("meta", {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.from_dict(json.loads(text))

    # ---- text grid ----------------------------------------------------------------
    def to_text(self) -> str:
        width = max(len(str(len(self.devices) - 1)), 1)
        lw = len(str(self.depth - 1))
        lines = [
            "# d2ft plan",
            f"devices: {json.dumps(list(self.devices))}",
            f"micro_batch_size: {self.micro_batch_size}",
            f"meta: {json.dumps(dict(self.meta), sort_keys=True)}",
            "placement:",
        ]
        lines += [f"  L{l:<{lw}}  " + " ".join(f"{k:>{width}}" for k in row) for l, row in enumerate(self.placement)]
        for m, grid in enumerate(self.ops):
            lines.append(f"micro-batch {m}:")
            lines += [f"  L{l:<{lw}}  " + " ".join(f"{o.char:>{width}}" for o in row) for l, row in enumerate(grid)]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str) -> "Plan":
        header: dict[str, Any] = {}
        sections: list[tuple[str, list[list[str]]]] = []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                if line.startswith("L") and sections:
                    sections[-1][1].append(line.split()[1:])
                elif line.endswith(":") and (line == "placement:" or line.startswith("micro-batch ")):
                    sections.append((line[:-1], []))
                elif ":" in line and not sections:
                    key, value = line.split(":", 1)
                    header[key.strip()] = json.loads(value)
                else:
                    raise ValueError("expected 'key: value', 'placement:', 'micro-batch N:' or a row 'L<layer> ...'")
            except (ValueError, IndexError) as e:
                raise ValueError(f"plan text, line {n} ({raw!r}): {e}") from None
        if not sections or sections[0][0] != "placement":
            raise ValueError("plan text: the first section must be 'placement:'")
        try:
            placement = [[int(c) for c in row] for row in sections[0][1]]
        except ValueError as e:
            raise ValueError(f"plan text: placement cells must be device indices: {e}") from None
        missing = sorted({"devices", "micro_batch_size"} - set(header))
        if missing:
            raise ValueError(f"plan text: missing header lines {missing}")
        ops = [rows for _, rows in sections[1:]]
        return cls(header["devices"], placement, ops, header["micro_batch_size"], header.get("meta", {}))


def _as_op(o) -> Op:
    return o if isinstance(o, Op) else Op.from_char(o)


def even_placement(model, cluster) -> tuple[tuple[int, ...], ...]:
    """Subnets dealt round-robin to the workers (every device but the coordinator).

    Width-wise, like the paper's subnet split: with W workers, subnet (l, h) goes to
    worker (l H + h) mod W, so every block is spread over min(H, W) devices. On a
    one-device cluster everything lands on the coordinator. Speed-oblivious: the
    placement planner balances by device speed and memory.
    """
    coord = cluster.coordinator_index
    workers = [k for k in range(cluster.num_devices) if k != coord] or [coord]
    H = model.heads
    return tuple(tuple(workers[(l * H + h) % len(workers)] for h in range(H)) for l in range(model.depth))
