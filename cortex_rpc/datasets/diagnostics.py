"""Diagnostics: one problem in a dataset, with an exact 0-based range, a severity and a code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_DIAGNOSTICS = 1000
SOURCE = "cortex"
SEVERITY_CODES = {"error": 1, "warning": 2, "information": 3}

# Every code the validator emits, with its default severity. Clients match on these.
# Checks estimated from characters; a model's own token counts replace them (record-truncated).
CHARACTER_ESTIMATES = frozenset({"long-example", "too-long"})

CODES: dict[str, str] = {
    "utf8-invalid": "error",
    "bom": "warning",
    "crlf": "information",
    "blank-line": "warning",
    "json-syntax": "error",
    "trailing-comma": "error",
    "json-root": "error",
    "wrong-type": "error",
    "unknown-shape": "error",
    "missing-field": "error",
    "unknown-key": "warning",
    "unknown-role": "error",
    "empty-field": "error",
    "role-order": "error",
    "no-assistant": "error",
    "tool-arguments": "error",
    "tool-arguments-object": "warning",
    "tool-call-id": "error",
    "tool-result-mismatch": "error",
    "unknown-tool": "error",
    "tool-definition": "error",
    "legacy-functions": "information",
    "mixed-shapes": "warning",
    "duplicate": "warning",
    "near-duplicate": "warning",
    "long-example": "warning",
    "too-long": "warning",
    "csv-header": "error",
    "csv-field-count": "error",
    "txt-structure": "error",
    "no-examples": "error",
    "too-few-examples": "warning",
    "preference-identical": "error",
    "preference-length-ratio": "warning",
    "preference-prompt-ignored": "warning",
    "dolly-context": "information",
    "content-part-dropped": "warning",
    "weight-ignored": "information",
    "duplicate-key": "warning",
    "utf16": "warning",
    "utf32": "warning",
    "gzip": "information",
    "csv-delimiter": "information",
    "txt-no-markers": "error",
    "pretty-json": "error",
    "python-repr": "error",
    "jsonl-in-json": "information",
    "oasst-tree": "error",
    "txt-preamble": "information",
    "txt-preamble-ignored": "warning",
    # With a model: what its chat template and the training config make of each record.
    "no-chat-template": "error",
    "template-role": "error",
    "template-error": "error",
    "template-unmapped": "error",
    "template-dropped-text": "warning",
    "template-added-text": "information",
    "record-untrained": "warning",
    "record-truncated": "warning",
}


@dataclass(frozen=True)
class Diagnostic:
    """A problem at ``[start, end)``: 0-based lines, UTF-16 characters as LSP counts them."""

    start_line: int
    start_character: int
    end_line: int
    end_character: int
    code: str
    message: str
    data: dict[str, Any] | None = field(default=None, compare=False)
    severity: str = ""

    def __post_init__(self) -> None:
        if not self.severity:
            object.__setattr__(self, "severity", CODES[self.code])

    def shifted(self, lines: int) -> Diagnostic:
        """Return this diagnostic moved down by ``lines`` (record-relative to absolute)."""
        if not lines:
            return self
        return Diagnostic(
            self.start_line + lines,
            self.start_character,
            self.end_line + lines,
            self.end_character,
            self.code,
            self.message,
            self.data,
            self.severity,
        )

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "range": {
                "start": {"line": self.start_line, "character": self.start_character},
                "end": {"line": self.end_line, "character": self.end_character},
            },
            "severity": SEVERITY_CODES[self.severity],
            "code": self.code,
            "source": SOURCE,
            "message": self.message,
        }
        if self.data:
            wire["data"] = self.data
        return wire


def sort_key(diagnostic: Diagnostic) -> tuple[int, int, int]:
    return (diagnostic.start_line, diagnostic.start_character, SEVERITY_CODES[diagnostic.severity])


@dataclass
class ValidationResult:
    """What validating a dataset found: its format, majority shape, examples and problems."""

    format: str
    shape: str | None
    examples: int
    diagnostics: list[Diagnostic]
    total: int
    errors: int
    warnings: int

    @property
    def ok(self) -> bool:
        return self.errors == 0

    @property
    def truncated(self) -> bool:
        return self.total > len(self.diagnostics)

    def to_wire(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "format": self.format,
            "shape": self.shape,
            "examples": self.examples,
            "diagnostics": [d.to_wire() for d in self.diagnostics],
            "total": self.total,
            "truncated": self.truncated,
        }
