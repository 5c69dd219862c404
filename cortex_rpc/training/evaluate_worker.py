"""The evaluation worker: ``python -m cortex_rpc.training.evaluate_worker SPEC.json``.

Loads the base once, scores it, applies the adapter in place and scores again, then reports
a ``result`` event ``{examples, baseLoss, loss}`` (or an ``error``) on its event channel. The loss is
the training worker's: mean cross-entropy per trained token of the records' training views (the
answers that ``trainOn`` selects for chat records, the whole text for text records). Batch size
1, so no record is dropped and none is padded.
"""

from __future__ import annotations

import sys
from pathlib import Path

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


def main() -> int:
    """``python -m cortex_rpc.training.evaluate_worker SPEC.json``: one result event."""
    return run_one_shot(
        "python -m cortex_rpc.training.evaluate_worker SPEC.json",
        lambda spec, events: evaluate_spec(spec),
        "evaluation-failed",
    )


if __name__ == "__main__":
    sys.exit(main())
