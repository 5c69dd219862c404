"""Estimate vs actual: wall time and peak memory of real training runs, uncalibrated and calibrated.

Four kinds of run, each trained for real through a ``cortex-rpc`` server over stdio
(``cortex/startTraining`` on the bundled sample, as the demo does): the demo's tiny model
(1.4M parameters, the demo's overrides), the 3.5M and 42M Llamas of ``benchmarks/train.py``
(sizes ``small`` and ``34m``), and the 42M one quantized to 4 bits in memory (QLoRA).

Pass 1 runs them in a fresh CORTEX_HOME (no calibration: the first estimate of each kind is
the prior model's, or comes from the kinds run before it); every completed run is recorded in
that home's calibration. Pass 2 runs each again, so each estimate is calibrated from one
earlier run of its kind. Actual wall time is what a user waits: from the startTraining request
to the ``done`` notification. Each run also prints the estimate after its first steps (10 %
of the run, past the compiling first report): the wall time so far plus the ETA the worker
reports from the steps it measured, the estimate a user sees once training runs. Memory
compares the estimate with ``mx.get_peak_memory()`` as
the worker measured it. Run from the repository root::

    .venv/bin/python benchmarks/estimates.py              # both passes, ~4 minutes on 2 cores
    .venv/bin/python benchmarks/estimates.py --no-record  # keep the machine's calibration as is

Afterwards what was measured is added to the machine's own calibration ($CORTEX_HOME, else
~/.cortex), unless ``--no-record``.
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds inspect.py, which would shadow the standard library's inspect module.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "clients" / "python"))

DEMO_SPEC = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2}
SMALL = dict(hidden_size=256, num_hidden_layers=4, intermediate_size=704,
             num_attention_heads=4, num_key_value_heads=4, vocab_size=1024)  # fmt: skip
LARGE = dict(hidden_size=512, num_hidden_layers=8, intermediate_size=1408,
             num_attention_heads=8, num_key_value_heads=8, vocab_size=32000)  # fmt: skip
DEMO_OVERRIDES = {"epochs": 70, "batchSize": 4, "learningRate": 1e-3, "loraRank": 16,
                  "loraAlpha": 32}  # fmt: skip
# name: (model spec, preset, config overrides)
RUNS = {
    "tiny demo (1.4M)": (DEMO_SPEC, "quick", DEMO_OVERRIDES),
    "3.5M": (SMALL, "balanced", {"iterations": 120, "batchSize": 4}),
    "42M": (LARGE, "balanced", {"iterations": 30, "batchSize": 4}),
    "3.5M 4-bit": (SMALL, "balanced", {"iterations": 30, "batchSize": 4, "quantizationBits": 4}),
}


def make_models(root: Path) -> dict[str, Path]:
    """Generate each run's model (the 42M one once for both of its runs)."""
    from cortex_rpc.accel import preload_fast_blas

    preload_fast_blas()
    from cortex_rpc.models.tiny import TinyModelSpec, generate_tiny_model

    made: dict[str, Path] = {}
    models: dict[str, Path] = {}
    for name, (spec, _, _) in RUNS.items():
        key = json.dumps(spec, sort_keys=True)
        if key not in made:
            made[key] = generate_tiny_model(root / f"model-{len(made)}", TinyModelSpec(**spec))
        models[name] = made[key]
    return models


