"""Dataset file formats: detection, decoding and parsing into records with exact positions.

JSONL is parsed line by line (so the editor can re-check one line); JSON, CSV and TXT are
parsed whole. Every record becomes a ``RecordState`` whose diagnostics are relative to its
first line, so that inserting lines above it only moves the record, never re-checks it.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xxhash import xxh3_64_digest, xxh3_128_digest

from .diagnostics import Diagnostic
from .positions import (
    LineIndex,
    col16,
    duplicate_keys,
    key_colons,
    line_end16,
    locate,
    may_repeat_keys,
)
from .shapes import (
    Problem,
    check_record,
    clean_turns,
    conversation,
    detect_shape,
    plain_chat,
)

try:  # orjson parses 3-4x faster; json gives the messages and positions of errors.
    from orjson import dumps as _exact_bytes
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _fast_loads = json.loads

    def _exact_bytes(value: Any) -> bytes:
        return json.dumps(value).encode()


# The fast path: records with no problem are checked on plain objects only (compiled schema,
# semantic rules) and leave a fixed-size digest; positions are built only for the others.
# False forces the full, position-aware check of every record (the equivalence tests, and
# the fallback of streamed validation).
FAST_PATH = True
DIGEST_BYTES = 16  # XXH3-128, the normalised digest (``turn_digests``)

FORMATS = ("jsonl", "json", "csv", "txt")
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "txt",
}
LONG_CHARS = 2000
CHARS_PER_TOKEN = 4  # estimate when no tokenizer is given
_REPLACED = re.compile("\ufffd+")


@dataclass(eq=False)
class RecordState:
    """One line (JSONL) or record: its checks, relative to ``line``, and its duplicate keys."""

    line: int
    end_line: int = 0  # relative to ``line``
    end_character: int = 0
    shape: str | None = None
    is_record: bool = False
    blank: bool = False
    crlf: bool = False
    diagnostics: list[Diagnostic] = field(default_factory=list)
    turns: list[tuple[str, str]] | None = None
    exact: bytes | None = None  # digest of the turns (duplicate)
    norm: bytes | None = None  # digest of the turns ignoring case and spaces (near-duplicate)
    chars: int = 0
    data: Any = None
    split: str | None = None  # "validation"/"test" for a JSON file's own splits

    @property
    def has_error(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


def detect_format(path: str | Path | None, text: str) -> str:
    """Return the format from the extension, else sniffed from the content."""
    head = text.lstrip(" \t\r\n\ufeff")
    if path is not None:
        by_extension = EXTENSIONS.get(Path(path).suffix.lower())
        if by_extension == "json" and _jsonl_lines(head):
            return "jsonl"  # Hugging Face ``to_json`` writes JSON Lines by default
        if by_extension == "txt" and _delimiter(head.split("\n", 1)[0], known=True):
            return "csv"
        if by_extension:
            return by_extension
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        first = head.split("\n", 1)[0].strip()
        try:
            json.loads(first)
            return "jsonl"
        except ValueError:
            return "json"
    first_line = head.split("\n", 1)[0].strip().lower()
    if re.match(r"^(q|question|user|system)\s*:", first_line) or _MARKER.match(first_line):
        return "txt"
    if any(_MARKER.match(line) for line in head.split("\n", 20)[:20]):
        return "txt"  # Alpaca template blocks, maybe after a preamble line
    if "," in first_line or _delimiter(first_line, known=True):
        return "csv"
    return "jsonl"


def format_notes(path: str | Path | None, fmt: str, text: str) -> list[Diagnostic]:
    """Return the note that a ``.json`` file holds JSON Lines (read as such), if it does."""
    if path is None or fmt != "jsonl" or Path(path).suffix.lower() != ".json":
        return []
    first = text.split("\n", 1)[0].rstrip("\r")
    return [
        Diagnostic(
            0,
            0,
            0,
            col16(first, len(first)),
            "jsonl-in-json",
            "This .json file holds JSON Lines (one record per line, as Hugging Face "
            "to_json writes by default); read as JSONL, rename it .jsonl",
        )
    ]


def _jsonl_lines(head: str) -> bool:
    """Return True when ``head`` is one complete JSON object per line, two or more lines."""
    if not head.startswith("{"):
        return False
    lines = [line for line in head.split("\n", 3)[:3] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(line), dict) for line in lines[:2])
    except ValueError:
        return False


def _delimiter(header: str, known: bool = False) -> str | None:
    """Return the delimiter of a CSV header line: the most frequent of , tab ; (else None).

    With ``known``, only when the header split on it names known columns.
    """
    counts = {d: header.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    if not counts[best]:
        return None
    if known:
        names = {h.strip().strip('"').lower() for h in header.split(best)}
        if not any(set(k) <= names for k in CSV_HEADERS):
            return None
    return best


_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "utf32"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "utf32"),
    (b"\xff\xfe", "utf-16-le", "utf16"),
    (b"\xfe\xff", "utf-16-be", "utf16"),
)


def _wide_encoding(data: bytes) -> tuple[str, str, int] | None:
    """Return (codec, code, BOM length) for UTF-16/UTF-32 bytes (with or without BOM)."""
    for bom, codec, code in _WIDE_BOMS:
        if data.startswith(bom):
            return codec, code, len(bom)
    if len(data) < 4 or b"\x00" not in data[:64]:
        return None
    head = data[:256]
    if head[1:4] == b"\x00\x00\x00" and head[0]:
        return "utf-32-le", "utf32", 0
    if head[:3] == b"\x00\x00\x00" and head[3]:
        return "utf-32-be", "utf32", 0
    odd, even = head[1::2].count(0), head[0::2].count(0)
    if odd > len(head) // 4 and not even:
        return "utf-16-le", "utf16", 0
    if even > len(head) // 4 and not odd:
        return "utf-16-be", "utf16", 0
    return None


def decode(data: bytes) -> tuple[str, list[Diagnostic]]:
    """Return the text of a file, invalid UTF-8 replaced by U+FFFD, and where it was invalid.

    UTF-16 and UTF-32 (with or without BOM) are decoded, with a ``utf16``/``utf32`` warning;
    positions then refer to the decoded text.
    """
    wide = _wide_encoding(data)
    if wide is not None:
        codec, code, skip = wide
        try:
            text = data[skip:].decode(codec)
        except UnicodeDecodeError:
            pass
        else:
            first = text.split("\n", 1)[0].rstrip("\r")
            name = codec[:6].upper()
            return text, [
                Diagnostic(
                    0,
                    0,
                    0,
                    col16(first, len(first)),
                    code,
                    f'The file is {name} ({codec}; Notepad calls it "Unicode"); '
                    "cortex reads it, but mlx_lm needs UTF-8: save as UTF-8 "
                    "(prepare writes UTF-8)",
                )
            ]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    # Decode as editors do (one U+FFFD per invalid sequence), so positions match theirs;
    # U+FFFD already in the file (rare) is reported too.
    text = data.decode("utf-8", errors="replace")
    diagnostics = []
    for number, line in enumerate(text.split("\n")):
        for match in _REPLACED.finditer(line):
            start = col16(line, match.start())
            diagnostics.append(
                Diagnostic(
                    number,
                    start,
                    number,
                    start + len(match.group()),
                    "utf8-invalid",
                    "Bytes here are not valid UTF-8 (shown as U+FFFD); save the file as UTF-8",
                )
            )
    return text, diagnostics


def document_diagnostics(text: str) -> list[Diagnostic]:
    """Return the BOM warning (the BOM itself is then read as whitespace)."""
    if text.startswith("\ufeff"):
        return [
            Diagnostic(
                0,
                0,
                0,
                1,
                "bom",
                "The file starts with a UTF-8 byte order mark, "
                "which mlx_lm's JSON reader rejects; save as UTF-8 without BOM "
                "(prepare strips it)",
            )
        ]
    return []


def _syntax_diagnostic(
    text: str, error: json.JSONDecodeError, line: int, column: int, line_text: str
) -> Diagnostic:
    """Return a json-syntax (or trailing-comma) diagnostic at the character parsing failed."""
    pos = error.pos
    back = pos - 1
    while back >= 0 and text[back] in " \t\r\n":
        back -= 1
    at = text[pos] if pos < len(text) else ""
    if back >= 0 and text[back] == "," and (at in ("}", "]") or not text[pos:].strip()):
        comma_column = column - (pos - back)
        comma_line = line
        if "\n" in text[back:pos]:  # the comma is on an earlier line (multi-line JSON)
            comma_line, comma_column = LineIndex(text).position(back)
        return Diagnostic(
            comma_line,
            comma_column,
            comma_line,
            comma_column + 1,
            "trailing-comma",
            "Trailing comma: JSON allows no comma before a closing bracket; remove it",
            {"fix": "remove-comma"},
        )
    if error.msg == "Extra data" and text[pos:].strip() == ",":
        return Diagnostic(
            line,
            column,
            line,
            column + 1,
            "trailing-comma",
            "Trailing comma after the record: in JSONL each line is one object "
            "with nothing after it; remove the comma",
            {"fix": "remove-comma"},
        )
    width = col16(line_text, len(line_text))
    end = min(column + 1, width) if column < width else column
    hint = (
        "each line must be one complete JSON object"
        if error.msg != "Extra data"
        else "put one JSON object per line"
    )
    if error.msg.startswith("Invalid control character"):
        hint = "write newlines inside strings as \\n"
    return Diagnostic(
        line,
        column,
        line,
        end,
        "json-syntax",
        f"Invalid JSON: {error.msg} (column {column + 1}); {hint}",
    )


Resolver = Callable[[Problem], Diagnostic]


def turn_digests(turns: list[tuple[str, str]]) -> tuple[bytes, bytes]:
    """Return the (exact, normalised) digests of a record's turns, for the duplicate checks.

    Normalised: 16 bytes of XXH3-128 of the texts lower-cased with runs of whitespace made
    one space: records with the same one are (near-)duplicates. Exact: 8 bytes of XXH3-64 of
    the turns, which only tells a duplicate from a near-duplicate among records whose
    normalised digests are equal. Both are the same in every process, so the checks of a
    file's parts made in parallel (``parallel.py``) can be merged.
    """
    # The exact digest first: its bytes are freed before the normalised copies are made.
    try:
        exact = _exact_bytes(turns)
    except TypeError:  # a lone surrogate (json.loads reads "\\ud800"; orjson writes no such str)
        exact = json.dumps(turns).encode()
    exact_digest = xxh3_64_digest(exact)
    del exact
    texts = [text for _, text in turns]
    joined = " \x00 ".join(texts)
    if joined.count("\x00") < len(texts):
        # One pass over all the texts: each U+0000 token separates two of them, and the
        # leading space keeps these apart from the other form (which never starts with one).
        lowered = joined.lower()
        del joined  # each copy is freed once the next is made: a 50 MB text stays bounded
        norm = _single_spaced_ascii(lowered)
        if norm is None:
            words = lowered.split()
            del lowered
            spaced = " " + " ".join(words)
            del words
            norm = spaced.encode("utf-8", "surrogatepass")
    else:  # a text holds U+0000: normalise each alone
        norm = "\x1f".join([" ".join(text.lower().split()) for text in texts]).encode(
            "utf-8", "surrogatepass"
        )
    return exact_digest, xxh3_128_digest(norm)


# ASCII whitespace other than the space (what str.split splits at, besides it).
_OTHER_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace() and c != 32)
# Longer texts take the word split, whose copies are freed one by one (bounded memory).
_SHORTCUT_CHARS = 1 << 20


def _single_spaced_ascii(lowered: str) -> bytes | None:
    """Return ``(" " + " ".join(lowered.split())).encode()`` when that is ``lowered`` itself
    (single-spaced ASCII, most text), without splitting it into words; else None."""
    if (
        len(lowered) <= _SHORTCUT_CHARS
        and lowered.isascii()
        and "  " not in lowered
        and lowered[:1] != " "
        and lowered[-1:] != " "
    ):
        data = lowered.encode("ascii")
        if len(data.translate(None, _OTHER_ASCII_SPACE)) == len(data):
            return b" " + data
    return None


def finish_state(
    state: RecordState, data: Any, resolve: Resolver, context_length: int | None
) -> RecordState:
    """Check ``data`` and fill ``state`` with its shape, diagnostics and duplicate keys."""
    turns = None
    if FAST_PATH and type(data) is dict:
        shape = detect_shape(data)
        if shape is not None:
            turns = clean_turns(data, shape)
    if turns is None:
        shape, problems = check_record(data)
        state.diagnostics.extend(resolve(p) for p in problems)
        if shape is not None:
            turns = conversation(data, shape)
    state.shape = shape
    state.is_record = isinstance(data, dict)
    state.data = data
    if turns is None:
        return state
    state.turns = turns
    state.chars = chars = sum(len(text) for _, text in turns)
    whole = Problem("long-example", "", ())
    if chars > LONG_CHARS:
        state.diagnostics.append(
            _with(
                resolve(whole),
                "long-example",
                f"This example has {chars:,} characters (over "
                f"{LONG_CHARS:,}); long examples use a lot of memory "
                "and may be truncated: split or shorten it",
            )
        )
    if context_length and chars / CHARS_PER_TOKEN > context_length:
        state.diagnostics.append(
            _with(
                resolve(whole),
                "too-long",
                f"About {chars // CHARS_PER_TOKEN:,} tokens, over the "
                f"context of {context_length:,}: training truncates "
                "it; shorten or split it",
            )
        )
    if not state.has_error:
        state.exact, state.norm = turn_digests(turns)
    return state


def _with(diagnostic: Diagnostic, code: str, message: str) -> Diagnostic:
    return Diagnostic(
        diagnostic.start_line,
        diagnostic.start_character,
        diagnostic.end_line,
        diagnostic.end_character,
        code,
        message,
    )


# -- JSONL ------------------------------------------------------------------------------------


# A JSONL line with no diagnostic: (shape, end character, CRLF, exact digest, norm digest).
CleanLine = tuple[str, int, bool, bytes, bytes]


def clean_jsonl_line(raw: str, line: int, context_length: int | None = None) -> CleanLine | None:
    """Return what the file checks need of a JSONL line that has no diagnostic of its own.

    None when the line has one (or may have: blank, not JSON, a problem, repeated keys, long)
    or the fast path is off: ``jsonl_state`` then checks it with positions. For the same
    line, ``jsonl_state`` gives a state with no diagnostics and these very values.
    """
    clean = _clean_line(raw, line, context_length)
    if clean is None:
        return None
    shape, end, crlf, _, turns, _ = clean
    return (shape, end, crlf, *turn_digests(turns))


def clean_jsonl_state(raw: str, line: int, context_length: int | None = None) -> RecordState | None:
    """Return ``jsonl_state(raw, line)`` for a line with no diagnostic, found by the fast path.

    The editor keeps a state per line (hover, fixes and the model checks read its record);
    this gives the very state ``jsonl_state`` would, without building positions.
    """
    clean = _clean_line(raw, line, context_length)
    if clean is None:
        return None
    shape, end, crlf, data, turns, chars = clean
    exact, norm = turn_digests(turns)
    return RecordState(
        line,
        0,
        end,
        shape=shape,
        is_record=True,
        crlf=crlf,
        turns=turns,
        exact=exact,
        norm=norm,
        chars=chars,
        data=data,
    )


def line_state(raw: str, line: int, context_length: int | None = None) -> RecordState:
    """Return the checked state of one JSONL line: the fast path's, else ``jsonl_state``'s."""
    return clean_jsonl_state(raw, line, context_length) or jsonl_state(raw, line, context_length)


def _clean_line(
    raw: str, line: int, context_length: int | None
) -> tuple[str, int, bool, Any, list[tuple[str, str]], int] | None:
    """The fast path's check of one line: its shape, end, data, turns and characters."""
    if not FAST_PATH:
        return None
    crlf = raw[-1:] == "\r"
    text = raw[:-1] if crlf else raw
    if line == 0 and text[:1] == "\ufeff":
        return None
    try:
        data = _fast_loads(text)
    except ValueError:
        return None
    if type(data) is not dict:
        return None
    shape = detect_shape(data)
    if shape is None:
        return None
    plain = plain_chat(data) if shape == "chat" else None
    if plain is not None:
        turns, keys = plain
        if key_colons(text) > keys:
            return None  # maybe a repeated key
    else:
        turns = clean_turns(data, shape)
        if turns is None or may_repeat_keys(text, data):
            return None
    chars = 0
    for _, turn_text in turns:
        chars += len(turn_text)
    if chars > LONG_CHARS or (context_length and chars / CHARS_PER_TOKEN > context_length):
        return None
    end = len(text) if text.isascii() else col16(text, len(text))
    return shape, end, crlf, data, turns, chars


