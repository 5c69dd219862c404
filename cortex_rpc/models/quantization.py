"""QLoRA's in-memory quantization of the base, defined once.

The worker quantizes the base before adding adapters; ``fine_tuned.load_with_adapter`` must
quantize it the same way before applying a QLoRA adapter, or the adapter meets other weights.
No mlx import at module level: ``fine_tuned`` imports this module, and the server imports
``fine_tuned``.
"""

from __future__ import annotations

from typing import Any

QUANT_GROUP_SIZE = 64


def quantizable(path: str, module: Any) -> bool:
    """``nn.quantize``'s class_predicate: quantizable layers whose input size fits the groups.

    Layers whose last weight dimension is not a multiple of ``QUANT_GROUP_SIZE`` stay in full
    precision.
    """
    return hasattr(module, "to_quantized") and module.weight.shape[-1] % QUANT_GROUP_SIZE == 0


def quantize_base(model: Any, bits: int) -> None:
    """Quantize ``model`` in place, in memory only, with ``bits`` bits per weight."""
    import mlx.nn as nn

    nn.quantize(model, QUANT_GROUP_SIZE, bits, class_predicate=quantizable)
