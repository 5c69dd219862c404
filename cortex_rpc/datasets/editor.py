"""Editor features over an open dataset document: incremental checks, hover, fixes, summary.

A JSONL document keeps one ``RecordState`` per line. An edit re-parses only the lines it
touches and updates the file-level checks (duplicates, shapes) by removing the old states
and adding the new ones, so a one-line edit in a 100,000-line file costs microseconds plus
assembling the diagnostics. Other formats are re-checked whole (they are rarely huge).
"""

from __future__ import annotations

import itertools
import json
import re
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .analyze import task_type
from .diagnostics import MAX_DIAGNOSTICS, Diagnostic, ValidationResult
from .formats import (
    CHARS_PER_TOKEN,
    EXTENSIONS,
    RecordState,
    detect_format,
    format_notes,
    jsonl_lines_of,
    line_state,
    needs_whole_file,
)
from .positions import col16, index_from_col16
from .preference import chosen_and_rejected, length_ratio, sft_conversion
from .prepare import is_chat_file
from .shapes import PREFERENCE
from .trained import (
    MERGE_CODES,
    MERGE_TITLE,
    TrainedChecks,
    hover_markdown,
    merged_line,
    renderable,
)
from .training_view import TemplateRenderer, TrainingView, ViewOptions
from .validate import (
    FileChecks,
    build_states,
    result_from,
    streamed_validation,
    with_diagnostics,
)

LANGUAGE_IDS = {"jsonl": "jsonl", "json": "json", "csv": "csv"}
Range = tuple[int, int, int, int]  # start line, start character, end line, end character
# Records of a code action's range rendered with the model at once (a longer selection: the
# first ones; the rest are checked as the file fills in).
RENDER_ON_REQUEST = 200


def uri_path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri


def is_dataset_document(
    uri: str, language_id: str | None = None, patterns: list[str] | None = None
) -> bool:
    """Return True for the documents cortex checks: languageId jsonl, or a path that matches
    one of ``patterns`` (None: any .jsonl/.json/.csv/.txt)."""
    if language_id == "jsonl":
        return True
    path = uri_path(uri)
    if patterns is None:
        return Path(path).suffix.lower() in EXTENSIONS
    return any(glob_pattern(p).search(path) for p in patterns)


@lru_cache(maxsize=64)
def glob_pattern(pattern: str) -> re.Pattern[str]:
    """Return the regex of an editor glob (VS Code's syntax): ``**`` any folders, ``*`` and
    ``?`` within a name, ``{a,b}`` alternatives, ``[abc]`` a character.

    A pattern without ``/`` matches a file name in any folder, one with ``/`` the path's end.
    """
    out, depth, index = [], 0, 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "{":
            out.append("(?:")
            depth += 1
        elif char == "}" and depth:
            out.append(")")
            depth -= 1
        elif char == "," and depth:
            out.append("|")
        elif char == "[" and (close := pattern.find("]", index + 1)) > index:
            body = pattern[index + 1 : close]
            out.append("[" + ("^" + body[1:] if body[:1] == "!" else body) + "]")
            index = close
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("(?:^|/)" + "".join(out) + ")" * depth + "$")