def jsonl_state(raw: str, line: int, context_length: int | None = None) -> RecordState:
    """Return the checked state of one JSONL line (diagnostics relative to that line)."""
    crlf = raw.endswith("\r")
    text = raw[:-1] if crlf else raw
    if line == 0 and text.startswith("\ufeff"):
        text = " " + text[1:]
    state = RecordState(line, 0, col16(text, len(text)), crlf=crlf)
    if not text.strip():
        state.blank = True
        return state
    try:
        data = _fast_loads(text)
    except ValueError:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            diagnostic = _syntax_diagnostic(text, error, 0, col16(text, error.pos), text)
            if diagnostic.code == "json-syntax" and _is_python_repr(text):
                diagnostic = _with(
                    diagnostic,
                    "python-repr",
                    "This line is a Python dict (its repr or str()), not JSON: JSON needs "
                    "double quotes and true/false/null; write records with json.dumps",
                )
            state.diagnostics.append(diagnostic)
            return state
        except RecursionError:
            state.diagnostics.append(
                Diagnostic(0, 0, 0, state.end_character, "json-syntax", "JSON nested too deeply")
            )
            return state

    def resolve(problem: Problem) -> Diagnostic:
        span = locate(text, 0, problem.path) if problem.path else None
        if span is None:
            start, end = 0, len(text)
        else:
            start, end = span[0] if problem.target == "key" and span[0] else span[1]
        return Diagnostic(
            0,
            col16(text, start),
            0,
            col16(text, end),
            problem.code,
            problem.message,
            data=problem.data,
        )

    for key, a, b in duplicate_keys(text, 0, data):
        state.diagnostics.append(_duplicate_key(0, col16(text, a), 0, col16(text, b), key))
    return finish_state(state, data, resolve, context_length)


