"""Validate a dataset: per-record checks plus file-level ones (duplicates, mixed shapes)."""

from __future__ import annotations

import gc
import itertools
import threading
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import CortexError, InvalidParams
from . import formats
from .diagnostics import (
    CHARACTER_ESTIMATES,
    MAX_DIAGNOSTICS,
    Diagnostic,
    ValidationResult,
    sort_key,
)
from .formats import (
    DIGEST_BYTES,
    PARSERS,
    CleanLine,
    RecordState,
    _is_oasst,
    _wide_encoding,
    clean_jsonl_line,
    document_diagnostics,
    jsonl_state,
    line_state,
    needs_whole_file,
    oasst_diagnostics,
    pretty_jsonl_states,
)
from .positions import line_end16
from .training_view import TemplateRenderer, ViewOptions

MIN_EXAMPLES = 5  # the guide warns under 5; mlx_lm needs a batch (default 4) to train at all
CANCEL_EVERY = 2000
# File-level errors that say why a file has no (or too few) examples: the no-examples /
# too-few-examples diagnostics they cause would only repeat them, so those are not emitted.
# (``json-syntax``, ``trailing-comma``, ``csv-field-count`` are file-level only when parsing
# stopped there: in JSONL they belong to a line, and a file of bad lines keeps no-examples.)
ROOT_CAUSES = frozenset(
    {
        "txt-no-markers",
        "oasst-tree",
        "csv-header",
        "json-root",
        "json-syntax",
        "trailing-comma",
        "csv-field-count",
    }
)
COUNT_CODES = frozenset({"no-examples", "too-few-examples"})


class FileChecks:
    """File-level checks over record states, maintained incrementally as states come and go."""

    def __init__(self) -> None:
        self.shape_members: dict[str, set[RecordState]] = defaultdict(set)
        self.by_norm: dict[str, list[RecordState]] = defaultdict(list)
        self.dup_keys: set[str] = set()
        self.with_diagnostics: set[RecordState] = set()
        # Records whose only diagnostics are character estimates, which a model replaces.
        self.estimated_only: set[RecordState] = set()
        self.shifted: dict[RecordState, tuple[int, list[Diagnostic]]] = {}
        self.blank: set[RecordState] = set()
        self.crlf: set[RecordState] = set()
        self.examples = 0

    def add(self, state: RecordState) -> None:
        if state.is_record:
            self.examples += 1
        if state.shape is not None:
            self.shape_members[state.shape].add(state)
        if state.norm is not None:
            group = self.by_norm[state.norm]
            group.append(state)
            if len(group) == 2:
                self.dup_keys.add(state.norm)
        if state.diagnostics:
            if all(d.code in CHARACTER_ESTIMATES for d in state.diagnostics):
                self.estimated_only.add(state)
            else:
                self.with_diagnostics.add(state)
        if state.blank:
            self.blank.add(state)
        if state.crlf:
            self.crlf.add(state)

    def remove(self, state: RecordState) -> None:
        if state.is_record:
            self.examples -= 1
        if state.shape is not None:
            self.shape_members[state.shape].discard(state)
        if state.norm is not None:
            group = self.by_norm[state.norm]
            group.remove(state)
            if len(group) < 2:
                self.dup_keys.discard(state.norm)
            if not group:
                del self.by_norm[state.norm]
        self.with_diagnostics.discard(state)
        self.estimated_only.discard(state)
        self.shifted.pop(state, None)
        self.blank.discard(state)
        self.crlf.discard(state)

    def majority_shape(self) -> str | None:
        counts = [(len(members), shape) for shape, members in self.shape_members.items() if members]
        return max(counts)[1] if counts else None

    def diagnostics(
        self, line_count: int, first_line: str = "", with_model: bool = False
    ) -> list[Diagnostic]:
        """Return every diagnostic, sorted: the records' own and the file-level ones.

        ``with_model``: the character estimates are left out (a model's token counts
        replace them), without looking at the records that have nothing else.
        """
        superseded = CHARACTER_ESTIMATES if with_model else ()
        out: list[Diagnostic] = []
        states = (
            self.with_diagnostics
            if with_model
            else itertools.chain(self.with_diagnostics, self.estimated_only)
        )
        for state in states:
            # Kept per state while its line stays put: an edit shifts only what it touches.
            cached = self.shifted.get(state)
            if cached is None or cached[0] != state.line:
                cached = self.shifted[state] = (
                    state.line,
                    [d.shifted(state.line) for d in state.diagnostics],
                )
            if superseded:
                out.extend(d for d in cached[1] if d.code not in superseded)
            else:
                out.extend(cached[1])
        for state in self.blank:
            if state.line < line_count - 1 or state.end_character:
                out.append(
                    Diagnostic(
                        state.line,
                        0,
                        state.line + state.end_line,
                        state.end_character,
                        "blank-line",
                        "Blank line: mlx_lm reads every line as a record; remove it",
                    )
                )
        for key in self.dup_keys:
            group = sorted(self.by_norm[key], key=lambda s: s.line)
            first = group[0]
            for state in group[1:]:
                exact = state.exact == first.exact
                out.append(
                    _whole(
                        state,
                        "duplicate" if exact else "near-duplicate",
                        f"{'Duplicate' if exact else 'Near-duplicate'} of the "
                        f"example on line {first.line + 1}"
                        f"{'' if exact else ' (same text ignoring case and spaces)'}"
                        "; remove it so it is not over-weighted",
                        {"duplicateOf": first.line},
                    )
                )
        majority = self.majority_shape()
        mixed = [
            shape for shape, members in self.shape_members.items() if members and shape != majority
        ]
        for shape in mixed:
            for state in self.shape_members[shape]:
                out.append(
                    _whole(
                        state, "mixed-shapes", mixed_message(shape, majority), {"shape": majority}
                    )
                )
        if self.crlf:
            first = min(self.crlf, key=lambda s: s.line)
            out.append(
                Diagnostic(
                    first.line,
                    0,
                    first.line,
                    first.end_character,
                    "crlf",
                    f"{len(self.crlf)} line(s) end with CRLF (Windows line "
                    "endings); harmless for cortex, some tools keep the \\r",
                )
            )
        out.extend(_count_diagnostics(self.examples, first_line))
        out.sort(key=sort_key)
        return out


