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
from ..units import human_bytes, human_params
from .calibration import Calibration, RunShape
from .estimate import (
    CHARS_PER_TOKEN,
    PROCESS_BASELINE_BYTES,
    Estimate,
    default_steps_per_eval,
    estimate_memory,
    estimate_time,
    eval_count,
)
from .explain import Explanation
from .training_config import (
    METHODS,
    TrainingConfig,
    apply_overrides,
    camel_to_snake,
    iterations_for,
    snake_to_camel,
)

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
VALID_FRACTION = 0.1  # prepare_dataset's default split


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
    memory_source: str = ""  # what usable_memory_bytes is (the wired limit, free RAM)
    calibration: Calibration | None = None  # runs measured on this machine
    load_per_core: float | None = None  # runnable threads per core now, a new worker counted

    @property
    def budget_bytes(self) -> int:
        """Return the memory a run may need: the usable memory less headroom."""
        return int(self.usable_memory_bytes * MEMORY_HEADROOM)


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
    choices: list[dict[str, Any]] = field(default_factory=list)  # each setting's stages
    memory: dict[str, Any] = field(default_factory=dict)  # needed vs usable, and what it is

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
            "choices": self.choices,
            "memory": self.memory,
        }
        if self.training_view is not None:
            wire["trainingView"] = self.training_view.to_wire()
        if self.dataset is not None:
            wire["dataset"] = self.dataset.to_wire()
        return wire


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
    config: TrainingConfig, preset: str, model: ModelInspection, ex: Explanation
) -> TrainingConfig:
    layers = model.num_layers or config.num_layers
    if preset == "quick":
        config = ex.set(config, "epochs", max(1, math.ceil(config.epochs / 3)), "preset", "a third")
        config = ex.set(config, "learning_rate", config.learning_rate * 2, "preset", "doubled")
        top = max(1, min(config.num_layers, 8))
        if top != config.num_layers:
            config = ex.set(config, "num_layers", top, "preset", "the top layers only")
        ex.context.append(
            "Quick preset: fewer epochs at a higher learning rate - fast experimentation"
        )
    elif preset == "quality":
        config = ex.set(config, "epochs", config.epochs + 2, "preset", "+2")
        config = ex.set(
            config, "learning_rate", config.learning_rate / 2, "preset", "halved, conservative"
        )
        config = ex.set(config, "lora_rank", config.lora_rank * 2, "preset", "doubled")
        config = ex.set(config, "lora_alpha", config.lora_alpha * 2, "preset", "doubled")
        if layers != config.num_layers:
            config = ex.set(config, "num_layers", layers, "preset", "all layers")
        ex.context.append(
            "Quality preset: more epochs, a conservative learning rate and a higher rank on "
            "all layers - best results, longer training"
        )
    elif preset == "expert":
        ex.context.append(
            "Expert: the Balanced settings are proposed; every field can be overridden"
        )
    else:
        ex.context.append("Balanced preset: the category's defaults (recommended)")
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


def _apply_schedule(config: TrainingConfig, preset: str, ex: Explanation) -> TrainingConfig:
    """Give the preset's learning-rate schedule (the optimizer stays Adam, as in mlx_lm)."""
    schedule, warmup, floor, why = PRESET_SCHEDULES.get(preset, PRESET_SCHEDULES["balanced"])
    ex.start(config, ["lr_schedule", "warmup_ratio", "lr_floor_ratio"])
    if schedule != config.lr_schedule:
        config = ex.set(config, "lr_schedule", schedule, "preset", why)
    if warmup != config.warmup_ratio:
        config = ex.set(config, "warmup_ratio", warmup, "preset")
    if floor != config.lr_floor_ratio:
        config = ex.set(config, "lr_floor_ratio", floor, "preset")
    if schedule == "constant":
        ex.context.append(f"Schedule: {why}")
    return config


