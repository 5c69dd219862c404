"""``export_model`` on the family replicas: each target written whole, verified, or not at all."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cortex_rpc.errors import CortexError, InvalidParams
from cortex_rpc.models.export import export_model
from cortex_rpc.paths import CortexHome
from tests.families import build_family

pytestmark = pytest.mark.slow

LLAMA_CPP = Path(
    os.environ.get("CORTEX_LLAMA_CPP") or Path.home() / ".cortex" / "tools" / "llama.cpp"
)
needs_converter = pytest.mark.skipif(
    not (LLAMA_CPP / "convert_hf_to_gguf.py").is_file(),
    reason=f"llama.cpp's convert_hf_to_gguf.py not in {LLAMA_CPP} (scripts/fetch_llama_cpp.sh)",
)
try:
    import llama_cpp  # noqa: F401

    HAS_LLAMA_CPP = True
except ImportError:
    HAS_LLAMA_CPP = False
needs_llama_cpp = pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (pip install llama-cpp-python)"
)
# The replicas' tokenizers are small generated BPEs whose pre-tokenizer hash llama.cpp cannot
# know; real fine-tunes keep their base's tokenizer, which it recognizes. Verification checks
# that the GGUF still tokenizes the prompts as the source tokenizer does.
PRE_TOKENIZER = "gpt-2"  # the replicas pre-tokenize as GPT-2 (ByteLevel, its regex)
# llama.cpp converts these from SentencePiece's tokenizer.model, which the replicas lack.
NEEDS_SENTENCEPIECE = ("gemma2", "phi3")
GGUF_FAMILIES = ("llama3.2", "qwen2.5", "qwen3", "mistral-v0.3")
# Gemma 3 as the published models are laid out: a global layer every 6 (the replica's is 2).
GEMMA3_LAYOUT = {"sliding_window_pattern": 6, "num_hidden_layers": 6}


def make_fine_tune(base: Path, models_dir: Path, name: str, seed: int = 1, layers: int = 2) -> Path:
    """Write a fine-tuned folder on ``base``: a LoRA adapter (last ``layers``), random B."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    model, _ = load(str(base))
    model.freeze()
    lora = {"rank": 4, "scale": 2.0, "dropout": 0.0}
    linear_to_lora_layers(model, layers, lora)
    mx.random.seed(seed)
    params = dict(tree_flatten(model.trainable_parameters()))
    for key, value in params.items():
        if key.endswith("lora_b"):
            params[key] = mx.random.normal(value.shape) * 0.05
    folder = models_dir / name
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), params)
    adapter_config = {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": lora}
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    marker = {"baseModel": {"path": str(base), "name": base.name}, "quantizationBits": None}
    (folder / "fine-tuned.marker").write_text(json.dumps(marker))
    return folder


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replicas")


def fine_tune(family: str, replicas: Path, cortex_home: Path, **config: object) -> str:
    """Fine-tune ``family``'s replica (``config`` overrides some of its config.json)."""
    base = replicas / (family + "".join(f"-{k}{v}" for k, v in config.items()))
    if not base.exists():
        build_family(family, base)
        if config:
            from cortex_rpc.models.tiny import write_random_weights

            merged = {**json.loads((base / "config.json").read_text()), **config}
            write_random_weights(base, merged, seed=0, module=merged["model_type"])
    make_fine_tune(base, cortex_home / "mlx_models", f"{family}-ft")
    return f"{family}-ft"


def assert_nothing_written(home: Path) -> None:
    for folder in (home / "exports", home / "mlx_models"):
        if folder.exists():
            assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temp left"


@needs_converter
@needs_llama_cpp
@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_gguf_f16_greedy_tokens_equal_mlx(family, replicas, cortex_home, monkeypatch):
    monkeypatch.setenv("CORTEX_LLAMA_CPP", str(LLAMA_CPP))
    model = fine_tune(family, replicas, cortex_home)
    result = export_model(CortexHome(cortex_home), model, "gguf", pre_tokenizer=PRE_TOKENIZER)
    gguf = Path(result.path) / f"{model}-gguf-f16.gguf"
    assert gguf.is_file() and result.files == [gguf.name]
    verification = result.verification
    assert verification["status"] == "passed", verification
    assert verification["tokenAgreement"] == 1.0
    for prompt in verification["prompts"]:
        assert prompt["exportedTokens"] == prompt["mlxTokens"]
    assert verification["parts"] == {
        "template": True,
        "stopTokens": True,
        "tokenizer": True,
        "weights": True,
    }
    assert "llama-cli" in result.next_commands[0]


@needs_converter
@needs_llama_cpp
@pytest.mark.parametrize("quantization", ["q8_0", "q4_k_m"])
def test_gguf_quantized_within_tolerance(quantization, replicas, cortex_home, monkeypatch):
    monkeypatch.setenv("CORTEX_LLAMA_CPP", str(LLAMA_CPP))
    model = fine_tune("qwen3", replicas, cortex_home)
    result = export_model(
        CortexHome(cortex_home),
        model,
        "gguf",
        quantization=quantization,
        pre_tokenizer=PRE_TOKENIZER,
    )
    assert result.files == [f"{model}-gguf-{quantization}.gguf"]
    assert result.verification["status"] == "passed", result.verification
    assert result.verification["tokenAgreement"] >= result.verification["minAgreement"]


@needs_converter
@needs_llama_cpp
def test_gguf_from_a_4bit_base_is_dequantized_first(tmp_path, cortex_home, monkeypatch):
    monkeypatch.setenv("CORTEX_LLAMA_CPP", str(LLAMA_CPP))
    base = build_family("qwen2.5", tmp_path / "qwen2.5-4bit", quantized=True)
    assert "quantization" in json.loads((base / "config.json").read_text())
    make_fine_tune(base, cortex_home / "mlx_models", "q4-ft")
    result = export_model(CortexHome(cortex_home), "q4-ft", "gguf", pre_tokenizer=PRE_TOKENIZER)
    assert result.verification["status"] == "passed", result.verification
    assert result.verification["tokenAgreement"] == 1.0


@needs_converter
@pytest.mark.parametrize("family", NEEDS_SENTENCEPIECE)
def test_gguf_without_sentencepiece_model_is_a_clear_error(
    family, replicas, cortex_home, monkeypatch
):
    monkeypatch.setenv("CORTEX_LLAMA_CPP", str(LLAMA_CPP))
    model = fine_tune(family, replicas, cortex_home)
    with pytest.raises(CortexError) as error:
        export_model(
            CortexHome(cortex_home), model, "gguf", verify=False, pre_tokenizer=PRE_TOKENIZER
        )
    assert error.value.code == "unsupported-tokenizer"
    assert "tokenizer.model" in error.value.message
    assert not (cortex_home / "exports" / f"{model}-gguf").exists()
    assert_nothing_written(cortex_home)


@needs_converter
@needs_llama_cpp
def test_a_gguf_that_behaves_differently_is_refused_and_nothing_is_written(
    replicas, cortex_home, monkeypatch
):
    # llama.cpp's Gemma 3 differs from MLX and transformers on this replica (largest logit
    # difference 0.034 even as f32, 7 of 8 greedy tokens agree; transformers agrees to 5e-5).
    monkeypatch.setenv("CORTEX_LLAMA_CPP", str(LLAMA_CPP))
    model = fine_tune("gemma3", replicas, cortex_home, **GEMMA3_LAYOUT)
    with pytest.raises(CortexError) as error:
        export_model(CortexHome(cortex_home), model, "ollama", pre_tokenizer=PRE_TOKENIZER)
    assert error.value.code == "verification-failed"
    assert error.value.data["failed"] == ["weights"]
    assert "greedy tokens agree" in error.value.message
    parts = error.value.data["verification"]["parts"]
    assert parts["template"] and parts["stopTokens"] and parts["tokenizer"]
    assert not (cortex_home / "exports" / f"{model}-ollama").exists()
    assert_nothing_written(cortex_home)
    hf = export_model(CortexHome(cortex_home), model, "hf")
    assert hf.verification["maxLogitDiff"] <= 1e-3


@needs_converter
def test_gemma3_with_another_sliding_pattern_is_refused(replicas, cortex_home, monkeypatch):
    monkeypatch.setenv("CORTEX_LLAMA_CPP", str(LLAMA_CPP))
    model = fine_tune("gemma3", replicas, cortex_home)
    with pytest.raises(CortexError) as error:
        export_model(CortexHome(cortex_home), model, "gguf", pre_tokenizer=PRE_TOKENIZER)
    assert error.value.code == "unsupported-architecture"
    assert "sliding-window pattern" in error.value.message
    assert_nothing_written(cortex_home)


@pytest.mark.parametrize("family", ["llama3.2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_hf_export_loads_in_transformers_and_logits_match(family, replicas, cortex_home):
    model = fine_tune(family, replicas, cortex_home)
    result = export_model(CortexHome(cortex_home), model, "hf")
    folder = Path(result.path)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert (folder / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (folder / "tokenizer_config.json").read_text()
    )
    verification = result.verification
    assert verification["tool"] == "transformers"
    assert verification["status"] == "passed", verification
    assert verification["maxLogitDiff"] <= 1e-3
    config = json.loads((folder / "config.json").read_text())
    assert "quantization" not in config and config["architectures"]


def test_mlx_and_lmstudio_exports_are_standalone_fused_models(replicas, cortex_home, tmp_path):
    model = fine_tune("qwen2.5", replicas, cortex_home)
    home = CortexHome(cortex_home)
    fused = export_model(home, model, "mlx", name="fused")
    assert Path(fused.path) == cortex_home / "mlx_models" / "fused"
    assert fused.verification["tool"] == "mlx" and fused.verification["status"] == "passed"
    assert fused.verification["parts"]["adapter"] is True
    # The trained adapter moves the logits, and the fused export is the fine-tune, not the base.
    effect = fused.verification["adapterEffect"]
    assert (
        effect > 0 and fused.verification["exportedToBaseDiff"] > fused.verification["maxLogitDiff"]
    )
    assert not (Path(fused.path) / "fine-tuned.marker").exists()
    studio = export_model(home, model, "lmstudio", lmstudio_root=tmp_path / "lms", verify=False)
    assert Path(studio.path) == tmp_path / "lms" / "models" / "cortex" / f"{model}-lmstudio"
    assert (Path(studio.path) / "model.safetensors").is_file()
    assert studio.verification is None


@pytest.mark.parametrize("target", ["mlx", "hf"])
def test_a_qlora_fine_tune_exports_as_trained(target, replicas, cortex_home):
    model = fine_tune("qwen3", replicas, cortex_home)
    marker = cortex_home / "mlx_models" / model / "fine-tuned.marker"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "quantizationBits": 4}))
    result = export_model(CortexHome(cortex_home), model, target)
    config = json.loads((Path(result.path) / "config.json").read_text())
    assert ("quantization" in config) == (target == "mlx")
    assert result.verification["status"] == "passed", result.verification


