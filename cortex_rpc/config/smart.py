"""The smart configuration: category defaults, presets, dataset- and memory-aware adjustments.

Every adjustment appends a sentence to ``explanations`` so the user sees why each setting
is what it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParams
from ..models.inspect import ModelInspection, dtype_bytes
from ..units import human_params
from .estimate import CHARS_PER_TOKEN, Estimate, estimate_peak_memory, estimate_seconds
from .training_config import METHODS, TrainingConfig, apply_overrides, iterations_for

if TYPE_CHECKING:  # views exist only when the datasets package rendered them
    from ..datasets.training_view import TrainingView, ViewSummary

PRESETS = ("quick", "balanced", "quality", "expert")
SFT_ON_PAIRS = (
    "SFT on preference data: each pair trains as its prompt and chosen answer; the "
    "rejected answers are not used (method dpo or orpo learns from both)"
)

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
# Preference training (DPO/ORPO) moves a model with much smaller steps than SFT: about a
# tenth of SFT's learning rate (TRL's DPO default is 5e-7 for full fine-tuning; LoRA runs
# use 5e-6..5e-5). Per category: (LoRA/DoRA, full).
PREFERENCE_LEARNING_RATES: dict[str, tuple[float, float]] = {
    "tiny": (5e-5, 5e-6),
    "small": (2e-5, 2e-6),
    "medium": (1e-5, 1e-6),
    "large": (5e-6, 5e-7),
    "xlarge": (5e-6, 5e-7),
}
PREFERENCE_METHODS = ("dpo", "orpo")
# Epochs by pair count: a few passes over few pairs, one over many (preference training
# overfits fast: the rewards' margin keeps growing while held-out accuracy stalls).
PREFERENCE_EPOCHS = ((100, 3), (1000, 2))
SMALL_DATASET = 100
LARGE_DATASET = 5000
LONG_EXAMPLE_CHARS = 2000
# Cut at most this fraction of the examples, and only when keeping them whole would take at
# least OUTLIER_FACTOR times the length that covers the rest.
MAX_CUT_FRACTION = 0.01
OUTLIER_FACTOR = 4
# mlx_lm pads each batch to a multiple of 32 tokens, up to maxSeqLength.
PAD_TO = 32
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
    # Every record as the worker trains it, when the model's tokenizer could be read; token
    # counts then come from here, never from characters.
    views: tuple[TrainingView, ...] = ()
    no_tokenizer: str = ""  # why there are no views (the estimate from characters says it)
    kind: str = "sft"  # "preference" for preference pairs (clients then ask for the method)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "kind": self.kind,
            "examples": self.examples,
            "sizeClass": self.size_class,
            "taskType": self.task_type,
            "meanChars": round(self.mean_chars, 1),
            "tokensFrom": "tokenizer" if self.views else "characters",
        }
        if self.views:
            tokens = [v.token_count for v in self.views]
            wire["meanTokens"] = round(sum(tokens) / len(tokens), 1)
            wire["maxTokens"] = max(tokens)
        return wire


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
    kind = stats.get("kind", "sft")
    if kind not in ("sft", "preference"):
        raise InvalidParams(
            "datasetStats.kind must be sft or preference", field="datasetStats.kind"
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
        kind=kind,
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
    training_view: ViewSummary | None = None  # the dataset as trained with ``config``

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
        if self.training_view is not None:
            wire["trainingView"] = self.training_view.to_wire()
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


# Per preset: (lrSchedule, warmupRatio, lrFloorRatio) and why. Expert proposes Balanced's.
PRESET_SCHEDULES: dict[str, tuple[str, float, float, str]] = {
    "quick": (
        "constant",
        0.0,
        0.0,
        "a constant learning rate - a short run has no time to warm up",
    ),
    "balanced": (
        "cosine",
        0.05,
        0.1,
        "5% warmup, then cosine decay to 10% of the peak - stable start, gentle finish",
    ),
    "quality": (
        "cosine",
        0.1,
        0.1,
        "10% warmup, then cosine decay to 10% of the peak - the longer run settles at a low rate",
    ),
}


def _apply_schedule(config: TrainingConfig, preset: str, notes: list[str]) -> TrainingConfig:
    """Give the preset's learning-rate schedule (the optimizer stays Adam, as in mlx_lm)."""
    schedule, warmup, floor, why = PRESET_SCHEDULES.get(preset, PRESET_SCHEDULES["balanced"])
    config = replace(config, lr_schedule=schedule, warmup_ratio=warmup, lr_floor_ratio=floor)
    notes.append(f"Schedule: {why}")
    return config


