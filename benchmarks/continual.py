"""Forgetting with and without replay, continual learning on a tiny model.

v1 learns the old task (the bundled sample: programming questions). Two new versions continue
from v1 on a new task (capitals), one with ``replayFraction 0`` and one with replay. Each is
scored with ``evaluate_model`` on the old task's held-out split (the split v1 never trained
on) and on the new task's. Run from the repository root::

    .venv/bin/python benchmarks/continual.py --iterations 60
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from importlib import resources  # noqa: E402
from pathlib import Path  # noqa: E402

CAPITALS = [
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Chile", "Santiago"),
    ("Greece", "Athens"),
    ("Norway", "Oslo"),
    ("Cuba", "Havana"),
    ("Iran", "Tehran"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--replay", type=float, default=0.3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["CORTEX_HOME"] = str(root / "home")
        from cortex_rpc.models.tiny import generate_tiny_model
        from cortex_rpc.training.evaluate import evaluate_model
        from cortex_rpc.training.jobs import TrainingJobs
        from cortex_rpc.training.service import start_training

        model = str(generate_tiny_model(root / "tiny"))
        old = str(resources.files("cortex_rpc.data").joinpath("sample_dataset.jsonl"))
        new = root / "capitals.jsonl"
        new.write_text(
            "".join(
                json.dumps(
                    {
                        "prompt": f"What is the capital of {c}?",
                        "response": f"The capital of {c} is {k}.",
                    }
                )
                + "\n"
                for c, k in CAPITALS * 2
            )
        )
        jobs = TrainingJobs(root / "home")
        config = {"iterations": args.iterations, "batchSize": 4, "learningRate": 1e-3}

        def train(name: str, dataset: str, **kwargs) -> None:
            job = start_training(
                jobs,
                model=model,
                dataset=dataset,
                output_name=name,
                preset="balanced",
                config=config,
                **kwargs,
            )
            state = jobs.wait(job["jobId"], 1800)
            assert state["state"] == "completed", state

        def losses(name: str) -> dict:
            on_old = evaluate_model(name, old)
            return {
                "old": round(on_old["loss"], 4),
                "new": round(evaluate_model(name, new)["loss"], 4),
                "baseOld": round(on_old["baseLoss"], 4),
            }

        train("v1", old)
        before = losses("v1")
        train("v2-no-replay", str(new), continue_from="v1", replay_fraction=0.0)
        train("v2-replay", str(new), continue_from="v1", replay_fraction=args.replay)
        plain, replayed = losses("v2-no-replay"), losses("v2-replay")
        report = {
            "iterationsPerVersion": args.iterations,
            "replayFraction": args.replay,
            "baseModelOldLoss": before["baseOld"],
            "v1": {"oldLoss": before["old"], "newLoss": before["new"]},
            "v2NoReplay": {
                "oldLoss": plain["old"],
                "newLoss": plain["new"],
                "forgetting": round(plain["old"] - before["old"], 4),
            },
            "v2Replay": {
                "oldLoss": replayed["old"],
                "newLoss": replayed["new"],
                "forgetting": round(replayed["old"] - before["old"], 4),
            },
        }
        print(json.dumps(report, indent=2))
        print(
            f"old-task validation loss: v1 {before['old']:.3f} -> without replay "
            f"{plain['old']:.3f}, with replay {replayed['old']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
