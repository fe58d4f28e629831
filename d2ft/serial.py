"""JSON and TOML round trips for frozen dataclasses, and atomic file writes.

Specs serialise to plain dicts of their fields; reading back checks for unknown
and missing keys and names them, so a typo in a hand-written JSON file is caught.
TOML (TOML 1.0) is written by ``toml_dumps`` for plain dicts of str, int, float, bool,
lists and dicts; None has no TOML form and is left out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def fields_dict(obj: Any) -> dict[str, Any]:
    """The dataclass's fields as a shallow dict (no recursion)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def from_fields(cls: type[T], data: Any, what: str | None = None) -> T:
    """Builds dataclass ``cls`` from a dict, naming unknown and missing keys."""
    what = what or cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    required = {
        n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    problems = [f"unknown key {k!r}" for k in unknown] + [f"missing key {k!r}" for k in missing]
    if problems:
        raise ValueError(f"{what}: {'; '.join(problems)}. Valid keys: {', '.join(fields)}")
    return cls(**data)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_file_mode() -> int:
    """The permissions a newly created file gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Writes ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Reads a JSON file, with an error that names the file and the line on bad JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None


# ---- TOML ------------------------------------------------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_dumps(data: dict) -> str:
    """``data`` as a TOML document: scalars and lists as ``key = value``, non-empty dicts as tables.

    None values are left out (TOML has no null), at every depth.

    >>> print(toml_dumps({"a": 1, "b": {"c": [1.5, "x"], "d": None}}), end="")
    a = 1
    <BLANKLINE>
    [b]
    c = [1.5, "x"]
    """
    lines: list[str] = []
    _toml_table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_table(lines: list[str], path: list[str], data: dict) -> None:
    tables = {k: v for k, v in data.items() if isinstance(v, dict) and v and v is not None}
    if path and (any(k not in tables for k, v in data.items() if v is not None) or not tables):
        lines.append("")
        lines.append("[" + ".".join(map(_toml_key, path)) + "]")
    for k, v in data.items():
        if v is not None and k not in tables:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables.items():
        _toml_table(lines, path + [k], v)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"no TOML form for {type(v).__name__} {v!r}")


def toml_loads(text: str, what: str = "TOML file") -> dict:
    """Parses TOML, with an error that names ``what`` and the position on bad TOML."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{what} is not valid TOML: {e}") from None
