"""Positions inside dataset text: JSON paths to spans, offsets to lines, UTF-16 columns."""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from json.decoder import scanstring

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"

Path = tuple  # of str keys and int indexes


def col16(line: str, index: int) -> int:
    """Return the UTF-16 column LSP uses for code-point ``index`` in ``line``."""
    if line.isascii():
        return index
    return len(line[:index].encode("utf-16-le")) // 2


def line_end16(line: str) -> int:
    """Return the UTF-16 column where ``line``'s text ends (before a CRLF's ``\\r``)."""
    line = line.rstrip("\r")
    return col16(line, len(line))


def index_from_col16(line: str, column: int) -> int:
    """Return the code-point index for an LSP UTF-16 ``column`` in ``line``."""
    if line.isascii():
        return min(column, len(line))
    units = 0
    for i, char in enumerate(line):
        if units >= column:
            return i
        units += 2 if ord(char) > 0xFFFF else 1
    return len(line)


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def locate(
    text: str, start: int, path: Path
) -> tuple[tuple[int, int] | None, tuple[int, int]] | None:
    """Return ((key_start, key_end) or None, (value_start, value_end)) of ``path``.

    ``text[start:]`` begins a JSON value that is known to parse; only called for values
    that have a problem, so it trades speed for simplicity.
    """
    try:
        index = _skip(text, start)
        key_span = None
        for part in path:
            if isinstance(part, str) and text[index] == "{":
                index = _skip(text, index + 1)
                while True:
                    if text[index] != '"':
                        return None
                    key_start = index
                    key, index = scanstring(text, index + 1)
                    key_span = (key_start, index)
                    index = _skip(text, index)
                    index = _skip(text, index + 1)  # the colon
                    if key == part:
                        break
                    _, index = _DECODER.raw_decode(text, index)
                    index = _skip(text, index)
                    if text[index] != ",":
                        return None
                    index = _skip(text, index + 1)
            elif isinstance(part, int) and text[index] == "[":
                index = _skip(text, index + 1)
                for _ in range(part):
                    _, index = _DECODER.raw_decode(text, index)
                    index = _skip(text, index)
                    if text[index] != ",":
                        return None
                    index = _skip(text, index + 1)
                key_span = None
            else:
                return None
        _, end = _DECODER.raw_decode(text, index)
        return key_span, (index, end)
    except (IndexError, ValueError):
        return None


class LineIndex:
    """Maps offsets in a text to (line, UTF-16 character)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0]
        find = text.find
        position = find("\n")
        while position != -1:
            self.starts.append(position + 1)
            position = find("\n", position + 1)

    def line_text(self, line: int) -> str:
        start = self.starts[line]
        end = self.starts[line + 1] - 1 if line + 1 < len(self.starts) else len(self.text)
        return self.text[start:end].rstrip("\r")

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self.starts, offset) - 1
        return line, col16(self.line_text(line), offset - self.starts[line])


_KEY_COLON = re.compile(r'"\s*:')
_QUOTE_SPACE = re.compile(r'"[ \t\n\r]')  # JSON's whitespace after a quote


def key_count(value: object) -> int:
    """Return the number of keys in all the objects of a parsed JSON value."""
    if isinstance(value, dict):
        count = len(value)
        items = value.values()
    elif isinstance(value, list):
        count = 0
        items = value
    else:
        return 0
    for item in items:
        if isinstance(item, (dict, list)):
            count += key_count(item)
    return count


def key_colons(text: str, start: int = 0, end: int | None = None) -> int:
    """Return at least the number of object keys in ``text[start:end]`` (JSON that parsed).

    Every key is a closing quote followed by optional whitespace and a colon. Counted
    cheaply: ``":`` (the whitespace form only when a quote is followed by whitespace), less
    the ``\\":`` whose quote is escaped (one backslash before it: inside a string).
    """
    if start or end is not None:
        text = text[start:end]
    spaced = _QUOTE_SPACE.search(text) is not None
    colons = len(_KEY_COLON.findall(text)) if spaced else text.count('":')
    escaped = text.count('\\":')
    if escaped:
        colons -= escaped - text.count('\\\\":')
    return colons


def may_repeat_keys(text: str, data: object, start: int = 0, end: int | None = None) -> bool:
    """Return False when no object in the JSON value ``data`` (parsed from text) repeats a key.

    A parse keeps the last of repeated keys, so the text has more keys than ``data`` only
    when some repeat; True means "maybe" (a string may contain ``":``).
    """
    return key_colons(text, start, end) > key_count(data)


def duplicate_keys(
    text: str, start: int, data: object, end: int | None = None
) -> list[tuple[str, int, int]]:
    """Return (key, key_start, key_end) of every repeated key in the JSON value at ``start``.

    ``data`` is the parsed value: a parse keeps the last of repeated keys, so the text has
    more keys than ``data`` only when some repeat (or a string contains ``":``); only then
    is the text walked.
    """
    if not may_repeat_keys(text, data, start, end):
        return []
    found: list[tuple[str, int, int]] = []

    def walk(index: int) -> int:
        index = _skip(text, index)
        char = text[index]
        if char == "{":
            seen: set[str] = set()
            index = _skip(text, index + 1)
            if text[index] == "}":
                return index + 1
            while True:
                key_start = index
                key, index = scanstring(text, index + 1)
                if key in seen:
                    found.append((key, key_start, index))
                seen.add(key)
                index = _skip(text, index) + 1  # the colon
                index = _skip(text, walk(index))
                if text[index] == "}":
                    return index + 1
                index = _skip(text, index + 1)  # the comma
        if char == "[":
            index = _skip(text, index + 1)
            if text[index] == "]":
                return index + 1
            while True:
                index = _skip(text, walk(index))
                if text[index] == "]":
                    return index + 1
                index += 1
        return _DECODER.raw_decode(text, index)[1]

    try:
        walk(start)
    except (IndexError, ValueError):
        return found
    return found
