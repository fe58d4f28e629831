"""Helpers for error messages that say what is wrong and how to fix it."""

from __future__ import annotations

import difflib
from typing import Iterable


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> "UnknownNameError":
    """The error for an unknown registry name, naming close matches and the valid ones.

    >>> print(unknown_name("model", "vit_bse", ["vit_base", "vit_small"]))
    unknown model 'vit_bse' (did you mean vit_base or vit_small?). Valid names: vit_base, vit_small
    """
    valid = sorted(valid)
    contains = [v for v in valid if str(name).lower() in v.lower()]
    close = list(dict.fromkeys(difflib.get_close_matches(str(name), valid, n=3, cutoff=0.6) + contains))[:3]
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}{hint}. Valid names: {', '.join(valid)}")


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a registry. Both a KeyError and a ValueError."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def raise_problems(what: str, problems: list[str]) -> None:
    """Raises one ValueError listing every problem, if there are any."""
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(f"invalid {what} ({len(problems)} problem{'s' * (len(problems) > 1)}):\n{lines}")


def expect(value, kind: type, what: str, hint: str = "") -> None:
    """TypeError saying what ``what`` should have been, when ``value`` is not a ``kind``.

    >>> expect("vit_base_patch16_224", int, "model", "build one with ModelSpec.from_timm(name)")
    Traceback (most recent call last):
    ...
    TypeError: model must be a int (build one with ModelSpec.from_timm(name)), got str 'vit_base_patch16_224'
    """
    if not isinstance(value, kind):
        shown = f" {value!r}" if isinstance(value, (str, int, float)) else ""
        raise TypeError(f"{what} must be a {kind.__name__}{f' ({hint})' if hint else ''}, "
                        f"got {type(value).__name__}{shown[:80]}")


def one_line(message, limit: int | None = None) -> str:
    """A message (or exception) with its line breaks and runs of white space folded, cut to ``limit`` chars.

    >>> one_line("invalid job (2 problems):\\n  - a\\n  - b")
    'invalid job (2 problems): - a - b'
    """
    text = " ".join(str(message).split())
    return text if limit is None else text[:limit]
