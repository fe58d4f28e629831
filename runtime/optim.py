"""Optimizers and the learning-rate schedule of a fine-tuning job."""

from __future__ import annotations

import math

import torch


def make_optimizer(params, job) -> torch.optim.Optimizer:
    """The job's optimizer over ``params``: AdamW (Loshchilov & Hutter, ICLR 2019) or SGD with momentum."""
    if job.optimizer == "sgd":
        return torch.optim.SGD(params, lr=job.lr, momentum=job.momentum)
    if job.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=job.lr, weight_decay=job.weight_decay)
    raise ValueError(f"unknown optimizer {job.optimizer!r}; valid: sgd, adamw")


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0 (Loshchilov & Hutter, SGDR, 2017).

    >>> lr_at(0, 100, 10, 1.0), lr_at(10, 100, 10, 1.0), round(lr_at(55, 100, 10, 1.0), 3)
    (0.1, 1.0, 0.5)
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def lr_of(job, step: int) -> float:
    """The job's learning rate at ``step``: its schedule, with warm-up ``lr_warmup_steps`` (default 5% of steps)."""
    if job.lr_schedule == "constant":
        return job.lr
    return lr_at(step, job.steps, job.lr_warmup_steps or max(job.steps // 20, 1), job.lr)