def _duplicate_key(sl: int, sc: int, el: int, ec: int, key: str) -> Diagnostic:
    return Diagnostic(
        sl,
        sc,
        el,
        ec,
        "duplicate-key",
        f'"{key}" appears twice in this object: only this last value is kept and the '
        "earlier one is lost; rename or merge one of them",
    )


def _is_python_repr(text: str) -> bool:
    """Return True when ``text`` is a Python dict literal (single quotes, True/None)."""
    stripped = text.strip()
    if not stripped.startswith("{") or len(stripped) > 100_000:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return isinstance(ast.literal_eval(stripped), dict)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


# -- JSON -------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def json_states(
    text: str, context_length: int | None = None
) -> tuple[list[RecordState], list[Diagnostic]]:
    """Parse a JSON array (or an object with a list under data/examples) into records."""
    index_map = LineIndex(text)
    text = text.replace("\ufeff", " ", 1) if text.startswith("\ufeff") else text
    states: list[RecordState] = []
    diagnostics: list[Diagnostic] = []

    def syntax(error: json.JSONDecodeError) -> None:
        line, column = index_map.position(error.pos)
        diagnostics.append(_syntax_diagnostic(text, error, line, column, index_map.line_text(line)))

    def span_diag(start: int, end: int, code: str, message: str) -> Diagnostic:
        sl, sc = index_map.position(start)
        el, ec = index_map.position(end)
        return Diagnostic(sl, sc, el, ec, code, message)

    start = _skip(text, 0)
    if start >= len(text):
        return states, diagnostics
    try:
        root, root_end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as error:
        root = None
        if text[start] != "[":
            syntax(error)
            return states, diagnostics
    else:
        rest = _skip(text, root_end)
        if rest < len(text):
            error = json.JSONDecodeError("Extra data", text, rest)
            syntax(error)
    array_start = start
    splits = [
        (k, split)
        for k, split in (("train", None), ("validation", "validation"), ("test", "test"))
        if isinstance(root, dict) and isinstance(root.get(k), list)
    ]
    if splits and splits[0][0] == "train":
        pass
    elif isinstance(root, dict):
        key = next((k for k in ("data", "examples") if isinstance(root.get(k), list)), None)
        if key is None:
            if any(k in root for k in ("data", "examples")):
                diagnostics.append(
                    span_diag(
                        start, start + 1, "json-root", "data/examples must be a list of records"
                    )
                )
                return states, diagnostics
            array_start = -1  # a single record
        else:
            array_start = locate(text, start, (key,))[1][0]
    elif root is not None and not isinstance(root, list):
        diagnostics.append(
            span_diag(
                start,
                root_end,
                "json-root",
                "A JSON dataset must be an "
                "array of records, or an object with a list under "
                '"data" or "examples"',
            )
        )
        return states, diagnostics

    def add(begin: int, end: int, data: Any, split: str | None = None) -> None:
        sl, _ = index_map.position(begin)
        el, ec = index_map.position(end)
        state = RecordState(sl, el - sl, ec, split=split)

        def resolve(problem: Problem) -> Diagnostic:
            span = locate(text, begin, problem.path) if problem.path else None
            a, b = (
                (begin, end)
                if span is None
                else (span[0] if problem.target == "key" and span[0] else span[1])
            )
            la, ca = index_map.position(a)
            lb, cb = index_map.position(b)
            return Diagnostic(
                la - sl, ca, lb - sl, cb, problem.code, problem.message, data=problem.data
            )

        for key, a, b in duplicate_keys(text, begin, data, end):
            la, ca = index_map.position(a)
            lb, cb = index_map.position(b)
            state.diagnostics.append(_duplicate_key(la - sl, ca, lb - sl, cb, key))
        states.append(finish_state(state, data, resolve, context_length))

    if array_start < 0:
        add(start, root_end, root)
        return states, diagnostics
    if splits and splits[0][0] == "train":
        for key, split in splits:
            _read_array(text, locate(text, start, (key,))[1][0], add, syntax, diagnostics, split)
        return states, diagnostics
    _read_array(text, array_start, add, syntax, diagnostics, None, root is None)
    return states, diagnostics


