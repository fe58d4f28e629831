"""Building timm models and moving their weights: checkpoints in, the fine-tuned model out.

``build_model`` makes the timm model of a job from its seed (identical on every rank) and
loads its checkpoint; ``read_weights`` reads a safetensors file or a torch state dict
(``torch.load`` with ``weights_only=True``: tensors only, never code); ``load_weights``
checks the architecture and leaves the classifier at its seeded init (a new task: a
checkpoint's class order means nothing to another task) unless asked to keep it;
``export`` gathers every rank's slices into one timm state dict (LoRA merged) in
``RUN_DIR/model.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from d2ft import rundir
from d2ft.errors import one_line
from d2ft.plan import Plan
from d2ft.serial import default_file_mode

from .assets import shipped
from .shard import full_state_dict

SHIPPED_CHECKPOINT = shipped("pretrained", "vit-fmnist0-4.safetensors")
"""The project's own backbone (``d2ft pretrain --classes 0-4``): a small ViT pre-trained on Fashion-MNIST
classes 0-4, whose downstream task is classes 5-9 (``--data fashion-mnist-5to9``)."""
FULL_FMNIST_CHECKPOINT = shipped("pretrained", "vit-fmnist.safetensors")
"""The earlier backbone, pre-trained on all ten Fashion-MNIST classes (the first results' backbone)."""


def build_model(job):
    """The timm model of ``job`` (a ``runtime.job.Job``), initialised from its seed (the same on every
    rank), then loaded from its checkpoint unless that is None or "none"."""
    import timm

    torch.manual_seed(job.seed)
    model = timm.create_model(job.model, pretrained=False, **job.model_kwargs)
    if job.checkpoint not in (None, "none", ""):
        load_weights(model, job.checkpoint, job.keep_classifier)
    return model


def read_metadata(path: str | Path) -> dict:
    """The metadata of a safetensors file (model, model_kwargs, ...) without reading its tensors; {} for a
    torch checkpoint, which has none (it is read, so that a file that is no checkpoint says so here)."""
    return read_weights(path, tensors=Path(path).suffix != ".safetensors")[1]


def read_weights(path: str | Path, tensors: bool = True) -> tuple[dict, dict]:
    """(state dict, metadata) of a safetensors file or a torch checkpoint; ValueError if unreadable.

    ``tensors=False`` reads a safetensors file's header only (the state dict comes back empty)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; give the path of a local weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()} if tensors else {}, dict(f.metadata() or {})
        if not tensors:
            return {}, {}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch raise many kinds on a corrupt file
        reason = one_line(f"{type(e).__name__}: {e}", 160)
        raise ValueError(f"{str(path)!r} is not a checkpoint (cannot be read: {reason}); give a complete "
                         "safetensors or torch weights file") from None
    for key in ("state_dict", "model", "state_dict_ema"):  # common wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a state dict of tensors")
    return state, {}


def load_weights(model, path: str | Path, keep_classifier: bool = False) -> list[str]:
    """Loads ``path`` into ``model``, but its classifier stays at the model's seeded init (a new task)
    unless ``keep_classifier`` and it has the model's size; returns the classifier keys left at init.

    Raises ValueError naming the mismatches when the checkpoint is of another architecture.
    """
    state, _ = read_weights(path)
    own = model.state_dict()
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    head = [k for k in shapes if k.startswith("head")]
    body = [k for k in shapes if not k.startswith("head")]
    if missing or unexpected or body:
        parts = []
        if body:
            k = body[0]
            parts.append(f"{len(body)} tensors differ in shape (e.g. {k}: checkpoint {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} model tensors are missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint tensors are unknown to the model (e.g. {unexpected[0]})")
        raise ValueError(f"checkpoint {str(path)!r} is not a {type(model).__name__} of this shape: {'; '.join(parts)}. "
                         "Give the model name and --model-kwargs it was trained with (its manifest or metadata "
                         "says), or leave --model out to take them from the checkpoint")
    if not keep_classifier:
        head = [k for k in own if k.startswith("head")]
    for k in head:
        state[k] = own[k]  # a new task's classifier: keep the seeded init
    model.load_state_dict(state)
    return head


def export(run_dir: Path, job, part, plan: Plan, rank: int, coord: int, is_coord: bool) -> None:
    """The fine-tuned model as one timm state dict in ``RUN_DIR/model.safetensors`` (LoRA merged)."""
    mine = {"state": {k: v.detach().cpu() for k, v in part.state_dict().items()},
            "merged": {int(l): {h: {n: t.cpu() for n, t in w.items()} for h, w in s.merged().items()}
                       for l, s in part.held()}}
    gathered = [None] * dist.get_world_size() if is_coord else None
    dist.gather_object(mine, gathered, dst=coord)
    if not is_coord:
        return
    merged: dict[int, dict] = {}
    for g in gathered:
        for l, heads in g["merged"].items():
            merged.setdefault(l, {}).update(heads)
    template = build_model(job.replace(checkpoint="none"))
    states = {r: g["state"] for r, g in enumerate(gathered)}
    state = full_state_dict(template, plan, states, coord, merged=merged)
    out = run_dir / rundir.EXPORT_FILE
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
              metadata={"model": job.model, "model_kwargs": json.dumps(job.model_kwargs)})
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, out)
