"""Training scalars for TensorBoard (tensorboardX event files) and, when opted in, W&B offline.

``MetricsWriter`` is one more mlx_lm-style callback: every numeric field of a train or
validation report becomes a scalar at its iteration, so a metric the loop starts reporting
later (preference training's reward margins) shows up without a change here. The files live
in the job folder (``JOB/tensorboard``); ``tensorboard --logdir $CORTEX_HOME/jobs`` shows
every job as a run.

W&B is never required and never goes online by itself: it is used only when the job asked for
it (``options.wandb``) and the ``wandb`` package is importable, and then in offline mode
unless the user set ``WANDB_MODE`` themselves (``wandb sync`` uploads an offline run later).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"

# Report keys with a tag of their own; any other number goes under train/ or val/.
_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "peak_memory": "train/peak_memory_gb",
    "val_time": "val/seconds",
}


def report_scalars(prefix: str, info: dict[str, Any]) -> dict[str, float]:
    """Return the TensorBoard tags and values of one report (its numbers but the iteration)."""
    scalars = {}
    for key, value in info.items():
        if key == "iteration" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue  # a diverged loss: TensorBoard cannot draw it either
        scalars[_TAGS.get(key, f"{prefix}/{key}")] = float(value)
    return scalars


class MetricsWriter:
    """Writes each report's scalars to TensorBoard event files (and a W&B run, if given)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None, wandb_run: Any = None):
        from tensorboardX import SummaryWriter

        # purge_step: a resumed run replays the steps after its checkpoint; TensorBoard then
        # drops the earlier run's events from that step on instead of drawing them twice.
        # A suffix that is unique and sorts by time: the file name has only the second it was
        # opened in, so a resume within that second would otherwise overwrite the first run's
        # file, and readers take the files in name order (the purge applies to earlier ones).
        self.writer = SummaryWriter(
            logdir=str(log_dir), purge_step=purge_step, filename_suffix=f".{time.time_ns()}"
        )
        self.wandb_run = wandb_run

    def _write(self, prefix: str, info: dict[str, Any]) -> None:
        step = int(info["iteration"])
        scalars = report_scalars(prefix, info)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        if self.wandb_run is not None and scalars:
            self.wandb_run.log(scalars, step=step)

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        """Record a training report (loss, learning rate, tokens/s, peak memory, ...)."""
        self._write("train", info)

    def on_val_loss_report(self, info: dict[str, Any]) -> None:
        """Record a validation report."""
        self._write("val", info)
        self.writer.flush()  # evaluations are rare: a watcher sees them at once

    def close(self) -> None:
        """Flush and close the event file (and finish the W&B run)."""
        self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def open_wandb(job_dir: Path, job_id: str, config: dict[str, Any]) -> tuple[Any, str | None]:
    """Return (a W&B run in ``job_dir``, None), or (None, why not) when wandb is missing.

    Offline unless the user's environment sets ``WANDB_MODE``; the project is
    ``WANDB_PROJECT`` or cortex-rpc, the run id the job id (a resumed job continues its run).
    """
    try:
        import wandb
    except ImportError:
        return None, (
            "W&B logging was asked for but the wandb package is not installed "
            "(pip install wandb); TensorBoard logs are written as always."
        )
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT") or "cortex-rpc",
        id=job_id,
        name=job_id,
        dir=str(job_dir),
        mode=os.environ.get("WANDB_MODE") or "offline",
        config=config,
        resume="allow",
    )
    return run, None