def _apply_dataset(
    config: TrainingConfig,
    dataset: DatasetProfile,
    context_length: int | None,
    notes: list[str],
) -> TrainingConfig:
    if config.method in PREFERENCE_METHODS:
        pass  # epochs come from the pair count (``_preference_epochs``)
    elif dataset.examples < SMALL_DATASET:
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
    if dataset.views:  # the characters' threshold in tokens
        mean_tokens = sum(v.token_count for v in dataset.views) / len(dataset.views)
        long_examples = mean_tokens > LONG_EXAMPLE_CHARS / CHARS_PER_TOKEN
        mean = f"{mean_tokens:.0f} tokens"
    else:
        long_examples = dataset.mean_chars > LONG_EXAMPLE_CHARS
        mean = f"{dataset.mean_chars:.0f} chars"
    if long_examples:
        config = replace(config, grad_accumulation_steps=config.grad_accumulation_steps * 2)
        notes.append(
            f"Gradient accumulation x{config.grad_accumulation_steps} - long examples "
            f"(mean {mean}) use smaller effective batches"
        )
    if dataset.task_type == "structured":
        notes.append(
            "Structured outputs: prompts are masked so the loss falls on the structured answers"
        )
    elif dataset.task_type != "chat":  # chats get the loss note once trainOn is final
        notes.append("Completion data: prompt and completion are joined and the prompt is masked")
    if dataset.views:
        config = _length_from_tokens(config, dataset.views, context_length, notes)
    elif dataset.max_chars:
        config = _length_from_chars(config, dataset, notes)
    if config.batch_size > dataset.examples:
        config = replace(config, batch_size=max(1, dataset.examples))
        notes.append(
            f"Batch size {config.batch_size} - the dataset has only {dataset.examples} examples"
        )
    return config


def _power_of_two(tokens: int) -> int:
    return max(128, 2 ** math.ceil(math.log2(max(tokens, 1))))


def _length_from_tokens(
    config: TrainingConfig,
    views: tuple[TrainingView, ...],
    context_length: int | None,
    notes: list[str],
) -> TrainingConfig:
    """Cover every example, unless a few outliers would need a much longer maxSeqLength."""
    lengths = sorted(v.token_count for v in views)
    cap = context_length or config.max_seq_length
    whole = _power_of_two(lengths[-1])
    # The length that leaves at most MAX_CUT_FRACTION of the examples cut.
    most = _power_of_two(lengths[len(lengths) - 1 - int(len(lengths) * MAX_CUT_FRACTION)])
    length = min(cap, most if whole >= OUTLIER_FACTOR * most else whole)
    config = replace(config, max_seq_length=length)
    cut = _cut_note(views, length)
    if not cut:
        notes.append(
            f"maxSeqLength {length} covers every example (the longest is {lengths[-1]:,} "
            "tokens with the model's chat template, counted with its tokenizer)"
        )
        return config
    keep = (
        f"maxSeqLength {whole} would keep them whole"
        if whole <= cap
        else f"the model's context is {cap:,} tokens"
    )
    notes.append(f"{cut} (the longest has {lengths[-1]:,} tokens; {keep})")
    return config


def _cut_note(views: tuple[TrainingView, ...], length: int) -> str:
    """Return how many examples ``length`` covers and what the cut ones lose, or "" for none."""
    summary = summary_at(views, length)
    if not summary.cut:
        return ""
    covered = math.floor(1000 * (summary.records - summary.cut) / summary.records) / 10
    return (
        f"maxSeqLength {length} covers {covered:g}% of examples; {summary.cut} example(s) "
        f"would be cut, losing {summary.lost_trained_tokens:,} trained tokens"
    )


