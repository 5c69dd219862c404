"""The evaluation worker: ``python -m cortex_rpc.training.evaluate_worker SPEC.json``.

Loads the base once, scores it, applies the adapter in place and scores again, then reports
a ``result`` event ``{examples, baseLoss, loss}`` (or an ``error``) on its event channel. The loss is
the training worker's: mean cross-entropy per trained token of the records' training views (the
answers that ``trainOn`` selects for chat records, the whole text for text records). Batch size
1, so no record is dropped and none is padded. Preference pairs (prompt/chosen/rejected
records) are scored by ``evaluate_pairs``: the fine-tune's rewards with its base as the
reference model, see ``preference.compare_to_base``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..datasets.training_view import TemplateRenderer, ViewOptions
from ..errors import CortexError
from ..workers import run_one_shot


def evaluate_spec(spec: dict) -> dict:
    """Return ``{examples, baseLoss, loss}`` for the spec's base, adapter and data file."""
    from mlx_lm.tuner.utils import load_adapters

    from ..models.fine_tuned import load_with_adapter
    from .worker import evaluate_views, load_split

    model, tokenizer = load_with_adapter(Path(spec["base"]), None, spec.get("quantizationBits"))
    max_seq_length = int(spec.get("maxSeqLength", 2048))
    options = ViewOptions(
        train_on=spec.get("trainOn") or "all",
        train_template_text=bool(spec.get("trainTemplateText", False)),
        max_seq_length=max_seq_length,
    )
    if _holds_pairs(Path(spec["data"])):
        return evaluate_pairs(spec, model, tokenizer, options)
    dataset = load_split(Path(spec["data"]), TemplateRenderer(tokenizer), options)
    examples = len(dataset)
    if not examples:
        raise CortexError("dataset-empty", f"No examples to evaluate in {spec['data']}")
    batch = max(1, min(int(spec.get("batchSize", 1)), examples))

    def score() -> float:
        return float(evaluate_views(model, dataset, batch, max_seq_length))

    base_loss = score()
    load_adapters(model, spec["adapter"])
    model.eval()
    return {"examples": examples, "baseLoss": base_loss, "loss": score()}


def _holds_pairs(path: Path) -> bool:
    """True when the records to score are preference pairs (their first record says)."""
    from .preference import is_preference_record

    with open(path, encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        return is_preference_record(json.loads(first))
    except ValueError:
        return False


def evaluate_pairs(spec: dict, model: Any, tokenizer: Any, options: ViewOptions) -> dict:
    """Return ``{examples, baseLoss, loss, rewardAccuracy, margin, ...}`` on preference pairs.

    The losses are the chosen answers' cross-entropy per token (base, fine-tune); the
    preference metrics are ``preference.compare_to_base``'s, the base as the reference model,
    scored as the fine-tune's method scores (sum of log-probs, or the mean for ORPO and IPO).
    """
    from mlx_lm.tuner.utils import load_adapters

    from .preference import compare_to_base, load_pair_split, score_pairs

    dataset, dropped = load_pair_split(Path(spec["data"]), TemplateRenderer(tokenizer), options)
    if not len(dataset):
        raise CortexError("dataset-empty", f"No preference pairs to evaluate in {spec['data']}")
    method = spec.get("method") or "dpo"
    normalized = method == "orpo" or spec.get("dpoLoss") == "ipo"
    max_seq_length = options.max_seq_length or 2048
    base = score_pairs(model, dataset, max_seq_length, normalized)
    load_adapters(model, spec["adapter"])
    tuned = score_pairs(model, dataset, max_seq_length, normalized)
    beta = float(spec.get("beta") or 0.1)
    return {
        "examples": len(dataset),
        "baseLoss": base.chosen_loss,
        "loss": tuned.chosen_loss,
        "pairsLeftOut": dropped,
        "beta": beta,
        **compare_to_base(base, tuned, beta),
    }


def main() -> int:
    """``python -m cortex_rpc.training.evaluate_worker SPEC.json``: one result event."""
    return run_one_shot(
        "python -m cortex_rpc.training.evaluate_worker SPEC.json",
        lambda spec, events: evaluate_spec(spec),
        "evaluation-failed",
    )


if __name__ == "__main__":
    sys.exit(main())