def _read_array(
    text: str,
    array_start: int,
    add: Callable[..., None],
    syntax: Callable[[json.JSONDecodeError], None],
    diagnostics: list[Diagnostic],
    split: str | None,
    broken: bool = False,
) -> None:
    """Add the records of the JSON array at ``array_start`` (``broken``: it did not parse)."""
    index = _skip(text, array_start + 1)
    while index < len(text) and text[index] != "]":
        try:
            data, end = _DECODER.raw_decode(text, index)
        except json.JSONDecodeError as error:
            syntax(error)
            return
        add(index, end, data, split)
        index = _skip(text, end)
        if index < len(text) and text[index] == ",":
            comma = index
            index = _skip(text, index + 1)
            if index < len(text) and text[index] == "]":
                line, column = LineIndex(text).position(comma)  # rare: build it here
                diagnostics.append(
                    Diagnostic(
                        line,
                        column,
                        line,
                        column + 1,
                        "trailing-comma",
                        "Trailing comma: JSON allows no comma before a closing bracket; remove it",
                        {"fix": "remove-comma"},
                    )
                )
        elif index < len(text) and text[index] != "]" and broken:
            syntax(json.JSONDecodeError("Expecting ',' delimiter", text, index))
            return


# -- Whole-file forms of JSONL: pretty-printed JSON, OASST trees ------------------------------


