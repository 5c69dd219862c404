"""The training configuration: one dataclass shared by the smart config, the server and the worker.

Field names are snake_case in Python and camelCase on the wire; ``to_wire`` and
``from_wire`` convert, and ``apply_overrides`` validates a partial config from a client.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import InvalidParams

FINE_TUNE_TYPES = ("lora", "dora", "full")
TRAIN_ON = ("all", "last")
METHODS = ("sft", "dpo", "orpo")
DPO_LOSSES = ("sigmoid", "ipo")
QUANTIZATION_BITS = (None, 2, 3, 4, 5, 6, 8)
LR_SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw", "adafactor", "muon")
MAX_CLEAR_CACHE_THRESHOLD = 2**53 - 1  # the largest integer a JSON number holds exactly


def snake_to_camel(name: str) -> str:
    """Return the camelCase wire name of a snake_case field."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_to_snake(name: str) -> str:
    """Return the snake_case Python name of a camelCase wire field."""
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


@dataclass(frozen=True)
class EarlyStopping:
    """Stop once ``patience`` evaluations in a row beat the best validation loss by <= min_delta."""

    patience: int
    min_delta: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        """Return ``{"patience", "minDelta"}``."""
        return {"patience": self.patience, "minDelta": self.min_delta}


@dataclass
class TrainingConfig:
    """Everything the worker needs to know about how to train, with the help text of each field."""

    fine_tune_type: str = field(default="lora", metadata={"help": "lora, dora or full."})
    epochs: float = field(default=3, metadata={"help": "Passes over the training set."})
    iterations: int = field(
        default=0, metadata={"help": "Optimizer steps; derived from epochs when 0."}
    )
    learning_rate: float = field(
        default=1e-4, metadata={"help": "Peak learning rate (after warmup, before decay)."}
    )
    lr_schedule: str = field(
        default="constant",
        metadata={"help": "constant, cosine or linear decay after the warmup."},
    )
    warmup_steps: int = field(
        default=0,
        metadata={"help": "Optimizer updates of linear warmup from 0; wins over warmupRatio."},
    )
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "Warmup as a fraction of the run's optimizer updates."}
    )
    lr_floor_ratio: float = field(
        default=0.0,
        metadata={"help": "cosine and linear decay to lrFloorRatio x learningRate at the end."},
    )
    optimizer: str = field(
        default="adam", metadata={"help": "adam, adamw, adafactor or muon (mlx.optimizers)."}
    )
    weight_decay: float = field(
        default=0.01,
        metadata={"help": "Decoupled weight decay of adamw, adafactor and muon (adam has none)."},
    )
    lora_rank: int = field(default=8, metadata={"help": "Rank r of the LoRA matrices."})
    lora_alpha: float = field(
        default=16, metadata={"help": "LoRA alpha; mlx_lm's scale is alpha / rank."}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    num_layers: int = field(
        default=16, metadata={"help": "Transformer blocks (from the top) that get adapters."}
    )
    batch_size: int = field(default=4, metadata={"help": "Examples per step."})
    grad_accumulation_steps: int = field(
        default=1, metadata={"help": "Steps whose gradients are summed before an update."}
    )
    max_seq_length: int = field(default=2048, metadata={"help": "Longer examples are cut."})
    quantization_bits: int | None = field(
        default=None, metadata={"help": "Quantize the base in memory (QLoRA): 4 or 8."}
    )
    grad_checkpoint: bool = field(
        default=False, metadata={"help": "Recompute activations to save memory."}
    )
    clear_cache_threshold: int = field(
        default=0,
        metadata={
            "help": "Bytes: after a step, free MLX's buffer cache if it holds more (0 = keep it)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Random seed for data order and init."})
    train_on: str = field(
        default="all",
        metadata={"help": "Assistant turns with loss: all of them, or the last only (mlx_lm's)."},
    )
    train_template_text: bool = field(
        default=False,
        metadata={"help": "Also train text the template adds before answers (empty think tags)."},
    )
    method: str = field(
        default="sft", metadata={"help": "sft, dpo or orpo (dpo/orpo need preference pairs)."}
    )
    beta: float = field(
        default=0.1, metadata={"help": "DPO/ORPO: strength of the preference (beta)."}
    )
    dpo_loss: str = field(default="sigmoid", metadata={"help": "DPO loss: sigmoid or ipo."})
    orpo_lambda: float = field(
        default=0.1, metadata={"help": "ORPO: weight of the odds-ratio term."}
    )

    keep_best: bool = field(
        default=True,
        metadata={"help": "The output holds the adapter with the lowest validation loss."},
    )
    early_stopping: EarlyStopping | None = field(
        default=None,
        metadata={"help": "{patience, minDelta} in evaluations; null trains every iteration."},
    )

    @property
    def lora_scale(self) -> float:
        """mlx_lm's ``scale`` for the PEFT convention alpha / rank (mlx_lm's own default is 20)."""
        return self.lora_alpha / self.lora_rank

    def to_wire(self) -> dict[str, Any]:
        """Return the config with camelCase keys, as sent to clients."""
        wire = {snake_to_camel(k): v for k, v in asdict(self).items()}
        if self.early_stopping is not None:
            wire["earlyStopping"] = self.early_stopping.to_wire()
        return wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> TrainingConfig:
        """Build a config from camelCase keys, validating every field given."""
        return apply_overrides(cls(), data)


def iterations_for(epochs: float, examples: int, batch_size: int) -> int:
    """Return the optimizer steps for ``epochs`` passes: ceil(epochs * examples / batch)."""
    return max(1, math.ceil(epochs * max(examples, 1) / max(batch_size, 1)))


def _check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise InvalidParams(f"{field_name}: {message}", field=field_name)


def apply_overrides(
    config: TrainingConfig, overrides: dict[str, Any] | None, prefix: str = "config"
) -> TrainingConfig:
    """Return ``config`` with the camelCase ``overrides`` applied, each one validated."""
    if not overrides:
        return config
    known = {snake_to_camel(f.name): f.name for f in fields(TrainingConfig)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{prefix}.{key}"
        if key not in known:
            raise InvalidParams(
                f"{path}: unknown setting; expected one of {', '.join(sorted(known))}",
                field=path,
            )
        name = known[key]
        changes[name] = _validated(name, value, path)
    return replace(config, **changes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validated(name: str, value: Any, path: str) -> Any:
    if name == "fine_tune_type":
        _check(value in FINE_TUNE_TYPES, path, f"must be one of {', '.join(FINE_TUNE_TYPES)}")
    elif name in ("epochs",):
        _check(_is_number(value) and 0 < value <= 1000, path, "must be a number in (0, 1000]")
    elif name == "learning_rate":
        _check(_is_number(value) and 0 < value < 1, path, "must be a number in (0, 1), e.g. 1e-4")
    elif name == "lora_alpha":
        _check(_is_number(value) and value > 0, path, "must be a positive number")
    elif name == "lora_dropout":
        _check(_is_number(value) and 0 <= value < 1, path, "must be a number in [0, 1)")
    elif name == "iterations":
        _check(_is_int(value) and 0 <= value <= 10_000_000, path, "must be an integer >= 0")
    elif name in ("lora_rank", "num_layers", "batch_size", "grad_accumulation_steps"):
        _check(_is_int(value) and 1 <= value <= 100_000, path, "must be a positive integer")
    elif name == "max_seq_length":
        _check(_is_int(value) and 16 <= value <= 1_048_576, path, "must be an integer >= 16")
    elif name == "quantization_bits":
        _check(value in QUANTIZATION_BITS, path, "must be null, 2, 3, 4, 5, 6 or 8")
    elif name == "grad_checkpoint":
        _check(isinstance(value, bool), path, "must be true or false")
    elif name == "clear_cache_threshold":
        _check(
            _is_int(value) and 0 <= value <= MAX_CLEAR_CACHE_THRESHOLD,
            path,
            "must be a number of bytes, an integer >= 0 (0 keeps the cache)",
        )
    elif name == "train_on":
        _check(value in TRAIN_ON, path, f"must be one of {', '.join(TRAIN_ON)}")
    elif name == "train_template_text":
        _check(isinstance(value, bool), path, "must be true or false")
    elif name == "lr_schedule":
        _check(value in LR_SCHEDULES, path, f"must be one of {', '.join(LR_SCHEDULES)}")
    elif name == "warmup_steps":
        _check(_is_int(value) and 0 <= value <= 10_000_000, path, "must be an integer >= 0")
    elif name in ("warmup_ratio", "lr_floor_ratio"):
        _check(_is_number(value) and 0 <= value < 1, path, "must be a number in [0, 1), e.g. 0.1")
    elif name == "optimizer":
        _check(value in OPTIMIZERS, path, f"must be one of {', '.join(OPTIMIZERS)}")
    elif name == "weight_decay":
        _check(_is_number(value) and 0 <= value < 1, path, "must be a number in [0, 1), e.g. 0.01")
    elif name == "keep_best":
        _check(isinstance(value, bool), path, "must be true or false")
    elif name == "early_stopping":
        return _early_stopping(value, path)
    elif name == "method":
        _check(value in METHODS, path, f"must be one of {', '.join(METHODS)}")
    elif name == "dpo_loss":
        _check(value in DPO_LOSSES, path, f"must be one of {', '.join(DPO_LOSSES)}")
    elif name in ("beta", "orpo_lambda"):
        _check(_is_number(value) and 0 < value <= 100, path, "must be a number in (0, 100]")
    elif name == "seed":
        _check(_is_int(value) and 0 <= value < 2**32, path, "must be an integer in [0, 2^32)")
    return value


def _early_stopping(value: Any, path: str) -> EarlyStopping | None:
    """Return the ``earlyStopping`` object a client sent (null: off) as an EarlyStopping."""
    if value is None or isinstance(value, EarlyStopping):
        return value
    _check(
        isinstance(value, dict) and set(value) <= {"patience", "minDelta"},
        path,
        'must be null or {"patience": evaluations, "minDelta": loss}',
    )
    patience = value.get("patience")
    _check(
        _is_int(patience) and 1 <= patience <= 10_000,
        f"{path}.patience",
        "must be an integer >= 1 (evaluations without improvement before stopping)",
    )
    min_delta = value.get("minDelta", 0.0)
    _check(
        _is_number(min_delta) and 0 <= min_delta < 100,
        f"{path}.minDelta",
        "must be a number in [0, 100) (the loss improvement that counts), e.g. 0.01",
    )
    return EarlyStopping(patience=patience, min_delta=float(min_delta))


def method_conflict(config: TrainingConfig) -> str | None:
    """Return why the config's method cannot train its fine-tune type, or None when it can.

    DPO's reference model is the base with the adapters switched off; a full fine-tune has no
    adapters, so it would need a second copy of the weights, which cortex-rpc does not load.
    """
    if config.method == "dpo" and config.fine_tune_type == "full":
        return (
            "method dpo needs a reference model, which cortex-rpc takes from the base with the "
            "adapters switched off; a full fine-tune has no adapters, so it would need a second "
            "copy of the weights. Use fineTuneType lora or dora with DPO, or method orpo (no "
            "reference model) for a full fine-tune."
        )
    return None
