"""Model folders people have: the HF cache by repo id, moved snapshots, partial downloads,
architectures mlx_lm cannot train, and LM Studio's publisher/model layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cortex_rpc.config.proposal import propose_for_model
from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.errors import CortexError
from cortex_rpc.models.fine_tuned import (
    assemble_model,
    base_and_adapter,
    read_marker,
    resolve_fine_tuned,
)
from cortex_rpc.models.inspect import inspect_model
from cortex_rpc.models.registry import list_adapters, list_models, resolve_model
from cortex_rpc.models.trainability import mlx_lm_models
from cortex_rpc.paths import CortexHome, suggest_model_name

from .hub_cache import COMMIT_A, COMMIT_B, add_snapshot, model_files, other_weights, prune

REPO = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    """The hub cache the server reads ($HF_HOME/hub, set by the autouse cortex_home fixture)."""
    cache = Path(os.environ["HF_HOME"]) / "hub"
    cache.mkdir(parents=True)
    return cache


def fake_adapter(tmp_path: Path) -> Path:
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    (adapter / "adapters.safetensors").write_bytes(b"x" * 64)
    (adapter / "adapter_config.json").write_text(json.dumps({"num_layers": 2}))
    return adapter


def fine_tune(tmp_path: Path, base: Path, name: str = "tuned") -> Path:
    """A fine-tuned folder on ``base`` as training leaves it (a stand-in adapter)."""
    return assemble_model(
        name,
        fake_adapter(tmp_path),
        base,
        TrainingConfig(),
        {},
        None,
        {},
        CortexHome.default().models,
    )


def continue_error(model: str) -> str:
    """Return the message startTraining refuses ``continueFrom: tuned`` on ``model`` with."""
    from cortex_rpc.training.jobs import TrainingJobs
    from cortex_rpc.training.service import start_training

    jobs = TrainingJobs(CortexHome.default())
    try:
        with pytest.raises(CortexError) as error:
            start_training(
                jobs, model=model, dataset="unused.jsonl", output_name="v2", continue_from="tuned"
            )
    finally:
        jobs.shutdown()
    assert "has other contents" in error.value.message
    return error.value.message


def test_a_cache_model_is_named_by_its_repo_id_everywhere(tiny_model_template, hub, tmp_path):
    files = model_files(tiny_model_template)
    current = add_snapshot(hub, REPO, COMMIT_A, files)
    # A newer folder that refs/main does not name: the repo id still means refs/main's.
    add_snapshot(hub, REPO, COMMIT_B, files, main=False)

    assert resolve_model(REPO) == current
    inspected = inspect_model(current)
    assert inspected.name == REPO and inspected.to_wire()["trainable"] is True
    assert propose_for_model(REPO).model.name == REPO
    assert suggest_model_name(inspected.name) == "Qwen2.5-0.5B-Instruct-4bit-custom"
    [entry] = [m for m in list_models() if m.kind == "base"]
    assert (entry.name, entry.path, entry.source) == (REPO, str(current), "huggingface-cache")

    tuned = fine_tune(tmp_path, current)
    base = read_marker(tuned)["baseModel"]
    assert base["name"] == REPO and base["repoId"] == REPO and base["snapshot"] == COMMIT_A
    weights = base["weights"]["model.safetensors"]
    assert weights["blob"] and weights["size"] == len(files["model.safetensors"])
    assert base["fingerprint"]


def test_same_weights_after_refs_main_moved_and_old_snapshot_pruned(
    tiny_model_template, hub, tmp_path
):
    files = model_files(tiny_model_template)
    old = add_snapshot(hub, REPO, COMMIT_A, files)
    tuned = fine_tune(tmp_path, old)
    # The repo got a README fix: new commit, same weights; the old snapshot is pruned.
    new = add_snapshot(hub, REPO, COMMIT_B, {**files, "README.md": b"fixed typo"})
    prune(old)

    assert resolve_model(REPO) == new
    base, adapter, _marker = resolve_fine_tuned(tuned)
    assert base == new and adapter == tuned
    assert base_and_adapter(new, tuned)[:2] == (str(new.resolve()), str(tuned.resolve()))
    listed = list_adapters(REPO)
    assert [a["name"] for a in listed["adapters"]] == ["tuned"] and not listed["otherWeights"]
    [entry] = [m for m in list_models() if m.kind == "fine-tuned"]
    assert entry.error is None and entry.base_model == str(new)


def test_other_weights_say_which_snapshot_and_what_changed(tiny_model_template, hub, tmp_path):
    files = model_files(tiny_model_template)
    old = add_snapshot(hub, REPO, COMMIT_A, files)
    tuned = fine_tune(tmp_path, old)
    changed = {**files, "model.safetensors": other_weights(files["model.safetensors"])}
    new = add_snapshot(hub, REPO, COMMIT_B, changed)

    # The old snapshot is still there: the adapter works with it, not with the new one.
    assert resolve_fine_tuned(tuned)[0] == old
    with pytest.raises(CortexError) as mismatch:
        base_and_adapter(new, tuned)
    assert mismatch.value.code == "adapter-mismatch"
    assert COMMIT_A[:12] in mismatch.value.message and COMMIT_B[:12] in mismatch.value.message
    assert "model.safetensors has other contents" in mismatch.value.message
    assert f"Use that folder ({old.resolve()}) as the base" in mismatch.value.message

    assert continue_error(REPO).startswith("tuned was trained on " + REPO)

    prune(old)
    assert "which is no longer on disk" in continue_error(REPO)
    with pytest.raises(CortexError) as changed_error:
        resolve_fine_tuned(tuned)
    error = changed_error.value
    assert error.code == "base-model-changed"
    assert f"{REPO} (snapshot {COMMIT_A[:12]}), which is no longer on disk" in error.message
    assert f"refs/main now points at {REPO} (snapshot {COMMIT_B[:12]})" in error.message
    assert f"hf download {REPO} --revision {COMMIT_A}" in error.message
    assert error.data["differences"] == [
        next(d for d in error.data["differences"] if d.startswith("model.safetensors"))
    ]
    listed = list_adapters(REPO)
    assert listed["adapters"] == []
    [other] = listed["otherWeights"]
    assert other["name"] == "tuned" and other["message"] == error.message


def test_a_marker_from_before_weights_were_recorded(tiny_model_template, hub, tmp_path):
    files = model_files(tiny_model_template)
    old = add_snapshot(hub, REPO, COMMIT_A, files)
    tuned = fine_tune(tmp_path, old)
    marker = read_marker(tuned)
    marker["baseModel"] = {"path": str(old), "name": COMMIT_A}  # as cortex-rpc 0.1 wrote it
    (tuned / "fine-tuned.marker").write_text(json.dumps(marker))
    new = add_snapshot(hub, REPO, COMMIT_B, files)

    # While the old snapshot exists its weights are read, so the new one is recognised.
    assert [a["name"] for a in list_adapters(REPO)["adapters"]] == ["tuned"]
    assert base_and_adapter(new, tuned)[0] == str(new.resolve())
    prune(old)
    with pytest.raises(CortexError) as error:
        resolve_fine_tuned(tuned)
    assert error.value.code == "base-model-changed"
    assert "before cortex-rpc recorded weights" in error.value.message


def test_a_plain_base_folder_is_still_found_by_its_path(tiny_model, tmp_path):
    tuned = fine_tune(tmp_path, tiny_model)
    assert resolve_fine_tuned(tuned)[0] == tiny_model.resolve()
    assert [a["name"] for a in list_adapters(str(tiny_model))["adapters"]] == ["tuned"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(CortexError) as error:
        base_and_adapter(other, tuned)
    assert (
        error.value.code == "adapter-mismatch" and str(tiny_model.resolve()) in error.value.message
    )

    # The base folder's weights replaced in place: said, not silently used.
    weights = tiny_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" " * 8)
    with pytest.raises(CortexError) as changed:
        resolve_fine_tuned(tuned)
    assert changed.value.code == "base-model-changed"
    assert "model.safetensors changed size" in changed.value.message
    assert "Restore the weights it was trained on" in changed.value.message


def test_a_partial_download_is_listed_as_not_trainable_and_refused(
    tiny_model_template, hub, tmp_path
):
    files = model_files(tiny_model_template)
    weights = files.pop("model.safetensors")
    snapshot = add_snapshot(hub, REPO, COMMIT_A, files)
    (snapshot.parents[1] / "blobs" / "deadbeef.incomplete").write_bytes(weights[:1000])

    [entry] = list_models()
    wire = entry.to_wire()
    assert wire["trainable"] is False and wire["notTrainable"]["code"] == "model-incomplete"
    assert "download of " + REPO in wire["notTrainable"]["message"]
    assert "blobs/*.incomplete" in wire["notTrainable"]["message"]
    assert f"hf download {REPO}" in wire["notTrainable"]["message"]
    with pytest.raises(CortexError) as error:
        propose_for_model(REPO)
    assert error.value.code == "model-incomplete"


def test_missing_shards_are_not_trainable(tiny_model, tmp_path):
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (tiny_model / "model.safetensors").rename(tiny_model / "model-00001-of-00002.safetensors")
    (tiny_model / "model.safetensors.index.json").write_text(json.dumps(index))

    inspected = inspect_model(tiny_model)  # listed with its size and parameters, not an error
    assert inspected.parameters > 0 and inspected.parameter_source != "safetensors"
    assert inspected.not_trainable.code == "model-incomplete"
    assert "model-00002-of-00002.safetensors" in inspected.not_trainable.message
    with pytest.raises(CortexError) as error:
        propose_for_model(str(tiny_model))
    assert error.value.code == "model-incomplete"


def write_bert(directory: Path) -> Path:
    """A BERT embedding model folder: config.json and a real safetensors file."""
    import mlx.core as mx

    directory.mkdir(parents=True)
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 100,
    }
    (directory / "config.json").write_text(json.dumps(config))
    mx.save_safetensors(
        str(directory / "model.safetensors"),
        {"embeddings.word_embeddings.weight": mx.zeros((100, 32))},
    )
    return directory


def test_an_architecture_mlx_lm_cannot_train_is_listed_and_refused(tmp_path, cortex_home):
    from cortex_rpc.training.jobs import TrainingJobs
    from cortex_rpc.training.service import start_training

    bert = write_bert(tmp_path / "models" / "bge-small")
    [entry] = list_models([str(tmp_path / "models")])
    assert entry.name == "bge-small" and entry.kind == "base"
    assert entry.not_trainable.code == "unsupported-architecture"
    assert "'bert' (BertModel)" in entry.not_trainable.message
    with pytest.raises(CortexError) as error:
        propose_for_model(str(bert))
    assert error.value.code == "unsupported-architecture"

    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "response": "a"}) + "\n" for i in range(8))
    )
    jobs = TrainingJobs(CortexHome(cortex_home))
    try:
        with pytest.raises(CortexError) as refused:
            start_training(jobs, model=str(bert), dataset=str(data), output_name="bert-custom")
    finally:
        jobs.shutdown()
    assert refused.value.code == "unsupported-architecture"
    assert jobs.list_jobs() == []


def test_mlx_lm_model_types_are_read_without_importing_it():
    known = mlx_lm_models()
    assert known.module_for({"model_type": "llama"}) == "llama"
    assert known.module_for({"model_type": "mistral"}) == "llama"  # mlx_lm's remapping
    assert known.module_for({"model_type": "bert"}) is None
    assert known.module_for({}) is None
    import subprocess
    import sys

    probe = (
        "import sys; from cortex_rpc.models.trainability import mlx_lm_models; "
        "assert mlx_lm_models().module_for({'model_type': 'qwen2'}) == 'qwen2'; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_lm_studio_publisher_model_layout(tiny_model_template, tmp_path, monkeypatch):
    import shutil

    studio = tmp_path / "lmstudio-models"
    shutil.copytree(tiny_model_template, studio / "mlx-community" / "tiny-llama-4bit")
    (studio / "lmstudio-community" / "gguf-only").mkdir(parents=True)  # no config.json
    (studio / ".internal").mkdir()

    [entry] = list_models([str(studio)])
    assert (entry.name, entry.source, entry.kind) == (
        "mlx-community/tiny-llama-4bit",
        "modelDirs",
        "base",
    )
    assert entry.not_trainable is None
    assert resolve_model("mlx-community/tiny-llama-4bit", [str(studio)]) == Path(entry.path)

    # LM Studio's default folder is searched when it exists, without any modelDirs.
    home = tmp_path / "home"
    shutil.copytree(studio, home / ".lmstudio" / "models")
    monkeypatch.setenv("HOME", str(home))
    [found] = list_models()
    assert (found.name, found.source) == ("mlx-community/tiny-llama-4bit", "lmstudio")
