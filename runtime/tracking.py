"""Experiment tracking beside ``metrics.jsonl``: ``metrics.csv`` always, TensorBoard scalars when installed.

The coordinator's ``Tracker`` takes every step's metrics line. ``metrics.csv`` is rewritten
from ``metrics.jsonl`` at every checkpoint and at the end (so a resumed run's table is cut
back with its metrics); TensorBoard event files go into RUN_DIR itself (so ``tensorboard
--logdir runs/`` names each run by its folder) when the ``tensorboard`` package is installed (``pip install d2ft[tracking]``; the Makefile installs
it), and a resumed run purges the events after its checkpoint, as ``SummaryWriter`` does with
``purge_step`` (a run that starts again from step 0 drops all earlier events). Emulated ranks
send no message, so their runs log no measured bytes (their planned figures are logged).
"""

from __future__ import annotations

from pathlib import Path

from d2ft import rundir

SCALARS = (  # TensorBoard tag, metrics.jsonl key (units: s, B, fractions)
    ("train/loss", "loss"), ("train/lr", "lr"), ("eval/top1", "top1"),
    ("time/step_s", "step_time_s"), ("time/measured_compute_s", "measured_compute_s"),
    ("time/predicted_compute_s", "predicted_compute_s"),
    ("savings/compute_planned", "predicted_compute_saving"), ("savings/comm_planned", "predicted_comm_saving"),
    ("bytes/sent_measured", "measured_sent_bytes"), ("bytes/sent_predicted", "predicted_sent_bytes"),
    ("ops/full", "n_full"), ("ops/forward_only", "n_forward_only"), ("ops/skip", "n_skip"),
)


class Tracker:
    """The coordinator's tracking of one run from step ``start`` on."""

    def __init__(self, run_dir: str | Path, start: int = 0, messages: bool = True) -> None:
        self.run_dir, self.messages = Path(run_dir), messages
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is not installed: metrics.csv only
            self.writer = None
        else:
            self.writer = SummaryWriter(str(self.run_dir), purge_step=start)

    def step(self, line: dict) -> None:
        """One metrics line (``runtime.measure.metrics_line``)."""
        if self.writer is None:
            return
        for tag, key in SCALARS:
            if line.get(key) is not None and (self.messages or key != "measured_sent_bytes"):
                self.writer.add_scalar(tag, line[key], line["step"])
        if self.messages and line.get("full_sent_bytes"):  # bytes are exact: measured against the all-FULL plan's
            self.writer.add_scalar("savings/comm_measured", 1 - line["measured_sent_bytes"] / line["full_sent_bytes"],
                                   line["step"])

    def flush(self) -> None:
        """Brings metrics.csv and the event files up to date (at a checkpoint)."""
        rundir.write_metrics_csv(self.run_dir)
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


__all__ = ["SCALARS", "Tracker"]
