"""Near-duplicate clusters: texts whose 5-character shingles have a Jaccard similarity >= 0.8.

Each text gets a 64-value MinHash signature (one-permutation hashing with rotation
densification, so every shingle is hashed once); texts sharing one of 16 bands of 4 values
become candidates, and a candidate pair is a near-duplicate when at least 80 % of the two
signatures agree (an estimate of the Jaccard similarity, standard error 0.05 at 0.8). All of
it is vectorised: 50,000 texts take under half a second. The hashing has fixed seeds, so the
same file always gives the same clusters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

SHINGLE = 5  # characters (UTF-8 bytes) per shingle
THRESHOLD = 0.8
BINS, BANDS = 64, 16  # 16 bands of 4 values: a pair at 0.8 is a candidate with p = 0.9998
_ROWS = BINS // BANDS
_CHUNK_BYTES = 4 << 20
_EMPTY = np.uint32(0xFFFFFFFF)
_NOT_WORD = re.compile(r"[\W_]+")
_ASCII_NOT_WORD = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})
_RNG = np.random.default_rng(20240611)
_BAND_MIX = (_RNG.integers(0, 2**62, (BANDS, _ROWS), dtype=np.uint64) * 2 + 1).astype(np.uint64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def normalize(text: str) -> str:
    """Return ``text`` lowercased, punctuation removed and whitespace collapsed to one space."""
    if text.isascii():  # the same result, twice as fast
        return " ".join(text.lower().translate(_ASCII_NOT_WORD).split())
    return _NOT_WORD.sub(" ", text.lower()).strip()


def _signatures(texts: Sequence[str]) -> np.ndarray:
    """Return the (texts, BINS) one-permutation MinHash signatures of ``texts``."""
    data = [t.ljust(SHINGLE).encode("utf-8") for t in texts]
    lengths = np.fromiter((len(d) for d in data), dtype=np.int64, count=len(data))
    raw = np.frombuffer(b"".join(data), dtype=np.uint8).astype(np.uint32)
    count = len(raw) - SHINGLE + 1
    # A polynomial hash of each shingle's bytes, then a multiply-xorshift to spread the bits.
    hashes = raw[:count].copy()
    for k in range(1, SHINGLE):
        hashes *= np.uint32(257)
        hashes += raw[k : count + k]
    hashes *= np.uint32(0x9E3779B1)
    hashes ^= hashes >> np.uint32(15)
    hashes *= np.uint32(0x85EBCA77)
    hashes ^= hashes >> np.uint32(13)
    # Shingle i belongs to the text it starts in; the last SHINGLE - 1 of each text run into
    # the next one and go to a slot past the end that is thrown away.
    slots = np.repeat(np.arange(0, len(texts) * BINS, BINS, dtype=np.int32), lengths)[:count]
    slots += (hashes % np.uint32(BINS)).astype(np.int32)
    ends = np.cumsum(lengths)
    crossing = (ends[:, None] - np.arange(1, SHINGLE)[None, :]).ravel()
    slots[crossing[crossing < count]] = len(texts) * BINS
    flat = np.full(len(texts) * BINS + 1, _EMPTY, dtype=np.uint32)
    np.minimum.at(flat, slots, hashes // np.uint32(BINS))
    return _densify(flat[:-1].reshape(len(texts), BINS))


def _densify(signatures: np.ndarray) -> np.ndarray:
    """Fill each empty bin from the next non-empty one to its right (wrapping), offset by distance.

    Short texts have fewer shingles than bins; rotation keeps their signatures comparable.
    """
    doubled = np.concatenate((signatures, signatures), axis=1)
    positions = np.where(doubled != _EMPTY, np.arange(2 * BINS), 2 * BINS)
    nearest = np.minimum.accumulate(positions[:, ::-1], axis=1)[:, ::-1][:, :BINS]
    rows = np.arange(len(signatures))[:, None]
    distance = (nearest - np.arange(BINS)).astype(np.uint64)
    values = doubled[rows, nearest].astype(np.uint64) + distance * np.uint64(0x1000_0000)
    return (values & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _candidate_pairs(signatures: np.ndarray) -> np.ndarray:
    """Return (pairs, 2) index pairs sharing a band: each text with its bucket's first and previous."""
    pairs = []
    for band in range(BANDS):
        rows = signatures[:, band * _ROWS : (band + 1) * _ROWS].astype(np.uint64)
        keys = (rows * _BAND_MIX[band]).sum(axis=1, dtype=np.uint64)
        # A different order within buckets per band, so "previous" is a different text each time.
        tiebreak = (np.arange(len(keys), dtype=np.uint64) + np.uint64(band + 1)) * _GOLDEN
        order = np.lexsort((tiebreak, keys))
        ordered = keys[order]
        same = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
        if not len(same):
            continue
        first = np.where(
            np.concatenate(([True], ordered[1:] != ordered[:-1])), np.arange(len(ordered)), 0
        )
        first = np.maximum.accumulate(first)
        pairs.append(np.stack((order[same - 1], order[same]), axis=1))
        heads = first[same]
        keep = heads != same - 1
        pairs.append(np.stack((order[heads[keep]], order[same[keep]]), axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    found = np.sort(np.concatenate(pairs), axis=1)
    packed = np.unique(found[:, 0] * len(signatures) + found[:, 1])
    return np.stack(np.divmod(packed, len(signatures)), axis=1)


def near_duplicate_groups(
    texts: Sequence[str], checkpoint: Callable[[], None] | None = None
) -> list[list[int]]:
    """Return groups (ascending index lists) of texts that are identical or near-identical.

    Pass normalised texts (``normalize``). ``checkpoint`` is called between stages (to cancel).
    """
    first_of: dict[str, int] = {}
    members: list[list[int]] = []
    for index, text in enumerate(texts):
        slot = first_of.setdefault(text, len(members))
        if slot == len(members):
            members.append([])
        members[slot].append(index)
    unique = list(first_of)
    parent = list(range(len(unique)))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    if len(unique) > 1:
        chunks, begin = [], 0
        while begin < len(unique):
            end, size = begin, 0
            while end < len(unique) and (size < _CHUNK_BYTES or end == begin):
                size += len(unique[end]) + SHINGLE
                end += 1
            chunks.append(_signatures(unique[begin:end]))
            begin = end
            if checkpoint:
                checkpoint()
        signatures = np.concatenate(chunks)
        pairs = _candidate_pairs(signatures)
        if checkpoint:
            checkpoint()
        needed = math.ceil(THRESHOLD * BINS)
        for start in range(0, len(pairs), 200_000):
            block = pairs[start : start + 200_000]
            agree = (signatures[block[:, 0]] == signatures[block[:, 1]]).sum(axis=1)
            for a, b in block[agree >= needed].tolist():
                a, b = find(a), find(b)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    clusters: dict[int, list[int]] = {}
    for slot in range(len(unique)):
        clusters.setdefault(find(slot), []).extend(members[slot])
    return [sorted(c) for c in clusters.values() if len(c) > 1]
