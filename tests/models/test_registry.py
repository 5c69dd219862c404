import json
import shutil

import pytest

from cortex_rpc.errors import CortexError
from cortex_rpc.models.registry import list_models, resolve_model


def test_lists_cortex_models_extra_dirs_and_hf_cache(
    tiny_model_template, cortex_home, tmp_path, monkeypatch
):
    shutil.copytree(tiny_model_template, cortex_home / "models" / "base-one")
    extra = tmp_path / "extra"
    shutil.copytree(tiny_model_template, extra / "base-two")
    hf = tmp_path / "hf" / "hub" / "models--acme--tiny" / "snapshots" / "abc123"
    shutil.copytree(tiny_model_template, hf)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    fine = cortex_home / "mlx_models" / "tuned"
    fine.mkdir(parents=True)
    (fine / "fine-tuned.marker").write_text(
        json.dumps({"baseModel": str(cortex_home / "models" / "base-one")})
    )
    (fine / "adapters.safetensors").write_bytes(b"x" * 100)
    # A half-written output must never be listed.
    shutil.copytree(tiny_model_template, cortex_home / "mlx_models" / ".tmp-partial")

    models = {m.name: m for m in list_models([str(extra)])}
    assert set(models) == {"base-one", "base-two", "acme/tiny", "tuned"}
    assert models["tuned"].kind == "fine-tuned"
    assert models["tuned"].adapter_bytes == 100
    assert models["tuned"].base_model.endswith("base-one")
    assert models["base-one"].kind == "base" and models["base-one"].category == "tiny"
    assert models["acme/tiny"].source == "huggingface-cache"
    assert resolve_model("base-one") == cortex_home / "models" / "base-one"
    assert resolve_model("acme/tiny") == hf


def test_resolve_unknown_model():
    with pytest.raises(CortexError) as error:
        resolve_model("no-such-model")
    assert error.value.code == "model-not-found"
