"""Dataset analysis: size class, task type, lengths, tokens, duplicates and a quality score."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.smart import size_class_for
from .diagnostics import ValidationResult
from .formats import LONG_CHARS, RecordState
from .load import DatasetSource, as_loaded
from .preference import LENGTH_RATIO, chosen_and_rejected, length_ratio
from .shapes import PREFERENCE

_STRUCTURED_STARTS = ("{", "[", "<", "```", "|", "SELECT ", "def ", "import ")


@dataclass
class DatasetStats:
    """What the smart config needs: count, size class, task type and lengths."""

    examples: int
    size_class: str
    task_type: str
    mean_chars: float
    max_chars: int


@dataclass
class DatasetAnalysis:
    """The analysis of a dataset as ``cortex/analyzeDataset`` returns it."""

    examples: int
    size_class: str
    task_type: str
    chars: dict[str, float]
    tokens: dict[str, Any] | None
    duplicates: int
    empty_fields: int
    long_examples: int
    tool_calling_records: int = 0
    # Preference pairs: their count, each side's characters and the sides' length ratios
    # (``preference_stats``); None when the dataset has no pairs.
    preference: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    # What lowered quality.score: (code, how many, points taken off); not on the wire.
    penalties: list[tuple[str, int, int]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "examples": self.examples,
            "sizeClass": self.size_class,
            "taskType": self.task_type,
            "chars": self.chars,
            "duplicates": self.duplicates,
            "emptyFields": self.empty_fields,
            "longExamples": self.long_examples,
            "toolCallingRecords": self.tool_calling_records,
            "warnings": self.warnings,
            "quality": self.quality,
        }
        if self.tokens is not None:
            wire["tokens"] = self.tokens
        wire["kind"] = "preference" if self.preference else "sft"
        if self.preference is not None:
            wire["preference"] = self.preference
        return wire


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(values: list[int]) -> dict[str, float]:
    """Return min, mean, p50, p95 and max of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return {"min": 0, "mean": 0, "p50": 0, "p95": 0, "max": 0}
    return {
        "min": ordered[0],
        "mean": round(sum(ordered) / len(ordered), 1),
        "p50": _percentile(ordered, 0.5),
        "p95": _percentile(ordered, 0.95),
        "max": ordered[-1],
    }


def _answer(turns: list[tuple[str, str]]) -> str:
    """Return a record's answer: its last turn's text, a preference pair's chosen side."""
    sides = chosen_and_rejected(turns)
    return turns[-1][1] if sides is None else sides[0]


def task_type(states: list[RecordState]) -> str:
    """Return chat (conversations, Q&A), completion (plain text / completions) or structured."""
    records = [s for s in states if s.turns]
    if not records:
        return "completion"
    answers = [_answer(s.turns).lstrip() for s in records]
    structured = sum(1 for a in answers if a.startswith(_STRUCTURED_STARTS))
    if structured * 2 > len(answers):
        return "structured"
    shapes = [s.shape for s in records]
    completion = sum(1 for s in shapes if s in ("text", "prompt-completion"))
    return "completion" if completion * 2 > len(shapes) else "chat"


def preference_stats(states: list[RecordState]) -> dict[str, Any] | None:
    """Return the pairs of preference records: how many, each side's characters, the
    length ratios of their sides and how many exceed ``LENGTH_RATIO`` (None: no pairs)."""
    sides = [
        pair
        for s in states
        if s.shape == PREFERENCE and (pair := chosen_and_rejected(s.turns or [])) is not None
    ]
    if not sides:
        return None
    ratios = [length_ratio(chosen, rejected) for chosen, rejected in sides]
    ordered = sorted(ratios)
    return {
        "pairs": len(sides),
        "chosenChars": summarize([len(chosen) for chosen, _ in sides]),
        "rejectedChars": summarize([len(rejected) for _, rejected in sides]),
        "lengthRatio": {
            "mean": round(sum(ratios) / len(ratios), 2),
            "p50": round(_percentile(ordered, 0.5), 2),
            "p95": round(_percentile(ordered, 0.95), 2),
            "max": round(ordered[-1], 2),
        },
        "unbalancedPairs": sum(1 for r in ratios if r > LENGTH_RATIO),
        "chosenLonger": sum(1 for chosen, rejected in sides if len(chosen) > len(rejected)),
    }


def dataset_stats(source: DatasetSource, format: str | None = None) -> DatasetStats:
    """Return the stats of a dataset (a path or loaded); ``dataset-invalid`` if it has errors."""
    records = as_loaded(source, format).check().records
    chars = [s.chars for s in records]
    return DatasetStats(
        len(records),
        size_class_for(len(records)),
        task_type(records),
        sum(chars) / len(chars) if chars else 0.0,
        max(chars, default=0),
    )


