"""What export verification compares: the prompts, the tolerances, and the verdict per part.

The exported artifact and MLX base + adapter run the same token ids (the chat template
rendered by the source tokenizer). Each part is judged on its own so a failure says what
differs: ``template`` (the artifact's embedded chat template), ``stopTokens`` (its eos ids),
``tokenizer`` (how it tokenizes the rendered prompt), ``weights`` (greedy tokens and
logits, teacher-forced on MLX's tokens) and ``adapter``: an export whose weights differ and
that is nearer the bare base than base + adapter lost the fine-tune (a fuse that quietly
behaves like the base). numpy only, no mlx.
"""

from __future__ import annotations

from typing import Any

VERIFY_PROMPTS: tuple[list[dict[str, str]], ...] = (
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "Count from one to five."},
    ],
)

# Per quantization: the least fraction of greedy positions that must agree, and the largest
# logit difference allowed, relative to the spread of MLX's logits at that position (None:
# reported, not judged). Float exports must pick every token MLX picks; a quantized GGUF may
# flip near-ties (a model with random weights has many), so it is judged by how far its
# logits move instead.
TOLERANCES: dict[str, tuple[float, float | None]] = {
    "float": (1.0, None),
    "f32": (1.0, None),
    "f16": (1.0, None),
    "q8_0": (0.0, 0.05),
    "q4_k_m": (0.0, 0.25),
    # mlx and lmstudio exports of a quantized (or QLoRA) fine-tune, re-quantized by the fuse.
    "mlx-q8": (0.0, 0.05),
    "mlx-q4": (0.0, 0.25),
}
# Float exports: absolute logit tolerance (float32 weights; 16-bit or quantized bases looser).
FLOAT_LOGIT_TOLERANCE = {"float": 1e-3, "f32": 1e-2}
FLOAT16_LOGIT_TOLERANCE = 0.25


def compare_runs(
    reference: list[dict[str, Any]],
    exported: dict[str, Any],
    *,
    template: str | None,
    eos_ids: list[int],
    tool: str,
    quantization: str,
    float16: bool = False,
    base: list[Any] | None = None,
) -> dict[str, Any]:
    """Return the verification report: agreement, largest logit difference, parts checked.

    ``base``: the bare base's logits at the same positions (None: a model without adapters);
    ``adapterEffect`` is how far the adapter moves them.
    """
    import numpy as np

    min_agreement, relative_tolerance = TOLERANCES.get(quantization, (0.0, 0.25))
    logit_tolerance = FLOAT_LOGIT_TOLERANCE.get(quantization)
    if logit_tolerance is not None and float16:
        logit_tolerance = FLOAT16_LOGIT_TOLERANCE
    prompts = []
    agreeing = total = 0
    max_diff = max_relative = 0.0
    adapter_effect = to_base = 0.0
    tokenizer_ok = True
    for index, (ref, run) in enumerate(zip(reference, exported["runs"], strict=True)):
        if base is not None:
            bare = np.asarray(base[index])
            adapter_effect = max(adapter_effect, float(np.max(np.abs(ref["logits"] - bare))))
            to_base = max(to_base, float(np.max(np.abs(np.asarray(run["logits"]) - bare))))
        same = sum(a == b for a, b in zip(ref["tokens"], run["tokens"], strict=False))
        agreeing += same
        total += len(ref["tokens"])
        delta = np.abs(np.asarray(run["logits"]) - ref["logits"])
        spread = np.ptp(ref["logits"], axis=-1, keepdims=True)
        diff = float(np.max(delta))
        max_diff = max(max_diff, diff)
        max_relative = max(max_relative, float(np.max(delta / np.maximum(spread, 1e-9))))
        tokenized_same = list(run["tokenized"]) == list(ref["ids"])
        tokenizer_ok = tokenizer_ok and tokenized_same
        prompts.append(
            {
                "mlxTokens": ref["tokens"],
                "exportedTokens": run["tokens"],
                "agreement": same / max(1, len(ref["tokens"])),
                "maxLogitDiff": diff,
                "tokenizerMatches": tokenized_same,
            }
        )
    agreement = agreeing / max(1, total)
    exported_eos = [int(t) for t in exported.get("eosTokenIds") or []]
    weights_ok = (
        agreement >= min_agreement
        and (logit_tolerance is None or max_diff <= logit_tolerance)
        and (relative_tolerance is None or max_relative <= relative_tolerance)
    )
    parts = {
        "template": (exported.get("chatTemplate") or "").strip() == (template or "").strip(),
        "stopTokens": bool(exported_eos) and set(exported_eos) <= set(eos_ids),
        "tokenizer": tokenizer_ok,
        "weights": weights_ok,
        # Judged only when the weights differ: then nearer the base means the adapter is lost.
        "adapter": weights_ok or base is None or to_base >= max_diff,
    }
    failed = [name for name, ok in parts.items() if not ok]
    return {
        "status": "failed" if failed else "passed",
        "tool": tool,
        "prompts": prompts,
        "tokenAgreement": agreement,
        "maxLogitDiff": max_diff,
        "relativeLogitDiff": max_relative,
        "minAgreement": min_agreement,
        "logitTolerance": logit_tolerance,
        "relativeLogitTolerance": relative_tolerance,
        "parts": parts,
        "failed": failed,
        "stopTokenIds": exported_eos,
        "expectedStopTokenIds": sorted(eos_ids),
        "adapterEffect": adapter_effect if base is not None else None,
        "exportedToBaseDiff": to_base if base is not None else None,
    }


def failure_message(verification: dict[str, Any]) -> str:
    """Return one sentence per failed part, in the user's terms."""
    messages = {
        "template": "the exported chat template differs from the model's",
        "stopTokens": (
            f"the stop tokens differ (exported {verification['stopTokenIds']}, "
            f"expected a subset of {verification['expectedStopTokenIds']})"
        ),
        "tokenizer": "the exported tokenizer splits the prompts differently",
        "adapter": (
            "the export behaves like the base model, not the fine-tune: its logits are "
            f"{verification.get('exportedToBaseDiff') or 0:.3g} from the bare base's and "
            f"{verification['maxLogitDiff']:.3g} from base + adapter's (the adapter moves them "
            f"by {verification.get('adapterEffect') or 0:.3g}); the adapter was lost"
        ),
        "weights": (
            f"the weights differ: {verification['tokenAgreement']:.0%} of greedy tokens agree "
            f"(needs {verification['minAgreement']:.0%}), largest logit difference "
            f"{verification['maxLogitDiff']:.3g}"
            + (
                f" (tolerance {verification['logitTolerance']:g})"
                if verification["logitTolerance"] is not None
                else ""
            )
            + (
                f", {verification['relativeLogitDiff']:.1%} of the logits' spread (tolerance "
                f"{verification['relativeLogitTolerance']:.0%})"
                if verification["relativeLogitTolerance"] is not None
                else ""
            )
        ),
    }
    return "; ".join(messages[part] for part in verification["failed"])
