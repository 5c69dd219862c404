"""The smart configuration: category defaults, presets, dataset- and memory-aware adjustments.

Every adjustment appends a sentence to ``explanations`` so the user sees why each setting
is what it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidParams
from ..models.inspect import ModelInspection, dtype_bytes
from ..units import human_params
from .estimate import CHARS_PER_TOKEN, Estimate, estimate_peak_memory, estimate_seconds
from .training_config import TrainingConfig, apply_overrides, iterations_for

PRESETS = ("quick", "balanced", "quality", "expert")

# The guide gives tiny, medium and xlarge; small and large sit between their neighbours.
CATEGORY_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "learning_rate": 5e-4,
        "epochs": 5,
        "lora_rank": 8,
        "lora_alpha": 16,
        "batch_size": 4,
        "grad_accumulation_steps": 1,
    },
    "small": {
        "learning_rate": 2e-4,
        "epochs": 4,
        "lora_rank": 8,
        "lora_alpha": 16,
        "batch_size": 2,
        "grad_accumulation_steps": 2,
    },
    "medium": {
        "learning_rate": 1e-4,
        "epochs": 3,
        "lora_rank": 16,
        "lora_alpha": 32,
        "batch_size": 1,
        "grad_accumulation_steps": 8,
    },
    "large": {
        "learning_rate": 5e-5,
        "epochs": 3,
        "lora_rank": 32,
        "lora_alpha": 64,
        "batch_size": 1,
        "grad_accumulation_steps": 8,
    },
    "xlarge": {
        "learning_rate": 2e-5,
        "epochs": 2,
        "lora_rank": 64,
        "lora_alpha": 128,
        "batch_size": 1,
        "grad_accumulation_steps": 8,
    },
}
SMALL_DATASET = 100
LARGE_DATASET = 5000
LONG_EXAMPLE_CHARS = 2000
# Leave headroom for the OS, the editor and MLX's allocator cache.
MEMORY_HEADROOM = 0.85


@dataclass(frozen=True)
class DatasetProfile:
    """What the smart config needs to know about a dataset."""

    examples: int
    size_class: str
    task_type: str
    mean_chars: float
    max_chars: int = 0
    mean_tokens: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "sizeClass": self.size_class,
            "taskType": self.task_type,
            "meanChars": round(self.mean_chars, 1),
        }


def size_class_for(examples: int) -> str:
    """Return tiny (< 100), small (< 1000), medium (<= 5000) or large (> 5000)."""
    if examples < SMALL_DATASET:
        return "tiny"
    if examples < 1000:
        return "small"
    if examples <= LARGE_DATASET:
        return "medium"
    return "large"


def profile_from_wire(stats: dict[str, Any]) -> DatasetProfile:
    """Build a DatasetProfile from ``datasetStats`` as a client sends it."""
    examples = stats.get("examples")
    if not isinstance(examples, int) or isinstance(examples, bool) or examples < 1:
        raise InvalidParams(
            "datasetStats.examples must be a positive integer", field="datasetStats.examples"
        )
    mean_chars = stats.get("meanChars", 0)
    if not isinstance(mean_chars, (int, float)) or mean_chars < 0:
        raise InvalidParams(
            "datasetStats.meanChars must be a number >= 0", field="datasetStats.meanChars"
        )
    task_type = stats.get("taskType", "completion")
    if task_type not in ("chat", "completion", "structured"):
        raise InvalidParams(
            "datasetStats.taskType must be chat, completion or structured",
            field="datasetStats.taskType",
        )
    return DatasetProfile(
        examples=examples,
        size_class=size_class_for(examples),
        task_type=task_type,
        mean_chars=float(mean_chars),
        max_chars=int(stats.get("maxChars", mean_chars) or 0),
    )


@dataclass(frozen=True)
class MachineProfile:
    """The accelerator and memory the run will get."""

    backend: str
    usable_memory_bytes: int
    fast_blas: bool = True


@dataclass
class Proposal:
    """The result of ``cortex/proposeConfig``."""

    config: TrainingConfig
    model: ModelInspection
    dataset: DatasetProfile | None
    preset: str
    explanations: list[str] = field(default_factory=list)
    estimate: Estimate | None = None
    fits_in_memory: bool = True

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "preset": self.preset,
            "config": self.config.to_wire(),
            "model": {
                "name": self.model.name,
                "path": self.model.path,
                "parameters": self.model.parameters,
                "category": self.model.category,
                "sizeBytes": self.model.size_bytes,
                "quantizationBits": self.model.quantization_bits,
                "numLayers": self.model.num_layers,
                "contextLength": self.model.context_length,
            },
            "explanations": self.explanations,
            "estimate": self.estimate.to_wire() if self.estimate else None,
            "fitsInMemory": self.fits_in_memory,
        }
        if self.dataset is not None:
            wire["dataset"] = self.dataset.to_wire()
        return wire


def _format_lr(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")


def category_defaults(model: ModelInspection) -> TrainingConfig:
    """Return the Balanced starting point for a model's category."""
    defaults = CATEGORY_DEFAULTS[model.category]
    layers = model.num_layers or 16
    return TrainingConfig(
        num_layers=min(16, layers),
        max_seq_length=min(2048, model.context_length or 2048),
        lora_dropout=0.05,
        **defaults,
    )