def _apply_dataset(
    config: TrainingConfig,
    dataset: DatasetProfile,
    context_length: int | None,
    ex: Explanation,
) -> TrainingConfig:
    if config.method in PREFERENCE_METHODS:
        pass  # epochs come from the pair count (``_preference_epochs``)
    elif dataset.examples < SMALL_DATASET:
        why = f"+1 for a small dataset, {dataset.examples} examples"
        config = ex.set(config, "epochs", config.epochs + 1, "dataset", why)
        if config.lora_dropout:
            config = ex.set(config, "lora_dropout", 0.0, "dataset", "less regularization")
    elif dataset.examples > LARGE_DATASET:
        why = f"-1 for a large dataset, {dataset.examples} examples"
        config = ex.set(config, "epochs", max(1, config.epochs - 1), "dataset", why)
    if dataset.views:  # the characters' threshold in tokens
        mean_tokens = sum(v.token_count for v in dataset.views) / len(dataset.views)
        threshold = LONG_EXAMPLE_CHARS / CHARS_PER_TOKEN
        long_examples = mean_tokens > threshold
        mean = f"mean {mean_tokens:.0f} tokens > {threshold:.0f} tokens"
    else:
        long_examples = dataset.mean_chars > LONG_EXAMPLE_CHARS
        mean = f"mean {dataset.mean_chars:.0f} characters > {LONG_EXAMPLE_CHARS} characters"
    if long_examples:
        config = ex.set(
            config,
            "grad_accumulation_steps",
            config.grad_accumulation_steps * 2,
            "dataset",
            f"doubled: long examples ({mean}) use smaller effective batches",
        )
    if dataset.task_type == "structured":
        ex.note(
            "dataset",
            "Structured outputs: prompts are masked so the loss falls on the structured answers",
        )
    elif dataset.task_type != "chat":  # chats get the loss note once trainOn is final
        ex.note(
            "dataset", "Completion data: prompt and completion are joined and the prompt is masked"
        )
    if dataset.views:
        config = _length_from_tokens(config, dataset.views, context_length, ex)
    elif dataset.max_chars:
        config = _length_from_chars(config, dataset, ex)
    if config.batch_size > dataset.examples:
        config = ex.set(
            config,
            "batch_size",
            max(1, dataset.examples),
            "dataset",
            f"the dataset has only {dataset.examples} examples",
        )
    return config


def _power_of_two(tokens: int) -> int:
    return max(128, 2 ** math.ceil(math.log2(max(tokens, 1))))


def _length_from_tokens(
    config: TrainingConfig,
    views: tuple[TrainingView, ...],
    context_length: int | None,
    ex: Explanation,
) -> TrainingConfig:
    """Cover every example, unless a few outliers would need a much longer maxSeqLength."""
    lengths = sorted(v.token_count for v in views)
    cap = context_length or config.max_seq_length
    whole = _power_of_two(lengths[-1])
    # The length that leaves at most MAX_CUT_FRACTION of the examples cut.
    most = _power_of_two(lengths[len(lengths) - 1 - int(len(lengths) * MAX_CUT_FRACTION)])
    length = min(cap, most if whole >= OUTLIER_FACTOR * most else whole)
    cut = _cut_note(views, length)
    if not cut:
        why = (
            f"covers every example; the longest is {lengths[-1]:,} tokens with the model's "
            "chat template, counted with its tokenizer"
        )
        return ex.set(config, "max_seq_length", length, "dataset", why)
    keep = (
        f"maxSeqLength {whole} would keep them whole"
        if whole <= cap
        else f"the model's context is {cap:,} tokens"
    )
    why = f"{cut}; the longest has {lengths[-1]:,} tokens; {keep}"
    return ex.set(config, "max_seq_length", length, "dataset", why)


def _cut_note(views: tuple[TrainingView, ...], length: int) -> str:
    """Return how many examples ``length`` covers and what the cut ones lose, or "" for none."""
    summary = summary_at(views, length)
    if not summary.cut:
        return ""
    covered = math.floor(1000 * (summary.records - summary.cut) / summary.records) / 10
    return (
        f"covers {covered:g}% of examples; {summary.cut} example(s) would be cut, losing "
        f"{summary.lost_trained_tokens:,} trained tokens"
    )


def summary_at(views: tuple[TrainingView, ...], length: int) -> ViewSummary:
    """Return the token summary of ``views`` as the worker cuts them at ``length``."""
    from ..datasets.training_view import summarize

    return summarize([replace(v, max_seq_length=length) for v in views])