def test_error_cases_write_nothing(replicas, cortex_home, tmp_path):
    home = CortexHome(cortex_home)
    with pytest.raises(CortexError) as error:
        export_model(home, "missing", "hf")
    assert error.value.code == "model-not-found"
    model = fine_tune("llama3.2", replicas, cortex_home)
    (cortex_home / "exports" / "taken").mkdir(parents=True)
    with pytest.raises(CortexError) as error:
        export_model(home, model, "hf", name="taken")
    assert error.value.code == "target-exists"
    assert list((cortex_home / "exports" / "taken").iterdir()) == []
    with pytest.raises(InvalidParams):
        export_model(home, model, "gguf", quantization="q3_weird")
    with pytest.raises(InvalidParams):
        export_model(home, model, "onnx")
    # An architecture llama.cpp cannot convert.
    odd = tmp_path / "odd-base"
    shutil.copytree(replicas / "llama3.2", odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    make_fine_tune(replicas / "llama3.2", cortex_home / "mlx_models", "odd-ft")
    marker_path = cortex_home / "mlx_models" / "odd-ft" / "fine-tuned.marker"
    marker_path.write_text(json.dumps({"baseModel": {"path": str(odd)}}))
    with pytest.raises(CortexError) as error:
        export_model(home, "odd-ft", "gguf")
    assert error.value.code == "unsupported-architecture"
    assert error.value.data["modelType"] == "mamba"
    # A missing base.
    shutil.rmtree(odd)
    with pytest.raises(CortexError) as error:
        export_model(home, "odd-ft", "hf")
    assert error.value.code == "base-model-missing"
    assert not (cortex_home / "exports" / "odd-ft-gguf").exists()
    assert_nothing_written(cortex_home)


def test_an_export_nearer_the_bare_base_has_lost_its_adapter():
    """The verdict of a fuse that quietly behaves like the base (numpy only, no model)."""
    import numpy as np

    from cortex_rpc.models.export_checks import compare_runs, failure_message

    rng = np.random.default_rng(0)
    bare = [rng.normal(size=(4, 32)).astype(np.float32) for _ in range(2)]
    tuned = [b + rng.normal(scale=2.0, size=b.shape).astype(np.float32) for b in bare]
    reference = [
        {"ids": [1, 2], "tokens": [int(t) for t in x.argmax(-1)], "logits": x} for x in tuned
    ]

    def exported(logits):
        runs = [
            {"tokenized": [1, 2], "tokens": [int(t) for t in x.argmax(-1)], "logits": x}
            for x in logits
        ]
        return {"runs": runs, "chatTemplate": "t", "eosTokenIds": [2]}

    common = {"template": "t", "eos_ids": [2], "tool": "mlx", "quantization": "float"}
    lost = compare_runs(reference, exported(bare), base=bare, **common)
    assert lost["failed"] == ["weights", "adapter"] and lost["exportedToBaseDiff"] == 0
    assert "behaves like the base model" in failure_message(lost)
    kept = compare_runs(reference, exported(tuned), base=bare, **common)
    assert kept["status"] == "passed" and kept["adapterEffect"] > 1
    other = [t + 5.0 for t in tuned]  # wrong, but not the base: the weights part alone
    assert compare_runs(reference, exported(other), base=bare, **common)["failed"] == ["weights"]
