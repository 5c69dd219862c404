"""Positions inside dataset text: JSON paths to spans, offsets to lines, UTF-16 columns."""

from __future__ import annotations

import json
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
