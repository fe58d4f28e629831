"""SI units and named constants.

Every quantity in d2ft is a plain float or int in SI base units: seconds (s),
bytes (B), floating-point operations (FLOP), FLOP per second (FLOP/s) and bytes
per second (B/s). These constants turn a spec-sheet figure into that unit, so
``312 * TFLOPS`` reads as it is written and equals 3.12e14 FLOP/s.

Convention, stated once for the whole project: 1 multiply-add = 2 FLOP.
"""

from __future__ import annotations

# Bytes. Decimal prefixes for bandwidths and spec-sheet capacities, binary for memory sizes.
KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
KiB = 1024
MiB = 1024**2
GiB = 1024**3

# Bits, for network line rates quoted in bit/s.
BIT = 1 / 8
Mbit = 1e6 * BIT
Gbit = 1e9 * BIT

# Time.
s = 1.0
ms = 1e-3
us = 1e-6
ns = 1e-9

# Compute.
GFLOPS = 1e9
TFLOPS = 1e12

FLOP_PER_MAC = 2
"""One multiply-add counts as two floating-point operations."""


def fmt_bytes(n: float) -> str:
    """Formats a byte count with a binary prefix.

    >>> fmt_bytes(1536)
    '1.50 KiB'
    >>> fmt_bytes(3 * GiB)
    '3.00 GiB'
    """
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_time(t: float) -> str:
    """Formats a duration in seconds with a readable unit.

    >>> fmt_time(0.0025)
    '2.50 ms'
    >>> fmt_time(3e-6)
    '3.00 us'
    """
    if abs(t) >= 1:
        return f"{t:.3f} s"
    if abs(t) >= ms:
        return f"{t / ms:.2f} ms"
    return f"{t / us:.2f} us"


def fmt_flop(f: float) -> str:
    """Formats a FLOP count with a decimal prefix.

    >>> fmt_flop(35.1e9)
    '35.10 GFLOP'
    """
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(f) >= size:
            return f"{f / size:.2f} {unit}"
    return f"{f:.0f} FLOP"