def summary_at(views: tuple[TrainingView, ...], length: int) -> ViewSummary:
    """Return the token summary of ``views`` as the worker cuts them at ``length``."""
    from ..datasets.training_view import summarize

    return summarize([replace(v, max_seq_length=length) for v in views])


def _length_from_chars(
    config: TrainingConfig, dataset: DatasetProfile, notes: list[str]
) -> TrainingConfig:
    """The fallback without a tokenizer: the longest example's characters, with a margin."""
    needed = int(dataset.max_chars / CHARS_PER_TOKEN * 1.1) + 16
    length = min(config.max_seq_length, _power_of_two(needed))
    if length != config.max_seq_length:
        config = replace(config, max_seq_length=length)
        notes.append(
            f"Sequence length {length} tokens - estimated from characters, enough for the "
            f"longest example ({dataset.max_chars} chars at ~{CHARS_PER_TOKEN} chars/token)"
            + (f"; {dataset.no_tokenizer}" if dataset.no_tokenizer else "")
        )
    return config


def _loss_notes(config: TrainingConfig, dataset: DatasetProfile) -> list[str]:
    """Say which tokens get loss in a chat dataset, and what the template adds to answers."""
    if dataset.task_type != "chat":
        return []
    notes = [
        "Loss on every assistant turn (trainOn: all); system, user and tool messages are "
        "masked. Set trainOn to last to train only the final reply, as mlx_lm does"
        if config.train_on == "all"
        else "Loss on the last assistant turn only (trainOn: last, as mlx_lm does); earlier "
        "replies are masked like the prompts"
    ]
    added = [
        issue.data.get("text", "")
        for view in dataset.views
        for issue in view.issues
        if issue.code == "template-added-text"
    ]
    if added:
        notes.append(
            f"The chat template adds {added[0].strip()!r} before {len(added)} answer(s); it is "
            + (
                "trained (trainTemplateText: true)"
                if config.train_template_text
                else "not trained (trainTemplateText: false)"
            )
        )
    return notes


def _tokens_per_example(
    config: TrainingConfig, dataset: DatasetProfile | None
) -> tuple[float, float | None, str]:
    """Return the mean tokens and trained tokens a step sees per example, and their source."""
    if dataset is None:
        return 256.0, None, "no dataset given: 256 assumed"
    if not dataset.views:
        return (
            dataset.mean_chars / CHARS_PER_TOKEN,
            None,
            f"estimated from characters at ~{CHARS_PER_TOKEN} chars/token",
        )
    summary = summary_at(dataset.views, config.max_seq_length)
    kept = sum(min(v.token_count, config.max_seq_length) for v in dataset.views)
    return (
        kept / len(dataset.views),
        summary.trained["total"] / len(dataset.views),
        "mean with the model's chat template and tokenizer, cut at maxSeqLength",
    )


def _batch_length(config: TrainingConfig, dataset: DatasetProfile | None) -> int:
    """The longest batch in tokens: the longest example padded as mlx_lm pads, when known."""
    if not dataset or not dataset.views:
        return config.max_seq_length
    longest = max(v.token_count for v in dataset.views)
    return min(config.max_seq_length, PAD_TO * math.ceil(longest / PAD_TO))


def _peak_memory(
    config: TrainingConfig, model: ModelInspection, dataset: DatasetProfile | None = None
) -> int:
    return estimate_peak_memory(
        parameters=model.parameters,
        bytes_per_parameter=dtype_bytes(model.dtype),
        quantization_bits=config.quantization_bits or model.quantization_bits,
        hidden_size=model.hidden_size or int(math.sqrt(model.parameters / 12 / 32) or 512),
        total_layers=model.num_layers or config.num_layers,
        trained_layers=config.num_layers,
        rank=config.lora_rank,
        fine_tune_type=config.fine_tune_type,
        # A preference step runs the chosen and the rejected answer of each pair.
        batch_size=config.batch_size * (2 if config.method in PREFERENCE_METHODS else 1),
        seq_length=_batch_length(config, dataset),
        grad_checkpoint=config.grad_checkpoint,
    )


