"""ModelRunner: text from a warm worker, for a base model and a fine-tuned one."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.generation.runner import ModelRunner
from cortex_rpc.training import worker
from cortex_rpc.workers import EventWriter

from .conftest import write_spec

pytestmark = pytest.mark.slow


def test_generate_streams_text_and_survives_a_worker_crash(
    tiny_model: Path, chat_data: Path, tmp_path: Path
):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    config = TrainingConfig(iterations=2, batch_size=4, num_layers=2, max_seq_length=256)
    write_spec(job_dir, tiny_model, chat_data, config, "tiny-chat")
    out = worker.run_job(job_dir, EventWriter(None), worker.StopFlag()).output_path

    runner = ModelRunner(log_path=tmp_path / "generate.log")
    try:
        chunks: list[str] = []
        result = runner.generate(
            tiny_model, "What is Python?", max_tokens=8, on_chunk=chunks.append
        )
        assert result["tokens"] > 0 and isinstance(result["text"], str)
        assert "".join(chunks) == result["text"]
        pid = runner._worker.pid

        # The fine-tuned folder alone is enough: its marker names the base.
        tuned = runner.generate(out, "What is Python?", max_tokens=8)
        assert tuned["tokens"] > 0
        assert runner._worker.pid == pid  # same warm worker

        runner._worker.process.kill()
        runner._worker.process.wait()
        again = runner.generate(tiny_model, "Hello", max_tokens=4)
        assert again["tokens"] > 0 and runner._worker.pid != pid
    finally:
        runner.close()


def test_a_comparison_stops_between_generations_when_cancelled(tiny_model: Path, tmp_path: Path):
    import threading

    from cortex_rpc.errors import CortexError
    from cortex_rpc.generation.runner import compare_adapters

    runner = ModelRunner(log_path=tmp_path / "generate.log")
    cancel = threading.Event()
    seen: list[tuple[int, int]] = []

    def on_output(done: int, total: int) -> None:
        seen.append((done, total))
        cancel.set()  # as if the client cancelled while the first answer was computed

    try:
        with pytest.raises(CortexError) as error:
            compare_adapters(
                runner,
                tiny_model,
                [],
                ["one", "two", "three"],
                max_tokens=2,
                cancel=cancel,
                on_output=on_output,
            )
    finally:
        runner.close()
    assert error.value.code == "cancelled"
    assert "after 1 of 3" in error.value.message
    assert seen == [(1, 3)]
