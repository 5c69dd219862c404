"""Shared fixtures: a tiny generated model and an isolated CORTEX_HOME, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cortex_rpc.accel import preload_fast_blas

# Tests that train import mlx in-process; bind it to the fast BLAS first, as the worker does.
preload_fast_blas()


@pytest.fixture(scope="session")
def tiny_model_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama model generated once per test session (do not modify it)."""
    from cortex_rpc.models.tiny import generate_tiny_model

    return generate_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def tiny_model(tiny_model_template: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model that a test may modify."""
    target = tmp_path / "tiny-llama"
    shutil.copytree(tiny_model_template, target)
    return target


@pytest.fixture(autouse=True)
def cortex_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CORTEX_HOME for each test, so no test touches ~/.cortex."""
    home = tmp_path / "cortex-home"
    home.mkdir()
    monkeypatch.setenv("CORTEX_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return home


@pytest.fixture
def sample_dataset_path() -> Path:
    """The bundled sample dataset shipped with the package."""
    from importlib import resources

    return Path(str(resources.files("cortex_rpc.data").joinpath("sample_dataset.jsonl")))
