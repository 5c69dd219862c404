"""Inspect a local model directory: parameters, category, size, quantization advice.

Parameters are counted from the most exact source available, in this order: safetensors
headers (no tensor data is read), the MLX model structure built lazily from config.json,
config.json arithmetic for known architectures, and finally the weight files' size.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CortexError, InvalidParams
from ..paths import user_path
from .base_identity import display_name, resolve_base
from .categories import category_for, recommended_quantization_bits
from .fine_tuned import ADAPTERS, marker_base_path, read_marker
from .safetensors_header import DTYPE_BYTES, SafetensorsHeader, read_safetensors_header
from .trainability import NotTrainable, architecture_problem, download_problem

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class ModelInspection:
    """What ``cortex/inspectModel`` reports about one model directory."""

    path: str
    name: str
    architecture: str | None
    parameters: int
    parameter_source: str
    category: str
    size_bytes: int
    dtype: str | None
    quantization_bits: int | None
    num_layers: int | None
    hidden_size: int | None
    vocab_size: int | None
    context_length: int | None
    fine_tuned: bool
    recommended_quantization_bits: int | None
    base_model: str | None = None
    adapter_bytes: int | None = None
    # Why mlx_lm cannot fine-tune it (a partial download, an unsupported architecture).
    not_trainable: NotTrainable | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "path": self.path,
            "name": self.name,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "parameterSource": self.parameter_source,
            "category": self.category,
            "sizeBytes": self.size_bytes,
            "dtype": self.dtype,
            "quantizationBits": self.quantization_bits,
            "numLayers": self.num_layers,
            "hiddenSize": self.hidden_size,
            "vocabSize": self.vocab_size,
            "contextLength": self.context_length,
            "fineTuned": self.fine_tuned,
            "recommendedQuantizationBits": self.recommended_quantization_bits,
            "trainable": self.not_trainable is None,
        }
        if self.not_trainable is not None:
            wire["notTrainable"] = self.not_trainable.to_wire()
        if self.fine_tuned:
            wire["baseModel"] = self.base_model
            wire["adapterBytes"] = self.adapter_bytes
        return wire


def _first(config: dict[str, Any], *keys: str) -> Any:
    while isinstance(config, dict):  # a loop: text_config may be nested absurdly deep
        for key in keys:
            value = config.get(key)
            if value is not None:
                return value
        config = config.get("text_config")
    return None


def _first_int(config: dict[str, Any], *keys: str) -> int | None:
    """Like ``_first``, but only a positive integer counts (config.json is untrusted input)."""
    value = _first(config, *keys)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _architecture(config: dict[str, Any]) -> str | None:
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return None


def read_config(directory: Path) -> dict[str, Any]:
    """Return config.json of a model directory ({} when absent)."""
    path = directory / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CortexError(
            "invalid-config", f"{path} is not valid JSON: {error}", path=str(path)
        ) from error
    if not isinstance(config, dict):
        raise CortexError("invalid-config", f"{path} must hold a JSON object", path=str(path))
    return config


def weight_files(directory: Path) -> list[Path]:
    """Return the safetensors weight files of a model (sharded through the index if any).

    Raises CortexError ``model-incomplete`` when the index names shards that are missing.
    """
    files, missing = present_weight_files(directory)
    if missing:
        raise CortexError(
            "model-incomplete",
            f"{directory.name} is missing shards listed in its index: {', '.join(missing[:5])}",
            path=str(directory),
        )
    return files


def present_weight_files(directory: Path) -> tuple[list[Path], list[str]]:
    """Return (the safetensors weight files there, the names its index lists that are not)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
            raise CortexError(
                "invalid-config", f"{index} is not a valid index: {error}", path=str(index)
            ) from error
        if not isinstance(weight_map, dict):
            raise CortexError(
                "invalid-config", f"{index} has no weight_map object", path=str(index)
            )
        files = [directory / str(name) for name in sorted(set(map(str, weight_map.values())))]
        return [f for f in files if f.is_file()], [f.name for f in files if not f.is_file()]
    return sorted(p for p in directory.glob("*.safetensors") if p.name != ADAPTERS), []


def _quantization(config: dict[str, Any]) -> tuple[int | None, int]:
    quant = config.get("quantization") or config.get("quantization_config") or {}
    if not isinstance(quant, dict):
        return None, 64
    bits = quant.get("bits")
    group = quant.get("group_size", 64)
    group = group if isinstance(group, int) and not isinstance(group, bool) and group > 0 else 64
    bits = bits if isinstance(bits, int) and not isinstance(bits, bool) and 0 < bits <= 32 else None
    return bits, group