def _length_from_chars(
    config: TrainingConfig, dataset: DatasetProfile, ex: Explanation
) -> TrainingConfig:
    """The fallback without a tokenizer: the longest example's characters, with a margin."""
    needed = int(dataset.max_chars / CHARS_PER_TOKEN * 1.1) + 16
    length = min(config.max_seq_length, _power_of_two(needed))
    if length != config.max_seq_length:
        why = (
            f"tokens estimated from characters: the longest example has {dataset.max_chars} "
            f"characters, ~{CHARS_PER_TOKEN} characters per token"
            + (f"; {dataset.no_tokenizer}" if dataset.no_tokenizer else "")
        )
        config = ex.set(config, "max_seq_length", length, "dataset", why)
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
        return 256.0, None, "no dataset given: 256 tokens assumed"
    if not dataset.views:
        return (
            dataset.mean_chars / CHARS_PER_TOKEN,
            None,
            f"estimated from characters at ~{CHARS_PER_TOKEN} characters per token",
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
    return min(config.max_seq_length, PAD_TO * math.ceil(longest / PAD_TO) + 1)


def pair_factors(config: TrainingConfig) -> tuple[int, float]:
    """Return (sequences per example, work per token) of ``config``'s method: a preference
    step runs the chosen and the rejected answer of each pair, and DPO adds a forward of the
    reference (the base, adapters off): about a third of a step's work."""
    if config.method not in PREFERENCE_METHODS:
        return 1, 1.0
    return 2, 4 / 3 if config.method == "dpo" else 1.0


def run_shape(
    config: TrainingConfig,
    model: ModelInspection,
    dataset: DatasetProfile | None,
    machine: MachineProfile,
    steps_per_eval: int | None = None,
) -> RunShape:
    """Return what the estimates need to know about training ``config`` on this machine."""
    from ..datasets.prepare import split_counts

    backend = machine.backend
    if backend == "cpu" and not machine.fast_blas:
        backend = "cpu-reference-blas"
    per_example, _, _ = _tokens_per_example(config, dataset)
    sides, work = pair_factors(config)
    examples = dataset.examples if dataset else 0
    val_examples = split_counts(examples, VALID_FRACTION) if examples else 0
    eval_batch = max(1, min(config.batch_size, val_examples))
    iterations = max(config.iterations, 1)
    every = steps_per_eval or default_steps_per_eval(iterations)
    hidden = model.hidden_size or int(math.sqrt(model.parameters / 12 / 32) or 512)
    return RunShape(
        backend=backend,
        method=config.method,
        fine_tune_type=config.fine_tune_type,
        parameters=model.parameters,
        size_bytes=model.size_bytes,
        layers=model.num_layers or config.num_layers,
        trained_layers=min(config.num_layers, model.num_layers or config.num_layers),
        hidden_size=hidden,
        vocab_size=model.vocab_size or 32000,
        bytes_per_parameter=dtype_bytes(model.dtype),
        quantization_bits=config.quantization_bits or model.quantization_bits,
        lora_rank=config.lora_rank,
        # A preference step runs the chosen and the rejected answer of each pair.
        batch_size=config.batch_size * sides,
        seq_length=_batch_length(config, dataset),
        tokens_per_step=config.batch_size * max(per_example, 1.0) * sides * work,
        iterations=iterations,
        evals=eval_count(iterations, every) if val_examples else 0,
        val_tokens_per_eval=(val_examples // eval_batch)
        * eval_batch
        * max(per_example, 1.0)
        * sides
        * work,
        val_batches_per_eval=val_examples // eval_batch,
        grad_checkpoint=config.grad_checkpoint,
    )


def memory_needed(
    config: TrainingConfig,
    model: ModelInspection,
    dataset: DatasetProfile | None,
    machine: MachineProfile,
) -> tuple[int, str]:
    """Return (MLX peak bytes, basis) estimated for training ``config`` on ``machine``."""
    return estimate_memory(run_shape(config, model, dataset, machine), machine.calibration)


def _fit_memory(
    config: TrainingConfig,
    model: ModelInspection,
    dataset: DatasetProfile | None,
    machine: MachineProfile,
    ex: Explanation,
    fixed: frozenset[str] = frozenset(),
) -> tuple[TrainingConfig, bool]:
    """Step down quantization, checkpointing and batch until the run fits; say what it chose.

    ``fixed`` names settings the user overrode: memory fitting never changes them.
    """
    budget = machine.budget_bytes
    gb = 1e9

    def needed(c: TrainingConfig) -> int:
        return memory_needed(c, model, dataset, machine)[0] + PROCESS_BASELINE_BYTES

    before = needed(config)
    where = machine.memory_source or "usable memory"
    if before <= budget:
        ex.note(
            "memory",
            f"Memory: about {before / gb:.2f} GB needed (MLX peak plus "
            f"{PROCESS_BASELINE_BYTES / gb:.1f} GB for the process) of {budget / gb:.1f} GB "
            f"usable ({MEMORY_HEADROOM:.0%} of {machine.usable_memory_bytes / gb:.1f} GB {where})"
            " - no memory saving needed",
        )
        return config, True
    steps: list[tuple[str, Any]] = []
    if not model.quantization_bits:
        steps += [("quantization_bits", 8), ("quantization_bits", 4)]
    steps += [("grad_checkpoint", True), ("batch_size", 1)]
    for name, value in steps:
        if name in fixed:
            continue
        if (
            name == "quantization_bits"
            and config.quantization_bits
            and config.quantization_bits <= value
        ):
            continue
        if name == "grad_checkpoint" and config.grad_checkpoint:
            continue
        if name == "batch_size" and config.batch_size == 1:
            continue
        was = needed(config)
        if name == "batch_size":
            accumulation = config.grad_accumulation_steps * config.batch_size
            trial = replace(config, batch_size=1, grad_accumulation_steps=accumulation)
        else:
            trial = replace(config, **{name: value})
        after = needed(trial)
        why = f"memory: {was / gb:.2f} GB needed > {budget / gb:.2f} GB usable; {after / gb:.2f} GB"
        if name == "batch_size":
            accumulation = trial.grad_accumulation_steps
            config = ex.set(config, "batch_size", 1, "memory", why)
            config = ex.set(
                config,
                "grad_accumulation_steps",
                accumulation,
                "memory",
                "keeps the effective batch",
            )
        else:
            config = ex.set(config, name, value, "memory", why)
        if after <= budget:
            ex.note(
                "memory",
                f"Memory: {after / gb:.2f} GB needed of {budget / gb:.1f} GB usable "
                f"({MEMORY_HEADROOM:.0%} of {machine.usable_memory_bytes / gb:.1f} GB {where})",
            )
            return config, True
    ex.note(
        "memory",
        f"Memory: even with every saving the run needs about {needed(config) / gb:.2f} GB but "
        f"only {budget / gb:.2f} GB is usable ({where}) - close other applications, pick a "
        "smaller model, lower batchSize or maxSeqLength, or set quantizationBits: 4"
        + (
            "; quantizing in memory still loads the full-precision weights first, so "
            "convert the model to 4 bits once (mlx_lm.convert --quantize) and train on that"
            if config.quantization_bits and not model.quantization_bits
            else ""
        )
        + (
            f" (your overrides keep {', '.join(sorted(map(snake_to_camel, fixed)))})"
            if fixed
            else ""
        ),
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
    config: TrainingConfig, model: ModelInspection, full: bool, ex: Explanation, stage: str
) -> TrainingConfig:
    """Return the category's starting point for DPO/ORPO: a learning rate ~10x below SFT's.

    ``stage``: what chose the method (the dataset, or the user's override).
    """
    lora, whole = PREFERENCE_LEARNING_RATES[model.category]
    why = "about a tenth of SFT's: preference updates are sensitive and drift from the base"
    config = ex.set(config, "learning_rate", whole if full else lora, stage, why)
    if config.method == "dpo":
        config = ex.set(
            config, "beta", 0.1, stage,
            "how far DPO may move from the base (the reference, adapters off): higher stays "
            "closer",
        )  # fmt: skip
        ex.context.append(
            "DPO: learns from each pair to prefer the chosen answer over the rejected one, "
            f"against the base model as reference; {config.dpo_loss} loss"
        )
    else:
        config = ex.set(config, "orpo_lambda", 0.1, stage, "the weight of the odds-ratio term")
        ex.context.append(
            "ORPO: SFT on the chosen answers plus an odds-ratio term that pushes the rejected "
            "ones down, no reference model"
        )
    return config


def _preference_epochs(
    config: TrainingConfig, dataset: DatasetProfile, preset: str, ex: Explanation
) -> TrainingConfig:
    """Return ``config`` with epochs by pair count (the preset shortens or lengthens them)."""
    epochs = next((e for limit, e in PREFERENCE_EPOCHS if dataset.examples < limit), 1)
    if preset == "quick":
        epochs = 1
    elif preset == "quality":
        epochs += 1
    return ex.set(
        config, "epochs", epochs, "dataset",
        f"{dataset.examples} preference pairs: preference training overfits quickly (the "
        "margin keeps growing while held-out reward accuracy stalls), so fewer passes than SFT",
    )  # fmt: skip


def propose_config(
    model: ModelInspection,
    dataset: DatasetProfile | None,
    preset: str,
    machine: MachineProfile,
    overrides: dict[str, Any] | None = None,
    overrides_field: str = "overrides",
    method: str | None = None,
    steps_per_eval: int | None = None,
) -> Proposal:
    """Return the configuration the smart config proposes, with an explanation per choice.

    ``overrides_field`` names the overrides in errors (``config`` for startTraining).
    ``steps_per_eval`` is the worker option when the client set one (the estimate counts the
    validation passes).
    """
    if preset not in PRESETS:
        raise InvalidParams(f"preset must be one of {', '.join(PRESETS)}", field="preset")
    if method is not None and method not in METHODS:
        raise InvalidParams(f"method must be one of {', '.join(METHODS)}", field="method")
    ex = Explanation(
        labels={
            "default": f"{model.category}-model default",
            "preset": f"{preset.capitalize()} preset",
            "dataset": "dataset",
            "model": "model",
            "override": "your override",
            "memory": "memory fit",
            "derived": "",
        },
        context=[
            f"Using optimized settings for {model.category} model "
            f"({human_params(model.parameters)} params, {human_bytes(model.size_bytes)})"
        ],
    )
    config = category_defaults(model)
    small = model.category in ("tiny", "small")
    ex.start(
        config,
        [*CATEGORY_DEFAULTS[model.category], "max_seq_length"],
        {
            "learning_rate": "higher for small models, which need bigger steps"
            if small
            else "lower for large models, prevents overfitting"
        },
    )
    if model.num_layers and model.num_layers < 16:
        config = ex.set(
            config, "num_layers", config.num_layers, "default",
            f"all {model.num_layers} layers: the model has fewer than 16",
        )  # fmt: skip
    else:
        ex.start(config, ["num_layers"])
    chosen_method = method_for(dataset.kind if dataset else None, method, overrides)
    preference = chosen_method in PREFERENCE_METHODS
    if preference:
        by_data = method is None and "method" not in (overrides or {})
        stage = "dataset" if by_data else "override"
        config = ex.set(
            config, "method", chosen_method, stage, "preference pairs" if by_data else ""
        )
        full = (overrides or {}).get("fineTuneType") == "full"
        config = preference_defaults(config, model, full, ex, stage)
    elif dataset is not None and dataset.kind == "preference":
        ex.note("dataset", SFT_ON_PAIRS)
    config = _apply_preset(config, preset, model, ex)
    config = _apply_schedule(config, preset, ex)
    if dataset is not None:
        config = _apply_dataset(config, dataset, model.context_length, ex)
        if preference:
            config = _preference_epochs(config, dataset, preset, ex)
    if model.recommended_quantization_bits and not config.quantization_bits:
        bits = model.recommended_quantization_bits
        config = ex.set(
            config, "quantization_bits", bits, "model",
            f"{model.size_bytes / 1e9:.0f} GB of weights (> {30 if bits == 4 else 13} GB)",
        )  # fmt: skip
    elif model.quantization_bits:
        ex.note("model", f"Base model is already {model.quantization_bits}-bit quantized (QLoRA)")
    if overrides:
        overridden = apply_overrides(config, overrides, prefix=overrides_field)
        for key in overrides:
            name = camel_to_snake(key)
            same = getattr(config, name) == getattr(overridden, name)
            why = "unchanged" if same else ""
            if name == "max_seq_length" and dataset is not None and dataset.views:
                length = overridden.max_seq_length
                why = _cut_note(dataset.views, length) or "covers every example"
            config = ex.set(config, name, getattr(overridden, name), "override", why)
    if dataset is not None and config.method in PREFERENCE_METHODS:
        ex.note(
            "derived",
            "Each answer is scored on its own tokens through the model's chat template; the "
            "prompt is masked, and maxSeqLength covers the longer answer of each pair",
        )
    elif dataset is not None:
        for note in _loss_notes(config, dataset):
            ex.note("derived", note)
    if model.num_layers and config.num_layers > model.num_layers:
        raise InvalidParams(
            f"{overrides_field}.numLayers: the model has only {model.num_layers} layers",
            field=f"{overrides_field}.numLayers",
        )
    fixed = frozenset(camel_to_snake(k) for k in overrides or {})
    config, fits = _fit_memory(config, model, dataset, machine, ex, fixed)
    examples = dataset.examples if dataset else 0
    if dataset is not None and not (overrides or {}).get("iterations"):
        iterations = iterations_for(config.epochs, examples, config.batch_size)
        config = ex.set(
            config, "iterations", iterations, "derived",
            f"= {config.epochs:g} epochs x {examples} "
            f"{'pairs' if config.method in PREFERENCE_METHODS else 'examples'} / batch "
            f"{config.batch_size}",
        )  # fmt: skip
    elif dataset is not None and examples:
        # Iterations were given: report the epochs they amount to, as the worker will.
        epochs = round(config.iterations * config.batch_size / examples, 2)
        config = ex.set(
            config, "epochs", epochs, "derived",
            f"= {config.iterations} iterations x batch {config.batch_size} / {examples} examples",
        )  # fmt: skip
    estimate = estimate_run(config, model, dataset, machine, steps_per_eval)
    memory = {
        "neededBytes": estimate.peak_memory_bytes + PROCESS_BASELINE_BYTES,
        "budgetBytes": machine.budget_bytes,
        "usableBytes": machine.usable_memory_bytes,
        "source": machine.memory_source,
    }
    return Proposal(
        config=config,
        model=model,
        dataset=dataset,
        preset=preset,
        explanations=ex.lines(config),
        estimate=estimate,
        fits_in_memory=fits,
        training_view=summary_at(dataset.views, config.max_seq_length)
        if dataset is not None and dataset.views
        else None,
        choices=ex.choices(config),
        memory=memory,
    )


def estimate_run(
    config: TrainingConfig,
    model: ModelInspection,
    dataset: DatasetProfile | None,
    machine: MachineProfile,
    steps_per_eval: int | None = None,
) -> Estimate:
    """Return the time and memory estimate of training ``config``, calibrated when possible."""
    shape = run_shape(config, model, dataset, machine, steps_per_eval)
    parts, basis, runs = estimate_time(shape, machine.calibration, machine.load_per_core)
    peak, memory_basis = estimate_memory(shape, machine.calibration)
    per_example, trained, source = _tokens_per_example(config, dataset)
    sides, work = pair_factors(config)
    if sides > 1:
        per_example *= sides
        source += "; x2: both answers of a pair" + (
            "; a third more work per token: the reference forward" if work > 1 else ""
        )
    iterations = max(config.iterations, 1)
    return Estimate(
        seconds=parts.total,
        peak_memory_bytes=peak,
        tokens=int(iterations * config.batch_size * max(per_example, 1)),
        basis=f"{basis}; {per_example:,.0f} tokens per example ({source})",
        trained_tokens=None if trained is None else int(iterations * config.batch_size * trained),
        calibrated_runs=runs,
        memory_basis=memory_basis,
        parts=parts,
        step_seconds=parts.steps / iterations,
        shape=shape,
    )
