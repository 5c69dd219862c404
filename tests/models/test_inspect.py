import json
import struct

import pytest

from cortex_rpc.errors import CortexError
from cortex_rpc.models.categories import category_for, recommended_quantization_bits
from cortex_rpc.models.inspect import (
    count_config_parameters,
    count_mlx_structure_parameters,
    inspect_model,
    read_config,
)
from cortex_rpc.models.safetensors_header import read_safetensors_header
from cortex_rpc.models.synthetic import llama_config, write_sparse_model

# Published parameter counts of the real checkpoints.
EXPECTED = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
}


def test_tiny_model_counts_agree_across_sources(tiny_model):
    info = inspect_model(tiny_model)
    config = read_config(tiny_model)
    assert info.parameter_source == "safetensors"
    assert info.parameters == count_mlx_structure_parameters(config)
    assert info.parameters == count_config_parameters(config)
    assert info.category == "tiny"
    assert info.architecture == "llama"
    assert info.num_layers == 2 and info.hidden_size == 64
    assert info.fine_tuned is False
    assert info.recommended_quantization_bits is None


@pytest.mark.parametrize(
    "name,shards,category,advice",
    [
        ("llama-2-7b", 2, "medium", 8),
        ("llama-2-13b", 3, "large", 8),
        ("llama-2-70b", 15, "xlarge", 4),
    ],
)
def test_sparse_large_models(tmp_path, name, shards, category, advice):
    directory = write_sparse_model(tmp_path / name, name, shards=shards)
    info = inspect_model(directory)
    assert info.parameter_source == "safetensors"
    assert abs(info.parameters - EXPECTED[name]) / EXPECTED[name] < 0.01
    assert info.category == category
    assert info.size_bytes == pytest.approx(EXPECTED[name] * 2, rel=0.01)
    assert info.dtype == "bfloat16"
    assert info.recommended_quantization_bits == advice
    # The data is a hole: the files take almost no disk.
    used = sum(p.stat().st_blocks * 512 for p in directory.iterdir())
    assert used < 10 * 1024 * 1024


def test_mlx_4bit_model_counts_true_parameters(tmp_path):
    directory = write_sparse_model(tmp_path / "llama-3-8b-4bit", "llama-3-8b", quantization_bits=4)
    info = inspect_model(directory)
    assert abs(info.parameters - EXPECTED["llama-3-8b"]) / EXPECTED["llama-3-8b"] < 0.01
    assert info.quantization_bits == 4
    assert info.category == "large"
    assert info.recommended_quantization_bits is None  # already quantized


def test_config_arithmetic_without_weights(tmp_path):
    (tmp_path / "m").mkdir()
    config = llama_config("llama-2-7b")
    config["model_type"] = "unknown-arch"  # not buildable by mlx_lm: arithmetic is used
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    info = inspect_model(tmp_path / "m")
    assert info.parameter_source == "config"
    assert abs(info.parameters - EXPECTED["llama-2-7b"]) / EXPECTED["llama-2-7b"] < 0.01


def test_mlx_structure_without_weights(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(llama_config("llama-2-13b")))
    info = inspect_model(tmp_path / "m")
    assert info.parameter_source == "mlx"
    assert abs(info.parameters - EXPECTED["llama-2-13b"]) / EXPECTED["llama-2-13b"] < 0.01


def test_size_fallback(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "mystery"}))
    (tmp_path / "m" / "weights.npz").write_bytes(b"\0" * 2000)
    info = inspect_model(tmp_path / "m")
    assert info.parameter_source == "size"
    assert info.parameters == 1000


def test_pickle_only_model_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(llama_config("llama-2-7b")))
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(CortexError) as error:
        inspect_model(tmp_path / "m")
    assert error.value.code == "not-safetensors"
    assert "pickle" in error.value.message


def test_missing_model(tmp_path):
    with pytest.raises(CortexError) as error:
        inspect_model(tmp_path / "nope")
    assert error.value.code == "model-not-found"


def _header_file(path, header: bytes, data: bytes = b"", length: int | None = None):
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


@pytest.mark.parametrize(
    "header,data,length,why",
    [
        (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 4, None, "outside"),
        (
            b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
            b"\0" * 12,
            None,
            "overlap",
        ),
        (b'{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', b"\0" * 8, None, "shape"),
        (
            b'{"a":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,8]}}',
            b"\0" * 8,
            None,
            "needs",
        ),
        (b'{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8, None, "dtype"),
        (b"\xff\xfe{}", b"", None, "UTF-8"),
        (b"[1,2]", b"", None, "object"),
        (b"{}", b"", 200 * 1024 * 1024, "limit"),
        (b"{}", b"", 100, "past the end"),
    ],
)
def test_lying_headers_are_rejected(tmp_path, header, data, length, why):
    path = _header_file(tmp_path / "model.safetensors", header, data, length)
    with pytest.raises(CortexError) as error:
        read_safetensors_header(path)
    assert error.value.code == "invalid-safetensors"
    assert why in error.value.message


def test_categories_and_quantization_rules():
    assert category_for(499_000_000) == "tiny"
    assert category_for(500_000_000) == "small"
    assert category_for(2_000_000_000) == "medium"
    assert category_for(8_000_000_000) == "large"
    assert category_for(20_000_000_000) == "xlarge"
    assert recommended_quantization_bits(31 * 10**9, None) == 4
    assert recommended_quantization_bits(14 * 10**9, None) == 8
    assert recommended_quantization_bits(12 * 10**9, None) is None
    assert recommended_quantization_bits(40 * 10**9, 4) is None


def test_an_absurd_layer_count_is_counted_without_building_the_model(tmp_path):
    """A hostile config.json with 105,429 layers once took two minutes to build in MLX."""
    import time

    from cortex_rpc.models.inspect import count_mlx_structure_parameters, inspect_model

    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 105_429,
        "vocab_size": 1024,
    }
    assert count_mlx_structure_parameters(config) is None
    (tmp_path / "config.json").write_text(json.dumps(config))
    started = time.monotonic()
    inspection = inspect_model(tmp_path)
    assert time.monotonic() - started < 30
    assert inspection.parameters > 0 and inspection.parameter_source == "config"
