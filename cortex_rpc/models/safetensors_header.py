"""Read a safetensors file's header without touching its tensor data.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping tensor
names to ``{dtype, shape, data_offsets}``, then the raw bytes. Reading only the header makes
inspecting a 140 GB model a matter of milliseconds. Everything a lying header could claim is
checked against the file before it is believed.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CortexError

# Real headers are well under a megabyte even for 70B models (a few thousand tensors).
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_DIMENSIONS = 8

DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
    "F4": 1,
    "F6_E2M3": 1,
    "F6_E3M2": 1,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a safetensors header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class SafetensorsHeader:
    """The parsed header of one safetensors file."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    data_bytes: int = 0


def _invalid(path: Path, why: str) -> CortexError:
    return CortexError(
        "invalid-safetensors",
        f"{path.name} is not a valid safetensors file: {why}. Re-download or re-convert it.",
        path=str(path),
    )


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """Return the header of ``path``, validated against the file's real size.

    Raises CortexError("invalid-safetensors") for anything inconsistent: a header length past
    the end, non-UTF-8 or non-object JSON, unknown dtypes, negative or absurd shapes, offsets
    outside the data section, overlapping tensors, or sizes that disagree with the shape.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _invalid(path, "file is shorter than the 8-byte header length")
            (header_length,) = struct.unpack("<Q", prefix)
            file_size = path.stat().st_size
            if header_length > MAX_HEADER_BYTES:
                raise _invalid(
                    path, f"header claims {header_length} bytes (limit {MAX_HEADER_BYTES})"
                )
            if 8 + header_length > file_size:
                raise _invalid(path, "header length runs past the end of the file")
            raw = handle.read(header_length)
    except OSError as error:
        raise CortexError(
            "model-unreadable", f"Cannot read {path}: {error.strerror}", path=str(path)
        ) from error
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise _invalid(path, f"header is not UTF-8 (byte {error.start})") from error
    except (json.JSONDecodeError, RecursionError) as error:
        raise _invalid(path, f"header is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise _invalid(path, "header is not a JSON object")

    data_size = file_size - 8 - header_length
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _invalid(path, "__metadata__ is not an object")
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        tensors[name] = _tensor_info(path, name, entry, data_size)
    _check_no_overlap(path, tensors)
    return SafetensorsHeader(
        path=path,
        tensors=tensors,
        metadata={str(k): str(v) for k, v in metadata.items()},
        data_bytes=data_size,
    )


def _tensor_info(path: Path, name: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _invalid(path, f"entry for {name!r} is not an object")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise _invalid(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMENSIONS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _invalid(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise _invalid(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise _invalid(
            path, f"tensor {name!r} data [{begin}, {end}) lies outside the {data_size}-byte data"
        )
    numel = math.prod(shape)
    expected = numel * DTYPE_BYTES[dtype]
    # Sub-byte float types pack several values per byte; only check whole-byte types exactly.
    if dtype not in ("F4", "F6_E2M3", "F6_E3M2") and expected != end - begin:
        raise _invalid(
            path,
            f"tensor {name!r} of shape {shape} and dtype {dtype} needs {expected} bytes "
            f"but its offsets span {end - begin}",
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_no_overlap(path: Path, tensors: dict[str, TensorInfo]) -> None:
    previous: TensorInfo | None = None
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin == info.end:
            continue
        if previous is not None and info.begin < previous.end:
            raise _invalid(path, f"tensors {previous.name!r} and {info.name!r} overlap")
        previous = info
