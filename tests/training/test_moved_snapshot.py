"""A fine-tune of a hub cache model keeps working after the repo moved on with the same weights.

Trained for real on snapshot A; then refs/main moves to snapshot B (a README change, the same
weight blobs) and A is pruned: listAdapters, generate, continueFrom and fuse all use B.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cortex_rpc.generation.runner import ModelRunner
from cortex_rpc.models.fine_tuned import read_marker
from cortex_rpc.models.manage import fuse_model
from cortex_rpc.models.registry import list_adapters, resolve_model
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.jobs import TrainingJobs
from cortex_rpc.training.service import start_training

from ..models.hub_cache import COMMIT_A, COMMIT_B, add_snapshot, model_files, prune

pytestmark = pytest.mark.slow

REPO = "acme/tiny-chat"


def test_a_moved_and_pruned_snapshot_with_the_same_weights(
    tiny_model_template, sample_dataset_path, cortex_home, tmp_path
):
    hub = Path(os.environ["HF_HOME"]) / "hub"
    files = model_files(tiny_model_template)
    old = add_snapshot(hub, REPO, COMMIT_A, files)
    events: list[dict] = []
    jobs = TrainingJobs(CortexHome(cortex_home), on_event=events.append)
    runner = ModelRunner(log_path=tmp_path / "generate.log")
    try:

        def train(**kwargs) -> dict:
            started = start_training(
                jobs,
                model=REPO,
                dataset=str(sample_dataset_path),
                preset="quick",
                config={"iterations": 4, "batchSize": 4, "loraRank": 4, "loraAlpha": 8},
                **kwargs,
            )
            assert jobs.wait(started["jobId"], 180)["state"] == "completed"
            return started

        train(output_name="v1")
        v1 = cortex_home / "mlx_models" / "v1"
        assert read_marker(v1)["baseModel"]["snapshot"] == COMMIT_A

        new = add_snapshot(hub, REPO, COMMIT_B, {**files, "README.md": b"a newer model card"})
        prune(old)
        assert not old.exists() and resolve_model(REPO) == new

        assert [a["name"] for a in list_adapters(REPO)["adapters"]] == ["v1"]
        reply = runner.generate(resolve_model(REPO), "What is Python?", max_tokens=4, adapter=v1)
        assert reply["tokens"] > 0
        assert runner.generate(v1, "Hello", max_tokens=2)["tokens"] > 0  # the folder alone

        train(output_name="v2", continue_from="v1")
        v2 = read_marker(cortex_home / "mlx_models" / "v2")
        assert v2["baseModel"]["snapshot"] == COMMIT_B
        assert v2["continuedFrom"]["name"] == "v1"

        fused = fuse_model("v1", "v1-fused", cortex_home / "mlx_models")
        assert Path(fused["path"], "config.json").is_file()
        assert Path(fused["baseModel"]) == new.resolve()
    finally:
        runner.close()
        jobs.shutdown()