def count_safetensors_parameters(
    headers: list[SafetensorsHeader], config: dict[str, Any]
) -> tuple[int, str | None, int | None]:
    """Return (parameters, main dtype, quantization bits) from headers alone.

    MLX-quantized weights are uint32 words holding 32/bits values each, with ``scales`` and
    ``biases`` beside them; those count as the unquantized parameter number.
    """
    bits, _group = _quantization(config)
    quant_config = (
        config.get("quantization") if isinstance(config.get("quantization"), dict) else {}
    )
    tensors = {name: info for header in headers for name, info in header.tensors.items()}
    quantized_prefixes = {
        name[: -len(".weight")]
        for name, info in tensors.items()
        if name.endswith(".weight")
        and info.dtype == "U32"
        and f"{name[: -len('.weight')]}.scales" in tensors
    }
    total = 0
    dtype_counts: Counter[str] = Counter()
    for name, info in tensors.items():
        prefix, _, leaf = name.rpartition(".")
        if prefix in quantized_prefixes:
            if leaf in ("scales", "biases"):
                continue
            if leaf == "weight":
                layer_bits = bits
                override = quant_config.get(prefix) if quant_config else None
                if (
                    isinstance(override, dict)
                    and isinstance(override.get("bits"), int)
                    and 0 < override["bits"] <= 32
                ):
                    layer_bits = override["bits"]
                if not layer_bits:
                    # Infer from the scales: in_features = groups * group_size.
                    layer_bits = 4
                values_per_word = 32 // layer_bits
                count = math.prod(info.shape[:-1]) * info.shape[-1] * values_per_word
                total += count
                dtype_counts[f"Q{layer_bits}"] += count
                continue
        total += info.numel
        dtype_counts[info.dtype] += info.numel
    dtype = dtype_counts.most_common(1)[0][0] if dtype_counts else None
    if quantized_prefixes and not bits:
        bits = 4
    return total, _dtype_name(dtype), bits if quantized_prefixes else None


def _dtype_name(dtype: str | None) -> str | None:
    names = {
        "F32": "float32",
        "F16": "float16",
        "BF16": "bfloat16",
        "F64": "float64",
        "I8": "int8",
        "U8": "uint8",
        "I32": "int32",
        "U32": "uint32",
    }
    if dtype is None:
        return None
    if dtype.startswith("Q"):
        return f"int{dtype[1:]} (quantized)"
    return names.get(dtype, dtype.lower())


# Far above any real model (the largest have about 130 layers).
MAX_STRUCTURE_LAYERS = 1024


def count_mlx_structure_parameters(config: dict[str, Any]) -> int | None:
    """Return the parameter count of the MLX model that config.json describes, or None.

    The model is built with lazy arrays, so no weight memory is allocated.
    """
    if not config.get("model_type"):
        return None
    layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers")
    if layers is not None and layers > MAX_STRUCTURE_LAYERS:
        # Building 100,000 layer objects takes minutes: a config like that is counted
        # arithmetically (or refused there), never built.
        return None
    try:
        from mlx.utils import tree_flatten
        from mlx_lm.utils import _get_classes

        model_class, args_class = _get_classes(config=config)
        model = model_class(args_class.from_dict(config))
        return int(sum(v.size for _, v in tree_flatten(model.parameters())))
    except Exception:  # noqa: BLE001 - unknown architectures fall through to arithmetic
        return None