class DatasetDocument:
    """An open dataset file: its lines and the checked state of every record."""

    def __init__(
        self,
        uri: str,
        text: str,
        *,
        format: str | None = None,
        language_id: str | None = None,
        context_length: int | None = None,
        token_counter: Any = None,
        renderer: TemplateRenderer | None = None,
        view_options: ViewOptions | None = None,
    ) -> None:
        self.uri = uri
        self.context_length = context_length
        self.token_counter = token_counter
        self.set_training(renderer, view_options)
        self.format = format or (
            "jsonl" if language_id == "jsonl" else detect_format(uri_path(uri), text)
        )
        self.notes = format_notes(uri_path(uri), self.format, text)
        self.task_type_cache: tuple[tuple, str] | None = None
        self.set_text(text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def set_text(self, text: str) -> None:
        """Replace the whole text and re-check everything."""
        self.lines = text.split("\n")
        # Pretty-printed JSON and OASST exports are checked whole, never line by line.
        self.whole = self.format != "jsonl" or needs_whole_file(self.lines)
        self.states, self.extra = build_states(text, self.format, self.context_length)
        self.checks = FileChecks()
        for state in self.states:
            self.checks.add(state)
        self._reset_trained()

    def apply_change(self, range: Range | None, text: str) -> None:
        """Apply one LSP content change (``range`` None: the whole text); re-check the lines."""
        if range is None:
            self.set_text(text)
            return
        start_line, start_col, end_line, end_col = range
        last = len(self.lines) - 1
        start_line, end_line = min(start_line, last), min(end_line, last)
        start_char = index_from_col16(self.lines[start_line], start_col)
        end_char = index_from_col16(self.lines[end_line], end_col)
        new_lines = (
            self.lines[start_line][:start_char] + text + self.lines[end_line][end_char:]
        ).split("\n")
        self.lines[start_line : end_line + 1] = new_lines
        if self.whole or needs_whole_file(self.lines):
            self.set_text(self.text)
            return
        for state in self.states[start_line : end_line + 1]:
            self.checks.remove(state)
            if self.trained is not None:
                self.trained.remove(state)
        fresh = [
            line_state(raw, start_line + i, self.context_length) for i, raw in enumerate(new_lines)
        ]
        self.states[start_line : end_line + 1] = fresh
        if len(new_lines) != end_line + 1 - start_line:
            for number in range_(start_line + len(new_lines), len(self.states)):
                self.states[number].line = number
        for state in fresh:
            self.checks.add(state)
            if self.trained is not None:
                self.trained.add(state)
        if start_line == 0:
            self.extra = build_states(self.lines[0], "jsonl")[1]

    def set_training(
        self, renderer: TemplateRenderer | None, view_options: ViewOptions | None = None
    ) -> None:
        """Check records as they train with ``renderer``'s model (None: no model checks)."""
        self.renderer = renderer
        self.view_options = view_options or ViewOptions()
        if hasattr(self, "states"):
            self._reset_trained()

    def _reset_trained(self) -> None:
        self.trained: TrainedChecks | None = None
        if self.renderer is not None:
            self.trained = TrainedChecks(self.renderer, self.view_options)
            for state in self.states:
                self.trained.add(state)

    def render_trained(self, limit: int | None = None) -> bool:
        """Render the edited records, then up to ``limit`` others (None: all); True when done."""
        return True if self.trained is None else self.trained.render(limit)

    def result(self, limit: int = MAX_DIAGNOSTICS, *, render: bool = True) -> ValidationResult:
        """Return the document's diagnostics with the model checks (``render``: of every
        record; else of those rendered so far)."""
        if render:
            self.render_trained()
        model = self.trained.diagnostics() if self.trained is not None else []
        return result_from(
            self.format,
            self.checks,
            self.notes + self.extra + model,
            len(self.lines),
            self.lines[0],
            limit,
            with_model=self.trained is not None,
        )

    def chat_file(self) -> bool:
        """True when training reads this file's records as chats (not all plain text)."""
        if self.trained is not None:
            return self.trained.chat_file
        return is_chat_file([s for s in self.states if renderable(s)])

    def trained_view(self, state: RecordState) -> TrainingView | None:
        """Return the record's training view with the model, or None (no model, not trainable)."""
        return None if self.trained is None else self.trained.view(state)

    def states_between(self, first: int, last: int) -> list[RecordState]:
        """Return the record states that start or end on lines ``first``..``last``, in order."""
        if not self.whole:
            return self.states[max(first, 0) : last + 1]
        index = max(bisect_right([s.line for s in self.states], first) - 1, 0)
        return [
            s
            for s in itertools.takewhile(lambda s: s.line <= last, self.states[index:])
            if s.line + s.end_line >= first
        ]

    def state_at(self, line: int) -> RecordState | None:
        if not self.whole:
            return self.states[line] if 0 <= line < len(self.states) else None
        index = bisect_right([s.line for s in self.states], line) - 1
        if index < 0:
            return None
        state = self.states[index]
        return state if state.line <= line <= state.line + state.end_line else None


range_ = range  # ``range`` is a parameter name above


def hover(doc: DatasetDocument, line: int, character: int) -> str | None:
    """Return markdown about the record under the cursor: shape, characters, tokens."""
    state = doc.state_at(line)
    if state is None or state.turns is None:
        return None
    turns = len([t for t in state.turns if t[0] != "system"])
    sides = chosen_and_rejected(state.turns) if state.shape == PREFERENCE else None
    parts = [f"**{state.shape}** record"]
    if sides is not None:
        parts.append(
            f"chosen {len(sides[0]):,} / rejected {len(sides[1]):,} characters "
            f"(ratio {length_ratio(*sides):.1f})"
        )
    else:
        parts.append(f"{turns} turn{'s' if turns != 1 else ''}")
    parts.append(f"{state.chars:,} characters")
    view = doc.trained_view(state)  # with a model, its own token count replaces these
    if view is None and doc.token_counter is not None:
        tokens = doc.token_counter(" ".join(text for _, text in state.turns))
        parts.append(f"{tokens:,} tokens")
    elif view is None:
        parts.append(f"~{state.chars // CHARS_PER_TOKEN:,} tokens (estimated)")
    problems = len(state.diagnostics)
    text = " · ".join(parts)
    if problems:
        text += f"\n\n{problems} problem{'s' if problems != 1 else ''} in this record"
    if view is not None:
        text += "\n\n" + hover_markdown(view)
    return text


def _edit(
    doc: DatasetDocument, start: tuple[int, int], end: tuple[int, int], new_text: str
) -> dict[str, Any]:
    return {
        "changes": {
            doc.uri: [
                {
                    "range": {
                        "start": {"line": start[0], "character": start[1]},
                        "end": {"line": end[0], "character": end[1]},
                    },
                    "newText": new_text,
                }
            ]
        }
    }


def _action(
    title: str, edit: dict[str, Any], diagnostic: dict[str, Any] | None, kind: str = "quickfix"
) -> dict[str, Any]:
    action: dict[str, Any] = {"title": title, "kind": kind, "edit": edit}
    if diagnostic is not None:
        action["diagnostics"] = [diagnostic]
        action["isPreferred"] = True
    return action


def _rewrite_line(doc: DatasetDocument, state: RecordState, record: dict) -> dict[str, Any]:
    """Return the edit that replaces a JSONL record's line with ``record`` (its CR kept)."""
    line = doc.lines[state.line].rstrip("\r")
    return _edit(
        doc,
        (state.line, 0),
        (state.line, col16(line, len(line))),
        json.dumps(record, ensure_ascii=False),
    )


def _convert_to_chat(
    doc: DatasetDocument, state: Any, diagnostic: dict[str, Any] | None, kind: str
) -> dict[str, Any] | None:
    """Return the action that rewrites a JSONL record in the chat shape, if it converts."""
    record = to_chat_record(state)
    if record is None:
        return None
    edit = _rewrite_line(doc, state, record)
    return _action("Convert this record to the chat shape", edit, diagnostic, kind)


def _remove_lines(doc: DatasetDocument, first: int, last: int) -> dict[str, Any]:
    if last + 1 < len(doc.lines):
        return _edit(doc, (first, 0), (last + 1, 0), "")
    if first > 0:  # the last line: remove the newline before it instead
        previous = doc.lines[first - 1].rstrip("\r")
        return _edit(
            doc,
            (first - 1, col16(previous, len(previous))),
            (last, col16(doc.lines[last], len(doc.lines[last]))),
            "",
        )
    return _edit(doc, (0, 0), (0, col16(doc.lines[0], len(doc.lines[0]))), "")


def to_chat_record(state: RecordState) -> dict[str, Any] | None:
    """Return the record in the chat shape, or None when it has none or is chat already."""
    if state.turns is None or state.shape in ("chat", "text", PREFERENCE):
        return None
    return {"messages": [{"role": role, "content": text} for role, text in state.turns]}


def overlaps(diagnostic: Diagnostic, range: Range) -> bool:
    """True when ``diagnostic`` is one a code action request for ``range`` is about.

    A range takes the diagnostics that share some of it or touch it at either end: eglot
    sends the sexp before point, which ends where a trailing comma's diagnostic starts, and
    a cursor right after the comma touches its end. Touching at the start of a line does not
    count: a range over whole lines (to the next line's start) is not about the next line.
    """
    start, end = (range[0], range[1]), (range[2], range[3])
    first = (diagnostic.start_line, diagnostic.start_character)
    last = (diagnostic.end_line, diagnostic.end_character)
    if start == end:  # a cursor: inside the diagnostic or at either end
        return first <= start <= last
    if first == last:  # an empty diagnostic (a blank line's): inside the range
        return start <= first < end
    if first < end and start < last:
        return True
    return (first == end and end[1] > 0) or (last == start and start[1] > 0)


def kind_wanted(kind: str, only: list[str] | None) -> bool:
    """True when ``kind`` is one of ``only``, or below one (LSP: "refactor" covers
    "refactor.rewrite"); no ``only``: every kind."""
    return not only or any(kind == wanted or kind.startswith(wanted + ".") for wanted in only)


def diagnostics_at(doc: DatasetDocument, range: Range) -> list[Diagnostic]:
    """Return the document's own current diagnostics that overlap ``range``.

    With a model, the records in the range are rendered first, so its checks of them count
    even while the rest of a big file still waits.
    """
    if doc.trained is not None:
        for state in doc.states_between(range[0], range[0] + RENDER_ON_REQUEST):
            if state.line > range[2]:
                break
            doc.trained_view(state)
    result = doc.result(limit=None, render=False)
    return [
        d
        for d in result.diagnostics
        if d.start_line <= range[2] and d.end_line >= range[0] and overlaps(d, range)
    ]


def code_actions(
    doc: DatasetDocument, range: Range, only: list[str] | None = None
) -> list[dict[str, Any]]:
    """Return the fixes (WorkspaceEdits) for ``range``, where unambiguous, of the kinds in
    ``only`` (None: all).

    Built from the document's own diagnostics, never from those the client sends back:
    clients send none (eglot at a cursor), all of the buffer's (eglot on a blank line) or
    strip their ``data`` (ALE).
    """
    actions = []
    merged: set[int] = set()
    for diagnostic in diagnostics_at(doc, range):
        if diagnostic.code in MERGE_CODES:
            action = _merge_system_message(doc, diagnostic, merged)
        else:
            action = _fix(doc, diagnostic.to_wire())
        if action is not None:
            actions.append(action)
    keep_chosen = _keep_chosen(doc, range)
    if keep_chosen is not None:
        actions.append(keep_chosen)
    if not doc.whole and not any(a["title"].startswith("Convert") for a in actions):
        state = doc.state_at(range[0])
        if state is not None and not state.has_error:
            action = _convert_to_chat(doc, state, None, "refactor.rewrite")
            if action is not None:
                actions.append(action)
    return [a for a in actions if kind_wanted(a["kind"], only)]


def _fix(doc: DatasetDocument, diagnostic: dict[str, Any]) -> dict[str, Any] | None:
    """Return the quick fix of one diagnostic (in its wire form), if it has one."""
    code, data = diagnostic.get("code"), diagnostic.get("data") or {}
    start = diagnostic["range"]["start"]
    end = diagnostic["range"]["end"]
    start_pos, end_pos = (start["line"], start["character"]), (end["line"], end["character"])
    if code in ("missing-field", "unknown-role") and "rename" in data:
        old, new = data["rename"]["from"], data["rename"]["to"]
        return _action(
            f'Rename "{old}" to "{new}"',
            _edit(doc, start_pos, end_pos, json.dumps(new)),
            diagnostic,
        )
    if code == "tool-arguments-object" and "serialize" in data:
        return _action(
            "Write the arguments as a JSON string",
            _edit(doc, start_pos, end_pos, json.dumps(data["serialize"], ensure_ascii=False)),
            diagnostic,
        )
    if code in ("duplicate", "near-duplicate", "blank-line"):
        title = (
            "Remove this blank line"
            if code == "blank-line"
            else f"Remove duplicate line {start['line'] + 1}"
        )
        return _action(title, _remove_lines(doc, start["line"], end["line"]), diagnostic)
    if code in ("trailing-comma", "bom"):
        title = "Remove the trailing comma" if code == "trailing-comma" else "Remove the BOM"
        return _action(title, _edit(doc, start_pos, end_pos, ""), diagnostic)
    if code == "pretty-json":
        rewritten = jsonl_lines_of(doc.text)
        if rewritten is None:
            return None
        last = doc.lines[-1]
        edit = _edit(doc, (0, 0), (len(doc.lines) - 1, col16(last, len(last))), rewritten)
        return _action("Rewrite the file as JSON Lines", edit, diagnostic)
    if code == "mixed-shapes" and data.get("shape") == "chat" and doc.format == "jsonl":
        state = doc.state_at(start["line"])
        if state is not None:
            return _convert_to_chat(doc, state, diagnostic, "quickfix")
    return None


KEEP_CHOSEN_TITLE = "Convert to prompt/response keeping the chosen answer"


def _keep_chosen(doc: DatasetDocument, range: Range) -> dict[str, Any] | None:
    """Return the rewrite of a JSONL preference pair as SFT data (prompt, chosen answer).

    For users who want supervised fine-tuning on the preferred answers only.
    """
    state = None if doc.whole or doc.format != "jsonl" else doc.state_at(range[0])
    if state is None or state.shape != PREFERENCE or not isinstance(state.data, dict):
        return None
    record = sft_conversion(state.data)
    if record is None:
        return None
    edit = _rewrite_line(doc, state, record)
    return _action(KEEP_CHOSEN_TITLE, edit, None, "refactor.rewrite")


def _merge_system_message(
    doc: DatasetDocument, diagnostic: Diagnostic, merged: set[int]
) -> dict[str, Any] | None:
    """Return the merge fix for a JSONL record whose model refuses or drops its system prompt
    (once per record: ``merged`` holds the lines already fixed)."""
    state = None if doc.whole else doc.state_at(diagnostic.start_line)
    if state is None or state.line in merged:
        return None
    new_text = merged_line(state, doc.chat_file())
    if new_text is None:
        return None
    merged.add(state.line)
    line = doc.lines[state.line].rstrip("\r")
    edit = _edit(doc, (state.line, 0), (state.line, col16(line, len(line))), new_text)
    return _action(MERGE_TITLE, edit, diagnostic.to_wire())


def _task_type(doc: DatasetDocument) -> str:
    # A sample keeps this O(1000) on a 100,000-line file; it only feeds the status bar, so
    # it is worked out again only when the file's length or a sampled record changes.
    states = doc.states
    step = max(1, len(states) // 1000)
    sample = states[::step]
    key = (len(states), tuple(map(id, sample)))
    if doc.task_type_cache is None or doc.task_type_cache[0] != key:
        doc.task_type_cache = (key, task_type(sample))
    return doc.task_type_cache[1]


def summary(doc: DatasetDocument, result: ValidationResult | None = None) -> dict[str, Any]:
    """Return the status-bar summary: ``24 examples · chat · 2 problems``.

    With a model it also has ``trainedTokens`` and ``training`` (the views' ViewSummary), or
    ``trainingPending`` while records still wait to be rendered.
    """
    result = result or doc.result(render=False)
    problems = result.errors + result.warnings
    kind = _task_type(doc)
    payload: dict[str, Any] = {
        "uri": doc.uri,
        "examples": result.examples,
        "taskType": kind,
        "errors": result.errors,
        "warnings": result.warnings,
        "text": f"{result.examples:,} example{'s' if result.examples != 1 else ''} · {kind} · "
        f"{problems} problem{'s' if problems != 1 else ''}",
    }
    if doc.trained is not None and doc.trained.complete:
        training = doc.trained.summary()
        payload["trainedTokens"] = training.trained["total"]
        payload["training"] = training.to_wire()
        payload["text"] += f" · {training.trained['total']:,} trained tokens"
    elif doc.trained is not None:
        waiting = len(doc.trained.pending) + len(doc.trained.urgent)
        payload["trainingPending"] = waiting
        payload["text"] += " · checking what gets trained…"
    return payload


OPENING_CHARS = 4_000_000  # a document this big is published once before its states exist


def opening_payload(
    uri: str, text: str, language_id: str | None, version: int | None, with_model: bool
) -> dict[str, Any] | None:
    """Return publishDiagnostics params for a big JSONL document, from one streamed pass.

    Building the per-line states that edits, hovers and fixes need takes longer than
    checking the lines (in parallel parts, keeping digests only), so an editor shows the
    diagnostics first; the document's own publish follows. None for other documents.
    """
    if len(text) < OPENING_CHARS:
        return None
    fmt = "jsonl" if language_id == "jsonl" else detect_format(uri_path(uri), text)
    result = streamed_validation(None, text, fmt) if fmt == "jsonl" else None
    if result is None:
        return None
    result = with_diagnostics(result, format_notes(uri_path(uri), fmt, text), with_model=with_model)
    params: dict[str, Any] = {"uri": uri, "diagnostics": [d.to_wire() for d in result.diagnostics]}
    if version is not None:
        params["version"] = version
    return params


def publish_payload(
    doc: DatasetDocument, version: int | None, render_limit: int | None = None
) -> tuple[dict, dict]:
    """Return the publishDiagnostics params and the datasetSummary payload for ``doc``.

    With a model, edited records are rendered first, then up to ``render_limit`` others
    (None: all); the editor publishes at once and lets the rest fill in.
    """
    doc.render_trained(render_limit)
    result = doc.result(render=False)
    params: dict[str, Any] = {
        "uri": doc.uri,
        "diagnostics": [d.to_wire() for d in result.diagnostics],
    }
    if version is not None:
        params["version"] = version
    return params, summary(doc, result)