class StreamChecks:
    """The file-level checks of ``FileChecks`` over JSONL lines seen once, in file order.

    Bounded state: a clean record leaves its line, its end and its normalised digest (about
    140 bytes: the duplicate checks' table, the mixed-shape check's arrays); the first
    record of each text also its exact digest and end (12 bytes). A record with diagnostics
    leaves those, never its text or parsed value. Gives exactly ``FileChecks``' diagnostics
    for the same lines; the checks of consecutive parts of a file ``merge`` into those of the
    whole.
    """

    def __init__(self) -> None:
        self.examples = 0
        self.record_diagnostics: list[Diagnostic] = []
        self.blank: list[tuple[int, int]] = []  # (line, end character)
        # normalised digest -> index of the first record with that text, whose exact digest
        # is at [16 * index:] of ``first_exact`` and line in ``first_line``
        self.first: dict[bytes, int] = {}
        self.first_exact = bytearray()
        self.first_line = array("I")
        self.first_end = array("I")
        # the records whose text came before: (line, end character, exact, normalised digest),
        # made diagnostics at the end, when every part of the file is merged in
        self.repeats: list[tuple[int, int, bytes, bytes]] = []
        # shape -> the line and the end character of each record of that shape
        self.shapes: dict[str, tuple[array, array]] = {}
        self.crlf = 0
        self.first_crlf: tuple[int, int] | None = None
        self.leading_blank = False  # every line seen was blank: the first record is to come

    def add_clean(self, line: int, clean: CleanLine) -> None:
        """Count a JSONL line with no diagnostic of its own (``clean_jsonl_line``)."""
        shape, end, crlf, exact, norm = clean
        self.examples += 1
        members = self.shapes.get(shape)
        if members is None:
            members = self.shapes[shape] = (array("I"), array("I"))
        members[0].append(line)
        members[1].append(end)
        self._duplicate(line, end, exact, norm)
        if crlf:
            self._crlf(line, end)

    def add(self, state: RecordState) -> None:
        """Count a checked line's state (its diagnostics are kept, the state is not)."""
        if state.is_record:
            self.examples += 1
        if state.shape is not None:
            self._shape(state.shape, state.line, state.end_character)
        if state.norm is not None and state.exact is not None:
            self._duplicate(state.line, state.end_character, state.exact, state.norm)
        if state.diagnostics:
            self.record_diagnostics.extend(d.shifted(state.line) for d in state.diagnostics)
        if state.blank:
            self.blank.append((state.line, state.end_character))
        if state.crlf:
            self._crlf(state.line, state.end_character)

    def _shape(self, shape: str, line: int, end: int) -> None:
        members = self.shapes.get(shape)
        if members is None:
            members = self.shapes[shape] = (array("I"), array("I"))
        members[0].append(line)
        members[1].append(end)

    def _crlf(self, line: int, end: int) -> None:
        self.crlf += 1
        if self.first_crlf is None:
            self.first_crlf = (line, end)

    def _duplicate(self, line: int, end: int, exact: bytes, norm: bytes) -> None:
        if norm in self.first:
            self.repeats.append((line, end, exact, norm))
            return
        self.first[norm] = len(self.first_line)
        self.first_exact += exact
        self.first_line.append(line)
        self.first_end.append(end)

    def packed(self) -> bytes:
        """Empty the table of first records into the concatenation of their digests, in line
        order: what ``merge`` needs of it, in a tenth of the memory (to send a part's)."""
        norms = b"".join(self.first)
        self.first = {}
        return norms

    def merge(self, later: StreamChecks, norms: bytes) -> None:
        """Add the checks of the lines that follow these (made elsewhere): ``later`` with its
        first records ``packed`` into ``norms``."""
        self.examples += later.examples
        self.record_diagnostics.extend(later.record_diagnostics)
        self.blank.extend(later.blank)
        size = len(later.first_exact) // max(len(later.first_line), 1)
        for index in range(len(later.first_line)):  # in line order
            norm = norms[DIGEST_BYTES * index : DIGEST_BYTES * (index + 1)]
            exact = bytes(later.first_exact[size * index : size * (index + 1)])
            self._duplicate(later.first_line[index], later.first_end[index], exact, norm)
        self.repeats.extend(later.repeats)
        for shape, (lines, ends) in later.shapes.items():
            members = self.shapes.get(shape)
            if members is None:
                members = self.shapes[shape] = (array("I"), array("I"))
            members[0].extend(lines)
            members[1].extend(ends)
        if later.first_crlf is not None and self.first_crlf is None:
            self.first_crlf = later.first_crlf
        self.crlf += later.crlf

    def _duplicates(self) -> Iterator[Diagnostic]:
        for line, end, exact, norm in self.repeats:
            index = self.first[norm]
            first_line = self.first_line[index]
            size = len(exact)
            same = self.first_exact[size * index : size * (index + 1)] == exact
            yield Diagnostic(
                line,
                0,
                line,
                end,
                "duplicate" if same else "near-duplicate",
                f"{'Duplicate' if same else 'Near-duplicate'} of the "
                f"example on line {first_line + 1}"
                f"{'' if same else ' (same text ignoring case and spaces)'}"
                "; remove it so it is not over-weighted",
                {"duplicateOf": first_line},
            )

    def majority_shape(self) -> str | None:
        counts = [(len(lines), shape) for shape, (lines, _) in self.shapes.items() if lines]
        return max(counts)[1] if counts else None

    def diagnostics(
        self, line_count: int, first_line: str = "", with_model: bool = False
    ) -> list[Diagnostic]:
        """Return every diagnostic, sorted (as ``FileChecks.diagnostics``)."""
        superseded = CHARACTER_ESTIMATES if with_model else ()
        out = [d for d in self.record_diagnostics if d.code not in superseded]
        for line, end in self.blank:
            if line < line_count - 1 or end:
                out.append(
                    Diagnostic(
                        line,
                        0,
                        line,
                        end,
                        "blank-line",
                        "Blank line: mlx_lm reads every line as a record; remove it",
                    )
                )
        out.extend(self._duplicates())
        majority = self.majority_shape()
        for shape, (lines, ends) in self.shapes.items():
            if shape == majority:
                continue
            for line, end in zip(lines, ends, strict=True):
                out.append(
                    Diagnostic(
                        line,
                        0,
                        line,
                        end,
                        "mixed-shapes",
                        mixed_message(shape, majority),
                        {"shape": majority},
                    )
                )
        if self.first_crlf is not None:
            line, end = self.first_crlf
            out.append(
                Diagnostic(
                    line,
                    0,
                    line,
                    end,
                    "crlf",
                    f"{self.crlf} line(s) end with CRLF (Windows line "
                    "endings); harmless for cortex, some tools keep the \\r",
                )
            )
        out.extend(_count_diagnostics(self.examples, first_line))
        out.sort(key=sort_key)
        return out