def _first_content(lines: list[str]) -> tuple[int, str]:
    for number, line in enumerate(lines):
        if line.strip(" \t\r\ufeff"):
            return number, line.strip(" \t\r\ufeff")
    return -1, ""


def needs_whole_file(lines: list[str]) -> bool:
    """Return True when a JSONL text may be pretty-printed JSON or an OASST export.

    Those are checked as a whole (one diagnostic for the file), so an editor re-checks the
    whole document instead of single lines.
    """
    _, first = _first_content(lines)
    return first in ("{", "[") or '"message_id"' in first or '"message_tree_id"' in first


def json_values(text: str) -> list[tuple[int, int, Any]] | None:
    """Return ``(start, end, value)`` of each JSON value in ``text`` in a row, else None."""
    text = text.replace("\ufeff", " ", 1) if text.startswith("\ufeff") else text
    values = []
    index = _skip(text, 0)
    while index < len(text):
        try:
            value, end = _DECODER.raw_decode(text, index)
        except (json.JSONDecodeError, RecursionError):
            return None
        values.append((index, end, value))
        index = _skip(text, end)
    return values


def pretty_jsonl_states(
    text: str, context_length: int | None = None
) -> tuple[list[RecordState], list[Diagnostic]] | None:
    """Return the records of pretty-printed JSON in a JSONL file and one ``pretty-json`` error."""
    lines = text.split("\n")
    number, first = _first_content(lines)
    if first not in ("{", "["):
        return None
    values = json_values(text)
    if not values:
        return None
    index = LineIndex(text)
    states: list[RecordState] = []
    diagnostics: list[Diagnostic] = []
    for start, end, _ in values:
        line, _ = index.position(start)
        begin = index.starts[line]
        if text[begin:start].strip(" \t\ufeff"):
            begin = start  # not first on its line: columns of its first line shift (rare)
        sub_states, sub_diagnostics = json_states(text[begin:end], context_length)
        for state in sub_states:
            state.line += line
            states.append(state)
        diagnostics.extend(d.shifted(line) for d in sub_diagnostics)
    start, end, value = values[0]
    sl, sc = index.position(start)
    el, ec = index.position(end if not isinstance(value, list) else start + 1)
    what = "a JSON array" if isinstance(value, list) else "pretty-printed (multi-line) JSON"
    diagnostics.append(
        Diagnostic(
            sl,
            sc,
            el,
            ec,
            "pretty-json",
            f"This JSONL file holds {what}: JSON Lines needs each record on one line; "
            "rewrite it as JSON Lines (quick fix)",
            {"fix": "rewrite-jsonl"},
        )
    )
    return states, diagnostics


