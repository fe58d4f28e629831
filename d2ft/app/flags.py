"""Command-line flags shared by several commands, each defined once, with its unit and check.

Strategy and solver names come from the planner's registries (``d2ft.planner``); an
unknown name is answered by the planner's own error, which lists the valid ones.
"""

from __future__ import annotations

import argparse

from ..planner import BASELINES, SOLVERS, STRATEGIES


def command(sub, name: str, fn, **kwargs) -> argparse.ArgumentParser:
    """A subcommand ``name`` run by ``fn``, its help and description ``fn``'s docstring unless given."""
    kwargs.setdefault("help", fn.__doc__)
    kwargs.setdefault("description", kwargs["help"])
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(func=fn)
    return p


def checked(parse, ok, expected: str):
    """An argparse type: ``parse`` the text, then require ``ok(value)``, else say what was ``expected``."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return convert


fraction = checked(float, lambda v: 0 < v <= 1, "a number in (0, 1] (the share of the all-FULL cost kept)")
positive_int = checked(int, lambda v: v >= 1, "a positive integer")


def _classes(text: str) -> tuple[int, ...] | None:
    """``"0-4"`` or ``"0,2,4"`` as a tuple of distinct labels in 0..999."""
    if "-" in text:
        lo, _, hi = text.partition("-")
        values = tuple(range(int(lo), int(hi) + 1)) if int(lo) <= int(hi) else ()
    else:
        values = tuple(int(v) for v in text.split(","))
    return values if values and len(set(values)) == len(values) and all(0 <= v < 1000 for v in values) else None


class_range = checked(_classes, lambda v: True, "class labels as A-B or A,B,.. (e.g. 0-4)")
positive_float = checked(float, lambda v: v > 0 and v != float("inf"), "a positive number")

_OPS = {name: "/".join(op.char for op in ops) for name, ops in STRATEGIES.items()}
STRATEGY_HELP = (", ".join(f"{name} ({ops})" for name, ops in _OPS.items()) + f", or a baseline: {', '.join(BASELINES)}")
SOLVER_HELP = f"{', '.join(SOLVERS)} (mip exact, dp the paper's two-stage heuristic, greedy value per cost)"


def add_model_cluster(p: argparse.ArgumentParser) -> None:
    """--model, --cluster, --heads-only, --dtype-bytes, --autocast, --message-dtype, --optimizer, --lora-rank (the what-if
    commands)."""
    p.add_argument("--model", default="vit_base_patch16_224",
                   help="timm model name (see `d2ft list models`) or a model.json file (default: %(default)s)")
    p.add_argument("--cluster", default="lan-4x3090",
                   help="cluster preset (see `d2ft list clusters`) or a cluster.json file (default: %(default)s)")
    p.add_argument("--heads-only", action="store_true",
                   help="subnets are attention heads only; the MLP stays whole on the coordinator")
    p.add_argument("--dtype-bytes", type=int, choices=(2, 4), default=None,
                   help="bytes per element: 2 (bf16/fp16) or 4 (fp32); default: the model's (4)")
    p.add_argument("--autocast", action="store_true",
                   help="with --dtype-bytes 2: 16 bits by autocast (PyTorch AMP): fp32 weights and gradients, the "
                        "residual stream, LayerNorm and softmax in fp32, casts priced on GPUs; default: the whole "
                        "model cast to 16 bits")
    p.add_argument("--message-dtype", choices=("fp32", "bf16", "fp16"), default=None,
                   help="element type of the messages between devices: bf16 or fp16 halve their bytes; default: "
                        "the model's dtype")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default=None,
                   help="the update priced: adamw (m and v, 8 B of fp32 state per parameter; what `d2ft run` "
                        "trains with) or sgd (with momentum, 4 B); default: the model's (adamw)")
    p.add_argument("--lora-rank", type=positive_int, default=None,
                   help="price LoRA as `d2ft run --lora` trains it: rank-r adapters on --lora-targets of every "
                        "subnet, the base frozen (no weight gradient or optimizer state for it); default: no LoRA")
    p.add_argument("--lora-targets", default="q,v",
                   help="with --lora-rank: comma-separated of q, k, v, proj, fc1, fc2 (default: q,v)")


def add_step_shape(p, micro_batches: int = 4, micro_batch_size: int = 8) -> None:
    """--micro-batches and --micro-batch-size. Defaults differ by command on purpose: the what-if
    commands price a GPU-sized step (4 x 8), ``run`` a step this machine's CPU ranks train (2 x 16)."""
    p.add_argument("--micro-batches", type=positive_int, default=micro_batches,
                   help=f"micro-batches per step (default: {micro_batches})")
    p.add_argument("--micro-batch-size", type=positive_int, default=micro_batch_size,
                   help=f"images per micro-batch (default: {micro_batch_size})")


def add_budget(p, strategy: bool = True, comm_keep: float | None = None) -> None:
    """--strategy (optionally), --solver, --keep and --comm-keep: what the knapsack is asked to do."""
    if strategy:
        p.add_argument("--strategy", default="hybrid", help=f"{STRATEGY_HELP} (default: %(default)s)")
    p.add_argument("--solver", default="dp", help=f"{SOLVER_HELP} (default: %(default)s)")
    p.add_argument("--keep", type=fraction, default=0.6,
                   help="compute keep ratio in (0, 1]: each device gets its fixed work plus this share of its "
                        "all-FULL subnet time (default: %(default)s)")
    p.add_argument("--comm-keep", type=fraction, default=comm_keep,
                   help="communication keep ratio in (0, 1]: each device's bytes per step vs all-FULL "
                        f"(default: {comm_keep if comm_keep is not None else 'none'})")


def add_seed(p, what: str = "synthetic scores and random baselines") -> None:
    p.add_argument("--seed", type=int, default=0, help=f"seed of the {what} (default: 0)")


def add_quiet(p, what: str = "no progress bar") -> None:
    """--quiet: the command prints its result only."""
    p.add_argument("--quiet", action="store_true", help=what)


def add_json(p, what: str = "one JSON object (times in s, sizes in B)") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what}")
