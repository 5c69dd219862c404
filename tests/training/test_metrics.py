"""The TensorBoard writer: every number of a report becomes a scalar, read back by TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cortex_rpc.training.metrics import MetricsWriter, open_wandb, report_scalars


def _read(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(log_dir)).Reload()


def test_any_metric_a_report_carries_is_written_and_reads_back(tmp_path: Path):
    writer = MetricsWriter(tmp_path / "tb")
    for it in (1, 2):
        writer.on_train_loss_report(
            {"iteration": it, "train_loss": 3.0 / it, "learning_rate": 1e-4 * it,
             "reward_margin": 0.5 * it, "peak_memory": 1.25, "note": "text is skipped"}
        )  # fmt: skip
    writer.on_val_loss_report({"iteration": 2, "val_loss": 2.5, "val_time": 0.1})
    writer.close()
    events = _read(tmp_path / "tb")
    assert set(events.Tags()["scalars"]) == {
        "loss/train", "train/learning_rate", "train/reward_margin", "train/peak_memory_gb",
        "loss/val", "val/seconds",
    }  # fmt: skip
    assert [(e.step, e.value) for e in events.Scalars("train/reward_margin")] == [
        (1, 0.5),
        (2, 1.0),
    ]
    assert events.Scalars("loss/val")[0].value == pytest.approx(2.5)


def test_a_diverged_loss_is_left_out_rather_than_breaking_the_file():
    assert report_scalars("train", {"iteration": 3, "train_loss": math.nan, "flag": True}) == {}


def test_a_resumed_writer_purges_the_replayed_steps(tmp_path: Path):
    first = MetricsWriter(tmp_path / "tb")
    for it in range(1, 6):
        first.on_train_loss_report({"iteration": it, "train_loss": float(it)})
    first.close()
    resumed = MetricsWriter(tmp_path / "tb", purge_step=4)  # checkpoint at 3
    for it in range(4, 7):
        resumed.on_train_loss_report({"iteration": it, "train_loss": 10.0 + it})
    resumed.close()
    points = [(e.step, e.value) for e in _read(tmp_path / "tb").Scalars("loss/train")]
    assert points == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0), (6, 16.0)]


def test_wandb_is_only_a_warning_when_it_is_not_installed(tmp_path: Path):
    pytest.importorskip("tensorboardX")
    try:
        import wandb  # noqa: F401
    except ImportError:
        run, why_not = open_wandb(tmp_path, "job", {})
        assert run is None and "pip install wandb" in (why_not or "")
    else:
        pytest.skip("wandb is installed here: its offline run is not created by a unit test")
