"""Fixtures for training tests: a prepared chat data directory and a job-manager factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.paths import CortexHome, write_atomic
from cortex_rpc.training.contract import JobSpec, WorkerOptions


def write_chat_data(sample: Path, directory: Path, valid: int = 4) -> Path:
    """Write train.jsonl / valid.jsonl in mlx_lm's chat shape from prompt/response records."""
    records = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
    chats = [
        {
            "messages": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["response"]},
            ]
        }
        for r in records
    ]
    directory.mkdir(parents=True, exist_ok=True)
    split = len(chats) - valid
    (directory / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats[:split]))
    (directory / "valid.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats[split:]))
    return directory


def write_spec(
    job_dir: Path,
    model: Path,
    data_dir: Path,
    config: TrainingConfig,
    output_name: str | None,
    options: WorkerOptions | None = None,
) -> JobSpec:
    """Write the spec.json a job manager would write for a worker run in ``job_dir``."""
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = JobSpec(
        job_id=job_dir.name,
        model=str(model),
        data_dir=str(data_dir),
        config=config,
        output_name=output_name,
        output_dir=str(CortexHome.default().models),
        adapter_dir=str(job_dir / "final"),
        options=options or WorkerOptions(),
    )
    write_atomic(job_dir / JobSpec.FILE, spec.to_wire())
    return spec


@pytest.fixture
def chat_data(sample_dataset_path: Path, tmp_path: Path) -> Path:
    """A data directory with 20 training and 4 validation chat records."""
    return write_chat_data(sample_dataset_path, tmp_path / "data")


def _file_digests(directory: Path) -> dict[str, tuple[int, float, bytes]]:
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime, p.read_bytes())
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.fixture
def file_digests():
    """Return size, mtime and content of each file, to prove a base model was not touched."""
    return _file_digests


@pytest.fixture
def make_chat_data(sample_dataset_path: Path):
    """Build a chat data directory anywhere (``valid`` records held out)."""

    def make(directory: Path, valid: int = 4) -> Path:
        return write_chat_data(sample_dataset_path, directory, valid)

    return make
