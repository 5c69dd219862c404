"""Calibrated estimates: the store, a second estimate from a first run, memory and refusal."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from cortex_rpc.config.calibration import (
    CalibrationRun,
    RunMeasurement,
    RunShape,
    calibration_path,
    load_calibration,
    record_run,
)
from cortex_rpc.config.estimate import UNCALIBRATED, estimate_time, prior_time
from cortex_rpc.config.proposal import current_machine, propose_for_model
from cortex_rpc.config.smart import MachineProfile
from cortex_rpc.errors import CortexError
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.jobs import TrainingJobs
from cortex_rpc.training.service import start_training

SHAPE = RunShape(
    backend="cpu",
    method="sft",
    fine_tune_type="lora",
    parameters=1_443_072,
    size_bytes=5_774_402,
    layers=2,
    trained_layers=2,
    hidden_size=256,
    vocab_size=1024,
    bytes_per_parameter=4.0,
    quantization_bits=None,
    lora_rank=16,
    batch_size=4,
    seq_length=65,
    tokens_per_step=110.3,
    iterations=420,
    evals=11,
    val_tokens_per_eval=55.2,
    val_batches_per_eval=1,
)


def measured(**changes) -> RunMeasurement:
    values = dict(
        wall_seconds=30.0,
        fixed_seconds=9.0,
        step_seconds=0.048,
        eval_seconds=0.84,
        peak_memory_bytes=27_915_956,
        tokens_per_second=2300.0,
    )
    return RunMeasurement(**{**values, **changes})


def test_store_round_trips_and_keeps_the_newest(tmp_path: Path):
    run = CalibrationRun(shape=SHAPE, measured=measured(), estimated_seconds=8.0)
    record_run(tmp_path, run)
    record_run(tmp_path, replace(run, measured=measured(wall_seconds=31.0)))
    loaded = load_calibration(tmp_path)
    assert [r.measured.wall_seconds for r in loaded.runs] == [30.0, 31.0]
    assert loaded.runs[0] == run
    # Written atomically: no temp file is left beside it, and it is plain JSON.
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert json.loads(calibration_path(tmp_path).read_text())["version"] == 1


def test_concurrent_records_lose_nothing(tmp_path: Path):
    run = CalibrationRun(shape=SHAPE, measured=measured())
    threads = [threading.Thread(target=record_run, args=(tmp_path, run)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(load_calibration(tmp_path).runs) == 8


@pytest.mark.parametrize("content", ["{not json", '{"runs": [{"shape": 3}]}', "[]"])
def test_a_corrupt_file_counts_as_no_calibration_and_is_replaced(tmp_path: Path, content: str):
    calibration_path(tmp_path).write_text(content)
    loaded = load_calibration(tmp_path)
    assert loaded.runs == () and "corrupt" in loaded.problem
    assert (tmp_path / "calibration.json.corrupt").read_text() == content
    record_run(tmp_path, CalibrationRun(shape=SHAPE, measured=measured()))
    assert len(load_calibration(tmp_path).runs) == 1


def test_a_second_estimate_uses_the_first_run(tmp_path: Path):
    parts, basis, runs = estimate_time(SHAPE, load_calibration(tmp_path))
    assert basis.startswith(UNCALIBRATED) and "GFLOP/s" in basis
    assert runs == 0 and parts == prior_time(SHAPE)
    record_run(tmp_path, CalibrationRun(shape=SHAPE, measured=measured()))
    parts, basis, runs = estimate_time(SHAPE, load_calibration(tmp_path))
    assert runs == 1 and basis.startswith("calibrated from 1 run(s) on this machine")
    # The same shape: each part is what the run measured.
    assert parts.fixed == pytest.approx(9.0)
    assert parts.steps == pytest.approx(0.048 * 420)
    assert parts.evals == pytest.approx(0.84)
    # Another backend or method is not calibrated by it.
    other = replace(SHAPE, method="dpo")
    assert estimate_time(other, load_calibration(tmp_path))[2] == 0


def test_a_bigger_model_is_scaled_from_its_nearest_neighbour(tmp_path: Path):
    bigger = replace(SHAPE, parameters=SHAPE.parameters * 3, size_bytes=SHAPE.size_bytes * 3)
    record_run(tmp_path, CalibrationRun(shape=SHAPE, measured=measured()))
    calibrated, _, _ = estimate_time(bigger, load_calibration(tmp_path))
    prior = prior_time(bigger)
    # The machine measured 1.x-2x the prior on the small model: the bigger one moves with it.
    factor = 0.048 / (prior_time(SHAPE).steps / 420)
    assert calibrated.steps == pytest.approx(prior.steps * factor)


def test_proposal_says_its_basis_then_uses_a_recorded_job(
    tiny_model: Path, sample_dataset_path: Path, cortex_home: Path
):
    home = CortexHome(cortex_home)
    first = propose_for_model(str(tiny_model), dataset=str(sample_dataset_path), home=home)
    assert first.estimate.basis.startswith(UNCALIBRATED)
    assert first.estimate.calibrated_runs == 0
    record_run(
        cortex_home, CalibrationRun(shape=first.estimate.shape, measured=measured(wall_seconds=40))
    )
    # The machine as it is, but as if nobody else used the CPU (the load would scale it).
    quiet = replace(current_machine(home), load_per_core=None)
    second = propose_for_model(str(tiny_model), dataset=str(sample_dataset_path), machine=quiet)
    assert second.estimate.calibrated_runs == 1
    assert second.estimate.basis.startswith("calibrated from 1 run(s) on this machine")
    shape = first.estimate.shape
    expected = 9.0 + 0.048 * shape.iterations + (0.84 if shape.evals else 0.0)
    assert second.estimate.seconds == pytest.approx(expected, rel=1e-6)
    assert second.estimate.peak_memory_bytes == pytest.approx(27_915_956, rel=1e-6)
    assert second.to_wire()["estimate"]["calibratedRuns"] == 1


def test_a_run_that_cannot_fit_is_refused_before_it_starts(
    tiny_model: Path, sample_dataset_path: Path, cortex_home: Path
):
    jobs = TrainingJobs(CortexHome(cortex_home))
    machine = MachineProfile(
        backend="cpu", usable_memory_bytes=64 * 1024 * 1024, memory_source="injected for a test"
    )
    with pytest.raises(CortexError) as error:
        start_training(
            jobs,
            model=str(tiny_model),
            dataset=str(sample_dataset_path),
            output_name="too-big",
            config={"iterations": 4},
            machine=machine,
        )
    assert error.value.code == "insufficient-memory"
    assert "injected for a test" in error.value.message
    assert "lower batchSize or maxSeqLength" in error.value.message
    assert error.value.data["neededBytes"] > error.value.data["budgetBytes"]
    assert not (cortex_home / "jobs").exists() or not list((cortex_home / "jobs").iterdir())


def test_memory_fitting_steps_down_what_the_user_did_not_set(
    tiny_model: Path, sample_dataset_path: Path, cortex_home: Path
):
    home = CortexHome(cortex_home)
    loose = propose_for_model(str(tiny_model), dataset=str(sample_dataset_path), home=home)
    eight = propose_for_model(
        str(tiny_model),
        dataset=str(sample_dataset_path),
        home=home,
        overrides={"quantizationBits": 8},
    )
    assert eight.memory["neededBytes"] < loose.memory["neededBytes"]
    # Enough only once the base is quantized to 8 bits: the fit quantizes and says why.
    tight = MachineProfile(
        "cpu", int((eight.memory["neededBytes"] + 10) / 0.85) + 1, memory_source="test"
    )
    fitted = propose_for_model(
        str(tiny_model), dataset=str(sample_dataset_path), home=home, machine=tight
    )
    assert fitted.fits_in_memory and fitted.config.quantization_bits == 8
    line = next(e for e in fitted.explanations if e.startswith("quantizationBits 8:"))
    assert "memory fit 8 (memory:" in line
    # The same budget with 8-bit quantization refused by the user: not applied.
    kept = propose_for_model(
        str(tiny_model),
        dataset=str(sample_dataset_path),
        home=home,
        machine=tight,
        overrides={"quantizationBits": None, "gradCheckpoint": False, "batchSize": 4},
    )
    assert kept.config.quantization_bits is None and not kept.fits_in_memory


def test_the_load_of_a_shared_machine_scales_cpu_estimates(tmp_path: Path):
    busy = measured(load_per_core=2.0)  # measured while 2 runnable threads shared each core
    record_run(tmp_path, CalibrationRun(shape=SHAPE, measured=busy))
    quiet, _, _ = estimate_time(SHAPE, load_calibration(tmp_path), load=0.5)
    assert quiet.steps == pytest.approx(0.048 * 420 / 2)
    again, basis, _ = estimate_time(SHAPE, load_calibration(tmp_path), load=3.0)
    assert again.steps == pytest.approx(0.048 * 420 / 2 * 3)
    assert "x3.0 for the current load (3.0 runnable threads per core)" in basis
    # A GPU's estimate does not move with the CPU load.
    metal = replace(SHAPE, backend="metal")
    assert estimate_time(metal, None, load=3.0)[0] == estimate_time(metal, None, load=None)[0]
