"""keepBest, early stopping and the TensorBoard files, on a run whose validation loss rises.

The training set teaches one fixed answer ("zzz ..."), the validation set is the sample's
real answers: after a first improvement, every update makes validation worse. Which
iteration is best is read from the run's own curve, never hard-coded.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import EarlyStopping, TrainingConfig
from cortex_rpc.models import fine_tuned
from cortex_rpc.training import worker
from cortex_rpc.training.contract import WorkerOptions
from cortex_rpc.training.metrics import TENSORBOARD_DIR
from cortex_rpc.training.optimizers import build_optimizer, plan_schedule

from .conftest import write_spec
from .test_worker_loop import Recorder, _run_job

CONFIG = TrainingConfig(
    iterations=12, batch_size=4, learning_rate=1e-3, num_layers=2, max_seq_length=256, seed=7
)
EVERY = 2


@pytest.fixture
def rising_data(chat_data: Path) -> Path:
    """chat_data with a training split that teaches only one answer (validation rises)."""

    def chat(question: str) -> str:
        messages = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "zzz zzz zzz zzz zzz zzz"},
        ]
        return json.dumps({"messages": messages}) + "\n"

    (chat_data / "train.jsonl").write_text("".join(chat(f"Question {i}?") for i in range(8)))
    return chat_data


def _setup(model_dir: Path, data_dir: Path, config: TrainingConfig):
    model, tokenizer, _ = worker.prepare_model(str(model_dir), config)
    train_set, valid_set = worker.load_datasets(data_dir, tokenizer)
    schedule = worker.BatchSchedule(train_set, config.batch_size, config.max_seq_length, 7)
    optimizer = build_optimizer(config, plan_schedule(config))
    optimizer.init(model.trainable_parameters())
    return model, optimizer, schedule, valid_set


def _options(early: EarlyStopping | None = None) -> worker.RunOptions:
    return worker.RunOptions(
        total_iterations=CONFIG.iterations, steps_per_report=1, steps_per_eval=EVERY,
        steps_per_checkpoint=1000, batch_size=4, max_seq_length=256, seed=7,
        early_stopping=early,
    )  # fmt: skip


def _expected_stop(curve: list[tuple[int, float]], patience: int, min_delta: float) -> int:
    """The iteration at which ``patience`` evaluations in a row have not beaten the best."""
    best, stale = None, 0
    for it, loss in curve:
        if it == 0:
            continue
        stale = 0 if best is None or loss < best - min_delta else stale + 1
        best = loss if best is None else min(best, loss)
        if stale >= patience:
            return it
    return CONFIG.iterations


def test_keep_best_holds_the_lowest_validation_loss_and_survives_a_resume(
    tiny_model: Path, rising_data: Path, tmp_path: Path
):
    model, opt, schedule, valid = _setup(tiny_model, rising_data, CONFIG)
    best = worker.BestWeights()
    straight = Recorder()
    final = worker.train_loop(model, opt, schedule, valid, _options(), straight, best=best)
    iterations = [it for it, _ in straight.val]
    assert iterations == [0, *range(EVERY, CONFIG.iterations + 1, EVERY)]  # the last one too
    candidates = [(loss, it) for it, loss in straight.val if it > 0]
    lowest, at = min(candidates)
    assert best.iteration == final["bestIteration"] == at
    assert final["bestValLoss"] == lowest
    assert at != CONFIG.iterations and final["valLoss"] > lowest  # validation really rose
    assert final["stopReason"] == "completed"

    # The kept weights are the best iteration's: measured again, they give its loss.
    best.restore_into(model)
    again = worker.evaluate_views(model, valid, 4, 256)
    assert again == pytest.approx(lowest, abs=1e-5)

    # Stopped after the best and resumed: the checkpoint brings the best weights back.
    job_dir = tmp_path / "job"
    flag = worker.StopFlag()
    model, opt, schedule, valid = _setup(tiny_model, rising_data, CONFIG)
    tracked = worker.BestWeights()

    def save(state: dict) -> None:
        worker.save_checkpoint(job_dir, model, opt, {}, state, tracked)

    with pytest.raises(worker.Cancelled):
        worker.train_loop(
            model, opt, schedule, valid, _options(), Recorder(stop_at=at + 1, flag=flag),
            on_checkpoint=save, stop=flag, best=tracked,
        )  # fmt: skip
    model, opt, schedule, valid = _setup(tiny_model, rising_data, CONFIG)
    restored = worker.BestWeights()
    state = worker.load_checkpoint(worker.latest_checkpoint(job_dir), model, opt, restored)
    assert restored.iteration == at
    resumed = worker.train_loop(model, opt, schedule, valid, _options(), None, state, best=restored)
    assert resumed["bestIteration"] == at
    assert resumed["bestValLoss"] == pytest.approx(lowest, abs=1e-5)
    restored.restore_into(model)
    assert worker.evaluate_views(model, valid, 4, 256) == pytest.approx(lowest, abs=1e-5)


def test_early_stopping_fires_when_validation_stops_improving(tiny_model: Path, rising_data: Path):
    model, opt, schedule, valid = _setup(tiny_model, rising_data, CONFIG)
    straight = Recorder()
    worker.train_loop(model, opt, schedule, valid, _options(), straight)
    early = EarlyStopping(patience=2, min_delta=0.0)
    expected = _expected_stop(straight.val, early.patience, early.min_delta)
    assert expected < CONFIG.iterations  # the curve rises: it must fire before the end

    model, opt, schedule, valid = _setup(tiny_model, rising_data, CONFIG)
    stopped = Recorder()
    final = worker.train_loop(model, opt, schedule, valid, _options(early), stopped)
    assert final["iteration"] == expected and final["stopReason"] == "early-stopping"
    assert stopped.train[-1][0] == expected  # the last step trained is reported
    for (i, a), (j, b) in zip(stopped.val, straight.val, strict=False):
        assert i == j and a == pytest.approx(b, abs=1e-5)  # the same run, cut short
    # A minDelta larger than any improvement: only the first evaluation ever counts.
    model, opt, schedule, valid = _setup(tiny_model, rising_data, CONFIG)
    final = worker.train_loop(
        model, opt, schedule, valid, _options(EarlyStopping(patience=1, min_delta=100.0))
    )
    assert final["iteration"] == 2 * EVERY


def test_a_job_keeps_the_best_adapter_stops_early_and_writes_tensorboard_scalars(
    tiny_model: Path, rising_data: Path, tmp_path: Path
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = replace(
        CONFIG, early_stopping=EarlyStopping(patience=2), lr_schedule="cosine", warmup_steps=2
    )
    job_dir = tmp_path / "job"
    spec = write_spec(
        tmp_path / "spec", tiny_model, rising_data, config, "tiny-best",
        WorkerOptions(steps_per_report=1, steps_per_eval=EVERY, wandb=True),
    )  # fmt: skip
    done, events = _run_job(job_dir, spec)

    assert done.stop_reason == "early-stopping" and done.iteration < config.iterations
    assert done.kept_iteration == done.best_iteration < done.iteration
    assert "stopped early" in done.message() and "best adapter" in done.message()
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    if importlib.util.find_spec("wandb") is None:  # asked for, not installed: said, not fatal
        assert any("wandb package is not installed" in w for w in warnings)
    marker = fine_tuned.read_marker(Path(done.output_path))
    kept = marker["keptAdapter"]
    assert kept["from"] == "best" and kept["iteration"] == done.best_iteration
    assert kept["bestValLoss"] == done.best_val_loss and kept["finalValLoss"] == done.val_loss
    assert kept["finalValLoss"] > kept["bestValLoss"] and kept["stopReason"] == "early-stopping"
    assert done.evaluation["valLoss"] == done.best_val_loss
    assert done.evaluation["finalValLoss"] == done.val_loss

    # The saved model is the best adapter: loaded and measured, it has the best loss.
    model, tokenizer = fine_tuned.load_fine_tuned(done.output_path)
    _, valid = worker.load_datasets(rising_data, tokenizer)
    assert worker.evaluate_views(model, valid, 4, 256) == pytest.approx(
        done.best_val_loss, abs=1e-4
    )

    runs = list((job_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert len(runs) == 1
    events_file = EventAccumulator(str(runs[0])).Reload()
    tags = set(events_file.Tags()["scalars"])
    assert {
        "loss/train", "loss/val", "train/learning_rate", "train/tokens_per_second",
        "train/peak_memory_gb", "train/trained_tokens",
    } <= tags  # fmt: skip
    train = events_file.Scalars("loss/train")
    assert [e.step for e in train] == list(range(1, done.iteration + 1))
    assert train[-1].value == pytest.approx(done.train_loss, rel=1e-6)
    val = {e.step: e.value for e in events_file.Scalars("loss/val")}
    assert val[done.best_iteration] == pytest.approx(done.best_val_loss, rel=1e-6)
    rates = [e.value for e in events_file.Scalars("train/learning_rate")]
    assert rates[0] == 0.0 and rates[2] == pytest.approx(config.learning_rate, rel=1e-6)
