"""cortex/exportModel over real stdio: the reply, its $/progress, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pygls.exceptions import JsonRpcException

from tests.families import build_family
from tests.models.test_export import make_fine_tune

from .conftest import request

pytestmark = pytest.mark.slow


async def test_export_hf_reports_progress_and_verification(client, cortex_home, tmp_path):
    base = build_family("qwen3", tmp_path / "qwen3")
    make_fine_tune(base, cortex_home / "mlx_models", "qwen3-ft")
    result = await request(
        client,
        "cortex/exportModel",
        {"model": "qwen3-ft", "target": "hf", "workDoneToken": "export-1"},
    )
    assert result["target"] == "hf" and result["name"] == "qwen3-ft-hf"
    assert Path(result["path"]) == cortex_home / "exports" / "qwen3-ft-hf"
    assert "model.safetensors" in result["files"]
    assert result["verification"]["status"] == "passed"
    assert result["verification"]["maxLogitDiff"] <= 1e-3
    kinds = [getattr(r, "kind", None) for r in client.progress_reports["export-1"]]
    assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds

    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/exportModel", {"model": "qwen3-ft", "target": "hf"})
    assert "already exists" in str(error.value)
    with pytest.raises(JsonRpcException):
        await request(client, "cortex/exportModel", {"model": "qwen3-ft", "target": "onnx"})