def jsonl_lines_of(text: str) -> str | None:
    """Return ``text`` (JSON values, or an array of them) rewritten as JSON Lines."""
    values = json_values(text)
    if values is None:
        return None
    records: list[Any] = []
    for _, _, value in values:
        records.extend(value if isinstance(value, list) else [value])
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _is_oasst(data: Any) -> bool:
    return isinstance(data, dict) and (
        "message_tree_id" in data
        or ("message_id" in data and ("parent_id" in data or "replies" in data))
    )


def oasst_diagnostics(states: list[RecordState]) -> list[Diagnostic] | None:
    """If the records are OpenAssistant messages, clear their checks and return one error."""
    first = next((s for s in states if not s.blank), None)  # the first line with content
    if first is None or not first.is_record or not _is_oasst(first.data):
        return None
    for state in states:
        state.diagnostics.clear()
        state.shape = state.turns = state.exact = state.norm = None
    return [
        Diagnostic(
            first.line,
            0,
            first.line + first.end_line,
            first.end_character,
            "oasst-tree",
            "This is an OpenAssistant (OASST) message tree (message_id/parent_id/replies), "
            "one message per record, not one conversation per record: export the "
            'conversations as chat records {"messages": [...]} (one path from the root '
            "prompt to a reply each)",
        )
    ]


# -- CSV --------------------------------------------------------------------------------------

CSV_HEADERS = {
    ("prompt", "response"): ("prompt-response", {}),
    ("question", "answer"): ("prompt-response", {"question": "prompt", "answer": "response"}),
    ("prompt", "completion"): ("prompt-completion", {}),
    ("instruction", "output"): ("alpaca", {}),
    ("input", "instruction", "output"): ("alpaca", {}),
    # Databricks Dolly exports (often with a "category" column, reported as ignored)
    ("instruction", "response"): ("dolly", {}),
    ("instruction", "context", "response"): ("dolly", {}),
    ("text",): ("text", {}),
    ("prompt", "chosen", "rejected"): ("preference", {}),
    ("question", "chosen", "rejected"): ("preference", {"question": "prompt"}),
    ("chosen", "rejected"): ("preference", {}),
}


def _cell_spans(line: str, delimiter: str = ",") -> list[tuple[int, int]]:
    """Return each cell's [start, end) in one physical CSV line (quotes honoured)."""
    spans, start, quoted, index = [], 0, False, 0
    while index < len(line):
        char = line[index]
        if char == '"':
            quoted = not quoted
        elif char == delimiter and not quoted:
            spans.append((start, index))
            start = index + 1
        index += 1
    spans.append((start, len(line.rstrip("\r"))))
    return spans


