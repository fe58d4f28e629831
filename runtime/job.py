"""The typed ``Job``: everything one fine-tuning run needs (``runtime.run.run(job)`` runs one).

Every caller builds a ``Job``: the command line maps its flags to one, the demo, the
benchmarks and the tests build them directly, and ``RUN_DIR/job.json`` is one (what
``--resume`` and torchrun read back). A Job is frozen and keyword-only; ``__post_init__``
lists every problem at once. It round-trips through JSON (``to_dict``/``from_dict``) and
TOML (``to_toml``/``from_toml``).

A Job as written by a user leaves things open (which checkpoint, which plan);
``runtime.prepare.prepare`` resolves them against the model, the data and the cluster
before any rank starts, into a Job whose ``plan`` is a ``Plan`` and ``cluster`` a
``Cluster``. The ranks only ever see resolved Jobs.

Units: seconds (``_s``), bytes; rates are per optimizer step; keep ratios are fractions
of the all-FULL cost in (0, 1].
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from d2ft.cluster import Cluster
from d2ft.errors import raise_problems
from d2ft.plan import Plan
from d2ft.planner import check_solver, check_strategy
from d2ft.serial import toml_dumps, toml_loads

LORA_TARGETS = ("q", "k", "v", "proj", "fc1", "fc2")
"""The weights a LoRA adapter may sit on: a head's Q, K, V slices, its proj columns, its MLP slice."""
ORDERS = ("sequential", "interleaved")
"""``Job.order``: the runtime's execution orders (the simulator's ``order`` of the same names)."""
MESSAGE_DTYPES = {"fp32": 4, "bf16": 2, "fp16": 2}
"""``Job.message_dtype``: bytes per element on the wire."""
OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "constant")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True, kw_only=True)
class LoraSpec:
    """LoRA adapters on every subnet (method.md, "LoRA"): the update of a target weight is alpha / r B A."""

    rank: int = 4
    """Adapter rank r."""
    alpha: float = 8.0
    """Adapter scale alpha."""
    targets: tuple[str, ...] = ("q", "v")
    """Which weights get adapters, of ``LORA_TARGETS``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        problems = []
        if not _is_int(self.rank) or self.rank < 1:
            problems.append(f"rank must be a positive integer, got {self.rank!r}")
        if not _is_number(self.alpha) or self.alpha <= 0:
            problems.append(f"alpha must be a positive number, got {self.alpha!r}")
        bad = [t for t in self.targets if t not in LORA_TARGETS]
        if bad or not self.targets:
            problems.append(f"targets must be some of {', '.join(LORA_TARGETS)}, got {', '.join(self.targets) or 'none'}")
        raise_problems("LoRA", problems)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One D2FT fine-tuning run (module docstring). Defaults are ``d2ft run``'s."""

    # ---- model and data ----
    model: str | None = None
    """timm model name; None: the checkpoint's (with neither, the shipped backbone)."""
    model_kwargs: dict = field(default_factory=dict)
    """timm keyword arguments over the checkpoint's (img_size, num_classes, ...)."""
    checkpoint: str | None = None
    """Local weights (safetensors or torch) to start from; "none": a seeded random init; None: the
    shipped backbone when ``model`` is None, else a random init."""
    data: str = "fashion-mnist-5to9"
    """Dataset reference (``runtime.datasets.DATASETS``), or "synthetic" (timing only)."""
    augment: bool = True
    """Random 2-pixel shifts (and flips where labels allow) of training images (``runtime.data.augment_batch``)."""
    keep_classifier: bool = False
    """Keep the checkpoint's classifier when it has the task's size; by default a new task starts
    from a fresh, seeded classifier (a checkpoint's class order means nothing to another task)."""
    # ---- plan ----
    nproc: int = 4
    """Ranks (devices of the plan); rank k plays plan device k."""
    emulate_ranks: int = 0
    """With ``nproc`` 1: the plan is that of this many devices, all played by the one process
    (same placement, knapsacks, ops and sums as that many ranks; no messages, no per-rank
    timings); 0: off."""
    cluster: Cluster | str | None = None
    """The planner's and cost model's view of the ranks: a Cluster, a cluster JSON file or preset, or
    None for assumed local CPU ranks (``d2ft calibrate`` measures real ones)."""
    plan: Plan | str | None = None
    """With ``strategy`` None: a plan (or plan file) run unchanged every step. Once prepared: the
    initial plan, whose placement the whole run keeps."""
    strategy: str | None = "hybrid"
    """How plans are made during the run (``d2ft.planner.STRATEGIES`` or a baseline); None runs ``plan``."""
    solver: str = "dp"
    """Knapsack solver: mip, dp or greedy."""
    keep: float = 0.6
    """Compute keep ratio in (0, 1]."""
    comm_keep: float | None = None
    """Communication keep ratio in (0, 1], or None for no communication budget."""
    replan_every: int = 1
    """Re-plan every N steps from the measured scores; 0 plans once."""
    full_warmup: int = 0
    """The first N steps run all FULL to seed the scores."""
    micro_batches: int = 2
    """Micro-batches per step."""
    micro_batch_size: int = 16
    """Images per micro-batch."""
    schedule: tuple[Plan, ...] = ()
    """Plans to run in turn, ``schedule_steps_each`` steps each (same placement and batch shape as
    ``plan``): a measurement of many plans in one run."""
    schedule_steps_each: int = 1
    """Steps each plan of ``schedule`` runs."""
    slowdown: tuple[float, ...] | None = None
    """Per-rank compute slowdown factors (emulated heterogeneity), one per rank, each >= 1."""
    speed_oblivious: bool = False
    """Place and plan as if every rank ran at full speed (the baseline of a heterogeneity study)."""
    # ---- training ----
    steps: int = 100
    """Optimizer steps."""
    optimizer: str = "adamw"
    """adamw or sgd."""
    lr: float = 1e-3
    """Peak learning rate."""
    lr_warmup_steps: int | None = None
    """Linear warm-up steps before the cosine decay; None: 5% of ``steps``."""
    lr_schedule: str = "cosine"
    """"cosine" (warm-up, then cosine decay to 0) or "constant"."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    momentum: float = 0.0
    """SGD momentum."""
    lora: LoraSpec | None = None
    """LoRA mode: freeze the base weights, train per-subnet adapters and the classifier."""
    seed: int = 0
    """Seed of the init, data order, augmentation and plans."""
    score_decay: float = 0.9
    """Decay of the exponential moving average of the Fisher scores, in [0, 1)."""
    skip_rescale: bool = False
    """Scale a block half that runs n of its H heads by H / n, so that training sees the output
    scale evaluation (all heads) sees; False: skipped heads just contribute zero."""
    # ---- evaluation and checkpoints ----
    evaluate: bool = True
    """Whether test top-1 is measured at all."""
    eval_every: int = 0
    """Test top-1 every N steps, and always at the end; 0: at the end only."""
    eval_batch_size: int = 250
    """Images per evaluation micro-batch."""
    checkpoint_every: int = 50
    """Checkpoint every N steps, and at the end; 0: at the end only."""
    keep_checkpoints: int = 1
    """Checkpoint sets kept on disk, newest first."""
    resume: bool = False
    """Continue the run in ``out_dir`` from its last checkpoint, exactly."""
    # ---- execution ----
    message_dtype: str = "fp32"
    """Element type of the activations and gradients sent between ranks: fp32, or bf16 / fp16 (half
    the bytes; rounded on the wire, computed in fp32). The plan prices the messages it chooses."""
    order: str = "sequential"
    """Execution order of a step's micro-batches: sequential (one after another) or interleaved (every
    micro-batch in flight at once, block half by block half: runtime/interleave.py), as the simulator's
    ``order`` of the same names predicts them."""
    device: str = "cpu"
    """cpu (gloo) or cuda (NCCL, one GPU per rank by local rank)."""
    port: int | None = None
    """Rendezvous port on 127.0.0.1 for local ranks; None: a free one."""
    timeout_s: float = 120.0
    """How long a rank waits for a peer before giving up, s."""
    out_dir: str = "runs/latest"
    """The run directory (``d2ft.rundir``)."""
    label: str = "d2ft run"
    """Progress bar label."""
    progress: bool = True
    """Draw a progress bar on the coordinator."""
    # ---- recording (tests and benchmarks) ----
    timeline_steps: tuple[int, ...] = (-1,)
    """Steps recorded as ``timeline-stepN.json`` (negative: from the end)."""
    record_logits: bool = False
    """Keep every step's logits in the coordinator's rank file (parity tests)."""
    record_messages: bool = False
    """Keep every rank's messages (``d2ft.schedule.Message``) in its rank file (parity tests)."""

    def __post_init__(self) -> None:
        for name in ("schedule", "timeline_steps"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.slowdown is not None:
            object.__setattr__(self, "slowdown", tuple(float(x) for x in self.slowdown))
        raise_problems("job", self.problems())

    def problems(self) -> list[str]:
        """Every problem with the fields, each naming the field and the value."""
        p = []
        for name in ("nproc", "steps", "micro_batches", "micro_batch_size", "eval_batch_size", "keep_checkpoints",
                     "schedule_steps_each"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                p.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("replan_every", "full_warmup", "eval_every", "checkpoint_every", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                p.append(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.lr_warmup_steps is not None and (not _is_int(self.lr_warmup_steps) or self.lr_warmup_steps < 0):
            p.append(f"lr_warmup_steps must be an integer >= 0 or None, got {self.lr_warmup_steps!r}")
        for name in ("keep", "comm_keep"):
            v = getattr(self, name)
            if (v is not None or name == "keep") and not (_is_number(v) and 0 < v <= 1):
                p.append(f"{name} must be a number in (0, 1] (the share of the all-FULL cost kept), got {v!r}")
        for name in ("lr", "timeout_s"):
            if not _is_number(getattr(self, name)) or getattr(self, name) <= 0:
                p.append(f"{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("weight_decay", "momentum"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                p.append(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not _is_number(self.score_decay) or not 0 <= self.score_decay < 1:
            p.append(f"score_decay must be in [0, 1), got {self.score_decay!r}")
        for name, valid in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("device", DEVICES),
                            ("message_dtype", tuple(MESSAGE_DTYPES)), ("order", ORDERS)):
            if getattr(self, name) not in valid:
                p.append(f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if self.port is not None and not (_is_int(self.port) and 1 <= self.port <= 65535):
            p.append(f"port must be in 1-65535, got {self.port!r}")
        if not isinstance(self.model_kwargs, dict):
            p.append(f"model_kwargs must be a dict of timm keyword arguments, got {type(self.model_kwargs).__name__}")
        if not _is_int(self.emulate_ranks) or self.emulate_ranks < 0:
            p.append(f"emulate_ranks must be an integer >= 0, got {self.emulate_ranks!r}")
        elif self.emulate_ranks and (self.nproc != 1 or self.emulate_ranks < 2):
            p.append(f"emulate_ranks {self.emulate_ranks} needs nproc 1 and at least 2 emulated ranks (got nproc "
                     f"{self.nproc}); one process plays every device")
        elif self.emulate_ranks and self.slowdown is not None:
            p.append("slowdown emulates slow ranks, but emulated ranks have no time of their own; drop one of them")
        if self.slowdown is not None:
            if len(self.slowdown) != self.nproc:
                p.append(f"slowdown gives {len(self.slowdown)} factors for {self.nproc} ranks")
            if any(not math.isfinite(f) or f < 1 for f in self.slowdown):
                p.append(f"slowdown factors must be finite and >= 1, got {list(self.slowdown)}")
        for check, value in ((check_strategy, self.strategy), (check_solver, self.solver)):
            if value is not None:
                try:
                    check(value)
                except ValueError as e:
                    p.append(str(e))
        if self.strategy is None and self.plan is None:
            p.append("strategy None runs a given plan, but plan is None; give a plan or a strategy")
        if self.lora is not None and not isinstance(self.lora, LoraSpec):
            p.append(f"lora must be a LoraSpec, got {type(self.lora).__name__}")
        return p

    # ---- resolved views ----
    @property
    def prepared(self) -> bool:
        """Whether ``runtime.prepare.prepare`` has resolved this job (plan and cluster are objects)."""
        return isinstance(self.plan, Plan)

    @property
    def plan_devices(self) -> int:
        """Devices of the plan: ``emulate_ranks`` when emulating, else ``nproc``."""
        return self.emulate_ranks or self.nproc

    @property
    def batch_size(self) -> int:
        """Images per optimizer step: the plan's, once prepared."""
        return self.plan.batch_size if isinstance(self.plan, Plan) else self.micro_batches * self.micro_batch_size

    @property
    def coordinator(self) -> int:
        """The coordinator's rank: the cluster's coordinator once prepared, else 0."""
        return self.cluster.coordinator_index if isinstance(self.cluster, Cluster) else 0

    @property
    def planning_cluster(self) -> Cluster | None:
        """The cluster as the ranks run (emulated slowdown included): what predictions use."""
        if not isinstance(self.cluster, Cluster):
            return None
        return self.cluster.with_slowdown(list(self.slowdown)) if self.slowdown else self.cluster

    def replace(self, **changes) -> "Job":
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    # ---- serialisation ----
    def to_dict(self) -> dict:
        """A JSON-ready dict: Plans and Clusters as their dicts, LoRA as a dict, tuples as lists."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (Plan, Cluster)):
                v = v.to_dict()
            elif isinstance(v, LoraSpec):
                v = {"rank": v.rank, "alpha": v.alpha, "targets": list(v.targets)}
            elif f.name == "schedule":
                v = [p.to_dict() for p in v]
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict, what: str = "job") -> "Job":
        """The Job of ``to_dict``; ValueError naming unknown keys and every bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"{what}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{what}: unknown keys {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        d = dict(data)
        if isinstance(d.get("plan"), dict):
            d["plan"] = Plan.from_dict(d["plan"])
        if isinstance(d.get("cluster"), dict):
            d["cluster"] = Cluster.from_dict(d["cluster"])
        if isinstance(d.get("lora"), dict):
            d["lora"] = LoraSpec(**d["lora"])
        if "schedule" in d:
            d["schedule"] = tuple(Plan.from_dict(p) for p in d["schedule"])
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(f"{what}: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, what: str = "job") -> "Job":
        try:
            return cls.from_dict(json.loads(text), what)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None

    def to_toml(self) -> str:
        """The job as TOML (fields at None are left out: they read back as their defaults, which are None)."""
        return toml_dumps({k: v for k, v in self.to_dict().items() if v is not None or _default(k) is not None})

    @classmethod
    def from_toml(cls, text: str, what: str = "job") -> "Job":
        return cls.from_dict(toml_loads(text, what), what)

    @classmethod
    def load(cls, path: str | Path) -> "Job":
        """A job from a ``.json`` or ``.toml`` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"job file {str(path)!r} does not exist") from None
        what = f"job file {str(path)!r}"
        return cls.from_toml(text, what) if path.suffix == ".toml" else cls.from_json(text, what)


VOLATILE = ("resume", "timeout_s", "progress", "out_dir", "label", "keep_checkpoints", "port")
"""Job fields that may differ when a run is resumed."""


def _default(name: str):
    f = next(f for f in dataclasses.fields(Job) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


__all__ = ["Job", "LoraSpec", "VOLATILE"]