def mixed_message(shape: str, majority: str | None) -> str:
    """Return the mixed-shapes message for a ``shape`` record in a file of ``majority``."""
    if "preference" in (shape, majority):
        return (
            f"This record is {shape} but most are {majority}: DPO/ORPO train on preference "
            "pairs only and SFT keeps only their chosen answers, so use one kind throughout"
        )
    return (
        f"This record is {shape} but most are {majority}: mlx_lm picks one format from the "
        "first record only, so use one shape throughout (prepare converts for cortex training)"
    )


def _count_diagnostics(examples: int, first_line: str) -> list[Diagnostic]:
    """Return no-examples / too-few-examples, over the first line (its UTF-16 end)."""
    line0_end = line_end16(first_line)
    if examples == 0:
        return [
            Diagnostic(
                0,
                0,
                0,
                line0_end,
                "no-examples",
                'No examples found; add records such as {"prompt": "...", "response": "..."}',
            )
        ]
    if examples < MIN_EXAMPLES:
        return [
            Diagnostic(
                0,
                0,
                0,
                line0_end,
                "too-few-examples",
                f"Only {examples} example(s): fewer than mlx_lm's "
                f"batch size plus a validation split; add at least "
                f"{MIN_EXAMPLES} (50-100+ recommended)",
            )
        ]
    return []


