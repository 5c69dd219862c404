"""What the model trains, per record: diagnostics, the merge fix, hover text and the preview.

Every function here reads the training views of ``training_view`` for records prepared by
``prepare.prepared_record``, the same conversion and rendering the worker trains on, so what
the editor and ``cortex/trainingPreview`` show is what gets trained.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .diagnostics import Diagnostic
from .formats import RecordState
from .prepare import prepared_record
from .training_view import (
    TemplateRenderer,
    TrainingView,
    ViewOptions,
    ViewSummary,
    ViewTotals,
    load_renderer,
    merge_system_message,
)
from .validate import check_cancel

SEVERITIES = {"error": "error", "warning": "warning", "info": "information"}
MERGE_CODES = ("template-role", "template-dropped-text")
MERGE_TITLE = "Merge the system message into the first user message"
ADDED_TEXT = "template-added-text"  # reported once per file, not once per record
HOVER_TEXT_LIMIT = 1500  # rendered characters shown in a hover
PROGRESS_EVERY = 200


def view_options(config: dict[str, Any] | None = None) -> ViewOptions:
    """Return the view options of a partial camelCase training config (defaults elsewhere).

    Raises InvalidParams naming ``config.<field>`` for an invalid value.
    """
    from ..config.training_config import TrainingConfig, apply_overrides

    return ViewOptions.from_config(apply_overrides(TrainingConfig(), config))


def renderer_for(model: str, model_dirs: Iterable[str] = (), home: Any = None) -> TemplateRenderer:
    """Return the renderer of a model given by path or name (CortexError model-not-found)."""
    from ..models.registry import resolve_model

    return load_renderer(str(resolve_model(model, model_dirs, home)))


def options_to_wire(options: ViewOptions) -> dict[str, Any]:
    return {
        "trainOn": options.train_on,
        "trainTemplateText": options.train_template_text,
        "maxSeqLength": options.max_seq_length,
        "maskPrompt": options.mask_prompt,
    }


def renderable(state: RecordState) -> bool:
    """True for the records training reads: parsed into turns, without errors."""
    return state.turns is not None and not state.has_error


@dataclass
class CheckedRecord:
    """One record's training view and its diagnostics (lines relative to the record)."""

    view: TrainingView
    diagnostics: list[Diagnostic]


def _relative(
    state: RecordState, code: str, message: str, severity: str, data: dict | None = None
) -> Diagnostic:
    return Diagnostic(
        0, 0, state.end_line, state.end_character, code, message, data=data, severity=severity
    )


def record_diagnostics(state: RecordState, view: TrainingView) -> list[Diagnostic]:
    """Return the record's template issues, and whether it trains nothing or is cut."""
    out = []
    for issue in view.issues:
        if issue.code == ADDED_TEXT:
            continue
        data = {"turn": issue.turn} if issue.turn is not None else None
        out.append(_relative(state, issue.code, issue.message, SEVERITIES[issue.severity], data))
    if not view.ok or not view.ids:
        return out
    cut = view.kept < view.token_count
    if view.trained_count == 0:
        reason = (
            f"maxSeqLength ({view.max_seq_length}) cuts away every answer token"
            if cut and view.lost_to_truncation
            else "no answer gets loss (weight 0, or nothing for trainOn to train)"
        )
        out.append(
            _relative(
                state,
                "record-untrained",
                f"This record trains 0 tokens: {reason}. It costs training time and teaches "
                "nothing; fix or remove it.",
                "warning",
            )
        )
    if cut:
        out.append(
            _relative(
                state,
                "record-truncated",
                f"This record is {view.token_count:,} tokens; training cuts it at maxSeqLength "
                f"{view.max_seq_length} and loses {view.lost_to_truncation:,} answer "
                f"token{'s' if view.lost_to_truncation != 1 else ''}. Shorten it or raise "
                "maxSeqLength.",
                "warning",
                {
                    "tokens": view.token_count,
                    "maxSeqLength": view.max_seq_length,
                    "lostTrainedTokens": view.lost_to_truncation,
                },
            )
        )
    return out


