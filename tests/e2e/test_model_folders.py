"""listModels over stdio on the folders a Mac user has: an LM Studio folder and the HF cache."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from ..models.hub_cache import COMMIT_A, add_snapshot, model_files
from ..models.test_model_folders import write_bert
from .conftest import request

REPO = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"


@pytest.fixture
def studio(tiny_model_template, tmp_path) -> Path:
    """An LM Studio models folder (publisher/model) and a hub cache with a partial download."""
    folder = tmp_path / "lmstudio" / "models"
    shutil.copytree(tiny_model_template, folder / "lmstudio-community" / "tiny-llama-MLX")
    write_bert(folder / "BAAI" / "bge-small-en")
    files = model_files(tiny_model_template)
    weights = files.pop("model.safetensors")
    snapshot = add_snapshot(Path(os.environ["HF_HOME"]) / "hub", REPO, COMMIT_A, files)
    (snapshot.parents[1] / "blobs" / "0123abcd.incomplete").write_bytes(weights[:100])
    return folder


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "cortex_rpc"]))
async def folders_client(lsp_client: LanguageClient, studio):
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={"modelDirs": [str(studio)]},
        )
    )
    yield
    await lsp_client.shutdown_session()


async def test_list_models_finds_lm_studio_and_marks_what_cannot_train(folders_client):
    listed = await request(folders_client, "cortex/listModels", {})
    models = {m["name"]: m for m in listed["models"]}
    assert set(models) == {"lmstudio-community/tiny-llama-MLX", "BAAI/bge-small-en", REPO}

    tiny = models["lmstudio-community/tiny-llama-MLX"]
    assert tiny["trainable"] is True and "notTrainable" not in tiny
    assert tiny["source"] == "modelDirs" and tiny["category"] == "tiny"
    assert models["BAAI/bge-small-en"]["notTrainable"]["code"] == "unsupported-architecture"
    partial = models[REPO]
    assert partial["trainable"] is False and partial["source"] == "huggingface-cache"
    assert partial["notTrainable"]["code"] == "model-incomplete"

    inspected = await request(folders_client, "cortex/inspectModel", {"path": REPO})
    assert inspected["name"] == REPO and inspected["trainable"] is False
    with pytest.raises(JsonRpcException) as error:
        await request(folders_client, "cortex/proposeConfig", {"model": "BAAI/bge-small-en"})
    assert "mlx_lm cannot train model_type 'bert'" in error.value.message