def _whole(state: RecordState, code: str, message: str, data: dict | None = None) -> Diagnostic:
    return Diagnostic(
        state.line, 0, state.line + state.end_line, state.end_character, code, message, data=data
    )


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CortexError("cancelled", "Dataset validation was cancelled")


def build_states(
    text: str, fmt: str, context_length: int | None = None, cancel: threading.Event | None = None
) -> tuple[list[RecordState], list[Diagnostic]]:
    """Return the record states of ``text`` in ``fmt`` and the diagnostics outside records."""
    # The states hold every parsed record: a million objects that outlive the build, which
    # the cyclic collector would walk again and again as they are made (half the time).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_states(text, fmt, context_length, cancel)
    finally:
        if enabled:
            gc.enable()


def _build_states(
    text: str, fmt: str, context_length: int | None, cancel: threading.Event | None
) -> tuple[list[RecordState], list[Diagnostic]]:
    extra = document_diagnostics(text)
    if fmt == "jsonl":
        lines = text.split("\n")
        pretty = pretty_jsonl_states(text, context_length) if needs_whole_file(lines) else None
        if pretty is not None:
            states, diagnostics = pretty
            return states, extra + (oasst_diagnostics(states) or diagnostics)
        states = []
        for number, raw in enumerate(lines):
            if number % CANCEL_EVERY == 0:
                check_cancel(cancel)
            states.append(line_state(raw, number, context_length))
        return states, extra + (oasst_diagnostics(states) or [])
    check_cancel(cancel)
    states, diagnostics = PARSERS[fmt](text, context_length)
    return states, extra + (oasst_diagnostics(states) or diagnostics)


def result_from(
    fmt: str,
    checks: FileChecks | StreamChecks,
    extra: Iterable[Diagnostic],
    line_count: int,
    first_line: str,
    limit: int | None = MAX_DIAGNOSTICS,
    with_model: bool = False,
) -> ValidationResult:
    """Assemble a ValidationResult from the file checks and any document-level diagnostics.

    At most ``limit`` diagnostics are kept (all of them for None); ``total`` counts all.
    One diagnostic per real problem: a file-level error in ``ROOT_CAUSES`` (``extra`` holds
    only file-level ones) replaces the no-examples / too-few-examples it causes.
    """
    # ``with_model``: a model's token counts replace the character estimates (long-example).
    diagnostics = checks.diagnostics(line_count, first_line, with_model)
    extra = list(extra)
    if any(d.code in ROOT_CAUSES and d.severity == "error" for d in extra):
        diagnostics = [d for d in diagnostics if d.code not in COUNT_CODES]
    if extra:
        diagnostics = sorted(diagnostics + extra, key=sort_key)
    errors = sum(1 for d in diagnostics if d.severity == "error")
    warnings = sum(1 for d in diagnostics if d.severity == "warning")
    return ValidationResult(
        fmt,
        checks.majority_shape(),
        checks.examples,
        diagnostics[:limit],
        len(diagnostics),
        errors,
        warnings,
    )


def with_diagnostics(
    result: ValidationResult,
    extra: list[Diagnostic],
    limit: int | None = MAX_DIAGNOSTICS,
    with_model: bool = False,
) -> ValidationResult:
    """Return ``result`` (holding all its diagnostics) with ``extra`` added, recounted.

    ``with_model``: ``extra`` holds a model's checks, whose token counts replace the
    character estimates.
    """
    superseded = CHARACTER_ESTIMATES if with_model else ()
    kept = [d for d in result.diagnostics if d.code not in superseded]
    diagnostics = sorted(kept + extra, key=sort_key)
    return ValidationResult(
        result.format,
        result.shape,
        result.examples,
        diagnostics[:limit],
        len(diagnostics),
        sum(1 for d in diagnostics if d.severity == "error"),
        sum(1 for d in diagnostics if d.severity == "warning"),
    )


class _Whole(Exception):
    """The file cannot be streamed line by line: check it whole (``load``)."""


