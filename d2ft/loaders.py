"""Resolve command-line style references: a preset name or a JSON file path."""

from __future__ import annotations

from pathlib import Path

from .catalogue import cluster_preset
from .cluster import Cluster
from .model import ModelSpec
from .plan import Plan
from .serial import read_json


def load_model(ref: str, **overrides) -> ModelSpec:
    """A ModelSpec from a timm name (``vit_base_patch16_224``) or a ``model.json`` path."""
    if ref.endswith(".json") or Path(ref).is_file():
        spec = ModelSpec.from_dict(read_json(ref, "model file"))
        return ModelSpec.from_dict({**spec.to_dict(), **overrides}) if overrides else spec
    return ModelSpec.from_timm(ref, **overrides)


def load_cluster(ref: str) -> Cluster:
    """A Cluster from a preset name (``dgx-a100``) or a ``cluster.json`` path."""
    if ref.endswith(".json") or Path(ref).is_file():
        return Cluster.from_dict(read_json(ref, "cluster file"))
    return cluster_preset(ref)


def load_plan(path: str) -> Plan:
    """A Plan from a ``.json`` file or a text grid (any other extension)."""
    if path.endswith(".json"):
        return Plan.from_dict(read_json(path, "plan file"))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"plan file {path!r} does not exist") from None
    return Plan.from_text(text)


__all__ = ["load_cluster", "load_model", "load_plan"]
