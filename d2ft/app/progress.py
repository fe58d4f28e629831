"""Progress bars on stderr for long commands (tqdm; silent where it is missing)."""

from __future__ import annotations

import sys


def progress_bar(unit: str, desc: str | None = None):
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr, or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    state = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr)
        state["bar"].update(1)
        if done == total:
            state["bar"].close()
    return update
