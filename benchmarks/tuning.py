"""Hyperparameter search vs the Balanced preset, same wall-clock budget, tiny model.

``cortex_rpc.training.tuning.tune_hyperparameters`` searches for ``--budget`` seconds; then the
Balanced config trains alone for the same budget (its iterations set from the search's own
timing fit: budget minus worker start-up, divided by seconds per iteration), on the same
prepared data. Both are scored by the validation loss the worker measures at its last step.
Run from the repository root::

    .venv/bin/python benchmarks/tuning.py --budget 60
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from importlib import resources  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["CORTEX_HOME"] = str(root / "home")
        from cortex_rpc.config.proposal import propose_for_model
        from cortex_rpc.datasets import prepare_dataset
        from cortex_rpc.models.tiny import generate_tiny_model
        from cortex_rpc.training.tuning import TrialRunner, tune_hyperparameters

        model = generate_tiny_model(root / "tiny")
        data = str(resources.files("cortex_rpc.data").joinpath("sample_dataset.jsonl"))

        def show(payload: dict) -> None:
            row = payload.get("trial")
            if row:
                print(f"  trial {row['index']:2d} round {row['round']} lr "
                      f"{row['config']['learningRate']:<8g} rank {row['config']['loraRank']:<3d}"
                      f"{row['iterations']:5d} it {row['seconds']:6.1f} s  val {row['valLoss']}")

        print(f"search: budget {args.budget:.0f} s, {args.trials} candidates")
        result = tune_hyperparameters(str(model), data, args.budget, trials=args.trials,
                                      seed=args.seed, on_progress=show)
        calib = result["timing"]
        balanced = propose_for_model(str(model), dataset=data, preset="balanced").config
        prepared = prepare_dataset(data, root / "data", seed=balanced.seed)
        iterations = max(1, int((args.budget - calib["startupSeconds"])
                                / calib["secondsPerIteration"]))
        runner = TrialRunner(root / "balanced", model, root / "data")
        batch = min(balanced.batch_size, prepared.train_examples)
        tic = time.monotonic()
        alone = runner.run(replace(balanced, iterations=iterations, batch_size=batch))
        seconds = time.monotonic() - tic
        if alone["valLoss"] is None:
            print(json.dumps(alone))
            return 1
        best = result["best"]
        print(json.dumps({
            "budgetSeconds": args.budget,
            "search": {"usedSeconds": result["usedSeconds"], "trials": len(result["trials"]),
                       "bestConfig": {k: result["bestConfig"][k] for k in
                                      ("learningRate", "loraRank", "loraAlpha", "iterations")},
                       "bestValLoss": best["valLoss"]},
            "balanced": {"learningRate": balanced.learning_rate, "loraRank": balanced.lora_rank,
                         "iterations": iterations, "seconds": round(seconds, 1),
                         "valLoss": alone["valLoss"]},
            "ratio": round(best["valLoss"] / alone["valLoss"], 3),
        }, indent=2))
        print(f"validation loss: search {best['valLoss']:.4f} vs Balanced {alone['valLoss']:.4f}"
              f" ({100 * (1 - best['valLoss'] / alone['valLoss']):.1f}% lower)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