def stream_jsonl(
    lines: Iterable[str],
    context_length: int | None = None,
    cancel: threading.Event | None = None,
    start: int = 0,
) -> tuple[StreamChecks, list[Diagnostic], int, str]:
    """Check JSONL lines once, in order: (checks, diagnostics outside records, lines, first).

    Clean lines take the fast path (``clean_jsonl_line``); the others, and the first line
    with content, are checked with positions. Raises ``_Whole`` for the texts ``load``
    checks whole (pretty-printed JSON, OASST trees). ``start``: the lines are a later part
    of a file, from that line on, whose first line with content came before (``parallel``).
    """
    checks = StreamChecks()
    extra: list[Diagnostic] = []
    first_line = ""
    number = start - 1
    # still looking for the first content / first non-blank line
    content = blank = start == 0
    for number, raw in enumerate(lines, start):
        if number % CANCEL_EVERY == 0:
            check_cancel(cancel)
        if number == 0:
            first_line = raw
            extra = document_diagnostics(raw)
        if content and raw.strip(" \t\r\ufeff"):
            content = False
            if needs_whole_file([raw]):
                raise _Whole
        if blank:
            state = jsonl_state(raw, number, context_length)
            if not state.blank:
                blank = False
                if state.is_record and _is_oasst(state.data):
                    raise _Whole
            checks.add(state)
            continue
        clean = clean_jsonl_line(raw, number, context_length)
        if clean is not None:
            checks.add_clean(number, clean)
        else:
            checks.add(jsonl_state(raw, number, context_length))
    if blank and start == 0:
        checks.leading_blank = True
    return checks, extra, number + 1, first_line


def _file_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 file as ``text.split("\\n")`` would; ``_Whole`` otherwise."""
    ended = True
    # newline="\n": lines end at "\n" only and keep their "\r" (as ``split("\n")``)
    with path.open(encoding="utf-8", newline="\n") as handle:
        try:
            for raw in handle:
                ended = raw[-1:] == "\n"
                yield raw[:-1] if ended else raw
        except UnicodeDecodeError:
            raise _Whole from None
    if ended:
        yield ""


def streamed_validation(
    path: str | Path | None,
    text: str | None,
    format: str | None,
    context_length: int | None = None,
    cancel: threading.Event | None = None,
) -> ValidationResult | None:
    """Validate JSONL streamed with bounded memory; None for what ``load`` must read whole."""
    from ..paths import existing_file
    from .formats import detect_format
    from .load import check_format

    check_format(format)
    if text is not None:
        if (format or detect_format(None, text)) != "jsonl":
            return None
    else:
        file = existing_file(path)
        suffix = file.suffix.lower()
        if (format or ("jsonl" if suffix in (".jsonl", ".ndjson") else None)) != "jsonl":
            return None
        if suffix == ".json":
            return None  # read whole: the note that a .json file holds JSON Lines
        with file.open("rb") as handle:
            head = handle.read(256)
        if head[:2] == b"\x1f\x8b" or _wide_encoding(head) is not None:
            return None
    from .parallel import stream_file, stream_text

    try:
        if text is None:
            checks, extra, line_count, first_line = stream_file(file, context_length, cancel)
        else:
            checks, extra, line_count, first_line = stream_text(text, context_length, cancel)
    except _Whole:
        return None
    return result_from("jsonl", checks, extra, line_count, first_line)


def validate_dataset(
    path: str | Path | None = None,
    *,
    text: str | None = None,
    format: str | None = None,
    context_length: int | None = None,
    cancel: threading.Event | None = None,
    renderer: TemplateRenderer | None = None,
    options: ViewOptions | None = None,
) -> ValidationResult:
    """Return every problem in a dataset file (or text), at most 1000, with the total count.

    With a model's ``renderer``, each record is also checked as it trains under ``options``
    (template problems, records that train nothing or are cut).
    """
    from .load import load, load_text  # load builds on this module's checks

    if (path is None) == (text is None):
        raise InvalidParams("give either path or text", field="path")
    if renderer is None and formats.FAST_PATH:
        streamed = streamed_validation(path, text, format, context_length, cancel)
        if streamed is not None:
            return streamed
    if text is None:
        loaded = load(path, format, context_length=context_length, cancel=cancel)
    else:
        loaded = load_text(text, format, context_length=context_length, cancel=cancel)
    if renderer is None:
        return loaded.validation()
    from .trained import check_all

    checks = check_all(loaded.states, renderer, options or ViewOptions(), cancel=cancel)
    return with_diagnostics(loaded.result, checks.diagnostics(), with_model=True)