def count_config_parameters(config: dict[str, Any]) -> int | None:
    """Return the parameter count implied by a decoder-only transformer config, or None."""
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model")
    layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first_int(config, "vocab_size")
    if hidden is None or layers is None or vocab is None:
        return None
    heads = _first_int(config, "num_attention_heads", "n_head") or max(1, hidden // 128)
    kv_heads = _first_int(config, "num_key_value_heads", "num_kv_heads") or heads
    head_dim = _first_int(config, "head_dim") or max(1, hidden // heads)
    intermediate = _first_int(config, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    model_type = str(config.get("model_type", "")).lower()
    q = hidden * heads * head_dim
    kv = 2 * hidden * kv_heads * head_dim
    o = heads * head_dim * hidden
    attention_bias = config.get("attention_bias") or model_type.startswith("qwen2")
    bias = (heads * head_dim + 2 * kv_heads * head_dim) if attention_bias else 0
    gated = model_type not in ("gpt2", "phi", "gpt_neox", "opt", "starcoder2")
    mlp = (3 if gated else 2) * hidden * intermediate
    norms = 2 * hidden
    experts = _first_int(config, "num_local_experts", "num_experts")
    if experts is not None and experts > 1:
        mlp = mlp * experts + hidden * experts
    per_layer = q + kv + o + bias + mlp + norms
    embeddings = vocab * hidden
    tied = config.get("tie_word_embeddings", model_type in ("gemma", "gemma2", "gpt2"))
    head = 0 if tied else vocab * hidden
    return int(layers * per_layer + embeddings + head + hidden)


def _weights_size(directory: Path) -> int:
    return sum(
        p.stat().st_size
        for p in directory.iterdir()
        if p.is_file()
        and (p.suffix in (".safetensors", ".npz", ".gguf") or p.suffix in PICKLE_SUFFIXES)
    )


def inspect_model(path: str | Path) -> ModelInspection:
    """Return what is known about the model in ``path`` without loading its weights."""
    directory = user_path(path)
    if not directory.exists():
        raise CortexError(
            "model-not-found",
            f"No model at {directory}. Give the path of a model directory "
            "(with config.json and *.safetensors) or a name from cortex/listModels.",
            path=str(directory),
        )
    if not directory.is_dir():
        raise InvalidParams(f"path {directory} is a file; give the model's directory", field="path")
    marker = read_marker(directory)
    if marker is not None and not weight_files(directory) and marker.get("baseModel"):
        return _inspect_fine_tuned(directory, marker)

    config = read_config(directory)
    files, missing = present_weight_files(directory)
    if not files:
        pickles = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise CortexError(
                "not-safetensors",
                f"{directory.name} has only pickle weights ({', '.join(sorted(pickles)[:3])}); "
                "cortex-rpc never loads pickle files because they can run code. Convert the "
                "model to safetensors (e.g. `mlx_lm.convert`) or use an MLX/safetensors copy.",
                path=str(directory),
            )
    if not config and not files:
        raise CortexError(
            "model-not-found",
            f"{directory} does not look like a model: no config.json and no *.safetensors",
            path=str(directory),
        )

    # Shards missing: the parameters come from config.json, not from part of the headers.
    headers = [] if missing else [read_safetensors_header(f) for f in files]
    size_bytes = sum(f.stat().st_size for f in files) or _weights_size(directory)
    quant_bits, _ = _quantization(config)
    dtype = None
    if headers:
        parameters, dtype, quant_bits = count_safetensors_parameters(headers, config)
        source = "safetensors"
    else:
        counted = count_mlx_structure_parameters(config)
        if counted is not None:
            parameters, source = counted, "mlx"
        else:
            counted = count_config_parameters(config)
            if counted is not None:
                parameters, source = counted, "config"
            else:
                bytes_per_param = (quant_bits or 16) / 8
                parameters, source = int(size_bytes / bytes_per_param), "size"
    if parameters <= 0:
        raise CortexError(
            "model-empty", f"{directory.name} has no parameters to count", path=str(directory)
        )
    return ModelInspection(
        path=str(directory),
        name=display_name(directory),
        architecture=_architecture(config),
        parameters=parameters,
        parameter_source=source,
        category=category_for(parameters),
        size_bytes=size_bytes,
        dtype=dtype
        or (config.get("torch_dtype") if isinstance(config.get("torch_dtype"), str) else None),
        quantization_bits=quant_bits,
        num_layers=_first_int(config, "num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=_first_int(config, "hidden_size", "n_embd", "d_model"),
        vocab_size=_first_int(config, "vocab_size"),
        context_length=_first_int(
            config, "max_position_embeddings", "n_positions", "max_seq_len", "seq_length"
        ),
        fine_tuned=marker is not None,
        recommended_quantization_bits=recommended_quantization_bits(size_bytes, quant_bits),
        base_model=str(marker_base_path(marker)) if marker and marker_base_path(marker) else None,
        adapter_bytes=_adapter_bytes(directory) if marker is not None else None,
        not_trainable=download_problem(directory, files, missing) or architecture_problem(config),
    )


def _adapter_bytes(directory: Path) -> int:
    return sum(
        (directory / name).stat().st_size for name in (ADAPTERS,) if (directory / name).is_file()
    )


def _inspect_fine_tuned(directory: Path, marker: dict[str, Any]) -> ModelInspection:
    """Describe an adapter-only fine-tune by its base model plus the adapter.

    The base is found by its weights, so a hub model whose snapshot moved still describes it;
    CortexError ``base-model-missing`` / ``base-model-changed`` say what became of it.
    """
    base_path = resolve_base(marker, directory.name)
    base = inspect_model(base_path)
    base.path = str(directory)
    base.name = directory.name
    base.fine_tuned = True
    base.base_model = str(base_path)
    base.adapter_bytes = _adapter_bytes(directory)
    if isinstance(marker.get("quantizationBits"), int):
        base.quantization_bits = marker["quantizationBits"]
    return base


def dtype_bytes(dtype: str | None) -> float:
    """Return bytes per parameter for a dtype name reported by inspection (default 2)."""
    if not dtype:
        return 2.0
    if "quantized" in dtype:
        return int(dtype[3:].split()[0]) / 8
    table = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
    return float(table.get(dtype, DTYPE_BYTES.get(dtype.upper(), 2)))