def _apply_preset(
    config: TrainingConfig, preset: str, model: ModelInspection, notes: list[str]
) -> TrainingConfig:
    layers = model.num_layers or config.num_layers
    if preset == "quick":
        epochs = max(1, math.ceil(config.epochs / 3))
        config = replace(
            config,
            epochs=epochs,
            learning_rate=config.learning_rate * 2,
            num_layers=max(1, min(config.num_layers, 8)),
        )
        notes.append(
            f"Quick: {epochs} epoch(s) at a doubled learning rate "
            f"({_format_lr(config.learning_rate)}) on the top {config.num_layers} layers "
            "- fast experimentation"
        )
    elif preset == "quality":
        config = replace(
            config,
            epochs=config.epochs + 2,
            learning_rate=config.learning_rate / 2,
            lora_rank=config.lora_rank * 2,
            lora_alpha=config.lora_alpha * 2,
            num_layers=layers,
        )
        notes.append(
            f"Quality: {config.epochs:g} epochs at a conservative learning rate "
            f"({_format_lr(config.learning_rate)}), rank {config.lora_rank} on all "
            f"{layers} layers - best results, longer training"
        )
    elif preset == "expert":
        notes.append(
            "Expert: the Balanced settings below are proposed; every field can be overridden"
        )
    return config


def _apply_dataset(
    config: TrainingConfig, dataset: DatasetProfile, notes: list[str]
) -> TrainingConfig:
    if dataset.examples < SMALL_DATASET:
        config = replace(config, epochs=config.epochs + 1, lora_dropout=0.0)
        notes.append(
            f"Training for {config.epochs:g} epochs - extra iterations for small "
            f"datasets ({dataset.examples} examples), and no dropout "
            "(less regularization)"
        )
    elif dataset.examples > LARGE_DATASET:
        config = replace(config, epochs=max(1, config.epochs - 1))
        notes.append(
            f"Training for {config.epochs:g} epoch(s) - fewer passes for efficiency "
            f"on a large dataset ({dataset.examples} examples)"
        )
    if dataset.mean_chars > LONG_EXAMPLE_CHARS:
        config = replace(config, grad_accumulation_steps=config.grad_accumulation_steps * 2)
        notes.append(
            f"Gradient accumulation x{config.grad_accumulation_steps} - long examples "
            f"(mean {dataset.mean_chars:.0f} chars) use smaller effective batches"
        )
    if dataset.task_type == "chat":
        notes.append(
            "Chat data: the model's chat template is applied and only the assistant "
            "replies are trained on (prompt masking)"
        )
    elif dataset.task_type == "structured":
        notes.append(
            "Structured outputs: prompts are masked so the loss falls on the structured answers"
        )
    else:
        notes.append("Completion data: prompt and completion are joined and the prompt is masked")
    if dataset.max_chars:
        needed = int(dataset.max_chars / CHARS_PER_TOKEN * 1.1) + 16
        length = min(config.max_seq_length, max(128, 2 ** math.ceil(math.log2(needed))))
        if length != config.max_seq_length:
            config = replace(config, max_seq_length=length)
            notes.append(
                f"Sequence length {length} tokens - enough for the longest example "
                f"({dataset.max_chars} chars)"
            )
    if config.batch_size > dataset.examples:
        config = replace(config, batch_size=max(1, dataset.examples))
        notes.append(
            f"Batch size {config.batch_size} - the dataset has only {dataset.examples} examples"
        )
    return config


def _peak_memory(config: TrainingConfig, model: ModelInspection) -> int:
    return estimate_peak_memory(
        parameters=model.parameters,
        bytes_per_parameter=dtype_bytes(model.dtype),
        quantization_bits=config.quantization_bits or model.quantization_bits,
        hidden_size=model.hidden_size or int(math.sqrt(model.parameters / 12 / 32) or 512),
        total_layers=model.num_layers or config.num_layers,
        trained_layers=config.num_layers,
        rank=config.lora_rank,
        fine_tune_type=config.fine_tune_type,
        batch_size=config.batch_size,
        seq_length=config.max_seq_length,
        grad_checkpoint=config.grad_checkpoint,
    )


