"""Where the files the project ships are: its backbones and its small data sets.

In a checkout (or an editable install) they are the repository's ``data/`` folder; in an
installed wheel they are package data under ``runtime/shipped/`` (``pyproject.toml`` maps
``data/`` there), so ``d2ft run`` and ``d2ft demo`` need no checkout.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
ROOTS = (_HERE / "shipped", _HERE.parent / "data")
"""Searched in order: the wheel's package data, then the checkout's data/."""


def shipped(*parts: str) -> Path:
    """The shipped file or folder ``data/<parts>``, from the first of ``ROOTS`` that has it (the
    checkout's path when none does, so that an error names where it was expected)."""
    for root in ROOTS:
        path = root.joinpath(*parts)
        if path.exists():
            return path
    return ROOTS[-1].joinpath(*parts)


__all__ = ["ROOTS", "shipped"]
