"""The explanation of a proposed configuration: each setting once, with how it got its value.

Why: sentences appended by each adjustment contradicted each other ("Quick: 2 epochs", then
"Training for 3 epochs", then "Your overrides: epochs=70"). Here every change is recorded
against its setting and stage, and each setting is told in one line, stages in order: the
model category's default, what the preset chose, what the dataset adjusted, what the model
needs, what the user overrode, what memory fitting changed; the line starts with the final
value, the one the run uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .training_config import TrainingConfig, snake_to_camel

STAGES = ("default", "preset", "dataset", "model", "override", "memory", "derived")
_FIELD_ORDER = [f.name for f in fields(TrainingConfig)]


@dataclass(frozen=True)
class Step:
    """One stage's value for a setting, and why (empty when the stage's label says it)."""

    stage: str
    value: Any
    why: str = ""


def format_value(name: str, value: Any) -> str:
    """Return a setting's value as the explanation prints it (``1e-4``, ``true``, ``none``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "learning_rate" and isinstance(value, float):
        return f"{value:.0e}".replace("e-0", "e-")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass
class Explanation:
    """The changes made to a config, by setting and stage, and notes that are no setting."""

    labels: dict[str, str] = field(default_factory=dict)  # stage -> how a line names it
    context: list[str] = field(default_factory=list)  # printed first (the model, the machine)
    trails: dict[str, list[Step]] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (stage, text), after settings

    def set(
        self, config: TrainingConfig, name: str, value: Any, stage: str, why: str = ""
    ) -> TrainingConfig:
        """Return ``config`` with ``name`` = ``value``, recording the change and its reason."""
        assert stage in STAGES, stage
        self.trails.setdefault(name, []).append(Step(stage, value, why))
        return replace(config, **{name: value})

    def start(
        self, config: TrainingConfig, names: list[str], whys: dict[str, str] | None = None
    ) -> None:
        """Record the starting values of ``names`` (the category defaults), with reasons."""
        for name in names:
            step = Step("default", getattr(config, name), (whys or {}).get(name, ""))
            self.trails.setdefault(name, []).insert(0, step)

    def note(self, stage: str, text: str) -> None:
        """Add a sentence that explains no single setting (masking, what memory allows)."""
        self.notes.append((stage, text))

    def changed_at(self, name: str) -> str | None:
        """Return the last stage that set ``name`` (None when nothing did)."""
        trail = self.trails.get(name)
        return trail[-1].stage if trail else None

    def _order(self, name: str) -> tuple[int, int]:
        stages = [s.stage for s in self.trails[name] if s.stage != "default"]
        first = STAGES.index(stages[0]) if stages else 0
        return first, _FIELD_ORDER.index(name) if name in _FIELD_ORDER else len(_FIELD_ORDER)

    def line(self, name: str, final: Any) -> str:
        """Return the one line that tells ``name``: final value, then each stage in order."""
        parts = []
        for step in self.trails[name]:
            label = self.labels.get(step.stage, step.stage)
            text = f"{label} {format_value(name, step.value)}" if label else ""
            if step.why:
                text = f"{text} ({step.why})" if text else step.why
            parts.append(text)
        return f"{snake_to_camel(name)} {format_value(name, final)}: " + "; ".join(parts)

    def lines(self, config: TrainingConfig) -> list[str]:
        """Return the explanation: the context, one line per setting, then the notes."""
        names = sorted(self.trails, key=self._order)
        ordered_notes = sorted(self.notes, key=lambda n: STAGES.index(n[0]))
        return (
            list(self.context)
            + [self.line(name, getattr(config, name)) for name in names]
            + [text for _, text in ordered_notes]
        )

    def choices(self, config: TrainingConfig) -> list[dict[str, Any]]:
        """Return the same as data: ``[{setting, value, steps: [{stage, value, why}]}]``."""
        return [
            {
                "setting": snake_to_camel(name),
                "value": getattr(config, name),
                "steps": [
                    {"stage": s.stage, "value": s.value, **({"why": s.why} if s.why else {})}
                    for s in self.trails[name]
                ],
            }
            for name in sorted(self.trails, key=self._order)
        ]
