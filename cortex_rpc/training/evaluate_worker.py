"""The evaluation worker: ``python -m cortex_rpc.training.evaluate_worker SPEC.json``.

Loads the base once, scores it, applies the adapter in place and scores again, then reports
a ``result`` event ``{examples, baseLoss, loss}`` (or an ``error``) on its event channel. The loss is
mlx_lm's ``evaluate`` with ``default_loss``: mean cross-entropy per target token, on the
answers only for chat records (as training masks prompts), on the whole text for text records.
Batch size 1, so no record is dropped and none is padded.
"""

from __future__ import annotations

import json
import sys
import traceback
import types
from pathlib import Path

from ..accel import preload_fast_blas
from ..errors import CortexError
from ..workers import open_event_writer
from .contract import Blas, Error, Result


def _dataset(path: Path, tokenizer) -> tuple:
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset

    records = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    text = "text" in records[0] and "messages" not in records[0]
    options = types.SimpleNamespace(mask_prompt=not text)
    return CacheDataset(create_dataset(records, tokenizer, options)), len(records)


def evaluate_spec(spec: dict) -> dict:
    """Return ``{examples, baseLoss, loss}`` for the spec's base, adapter and data file."""
    from mlx_lm.tuner.trainer import evaluate
    from mlx_lm.tuner.utils import load_adapters

    from ..models.fine_tuned import load_with_adapter

    model, tokenizer = load_with_adapter(Path(spec["base"]), None, spec.get("quantizationBits"))
    dataset, examples = _dataset(Path(spec["data"]), tokenizer)
    batch = max(1, min(int(spec.get("batchSize", 1)), examples))

    def score() -> float:
        return float(
            evaluate(
                model=model,
                dataset=dataset,
                batch_size=batch,
                num_batches=-1,
                max_seq_length=int(spec.get("maxSeqLength", 2048)),
            )
        )

    base_loss = score()
    load_adapters(model, spec["adapter"])
    model.eval()
    return {"examples": examples, "baseLoss": base_loss, "loss": score()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m cortex_rpc.training.evaluate_worker SPEC.json", file=sys.stderr)
        return 2
    events = open_event_writer()
    blas = preload_fast_blas()
    events.emit(Blas(name=blas.name if blas else None, path=blas.path if blas else None))
    try:
        result = evaluate_spec(json.loads(Path(argv[0]).read_text()))
    except CortexError as exc:
        events.emit(Error(code=exc.code, message=exc.message))
        return 1
    except Exception as exc:  # noqa: BLE001 - reported to the caller as an error reply
        traceback.print_exc()
        events.emit(Error(code="evaluation-failed", message=f"{type(exc).__name__}: {exc}"))
        return 1
    events.emit(Result(value=result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