def check_record(
    state: RecordState, chat_file: bool, renderer: TemplateRenderer, options: ViewOptions
) -> CheckedRecord:
    """Render one record as training reads it and return its view and diagnostics."""
    view = renderer.view(prepared_record(state, chat_file), options)
    return CheckedRecord(view, record_diagnostics(state, view))


class TrainedChecks:
    """The model checks of a file's records, kept up to date as records come and go.

    Like ``FileChecks``: the editor adds the states of new lines and removes the old ones, so
    an edit renders only its own records. Records are rendered on demand (``render``), the
    ones added last first, so a big file's checks can fill in while it is edited.
    """

    def __init__(self, renderer: TemplateRenderer, options: ViewOptions) -> None:
        self.renderer = renderer
        self.options = options
        self.done: dict[RecordState, CheckedRecord] = {}
        self.pending: dict[RecordState, None] = {}  # in insertion order: a set that keeps it
        self.urgent: dict[RecordState, None] = {}  # added after the first render: edits
        self.with_diagnostics: set[RecordState] = set()
        self.added_text: set[RecordState] = set()  # records with template-added-text
        self.totals = ViewTotals()
        self.trainable = self.text_records = 0
        self.chat_file = False
        self._rendered_once = False

    def add(self, state: RecordState) -> None:
        if not renderable(state):
            return
        self.trainable += 1
        self.text_records += state.shape == "text"
        (self.urgent if self._rendered_once else self.pending)[state] = None
        self._update_file_kind()

    def remove(self, state: RecordState) -> None:
        if state in self.pending:
            del self.pending[state]
        elif state in self.urgent:
            del self.urgent[state]
        elif state in self.done:
            self._forget(state)
        else:
            return  # never added: not trainable
        self.trainable -= 1
        self.text_records -= state.shape == "text"
        self._update_file_kind()

    def _forget(self, state: RecordState) -> None:
        record = self.done.pop(state)
        self.totals.remove(record.view)
        self.with_diagnostics.discard(state)
        self.added_text.discard(state)

    def _update_file_kind(self) -> None:
        chat_file = self.text_records < self.trainable
        if chat_file != self.chat_file:
            # Text records render as answers in a chat file and as plain text alone.
            self.chat_file = chat_file
            for state in [s for s in self.done if s.shape == "text"]:
                self._forget(state)
                self.urgent[state] = None

    @property
    def complete(self) -> bool:
        return not self.pending and not self.urgent

    def render(
        self,
        limit: int | None = None,
        *,
        cancel: threading.Event | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> bool:
        """Render every edited record, then up to ``limit`` others (None: all).

        Returns True when no record waits any more.
        """
        total = len(self.pending) + len(self.urgent)
        count = others = 0
        while self.urgent or (self.pending and (limit is None or others < limit)):
            if count % PROGRESS_EVERY == 0:
                check_cancel(cancel)
                if on_progress is not None:
                    on_progress(count, total)
            if self.urgent:
                queue = self.urgent
            else:
                queue, others = self.pending, others + 1
            state = next(iter(queue))
            del queue[state]
            self._check(state)
            count += 1
        self._rendered_once = True
        if on_progress is not None and self.complete:
            on_progress(total, total)
        return self.complete

    def _check(self, state: RecordState) -> CheckedRecord:
        record = check_record(state, self.chat_file, self.renderer, self.options)
        self.done[state] = record
        self.totals.add(record.view)
        if record.diagnostics:
            self.with_diagnostics.add(state)
        if any(issue.code == ADDED_TEXT for issue in record.view.issues):
            self.added_text.add(state)
        return record

    def view(self, state: RecordState) -> TrainingView | None:
        """Return the record's view, rendering it now if it waits (None: not trainable)."""
        if state in self.done:
            return self.done[state].view
        for queue in (self.urgent, self.pending):
            if state in queue:
                del queue[state]
                return self._check(state).view
        return None

    def checked(self) -> list[tuple[RecordState, CheckedRecord]]:
        """The rendered records in file order."""
        return sorted(self.done.items(), key=lambda item: item[0].line)

    def diagnostics(self) -> list[Diagnostic]:
        """The rendered records' diagnostics, plus template-added-text once for the file."""
        out = [
            d.shifted(state.line)
            for state in self.with_diagnostics
            for d in self.done[state].diagnostics
        ]
        if self.added_text:
            first = min(self.added_text, key=lambda s: s.line)
            issue = next(i for i in self.done[first].view.issues if i.code == ADDED_TEXT)
            count = len(self.added_text)
            out.append(
                _relative(
                    first,
                    ADDED_TEXT,
                    f"{issue.message} This applies to {count:,} record{'s' if count != 1 else ''}.",
                    SEVERITIES[issue.severity],
                    {"records": count, "text": issue.data.get("text", "")},
                ).shifted(first.line)
            )
        return out

    def summary(self) -> ViewSummary:
        return self.totals.summary()


def check_all(
    states: Iterable[RecordState],
    renderer: TemplateRenderer,
    options: ViewOptions,
    *,
    cancel: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainedChecks:
    """Return the model checks of every trainable record of ``states``, all rendered."""
    checks = TrainedChecks(renderer, options)
    for state in states:
        checks.add(state)
    checks.render(cancel=cancel, on_progress=on_progress)
    return checks


def merged_record(state: RecordState, chat_file: bool) -> dict[str, Any] | None:
    """Return the record with its system message merged into the first user message."""
    if state.shape == "chat":
        messages = state.data["messages"]
        base = dict(state.data)
    else:
        base = prepared_record(state, chat_file)
        messages = base.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "system" for m in messages
    ):
        return None
    return {**base, "messages": merge_system_message(messages)}


def merged_line(state: RecordState, chat_file: bool) -> str | None:
    """Return the JSONL line that replaces the record for the merge fix, if it has one."""
    record = merged_record(state, chat_file)
    return None if record is None else json.dumps(record, ensure_ascii=False)


def _fence(text: str) -> str:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def hover_markdown(view: TrainingView) -> str:
    """Return the hover's account of a view: tokens, trained tokens, cuts and the text."""
    if not view.ok:
        return "\n\n".join(f"**{i.code}**: {i.message}" for i in view.issues)
    parts = [f"{view.token_count:,} tokens", f"**{view.trained_count:,} trained**"]
    if view.kept < view.token_count:
        parts.append(
            f"cut at maxSeqLength {view.max_seq_length}: "
            f"{view.lost_to_truncation:,} answer tokens lost"
        )
    marked, shown = [], 0
    for segment in view.segments():
        piece = segment["text"][: HOVER_TEXT_LIMIT - shown]
        shown += len(piece)
        marked.append(f"⟦{piece}⟧" if segment["trained"] and piece else piece)
        if shown >= HOVER_TEXT_LIMIT:
            marked.append("…")
            break
    text = "".join(marked)
    fence = _fence(text)
    notes = [f"{i.code}: {i.message}" for i in view.issues]
    return (
        "Trained as: " + " · ".join(parts) + "\n\n"
        f"{fence}text\n{text}\n{fence}\n\n"
        "Text between ⟦ and ⟧ is trained (gets loss)." + "".join(f"\n\n{note}" for note in notes)
    )


@dataclass
class TrainingPreview:
    """Some records as the worker trains them, and the statistics of all of them."""

    records: list[tuple[int, TrainingView]]  # first line (0-based), view
    summary: ViewSummary
    options: ViewOptions

    def to_wire(self) -> dict[str, Any]:
        return {
            "records": [{"line": line, **view.to_wire()} for line, view in self.records],
            "summary": self.summary.to_wire(),
            "options": options_to_wire(self.options),
        }


def training_preview(
    states: list[RecordState],
    renderer: TemplateRenderer,
    options: ViewOptions,
    *,
    line: int | None = None,
    limit: int = 20,
    cancel: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainingPreview:
    """Return the first ``limit`` records (or the one at ``line``) rendered, all summarized."""
    checks = check_all(states, renderer, options, cancel=cancel, on_progress=on_progress)
    checked = checks.checked()
    if line is None:
        shown = checked[:limit]
    else:
        shown = [(s, r) for s, r in checked if s.line <= line <= s.line + s.end_line]
    return TrainingPreview(
        [(state.line, record.view) for state, record in shown], checks.summary(), options
    )