async def train(client, model: Path, preset: str, config: dict, name: str) -> dict:
    """Return the estimate, the wall time and the job of one real run."""
    sample = ROOT / "cortex_rpc" / "data" / "sample_dataset.jsonl"
    queue = client.subscribe("cortex/trainingProgress")
    tic = time.perf_counter()
    job = await client.request("cortex/startTraining", {
        "model": str(model), "dataset": str(sample), "outputName": name,
        "preset": preset, "config": config,
    })  # fmt: skip
    notes, early = [], None
    async for note in client.training_progress(job["jobId"], queue):
        notes.append(note)
        reports = [n for n in notes if n.get("event") == "progress"]
        # After the first iterations (10 % of the run, and past the first report, which
        # compiles): the wall time so far plus the ETA from the steps measured so far.
        if early is None and len(reports) >= 2 and note.get("event") == "progress":
            total = note.get("totalIterations") or 1
            if note.get("iteration", 0) >= 0.1 * total and note.get("etaSeconds") is not None:
                early = time.perf_counter() - tic + note["etaSeconds"]
    wall = time.perf_counter() - tic
    if notes[-1]["state"] != "completed":
        raise RuntimeError(f"{name}: job {notes[-1]['state']}: {notes[-1].get('message')}")
    return {"estimate": job["estimate"], "wall": wall, "jobId": job["jobId"], "early": early}


def measured_peak(home: Path, job_id: str) -> int | None:
    """Return the peak the worker measured (``done``'s timing, kept in the job's result)."""
    result = json.loads((home / "jobs" / job_id / "result.json").read_text())
    return (result.get("timing") or {}).get("peakMemoryBytes")


async def run_pass(home: Path, models: dict[str, Path], label: str, rows: list) -> None:
    from cortex_client import CortexClient

    env = dict(os.environ, CORTEX_HOME=str(home))
    async with CortexClient(env=env) as client:
        for index, (name, (_, preset, config)) in enumerate(RUNS.items()):
            out = f"bench-{label}-{index}"
            load_before = os.getloadavg()[0]
            run = await train(client, models[name], preset, config, out)
            estimate = run["estimate"]
            peak = measured_peak(home, run["jobId"])
            row = {
                "pass": label,
                "run": name,
                "estimated": estimate["seconds"],
                "actual": run["wall"],
                "ratio": estimate["seconds"] / run["wall"],
                "early": run["early"],
                "earlyRatio": run["early"] / run["wall"] if run["early"] else None,
                "basis": estimate["basis"].split(";")[0],
                "memEstimated": estimate["peakMemoryBytes"],
                "memMeasured": peak,
                "memRatio": estimate["peakMemoryBytes"] / peak if peak else None,
            }
            rows.append(row)
            print(
                f"{label:<11} {name:<17} estimate {row['estimated']:6.1f} s  actual "
                f"{row['actual']:6.1f} s  ratio {row['ratio']:.2f}  after the first steps "
                f"{row['earlyRatio'] or 0:.2f}   memory estimate "
                f"{row['memEstimated'] / 1e6:7.1f} MB  measured {(peak or 0) / 1e6:7.1f} MB  "
                f"ratio {row['memRatio'] or 0:.2f}   load {load_before:.1f}->"
                f"{os.getloadavg()[0]:.1f}   ({row['basis']})",
                flush=True,
            )


def worst(rows: list, key: str) -> float:
    """Return the ratio furthest from 1 (by factor)."""
    values = [r[key] for r in rows if r[key]]
    return max(values, key=lambda v: max(v, 1 / v))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-record", action="store_true", help="do not add to ~/.cortex")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    from cortex_rpc.config.calibration import merge_calibration
    from cortex_rpc.paths import CortexHome

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cortex-estimates-") as tmp:
        work = Path(tmp)
        models = make_models(work / "models")
        home = work / "home"
        home.mkdir()
        asyncio.run(run_pass(home, models, "first", rows))
        asyncio.run(run_pass(home, models, "calibrated", rows))
        for label in ("first", "calibrated"):
            chosen = [r for r in rows if r["pass"] == label]
            print(
                f"worst {label}: time ratio {worst(chosen, 'ratio'):.2f} (after the first "
                f"steps {worst(chosen, 'earlyRatio'):.2f}), memory ratio "
                f"{worst(chosen, 'memRatio'):.2f}"
            )
        if not args.no_record:
            target = CortexHome.default().root
            count = merge_calibration(home, target)
            print(f"recorded {count} run(s) in {target}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
