"""Load a dataset once: read its file, decode, parse every record and run the file checks.

Every dataset entry point (validate, analyze, report, prepare, stats and the smart config)
starts from a ``LoadedDataset``, and each accepts one in place of a path, so a caller that
has loaded a file (``startTraining`` for its proposal and its prepared files) never reads or
parses it again.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from ..errors import CortexError, InvalidParams
from ..paths import existing_file
from .diagnostics import MAX_DIAGNOSTICS, Diagnostic, ValidationResult
from .formats import FORMATS, RecordState, decode, detect_format, format_notes
from .validate import FileChecks, build_states, check_cancel, result_from

DEFAULT_SHAPE = "prompt-response"  # the shape of a dataset with no records
CONSEQUENCES = frozenset({"no-examples", "too-few-examples", "mixed-shapes"})


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset read and parsed once: its text, record states and every diagnostic.

    ``result`` holds all diagnostics (no limit; ``validation()`` gives the wire's at most
    1000). ``path`` and ``sha256`` (of the exact bytes read) are None for text.
    """

    path: Path | None
    format: str
    text: str
    states: list[RecordState]
    result: ValidationResult
    sha256: str | None = None

    @cached_property
    def records(self) -> list[RecordState]:
        """The states that are examples (parsed into turns), in file order."""
        return [s for s in self.states if s.turns is not None]

    @property
    def shape(self) -> str:
        """The majority shape of the records (``prompt-response`` when there are none)."""
        return self.result.shape or DEFAULT_SHAPE

    def validation(self, limit: int = MAX_DIAGNOSTICS) -> ValidationResult:
        """Return the result with at most ``limit`` diagnostics (``total`` still counts all)."""
        return replace(self.result, diagnostics=self.result.diagnostics[:limit])

    def check(self) -> LoadedDataset:
        """Return self if the dataset has no errors, else raise CortexError ``dataset-invalid``.

        The error names the first error and carries the first 20 as wire diagnostics.
        """
        if self.result.ok:
            return self
        errors = [d for d in self.result.diagnostics if d.severity == "error"]
        # Quote the root cause: a record's error before a file-level consequence of it
        # ("No examples found" when every record failed to parse).
        first = min(errors, key=lambda d: (d.code in CONSEQUENCES, d.start_line))
        name = self.path.name if self.path is not None else "The text"
        raise CortexError(
            "dataset-invalid",
            f"{name} has {self.result.errors} error(s); first at line "
            f"{first.start_line + 1}: {first.message}",
            path=None if self.path is None else str(self.path),
            errors=self.result.errors,
            diagnostics=[d.to_wire() for d in errors[:20]],
        )


DatasetSource = str | os.PathLike[str] | LoadedDataset


def check_format(format: str | None) -> None:
    """Raise InvalidParams (field ``format``) unless ``format`` is None or a known format."""
    if format is not None and format not in FORMATS:
        raise InvalidParams(f"format must be one of {', '.join(FORMATS)}", field="format")


# A gzip file may claim anything: a few KB can inflate to many GB (a "zip bomb").
MAX_DECOMPRESSED_BYTES = 1 << 30


def gunzip_bounded(data: bytes, limit: int, path: Path) -> bytes:
    """Return ``data`` decompressed (every gzip member), refusing more than ``limit`` bytes."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit or inflater.unconsumed_tail:
            raise CortexError(
                "dataset-too-large",
                f"{path.name} decompresses to more than {limit >> 20} MB; split it or "
                "decompress a part of it yourself",
                path=str(path),
            )
        if not inflater.eof:
            raise EOFError("truncated gzip data")
        data = inflater.unused_data
    return bytes(out)


def load(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    context_length: int | None = None,
    cancel: threading.Event | None = None,
) -> LoadedDataset:
    """Read the dataset file at ``path`` (``~`` expanded) once and parse it.

    ``format`` overrides detection (from the extension, else the content). Raises
    InvalidParams for an unknown format, CortexError ``dataset-not-found`` when there is no
    such file and ``cancelled`` when ``cancel`` is set. Errors in the data do not raise:
    they are in ``result`` (``check()`` raises for them).
    """
    check_format(format)
    file = existing_file(path)
    data = file.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    inner: Path | None = file
    notes: list[Diagnostic] = []
    if data[:2] == b"\x1f\x8b":
        try:
            data = gunzip_bounded(data, MAX_DECOMPRESSED_BYTES, file)
        except (OSError, EOFError, zlib.error):
            pass
        else:
            inner = file.with_suffix("") if file.suffix.lower() == ".gz" else None
            notes.append(
                Diagnostic(
                    0,
                    0,
                    0,
                    0,
                    "gzip",
                    "The file is gzip-compressed; cortex validates its content "
                    "(positions refer to the decompressed text)",
                )
            )
    text, decode_diagnostics = decode(data)
    fmt = format or detect_format(inner, text)
    return _parsed(
        file,
        fmt,
        text,
        notes + decode_diagnostics + format_notes(inner, fmt, text),
        sha256,
        context_length,
        cancel,
    )


def load_text(
    text: str,
    format: str | None = None,
    *,
    context_length: int | None = None,
    cancel: threading.Event | None = None,
) -> LoadedDataset:
    """Parse a dataset given as text (``format`` detected from the content if not given)."""
    check_format(format)
    return _parsed(
        None, format or detect_format(None, text), text, [], None, context_length, cancel
    )


def as_loaded(
    source: DatasetSource, format: str | None = None, *, cancel: threading.Event | None = None
) -> LoadedDataset:
    """Return ``source`` if it is already loaded, else ``load(source, format)``."""
    if isinstance(source, LoadedDataset):
        if format is not None and format != source.format:
            raise ValueError(f"format {format!r} given for a dataset loaded as {source.format!r}")
        return source
    return load(source, format, cancel=cancel)


def _parsed(
    path: Path | None,
    fmt: str,
    text: str,
    decode_diagnostics: list[Diagnostic],
    sha256: str | None,
    context_length: int | None,
    cancel: threading.Event | None,
) -> LoadedDataset:
    states, extra = build_states(text, fmt, context_length, cancel)
    checks = FileChecks()
    for state in states:
        checks.add(state)
    check_cancel(cancel)
    result = result_from(
        fmt,
        checks,
        decode_diagnostics + extra,
        text.count("\n") + 1,
        text.split("\n", 1)[0],
        limit=None,
    )
    return LoadedDataset(path, fmt, text, states, result, sha256)
