"""The worker's measured timing: steady steps, validation passes, the ETA, the calibration record."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cortex_rpc.config.calibration import load_calibration
from cortex_rpc.config.proposal import propose_for_model
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.contract import Done, RunTiming
from cortex_rpc.training.jobs import ESTIMATE_FILE, TrainingJobs, calibration_run
from cortex_rpc.training.service import start_training
from cortex_rpc.training.timing import StepTimer
from tests.config.test_estimates import SHAPE


def test_eta_leaves_out_the_compiling_first_window_and_counts_passes_left():
    timer = StepTimer(total_iterations=100, steps_per_eval=10)
    timer.window(10, iterations_per_second=2.0)  # 5 s: compilation in the first window
    assert timer.step_seconds() == pytest.approx(0.5)  # only one window: it is all there is
    timer.evaluation(1.0)
    timer.window(20, iterations_per_second=10.0)  # 1 s for 10 steady steps
    assert timer.step_seconds() == pytest.approx(0.1)
    # 80 steps x 0.1 s, plus the passes at 30, 40, ..., 100: 8 x 1 s.
    assert timer.evals_left(20) == 8
    assert timer.eta(20) == pytest.approx(8.0 + 8.0)
    summary = timer.summary(peak_memory_bytes=123, tokens_per_second=50.0)
    assert (summary.steps, summary.evals) == (20, 1)
    assert summary.compile_seconds == pytest.approx(6.0 - 0.1 * 20)
    assert RunTiming.from_wire(summary.to_wire()) == summary


def test_no_validation_means_no_passes_left():
    timer = StepTimer(total_iterations=30, steps_per_eval=5, has_validation=False)
    timer.window(5, 5.0)
    assert timer.evals_left(5) == 0 and timer.eta(5) == pytest.approx(25 * 0.2)


def test_resumed_or_estimate_less_jobs_are_not_recorded(tmp_path: Path):
    timing = RunTiming(steps=5, step_seconds=0.1, peak_memory_bytes=1).to_wire()
    assert calibration_run(tmp_path, Done(timing=timing), 10.0) is None  # no estimate.json
    shape = replace(SHAPE, iterations=10).to_wire()
    (tmp_path / ESTIMATE_FILE).write_text(json.dumps({"shape": shape}))
    assert calibration_run(tmp_path, Done(timing=timing), 10.0) is None  # 5 of 10 steps


@pytest.mark.slow
def test_a_finished_job_calibrates_the_next_estimate(
    tiny_model: Path, sample_dataset_path: Path, cortex_home: Path
):
    home = CortexHome(cortex_home)
    jobs = TrainingJobs(home)
    config = {"iterations": 12, "batchSize": 4}
    started = start_training(
        jobs,
        model=str(tiny_model),
        dataset=str(sample_dataset_path),
        output_name="calibrated",
        preset="quick",
        config=config,
    )
    assert started["estimate"]["basis"].startswith("uncalibrated FLOP model")
    assert jobs.wait(started["jobId"], 180)["state"] == "completed"
    result = json.loads((cortex_home / "jobs" / started["jobId"] / "result.json").read_text())
    timing = RunTiming.from_wire(result["timing"])
    assert timing.steps == 12 and timing.step_seconds > 0 and timing.peak_memory_bytes > 0
    runs = load_calibration(cortex_home).runs
    assert len(runs) == 1 and runs[0].measured.peak_memory_bytes == timing.peak_memory_bytes
    assert runs[0].measured.wall_seconds >= timing.train_seconds
    # The uncalibrated memory estimate is within 20 % of the measured peak (MLX's peaks for
    # a fixed shape repeat byte for byte, so this is no timing assertion).
    ratio = started["estimate"]["peakMemoryBytes"] / timing.peak_memory_bytes
    assert 0.8 <= ratio <= 1.2, ratio
    second = propose_for_model(
        str(tiny_model), dataset=str(sample_dataset_path), preset="quick", overrides=config,
        home=home,
    )  # fmt: skip
    assert second.estimate.calibrated_runs == 1
    assert second.estimate.basis.startswith("calibrated from 1 run(s) on this machine (one of")
    assert second.estimate.peak_memory_bytes == pytest.approx(timing.peak_memory_bytes, rel=1e-6)