def csv_states(
    text: str, context_length: int | None = None
) -> tuple[list[RecordState], list[Diagnostic]]:
    """Parse CSV with a known header (prompt,response, instruction,output, Dolly's ...)."""
    lines = text.split("\n")
    text = text.replace("\ufeff", " ", 1) if text.startswith("\ufeff") else text
    delimiter = _delimiter(lines[0]) or ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    states: list[RecordState] = []
    diagnostics: list[Diagnostic] = []
    if delimiter == ";":
        diagnostics.append(
            Diagnostic(
                0,
                0,
                0,
                col16(lines[0], len(lines[0].rstrip("\r"))),
                "csv-delimiter",
                "Columns are separated by semicolons (Excel in European locales); "
                "cortex reads them, other tools may expect commas",
            )
        )
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return states, diagnostics
    names = [h.strip().lower() for h in header]
    spans0 = _cell_spans(lines[0], delimiter)
    known_key = next(
        (
            k
            for k in CSV_HEADERS
            if set(k) <= set(names)
            and len(set(k))
            == max(len(set(k2) & set(names)) for k2 in CSV_HEADERS if set(k2) <= set(names))
        ),
        None,
    )
    if known_key is None:
        diagnostics.append(
            Diagnostic(
                0,
                0,
                0,
                col16(lines[0], len(lines[0].rstrip("\r"))),
                "csv-header",
                f"Unknown CSV header {','.join(header)!r}; "
                "use prompt,response (or instruction,output, instruction,context,response, "
                "question,answer, or prompt,chosen,rejected for preference pairs)",
            )
        )
        return states, diagnostics
    shape, renames = CSV_HEADERS[known_key]
    allowed = set(known_key)
    for column, name in enumerate(names):
        if name not in allowed and column < len(spans0):
            a, b = spans0[column]
            diagnostics.append(
                Diagnostic(
                    0,
                    col16(lines[0], a),
                    0,
                    col16(lines[0], b),
                    "unknown-key",
                    f'Column "{header[column]}" is ignored by training; remove it',
                )
            )
    previous = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            line = reader.line_num - 1
            diagnostics.append(
                Diagnostic(
                    line, 0, line, line_end16(lines[line]), "csv-field-count", f"CSV error: {error}"
                )
            )
            break
        first, last = previous, reader.line_num - 1
        previous = reader.line_num
        end_text = lines[last].rstrip("\r") if last < len(lines) else ""
        state = RecordState(first, last - first, col16(end_text, len(end_text)))
        if not any(cell.strip() for cell in row):
            state.blank = True
            states.append(state)
            continue
        if len(row) != len(names):
            state.diagnostics.append(
                Diagnostic(
                    0,
                    0,
                    last - first,
                    state.end_character,
                    "csv-field-count",
                    f"This row has {len(row)} field(s) but the header has {len(names)}; quote "
                    'fields that contain commas, e.g. "Paris, France"',
                )
            )
            states.append(state)
            continue
        data = {
            renames.get(n, n): cell for n, cell in zip(names, row, strict=False) if n in allowed
        }
        spans = _cell_spans(lines[first], delimiter) if first == last else None
        line_text = lines[first].rstrip("\r")

        def resolve(
            problem: Problem,
            spans: Any = spans,
            line_text: str = line_text,
            state: RecordState = state,
        ) -> Diagnostic:
            if spans and problem.path and isinstance(problem.path[0], str):
                reverse = {renames.get(n, n): i for i, n in enumerate(names)}
                column = reverse.get(problem.path[0])
                if column is not None and column < len(spans):
                    a, b = spans[column]
                    return Diagnostic(
                        0,
                        col16(line_text, a),
                        0,
                        col16(line_text, b),
                        problem.code,
                        problem.message,
                        data=problem.data,
                    )
            return Diagnostic(
                0,
                0,
                state.end_line,
                state.end_character,
                problem.code,
                problem.message,
                data=problem.data,
            )

        states.append(finish_state(state, data, resolve, context_length))
    del shape
    return states, diagnostics


# -- TXT --------------------------------------------------------------------------------------

_LABEL = re.compile(r"^\s*(q|question|a|answer|user|assistant|system)\s*:\s?", re.IGNORECASE)
_MARKER = re.compile(r"^\s*###\s*(instruction|input|response)\s*:?\s?", re.IGNORECASE)
_ROLE = {
    "instruction": "instruction",
    "input": "input",
    "response": "output",
    "q": "prompt",
    "question": "prompt",
    "a": "response",
    "answer": "response",
    "user": "user",
    "assistant": "assistant",
    "system": "system",
}


