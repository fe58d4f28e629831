"""Operations a subnet can run in one micro-batch, and subnet ids.

Source: method.md, "Operations" (after Ding et al., arXiv 2504.12471).
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Op(enum.Enum):
    """What one subnet does for one micro-batch.

    FULL runs forward and backward; FORWARD_ONLY runs forward and is a constant in
    backward (no weight gradient, no gradient through the subnet); SKIP contributes
    zero and costs nothing. The value is the one-character code used in text plans.
    """

    FULL = "F"
    FORWARD_ONLY = "O"
    SKIP = "S"

    @property
    def char(self) -> str:
        return self.value

    @property
    def runs_forward(self) -> bool:
        return self is not Op.SKIP

    @property
    def runs_backward(self) -> bool:
        return self is Op.FULL

    @property
    def level(self) -> int:
        """Activity rank: SKIP 0 < FORWARD_ONLY 1 < FULL 2."""
        return _LEVEL[self._value_]

    @classmethod
    def from_char(cls, c: str) -> "Op":
        """Parses one op character.

        >>> Op.from_char("O")
        <Op.FORWARD_ONLY: 'O'>
        """
        try:
            return cls(c.upper())
        except ValueError:
            raise ValueError(f"unknown op {c!r}: expected one of F (FULL), O (FORWARD_ONLY), S (SKIP)") from None


_LEVEL = {"S": 0, "O": 1, "F": 2}  # by value: hashing a str is cheaper than hashing an Enum member


class SubnetId(NamedTuple):
    """Subnet (layer, head): head ``head`` of block ``layer`` plus its MLP slice."""

    layer: int
    head: int
