"""Hyperparameter search vs the Balanced preset, same wall-clock budget, tiny model.

The data is generated here (seeded, offline): ``--examples`` prompt/response records of five
learnable kinds (a colour and a number for each of 40 invented names, additions of numbers up
to 20, reversing three words, upper-casing two words), 10 % of them held out for validation by
the usual preparation, so that every score is a mean over 150 records rather than a handful.

``cortex_rpc.training.tuning.tune_hyperparameters`` searches for ``--budget`` seconds; then the
Balanced config trains alone for the same wall clock (the budget, or what the search actually
used when that is more), its iterations set from the search's own timing fit (that time minus
the per-run overhead, divided by seconds per iteration; when that run ends early it continues
from its checkpoint for the time left, which trains exactly as one longer run), on the same
prepared data (the same preparation and subset the search trains and validates on). Both are scored by the validation
loss the worker measures at its last step. Run from the repository root::

    .venv/bin/python benchmarks/tuning.py --budget 90 --seed 0
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

WORDS = [
    "cat",
    "dog",
    "sun",
    "box",
    "red",
    "map",
    "cup",
    "hat",
    "pen",
    "key",
    "car",
    "bus",
    "tree",
    "fish",
    "bird",
    "book",
    "door",
    "lamp",
    "rain",
    "star",
    "milk",
    "ship",
    "road",
    "wind",
    "gold",
    "salt",
    "rock",
    "leaf",
    "moon",
    "bell",
]
COLORS = ["red", "blue", "green", "black", "white", "yellow", "orange", "purple"]
SYLLABLES = ["ba", "ko", "zi", "mu", "ta", "ri", "lo", "ne", "su", "va", "pe", "do"]


def make_dataset(path: Path, examples: int, seed: int) -> None:
    """Write ``examples`` seeded prompt/response records with structure a model can learn."""
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < 40:
        name = rng.choice(SYLLABLES) + rng.choice(SYLLABLES)
        if name not in names:
            names.append(name)
    color = {name: rng.choice(COLORS) for name in names}
    number = {name: rng.randint(10, 99) for name in names}
    records = []
    for i in range(examples):
        kind = i % 5
        if kind == 0:
            name = rng.choice(names)
            prompt, response = f"What color is the {name}?", f"The {name} is {color[name]}."
        elif kind == 1:
            name = rng.choice(names)
            prompt = f"Which number belongs to {name}?"
            response = f"{name} has the number {number[name]}."
        elif kind == 2:
            a, b = rng.randint(0, 20), rng.randint(0, 20)
            prompt, response = f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
        elif kind == 3:
            words = rng.sample(WORDS, 3)
            prompt, response = "Reverse the words: " + " ".join(words), " ".join(words[::-1])
        else:
            words = rng.sample(WORDS, 2)
            prompt, response = "Uppercase: " + " ".join(words), " ".join(words).upper()
        records.append({"prompt": prompt, "response": response})
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=90.0)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--examples", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0, help="data and candidate draw")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["CORTEX_HOME"] = str(root / "home")
        from cortex_rpc.config.proposal import propose_for_model
        from cortex_rpc.datasets import prepare_dataset
        from cortex_rpc.models.tiny import generate_tiny_model
        from cortex_rpc.training.tuning import TrialRunner, subset_data, tune_hyperparameters

        model = generate_tiny_model(root / "tiny")
        data = root / "generated.jsonl"
        make_dataset(data, args.examples, args.seed)

        def show(payload: dict) -> None:
            row = payload.get("trial")
            if row:
                start = f"from {row['startIteration']}" if row["startIteration"] else ""
                print(
                    f"  trial {row['index']:2d} round {row['round']} lr "
                    f"{row['config']['learningRate']:<8g} rank {row['config']['loraRank']:<3d}"
                    f"{row['iterations']:5d} it {start:>10} {row['seconds']:6.1f} s  "
                    f"val {row['valLoss']}",
                    flush=True,
                )
            elif payload["event"] == "plan":
                print(
                    f"  plan: {payload['candidates']} candidates, "
                    f"{payload['firstRoundIterations']} iterations in round 1",
                    flush=True,
                )

        print(
            f"search: budget {args.budget:.0f} s, {args.trials} candidates, "
            f"{args.examples} generated records, seed {args.seed}",
            flush=True,
        )
        result = tune_hyperparameters(
            str(model), str(data), args.budget, trials=args.trials, seed=args.seed, on_progress=show
        )
        timing = result["timing"]
        balanced = propose_for_model(str(model), dataset=str(data), preset="balanced").config
        # The same preparation (split seed) and subset as the search's: the same records.
        prepared = prepare_dataset(data, root / "prepared", seed=balanced.seed)
        train, valid = subset_data(root / "prepared", root / "data")
        wall = max(args.budget, result["usedSeconds"])
        iterations = max(1, int((wall - timing["startupSeconds"]) / timing["secondsPerIteration"]))
        runner = TrialRunner(root / "balanced", model, root / "data")
        batch = min(balanced.batch_size, train)
        print(
            f"Balanced alone: lr {balanced.learning_rate:g} rank {balanced.lora_rank}, "
            f"{iterations} iterations for {wall:.0f} s",
            flush=True,
        )
        tic = time.monotonic()
        config = replace(balanced, iterations=iterations, batch_size=batch)
        alone = runner.run(config)
        runs = 1
        while alone["state"] == "completed":
            # Finished early (the fit overestimated the cost): continue from its checkpoint,
            # which trains exactly as one longer run, until the wall clock is spent.
            per_iteration = alone["stepSeconds"] or timing["secondsPerIteration"]
            left = wall - (time.monotonic() - tic) - timing["startupSeconds"]
            more = int(left / per_iteration)
            if more < 20:
                break
            start = config.iterations
            config = replace(config, iterations=start + more)
            alone = runner.run(config, resume_from=alone["checkpoint"], start_iteration=start)
            runs += 1
        seconds = time.monotonic() - tic
        iterations = config.iterations
        if alone["valLoss"] is None:
            print(json.dumps(alone))
            return 1
        best = result["best"]
        trained = sum(r["iterations"] - r["startIteration"] for r in result["trials"])
        ratio = best["valLoss"] / alone["valLoss"]
        print(
            json.dumps(
                {
                    "budgetSeconds": args.budget,
                    "data": {"train": train, "valid": valid, "prepared": prepared.train_examples},
                    "search": {
                        "usedSeconds": result["usedSeconds"],
                        "runs": len(result["trials"]),
                        "iterationsTrained": trained,
                        "bestConfig": {
                            k: result["bestConfig"][k]
                            for k in ("learningRate", "loraRank", "loraAlpha", "iterations")
                        },
                        "bestValLoss": best["valLoss"],
                        "balancedInSearch": {
                            "valLoss": result["balancedValLoss"],
                            "iterations": result["balancedIterations"],
                        },
                    },
                    "balanced": {
                        "learningRate": balanced.learning_rate,
                        "loraRank": balanced.lora_rank,
                        "iterations": iterations,
                        "runs": runs,
                        "seconds": round(seconds, 1),
                        "valLoss": alone["valLoss"],
                    },
                    "ratio": round(ratio, 4),
                    "improvementPercent": round(100 * (1 - ratio), 1),
                },
                indent=2,
            )
        )
        print(
            f"validation loss: search {best['valLoss']:.4f} vs Balanced {alone['valLoss']:.4f}"
            f" (ratio {ratio:.3f}, {100 * (1 - ratio):.1f}% lower)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
