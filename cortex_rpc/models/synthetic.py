"""Sparse stand-ins for large models: real safetensors headers, data left as a hole on disk.

Tests and benchmarks inspect 7B-70B models this way without storing or downloading them.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from .safetensors_header import DTYPE_BYTES

# (vocab, hidden, intermediate, layers, heads, kv_heads) of well-known checkpoints.
LLAMA_SHAPES = {
    "llama-2-7b": (32000, 4096, 11008, 32, 32, 32),
    "llama-2-13b": (32000, 5120, 13824, 40, 40, 40),
    "llama-2-70b": (32000, 8192, 28672, 80, 64, 8),
    "llama-3-8b": (128256, 4096, 14336, 32, 32, 8),
}


def llama_config(name: str) -> dict:
    """Return a config.json for one of LLAMA_SHAPES."""
    vocab, hidden, inter, layers, heads, kv = LLAMA_SHAPES[name]
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def llama_tensor_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Return the tensor names and shapes of a Hugging Face Llama checkpoint."""
    vocab, hidden, inter, layers, heads, kv = LLAMA_SHAPES[name]
    head_dim = hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.self_attn.q_proj.weight": (heads * head_dim, hidden),
            f"{p}.self_attn.k_proj.weight": (kv * head_dim, hidden),
            f"{p}.self_attn.v_proj.weight": (kv * head_dim, hidden),
            f"{p}.self_attn.o_proj.weight": (hidden, heads * head_dim),
            f"{p}.mlp.gate_proj.weight": (inter, hidden),
            f"{p}.mlp.up_proj.weight": (inter, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, inter),
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.post_attention_layernorm.weight": (hidden,),
        }
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def write_sparse_safetensors(
    path: str | Path,
    shapes: dict[str, tuple[int, ...]],
    dtypes: dict[str, str] | None = None,
    default_dtype: str = "BF16",
) -> Path:
    """Write a real safetensors header for ``shapes`` and extend the file sparsely."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        dtype = (dtypes or {}).get(name, default_dtype)
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        handle.truncate(8 + len(encoded) + offset)
    return path


def mlx_quantized_shapes(
    shapes: dict[str, tuple[int, ...]], bits: int = 4, group_size: int = 64
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Return the shapes and dtypes MLX's quantization gives a checkpoint's 2-D weights."""
    out: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for name, shape in shapes.items():
        if len(shape) == 2 and name.endswith(".weight") and shape[1] % group_size == 0:
            prefix = name[: -len(".weight")]
            out[name] = (shape[0], shape[1] * bits // 32)
            dtypes[name] = "U32"
            out[f"{prefix}.scales"] = (shape[0], shape[1] // group_size)
            out[f"{prefix}.biases"] = (shape[0], shape[1] // group_size)
            dtypes[f"{prefix}.scales"] = dtypes[f"{prefix}.biases"] = "F16"
        else:
            out[name] = shape
            dtypes[name] = "F16"
    return out, dtypes


def write_sparse_model(
    directory: str | Path,
    name: str,
    shards: int = 1,
    quantization_bits: int | None = None,
) -> Path:
    """Write a sparse copy of a known Llama checkpoint (config.json + safetensors shards)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = llama_config(name)
    shapes = llama_tensor_shapes(name)
    dtypes: dict[str, str] | None = None
    if quantization_bits:
        shapes, dtypes = mlx_quantized_shapes(shapes, quantization_bits)
        config["quantization"] = {"group_size": 64, "bits": quantization_bits}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    names = list(shapes)
    per_shard = math.ceil(len(names) / shards)
    if shards == 1:
        write_sparse_safetensors(directory / "model.safetensors", shapes, dtypes)
        return directory
    weight_map = {}
    for index in range(shards):
        part = names[index * per_shard : (index + 1) * per_shard]
        filename = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        write_sparse_safetensors(directory / filename, {n: shapes[n] for n in part}, dtypes)
        weight_map |= {n: filename for n in part}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return directory
