"""JSON round trips for frozen dataclasses, and atomic file writes.

Specs serialise to plain dicts of their fields; reading back checks for unknown
and missing keys and names them, so a typo in a hand-written JSON file is caught.
"""

from __future__ import annotations

import dataclasses
import json
import os
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
