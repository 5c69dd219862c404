"""Model size categories and the quantization the guide recommends for each size."""

from __future__ import annotations

# (name, upper bound in parameters); the last category is open-ended.
MODEL_CATEGORIES: tuple[tuple[str, float], ...] = (
    ("tiny", 0.5e9),
    ("small", 2e9),
    ("medium", 8e9),
    ("large", 20e9),
    ("xlarge", float("inf")),
)
GB = 1_000_000_000


def category_for(parameters: int) -> str:
    """Return the size category of a model: tiny < 0.5B <= small < 2B <= medium < 8B ..."""
    for name, upper in MODEL_CATEGORIES:
        if parameters < upper:
            return name
    return "xlarge"


def recommended_quantization_bits(size_bytes: int, current_bits: int | None) -> int | None:
    """Return 4 above 30 GB of weights, 8 above 13 GB, else None (and None if already quantized)."""
    if current_bits:
        return None
    if size_bytes > 30 * GB:
        return 4
    if size_bytes > 13 * GB:
        return 8
    return None