def _fit_memory(
    config: TrainingConfig,
    model: ModelInspection,
    dataset: DatasetProfile | None,
    machine: MachineProfile,
    notes: list[str],
) -> tuple[TrainingConfig, bool]:
    budget = int(machine.usable_memory_bytes * MEMORY_HEADROOM)
    gb = 1e9
    if _peak_memory(config, model, dataset) <= budget:
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
        before = _peak_memory(config, model, dataset)
        if name == "batch_size":
            accumulation = config.grad_accumulation_steps * config.batch_size
            config = replace(config, batch_size=1, grad_accumulation_steps=accumulation)
        else:
            config = replace(config, **{name: value})
        after = _peak_memory(config, model, dataset)
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
        f"{_peak_memory(config, model, dataset) / gb:.1f} GB but only {budget / gb:.1f} GB is "
        "usable - close other applications, pick a smaller model or shorten "
        "maxSeqLength"
    )
    return config, False


def method_for(kind: str | None, method: str | None, overrides: dict[str, Any] | None) -> str:
    """Return the training method: ``overrides.method``, else ``method``, else by the
    dataset's ``kind`` (dpo for preference pairs, sft for the rest and without data)."""
    given = (overrides or {}).get("method", method)
    if given is not None:
        return given
    return "dpo" if kind == "preference" else "sft"


def preference_defaults(
    config: TrainingConfig, model: ModelInspection, full: bool, notes: list[str]
) -> TrainingConfig:
    """Return the category's starting point for DPO/ORPO: a learning rate ~10x below SFT's."""
    lora, whole = PREFERENCE_LEARNING_RATES[model.category]
    config = replace(config, learning_rate=whole if full else lora, beta=0.1, orpo_lambda=0.1)
    if config.method == "dpo":
        notes.append(
            f"DPO: learns from each pair to prefer the chosen answer over the rejected one, "
            f"against the base model as reference (adapters off); beta {config.beta:g} "
            "(how far it may move from the base: higher stays closer), "
            f"{config.dpo_loss} loss"
        )
    else:
        notes.append(
            "ORPO: SFT on the chosen answers plus an odds-ratio term that pushes the rejected "
            f"ones down, no reference model; lambda {config.orpo_lambda:g} (the weight of "
            "the odds-ratio term)"
        )
    return config


def _preference_epochs(
    config: TrainingConfig, dataset: DatasetProfile, preset: str, notes: list[str]
) -> TrainingConfig:
    """Return ``config`` with epochs by pair count (the preset shortens or lengthens them)."""
    epochs = next((e for limit, e in PREFERENCE_EPOCHS if dataset.examples < limit), 1)
    if preset == "quick":
        epochs = 1
    elif preset == "quality":
        epochs += 1
    config = replace(config, epochs=epochs)
    notes.append(
        f"Training for {epochs} epoch(s) over {dataset.examples} preference pairs - "
        "preference training overfits quickly (the margin keeps growing while held-out "
        "reward accuracy stalls), so fewer passes than SFT"
    )
    return config


