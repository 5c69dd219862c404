"""The short progress lines editors show, and the $/progress steps derived from events."""

from __future__ import annotations

from cortex_rpc.training.service import progress_message, work_done_update
from cortex_rpc.units import human_bytes, human_duration, human_params


def test_running_payload_reads_like_the_guide():
    payload = {
        "state": "running",
        "epoch": 1.25,
        "totalEpochs": 4,
        "iteration": 25,
        "totalIterations": 80,
        "trainLoss": 0.8542,
        "etaSeconds": 125,
    }
    assert progress_message(payload) == "Epoch 2/4 · step 25/80 · loss 0.854 · ETA 2m 05s"
    update = work_done_update(payload)
    assert update.kind == "report" and update.percentage == 31


def test_epoch_is_clamped_to_the_total():
    payload = {
        "state": "running",
        "epoch": 4.0,
        "totalEpochs": 4,
        "iteration": 80,
        "totalIterations": 80,
    }
    assert progress_message(payload).startswith("Epoch 4/4")
    assert work_done_update(payload).percentage == 100


def test_terminal_states_end_the_progress_with_their_message():
    for state in ("completed", "failed", "cancelled", "interrupted"):
        update = work_done_update({"state": state, "message": f"It {state}"})
        assert update.kind == "end" and update.message == f"It {state}"


def test_units():
    assert human_params(140_000) == "140K"
    assert human_params(7_200_000_000) == "7.2B"
    assert human_params(None) == "?"
    assert human_bytes(999) == "999 B"
    assert human_bytes(2_300_000) == "2.3 MB"
    assert human_bytes(14.5e9) == "14.5 GB"
    assert human_duration(42) == "42s"
    assert human_duration(3725) == "1h 02m"


def test_memory_failures_get_advice():
    from cortex_rpc.training.worker import describe_failure

    code, message = describe_failure(RuntimeError("[metal::malloc] Attempting to allocate 9 GB"))
    assert code == "out-of-memory" and "Quick preset" in message and "4-bit" in message
    assert describe_failure(MemoryError())[0] == "out-of-memory"
    assert describe_failure(ValueError("bad shape")) == ("training-failed", "ValueError: bad shape")


def test_disk_full_failures_say_so():
    import errno

    from cortex_rpc.training.worker import describe_failure

    assert describe_failure(OSError(errno.ENOSPC, "No space left on device"))[0] == "disk-full"
    code, message = describe_failure(RuntimeError("[write] Unable to write 2809 bytes to file."))
    assert code == "disk-full" and "resume" in message