def _fit_memory(
    config: TrainingConfig, model: ModelInspection, machine: MachineProfile, notes: list[str]
) -> tuple[TrainingConfig, bool]:
    budget = int(machine.usable_memory_bytes * MEMORY_HEADROOM)
    gb = 1e9
    if _peak_memory(config, model) <= budget:
        return config, True
    steps: list[tuple[str, Any]] = []
    if not model.quantization_bits:
        steps += [("quantization_bits", 8), ("quantization_bits", 4)]
    steps += [("grad_checkpoint", True), ("batch_size", 1)]
    for name, value in steps:
        if (
            name == "quantization_bits"
            and config.quantization_bits
            and config.quantization_bits <= value
        ):
            continue
        before = _peak_memory(config, model)
        if name == "batch_size":
            accumulation = config.grad_accumulation_steps * config.batch_size
            config = replace(config, batch_size=1, grad_accumulation_steps=accumulation)
        else:
            config = replace(config, **{name: value})
        after = _peak_memory(config, model)
        label = {
            "quantization_bits": f"{value}-bit quantization",
            "grad_checkpoint": "gradient checkpointing",
            "batch_size": f"batch size 1 (x{config.grad_accumulation_steps} acc.)",
        }[name]
        notes.append(
            f"Memory: {before / gb:.1f} GB estimated > {budget / gb:.1f} GB usable - "
            f"applying {label} ({after / gb:.1f} GB)"
        )
        if after <= budget:
            return config, True
    notes.append(
        f"Memory: even with every saving the run needs about "
        f"{_peak_memory(config, model) / gb:.1f} GB but only {budget / gb:.1f} GB is "
        "usable - close other applications, pick a smaller model or shorten "
        "maxSeqLength"
    )
    return config, False


def propose_config(
    model: ModelInspection,
    dataset: DatasetProfile | None,
    preset: str,
    machine: MachineProfile,
    overrides: dict[str, Any] | None = None,
    overrides_field: str = "overrides",
) -> Proposal:
    """Return the configuration the smart config proposes, with an explanation per choice.

    ``overrides_field`` names the overrides in errors (``config`` for startTraining).
    """
    if preset not in PRESETS:
        raise InvalidParams(f"preset must be one of {', '.join(PRESETS)}", field="preset")
    notes: list[str] = [
        f"Using optimized settings for {model.category} model "
        f"({human_params(model.parameters)} params, {model.size_bytes / 1e9:.1f} GB)"
    ]
    config = category_defaults(model)
    if model.num_layers and model.num_layers < 16:
        notes.append(f"Adapters on all {model.num_layers} layers (the model has fewer than 16)")
    config = _apply_preset(config, preset, model, notes)
    if dataset is not None:
        config = _apply_dataset(config, dataset, notes)
    notes.append(
        f"Using learning rate {_format_lr(config.learning_rate)} for a "
        f"{model.category} model - "
        + (
            "higher for small models, which need bigger steps"
            if model.category in ("tiny", "small")
            else "prevents overfitting"
        )
    )
    if model.recommended_quantization_bits and not config.quantization_bits:
        config = replace(config, quantization_bits=model.recommended_quantization_bits)
        notes.append(
            f"{model.recommended_quantization_bits}-bit quantization - "
            f"{model.size_bytes / 1e9:.0f} GB of weights "
            f"(> {30 if model.recommended_quantization_bits == 4 else 13} GB)"
        )
    elif model.quantization_bits:
        notes.append(f"Base model is already {model.quantization_bits}-bit quantized (QLoRA)")
    config, fits = _fit_memory(config, model, machine, notes)
    if overrides:
        config = apply_overrides(config, overrides, prefix=overrides_field)
        notes.append("Your overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    if model.num_layers and config.num_layers > model.num_layers:
        raise InvalidParams(
            f"{overrides_field}.numLayers: the model has only {model.num_layers} layers",
            field=f"{overrides_field}.numLayers",
        )
    examples = dataset.examples if dataset else 0
    if dataset is not None and not (overrides or {}).get("iterations"):
        config = replace(
            config, iterations=iterations_for(config.epochs, examples, config.batch_size)
        )
        notes.append(
            f"{config.iterations} iterations = {config.epochs:g} epochs x "
            f"{examples} examples / batch {config.batch_size}"
        )
    elif dataset is not None and examples:
        # Iterations were given: report the epochs they amount to, as the worker will.
        epochs = round(config.iterations * config.batch_size / examples, 2)
        config = replace(config, epochs=epochs)
        notes.append(
            f"{config.iterations} iterations x batch {config.batch_size} = "
            f"{epochs:g} epochs over {examples} examples"
        )
    mean_tokens = dataset.mean_tokens or dataset.mean_chars / CHARS_PER_TOKEN if dataset else 256
    tokens = int(config.iterations * config.batch_size * max(mean_tokens, 1))
    seconds, basis = estimate_seconds(
        parameters=model.parameters,
        tokens=tokens,
        backend=machine.backend,
        fast_blas=machine.fast_blas,
        fine_tune_type=config.fine_tune_type,
        size_bytes=model.size_bytes,
    )
    estimate = Estimate(
        seconds=seconds, peak_memory_bytes=_peak_memory(config, model), tokens=tokens, basis=basis
    )
    return Proposal(
        config=config,
        model=model,
        dataset=dataset,
        preset=preset,
        explanations=notes,
        estimate=estimate,
        fits_in_memory=fits,
    )