def propose_config(
    model: ModelInspection,
    dataset: DatasetProfile | None,
    preset: str,
    machine: MachineProfile,
    overrides: dict[str, Any] | None = None,
    overrides_field: str = "overrides",
    method: str | None = None,
) -> Proposal:
    """Return the configuration the smart config proposes, with an explanation per choice.

    ``overrides_field`` names the overrides in errors (``config`` for startTraining).
    ``method`` (sft, dpo, orpo) is the request's own; ``overrides.method`` wins over it, and
    without either the data decides (``method_for``).
    """
    if preset not in PRESETS:
        raise InvalidParams(f"preset must be one of {', '.join(PRESETS)}", field="preset")
    if method is not None and method not in METHODS:
        raise InvalidParams(f"method must be one of {', '.join(METHODS)}", field="method")
    notes: list[str] = [
        f"Using optimized settings for {model.category} model "
        f"({human_params(model.parameters)} params, {model.size_bytes / 1e9:.1f} GB)"
    ]
    config = category_defaults(model)
    chosen_method = method_for(dataset.kind if dataset else None, method, overrides)
    preference = chosen_method in PREFERENCE_METHODS
    if preference:
        config = replace(config, method=chosen_method)
        full = (overrides or {}).get("fineTuneType") == "full"
        config = preference_defaults(config, model, full, notes)
    elif dataset is not None and dataset.kind == "preference":
        notes.append(SFT_ON_PAIRS)
    if model.num_layers and model.num_layers < 16:
        notes.append(f"Adapters on all {model.num_layers} layers (the model has fewer than 16)")
    config = _apply_preset(config, preset, model, notes)
    config = _apply_schedule(config, preset, notes)
    if dataset is not None:
        config = _apply_dataset(config, dataset, model.context_length, notes)
        if preference:
            config = _preference_epochs(config, dataset, preset, notes)
    notes.append(
        f"Using learning rate {_format_lr(config.learning_rate)} for a "
        f"{model.category} model - "
        + (
            "about a tenth of SFT's: preference updates are sensitive and drift from the "
            "base quickly"
            if preference
            else "higher for small models, which need bigger steps"
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
    config, fits = _fit_memory(config, model, dataset, machine, notes)
    if overrides:
        config = apply_overrides(config, overrides, prefix=overrides_field)
        notes.append("Your overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
        if "maxSeqLength" in overrides and dataset is not None and dataset.views:
            notes.append(
                _cut_note(dataset.views, config.max_seq_length)
                or f"maxSeqLength {config.max_seq_length} covers every example"
            )
    if dataset is not None and config.method in PREFERENCE_METHODS:
        notes.append(
            "Each answer is scored on its own tokens through the model's chat template; the "
            "prompt is masked, and maxSeqLength covers the longer answer of each pair"
        )
    elif dataset is not None:
        notes += _loss_notes(config, dataset)
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
            f"{examples} {'pairs' if config.method in PREFERENCE_METHODS else 'examples'} / "
            f"batch {config.batch_size}"
        )
    elif dataset is not None and examples:
        # Iterations were given: report the epochs they amount to, as the worker will.
        epochs = round(config.iterations * config.batch_size / examples, 2)
        config = replace(config, epochs=epochs)
        notes.append(
            f"{config.iterations} iterations x batch {config.batch_size} = "
            f"{epochs:g} epochs over {examples} examples"
        )
    per_example, trained, source = _tokens_per_example(config, dataset)
    if config.method in PREFERENCE_METHODS:
        # Both answers of each pair run (counted as the chosen side twice); DPO adds a
        # forward pass of the reference (the base, adapters off): about 1/3 of a step's work.
        per_example *= 2 * (4 / 3 if config.method == "dpo" else 1)
        source += "; x2: both answers of a pair" + (
            "; x4/3: the reference forward" if config.method == "dpo" else ""
        )
    tokens = int(config.iterations * config.batch_size * max(per_example, 1))
    seconds, basis = estimate_seconds(
        parameters=model.parameters,
        tokens=tokens,
        backend=machine.backend,
        fast_blas=machine.fast_blas,
        fine_tune_type=config.fine_tune_type,
        size_bytes=model.size_bytes,
    )
    estimate = Estimate(
        seconds=seconds,
        peak_memory_bytes=_peak_memory(config, model, dataset),
        tokens=tokens,
        basis=f"{basis}; {per_example:,.0f} tokens per example ({source})",
        trained_tokens=None
        if trained is None
        else int(config.iterations * config.batch_size * trained),
    )
    return Proposal(
        config=config,
        model=model,
        dataset=dataset,
        preset=preset,
        explanations=notes,
        estimate=estimate,
        fits_in_memory=fits,
        training_view=summary_at(dataset.views, config.max_seq_length)
        if dataset is not None and dataset.views
        else None,
    )