def txt_states(
    text: str, context_length: int | None = None
) -> tuple[list[RecordState], list[Diagnostic]]:
    """Parse Q:/A: blocks (or User:/Assistant: conversations) separated by blank lines."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = " " + lines[0][1:]
    states: list[RecordState] = []
    diagnostics: list[Diagnostic] = []
    block: list[tuple[int, str, list[str]]] = []  # (line, label, text lines)
    preamble, skip, preamble_diagnostic = _alpaca_preamble(lines)
    if preamble_diagnostic is not None:
        diagnostics.append(preamble_diagnostic)
    kept = preamble_diagnostic is not None and preamble_diagnostic.code == "txt-preamble"
    copies = {run[0] for run in _runs(sorted(skip))} if kept else set()  # each copy's 1st line

    def flush() -> None:
        if not block:
            return
        first = block[0][0]
        last = max(i for i, _, _ in block) + len(block[-1][2]) - 1
        while last > first and not lines[last].strip():
            last -= 1
        state = RecordState(first, last - first, col16(lines[last], len(lines[last])))
        fields = [(line, label, "\n".join(body).strip()) for line, label, body in block]
        labels = [label for _, label, _ in fields]
        if any(label in ("user", "assistant", "system") for label in labels):
            data: dict[str, Any] = {
                "messages": [{"role": label, "content": body} for _, label, body in fields]
            }
            where = {
                ("messages", i, key): line
                for i, (line, _, _) in enumerate(fields)
                for key in ("role", "content")
            }
        else:
            data = {}
            where = {}
            for line, label, body in fields:
                if label == "input" and not body:
                    continue  # an empty ### Input: section
                if label in data:
                    diagnostics.append(
                        Diagnostic(
                            line,
                            0,
                            line,
                            line_end16(lines[line]),
                            "txt-structure",
                            f"A second "
                            f"{'Q' if label == 'prompt' else 'A'}: in "
                            "one block; separate examples with a blank "
                            "line",
                        )
                    )
                    continue
                data[label] = body
                where[(label,)] = line
            if kept and "instruction" in data and block_preamble[0]:
                data["instruction"] = f"{preamble}\n\n{data['instruction']}"
        block_preamble[0] = False

        def resolve(problem: Problem) -> Diagnostic:
            line = where.get(problem.path) or where.get(problem.path[:3] if problem.path else ())
            if line is None:
                message = problem.message
                missing = (problem.data or {}).get("field")
                if missing in ("prompt", "response"):
                    message = (
                        "This example has no A: answer; add a line 'A: ...' after the question"
                        if missing == "response"
                        else "This answer has no Q: question; add a line 'Q: ...' before it"
                    )
                return Diagnostic(
                    0,
                    0,
                    state.end_line,
                    state.end_character,
                    problem.code,
                    message,
                    data=problem.data,
                )
            return Diagnostic(
                line - first,
                0,
                line - first,
                line_end16(lines[line]),
                problem.code,
                problem.message,
            )

        states.append(finish_state(state, data, resolve, context_length))
        block.clear()

    labelled = False
    block_preamble = [False]  # whether the next block has its own copy of a kept preamble
    for number, line in enumerate(lines):
        if number in skip:
            if number in copies:
                flush()
                block_preamble[0] = True
            continue
        match = _LABEL.match(line) or _MARKER.match(line)
        if match:
            labelled = True
            label = _ROLE[match.group(1).lower()]
            starts_example = label in ("prompt", "system", "instruction") or (
                label == "user"
                and block
                and block[-1][1] not in ("system",)
                and any(b[1] == "assistant" for b in block)
                and _blank_before(lines, number)
            )
            if starts_example or (label == "user" and block and block[-1][1] == "response"):
                flush()
            block.append((number, label, [line[match.end() :]]))
        elif not line.strip():
            if block:
                block[-1][2].append("")
        elif block:
            block[-1][2].append(line)
        else:
            diagnostics.append(
                Diagnostic(
                    number,
                    0,
                    number,
                    line_end16(line),
                    "txt-structure",
                    "Text outside a Q:/A: block; start each example "
                    "with a line 'Q: ...' followed by 'A: ...'",
                )
            )
    flush()
    if not labelled and diagnostics:  # plain paragraphs: one error, not one per line
        first = diagnostics[0]
        diagnostics = [
            Diagnostic(
                first.start_line,
                0,
                first.end_line,
                first.end_character,
                "txt-no-markers",
                "This text file has no Q:/A:, User:/Assistant: or ### Instruction:/"
                "### Response: markers, so it holds no examples; mark each example "
                "(e.g. 'Q: ...' then 'A: ...'), or save plain text as JSONL "
                '{"text": "..."} records',
            )
        ]
    return states, diagnostics


def _runs(numbers: list[int]) -> list[list[int]]:
    """Return consecutive runs of sorted line numbers (each copy of a preamble is one run)."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs


def _alpaca_preamble(lines: list[str]) -> tuple[str | None, set[int], Diagnostic | None]:
    """Find the Alpaca template's preamble: text before the first ``### Instruction:``.

    Return its text, the lines of every copy of it (each directly before an
    ``### Instruction:``, after a blank line: those lines belong to no response) and its one
    diagnostic. When it repeats per record, as Alpaca's prompt template writes it, it is kept
    (``txt-preamble``): prepended, then a blank line, to the prompt of each record it precedes.
    Once at the top of a file of several records it is a header, ignored with a warning
    (``txt-preamble-ignored``), so no text is dropped silently.
    """
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    marker = next(
        (i for i, line in enumerate(lines) if _LABEL.match(line) or _MARKER.match(line)), None
    )
    if first is None or marker is None or first >= marker:
        return None, set(), None
    match = _MARKER.match(lines[marker])
    if match is None or match.group(1).lower() != "instruction":
        return None, set(), None
    last = marker - 1
    while not lines[last].strip():
        last -= 1
    body = lines[first : last + 1]
    skip = set(range(first, last + 1))
    instructions = [
        i
        for i, line in enumerate(lines)
        if (m := _MARKER.match(line)) and m.group(1).lower() == "instruction"
    ]
    for at in instructions[1:]:
        end = at - 1
        while end >= 0 and not lines[end].strip():
            end -= 1
        start = end - len(body) + 1
        if (
            start > 0
            and not lines[start - 1].strip()
            and [line.strip() for line in lines[start : end + 1]] == [b.strip() for b in body]
        ):
            skip.update(range(start, end + 1))
    text = "\n".join(body).strip()
    copies = len(_runs(sorted(skip)))
    end_character = col16(lines[last], len(lines[last]))
    short = text if len(text) <= 60 else text[:57] + "..."
    if copies > 1 or len(instructions) == 1:
        return (
            text,
            skip,
            Diagnostic(
                first,
                0,
                last,
                end_character,
                "txt-preamble",
                f'The preamble "{short}" comes before {copies} of the {len(instructions)} '
                "### Instruction: blocks (Alpaca's prompt template): it is kept, prepended "
                "to the prompt of each record it precedes",
            ),
        )
    return (
        text,
        skip,
        Diagnostic(
            first,
            0,
            last,
            end_character,
            "txt-preamble-ignored",
            f'The text "{short}" before the first ### Instruction: is ignored by training '
            "(it comes once, not before each record); to train on it, repeat it before "
            "each ### Instruction: (Alpaca's prompt template) or put it in the instructions",
        ),
    )


def _blank_before(lines: list[str], number: int) -> bool:
    return number > 0 and not lines[number - 1].strip()


PARSERS = {"json": json_states, "csv": csv_states, "txt": txt_states}
