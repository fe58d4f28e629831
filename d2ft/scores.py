"""Contribution scores: how much each subnet matters forward, and how much training it helps.

Source: method.md, "Contribution scores". The defaults:
- forward contribution s_fwd(l, h): weight magnitude sum |w| over the subnet's
  parameters, normalised per block;
- backward contribution s_bwd(l, h): Fisher information sum (dL/dw)^2 over the
  subnet's parameters, as an exponential moving average over the micro-batches in which
  it ran FULL, normalised by participation (``participation_scaled``); a subnet never yet
  run FULL gets its block's mean, and a block with none measured the global mean
  (``fill_block_mean``); the first plan, before any value is measured, uses
  ``spread_scores``;
- ``random``: a seeded baseline.
The value of a choice is A_F = s_fwd + s_bwd, A_O = s_fwd, A_S = 0.

Scores are plain nested lists, per subnet [layer][head] or per micro-batch
[micro_batch][layer][head]; the runtime supplies live ones, ``synthetic`` makes
documented stand-ins for simulation-only use. No numpy: the core stays pure Python.
"""

from __future__ import annotations

import json
import math
import random as _random
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import raise_problems
from .ops import Op

Grid = list[list[float]]


@dataclass(frozen=True)
class Scores:
    """Forward and backward contributions, per subnet or per micro-batch and subnet."""

    forward: tuple
    """[layer][head] or [micro_batch][layer][head]; >= 0."""
    backward: tuple
    """Same shape as ``forward``; >= 0."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "forward", _freeze(self.forward))
        object.__setattr__(self, "backward", _freeze(self.backward))
        problems = []
        for name in ("forward", "backward"):
            for v in _flatten(getattr(self, name)):
                if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                    problems.append(f"{name} scores must be finite and >= 0, found {v!r}")
                    break
        shape, other = _shape(self.forward), _shape(self.backward)
        if "ragged" in (shape, other):
            problems.append("scores are ragged: every block needs one score per head")
        elif shape != other:
            problems.append(f"forward shape {shape} differs from backward shape {other}")
        raise_problems("scores", problems)
        object.__setattr__(self, "_dims", shape)  # walked once: ``at`` runs per item in every solve

    @property
    def per_micro_batch(self) -> bool:
        return len(self._dims) == 3

    def check_shape(self, depth: int, heads: int, micro_batches: int) -> None:
        """Raises ValueError unless the scores fit a plan of this shape."""
        shape = self._dims
        ok = shape in ((depth, heads), (micro_batches, depth, heads))
        shape = "ragged (rows of different lengths)" if shape == "ragged" else shape
        if not ok:
            raise ValueError(
                f"scores have shape {shape}, expected (layers, heads) = {(depth, heads)} or "
                f"(micro_batches, layers, heads) = {(micro_batches, depth, heads)}"
            )

    def at(self, m: int, l: int, h: int) -> tuple[float, float]:
        """(s_fwd, s_bwd) of subnet (l, h) in micro-batch m."""
        if len(self._dims) == 3:
            return self.forward[m][l][h], self.backward[m][l][h]
        return self.forward[l][h], self.backward[l][h]

    def value(self, m: int, l: int, h: int, op: Op) -> float:
        """A_op: s_fwd + s_bwd for FULL, s_fwd for FORWARD_ONLY, 0 for SKIP."""
        f, b = self.at(m, l, h)
        return f + b if op is Op.FULL else f if op is Op.FORWARD_ONLY else 0.0

    def swapped(self) -> "Scores":
        """The same scores with the roles exchanged (one reading of the paper swaps them)."""
        return Scores(self.backward, self.forward)

    def to_dict(self) -> dict:
        return {"forward": _thaw(self.forward), "backward": _thaw(self.backward)}

    @classmethod
    def from_dict(cls, data: dict) -> "Scores":
        if not isinstance(data, dict) or set(data) != {"forward", "backward"}:
            raise ValueError("scores: expected a JSON object with exactly the keys 'forward' and 'backward'")
        return cls(data["forward"], data["backward"])

    @classmethod
    def from_json(cls, text: str) -> "Scores":
        return cls.from_dict(json.loads(text))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


# ---- score sources -------------------------------------------------------------------
def normalise_per_block(grid: Sequence[Sequence[float]]) -> Grid:
    """Divides every row (block) by its sum, so each block's scores sum to 1.

    >>> normalise_per_block([[1, 3], [0, 0]])
    [[0.25, 0.75], [0.5, 0.5]]
    """
    out = []
    for row in grid:
        total = sum(row)
        out.append([v / total for v in row] if total > 0 else [1 / len(row)] * len(row))
    return out


def magnitude(weights: Sequence[Sequence[Iterable[float]]]) -> Grid:
    """Forward contribution: sum |w| over each subnet's parameters, normalised per block.

    ``weights[l][h]`` is an iterable of the subnet's parameter values (any flat view).
    """
    return normalise_per_block([[sum(abs(float(w)) for w in ws) for ws in row] for row in weights])


def fisher(grads: Sequence[Sequence[Iterable[float] | None]]) -> list[list[float | None]]:
    """Empirical Fisher information sum (dL/dw)^2 per subnet; None where a subnet has no gradient."""
    return [[None if gs is None else sum(float(g) ** 2 for g in gs) for gs in row] for row in grads]


def ema_update(previous: Sequence[Sequence[float | None]] | None, new: Sequence[Sequence[float | None]],
               decay: float = 0.9) -> list[list[float | None]]:
    """Exponential moving average s <- decay s + (1 - decay) new, only where ``new`` is not None.

    A subnet seen for the first time takes its new value; one never seen stays None.
    """
    if not 0 <= decay < 1:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    out = []
    for l, row in enumerate(new):
        prev_row = previous[l] if previous is not None else [None] * len(row)
        out.append([p if n is None else n if p is None else decay * p + (1 - decay) * n
                    for p, n in zip(prev_row, row)])
    return out


def fill_block_mean(grid: Sequence[Sequence[float | None]]) -> Grid:
    """Replaces None (never run FULL) by the mean of its block's known values, or, in a block with none
    known, by the mean of every known value (method.md: never zero, which would starve the block).

    >>> fill_block_mean([[1.0, None, 3.0], [None, None, None]])
    [[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]
    """
    known_all = [v for row in grid for v in row if v is not None]
    overall = sum(known_all) / len(known_all) if known_all else 0.0
    out = []
    for row in grid:
        known = [v for v in row if v is not None]
        mean = sum(known) / len(known) if known else overall
        out.append([mean if v is None else v for v in row])
    return out


def participation_scaled(fisher_grid: Sequence[Sequence[float | None]], full_counts: Sequence[Sequence[int]],
                         micro_batches: int) -> list[list[float | None]]:
    """Fisher sums of a step's accumulated gradients, each as if its subnet had run FULL on all ``micro_batches``.

    The loss is the mean over the step's M micro-batches, so a subnet FULL in k of them has an
    accumulated gradient of about k/M times the full-step gradient and a Fisher sum (k/M)^2 times
    as large; multiplying by (M/k)^2 removes that penalty (method.md, "Contribution scores").

    >>> participation_scaled([[1.0, 4.0, None]], [[1, 2, 0]], 2)
    [[4.0, 4.0, None]]
    """
    out = []
    for row, counts in zip(fisher_grid, full_counts):
        out.append([None if v is None or k == 0 else v * (micro_batches / k) ** 2 for v, k in zip(row, counts)])
    return out


def spread_scores(forward: Sequence[Sequence[float]], micro_batches: int, decay: float = 0.1) -> Scores:
    """Scores for the first plan, made before any Fisher value is measured: a prior that puts one FULL
    head in every block and micro-batch before anything else.

    s_bwd of head h of block l in micro-batch m is s_fwd times W * ``decay`` ** ((h - l - m) mod H),
    with W the number of items (M L H). One head per block and micro-batch (rotating over blocks
    and micro-batches) is then worth more than every forward contribution together, and ten times
    the next head: a knapsack spends its budget on FULL round-robin, one head of every block
    before a second head of any, and runs or skips the rest with what is left, even where
    activating a block costs a device extra (its overhead and messages, which would otherwise
    concentrate FULL in as few blocks as possible). So no block starts the run untrained, and
    after the first step every block has measured scores (method.md, "Warm-up").

    >>> s = spread_scores([[0.5, 0.5], [0.5, 0.5]], 2)
    >>> [[round(v, 6) for v in row] for row in s.backward[1]]
    [[0.4, 4.0], [4.0, 0.4]]
    """
    W = micro_batches * sum(len(row) for row in forward)
    backward = []
    for m in range(micro_batches):
        grid = []
        for l, row in enumerate(forward):
            H = len(row)
            grid.append([v * W * decay ** ((h - l - m) % H) for h, v in enumerate(row)])
        backward.append(grid)
    return Scores([[list(row) for row in forward]] * micro_batches, backward)


def random_scores(depth: int, heads: int, seed: int, micro_batches: int | None = None) -> Scores:
    """The ``random`` baseline: uniform [0, 1) scores from a seeded generator."""
    rng = _random.Random(seed)
    grid = lambda: [[rng.random() for _ in range(heads)] for _ in range(depth)]  # noqa: E731
    if micro_batches is None:
        return Scores(grid(), grid())
    return Scores([grid() for _ in range(micro_batches)], [grid() for _ in range(micro_batches)])


def synthetic(depth: int, heads: int, seed: int = 0, micro_batches: int | None = None,
              spread: float = 1.0, noise: float = 0.2) -> Scores:
    """Stand-in scores for simulation-only use, seeded and documented.

    Per subnet, a log-normal base importance exp(spread * z) (z standard normal), so a
    few heads dominate as in head-pruning studies (Michel et al., NeurIPS 2019, Fig. 2:
    most heads can be removed alone at little cost). Forward scores are that base,
    normalised per block. Backward scores take an independent log-normal draw scaled by
    (1 + l / depth), since fine-tuning gradients grow toward the output blocks. With
    ``micro_batches``, each micro-batch multiplies the backward score by exp(noise * z).
    """
    rng = _random.Random(seed)
    base = [[math.exp(spread * rng.gauss(0, 1)) for _ in range(heads)] for _ in range(depth)]
    grad = [[math.exp(spread * rng.gauss(0, 1)) * (1 + l / depth) for _ in range(heads)] for l in range(depth)]
    fwd = normalise_per_block(base)
    bwd = normalise_per_block(grad)
    if micro_batches is None:
        return Scores(fwd, bwd)
    per_mb = [[[v * math.exp(noise * rng.gauss(0, 1)) for v in row] for row in bwd] for _ in range(micro_batches)]
    return Scores([fwd] * micro_batches, per_mb)


def _freeze(x):
    return tuple(_freeze(v) for v in x) if isinstance(x, (list, tuple)) else x


def _thaw(x):
    return [_thaw(v) for v in x] if isinstance(x, tuple) else x


def _flatten(x):
    if isinstance(x, tuple):
        for v in x:
            yield from _flatten(v)
    else:
        yield x


def _shape(x) -> tuple[int, ...] | str:
    """The nested tuple's shape, or "ragged" when rows differ in length."""
    if not isinstance(x, tuple):
        return ()
    inner = {_shape(v) for v in x}
    if len(inner) > 1 or "ragged" in inner:
        return "ragged"
    return (len(x),) + (inner.pop() if inner else ())