def token_counts(states: list[RecordState], model_path: str | Path) -> list[int]:
    """Count tokens with the model's own tokenizer (local files only, no remote code)."""
    from .tokens import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    return [tokenizer(" ".join(text for _, text in s.turns)) for s in states]


def analyze_dataset(
    source: DatasetSource,
    *,
    model_path: str | Path | None = None,
    context_length: int | None = None,
) -> DatasetAnalysis:
    """Return the analysis of a dataset, a path or loaded (errors lower quality, never raise).

    ``context_length`` is the model's context for ``tokens.overContext`` (default: read from
    ``model_path``).
    """
    loaded = as_loaded(source)
    counted = context = None
    if model_path is not None:
        from .tokens import model_context_length

        context = context_length or model_context_length(model_path)
        counted = token_counts(loaded.records, model_path)
    return analyze_loaded(loaded.states, loaded.result, counted, context)


def calls_tools(data: Any) -> bool:
    """Return True for a chat or ShareGPT record with a tool call in it."""
    if not isinstance(data, dict):
        return False
    for message in data.get("messages") or data.get("conversations") or []:
        if isinstance(message, dict) and (
            message.get("tool_calls")
            or message.get("function_call")
            or message.get("from") == "function_call"
        ):
            return True
    return False


def analyze_loaded(
    states: list[RecordState],
    result: ValidationResult,
    counted: list[int] | None = None,
    context: int | None = None,
) -> DatasetAnalysis:
    """Return the analysis of loaded states; ``counted``: tokens per record, given a model."""
    records = [s for s in states if s.turns is not None]
    chars = [s.chars for s in records]
    counts = {
        code: 0
        for code in ("duplicate", "near-duplicate", "empty-field", "long-example", "mixed-shapes")
    }
    for d in result.diagnostics:
        if d.code in counts:
            counts[d.code] += 1
    empty = counts["empty-field"]
    tokens = None
    if counted is not None:
        tokens = {
            **summarize(counted),
            "total": sum(counted),
            "overContext": sum(1 for t in counted if context and t > context),
            "contextLength": context,
        }
    warnings = sorted(
        {d.message for d in result.diagnostics if d.code in ("too-few-examples", "no-examples")}
    )
    if counts["duplicate"] + counts["near-duplicate"]:
        warnings.append(f"{counts['duplicate'] + counts['near-duplicate']} duplicate example(s)")
    if counts["long-example"]:
        warnings.append(f"{counts['long-example']} example(s) over {LONG_CHARS} characters")
    if counts["mixed-shapes"]:
        warnings.append("Records use more than one shape")
    pairs = preference_stats(records)
    if pairs is not None and pairs["unbalancedPairs"]:
        warnings.append(
            f"{pairs['unbalancedPairs']} preference pair(s) with one answer over "
            f"{LENGTH_RATIO}x as long as the other"
        )
    if tokens and tokens["overContext"]:
        warnings.append(
            f"{tokens['overContext']} example(s) exceed the model's context of "
            f"{tokens['contextLength']} tokens and will be truncated"
        )
    issues = []
    penalties = []
    score = 100
    n = max(1, len(records))
    if result.errors:
        penalties.append(("errors", result.errors, min(40, 10 + result.errors)))
        score -= penalties[-1][2]
        issues.append(f"{result.errors} error(s) block training")
    duplicates = counts["duplicate"] + counts["near-duplicate"]
    for code, amount, weight, label in (
        ("duplicates", duplicates, 30, "duplicates"),
        ("empty-fields", empty, 30, "empty fields"),
        ("long-examples", counts["long-example"], 15, "long examples"),
        ("mixed-shapes", counts["mixed-shapes"], 10, "mixed shapes"),
    ):
        if amount:
            penalties.append((code, amount, max(1, round(weight * amount / n))))
            score -= penalties[-1][2]
            issues.append(f"{amount} {label}")
    if len(records) < 20:
        penalties.append(("few-examples", len(records), 20))
        score -= 20
        issues.append(f"only {len(records)} examples (50-100+ recommended)")
    elif len(records) < 100:
        penalties.append(("few-examples", len(records), 10))
        score -= 10
        issues.append(f"{len(records)} examples: more data usually helps")
    return DatasetAnalysis(
        examples=len(records),
        size_class=size_class_for(len(records)),
        task_type=task_type(records),
        chars=summarize(chars),
        tokens=tokens,
        duplicates=duplicates,
        empty_fields=empty,
        long_examples=counts["long-example"],
        tool_calling_records=sum(1 for s in records if calls_tools(s.data)),
        preference=pairs,
        warnings=warnings,
        quality={"score": max(0, score), "issues": issues},
        penalties=penalties,
    )
