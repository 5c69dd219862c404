"""DPO throughput, memory and held-out reward accuracy: cortex-rpc's worker vs mlx-lm-lora.

One run, the same generated Llama, the same generated preference pairs (the chosen answer
starts with the word the prompt asks for, the rejected one with another word), the same LoRA
settings (rank 8, scale 2, mlx_lm's default keys, every layer), batch size, learning rate,
beta and step count. Each trainer runs in its own process:

(a) cortex-rpc: ``python -m cortex_rpc.training.worker JOB_DIR`` on a job folder, method dpo;
    its reference model is the base with the adapters switched off.
(b) mlx-lm-lora's DPO trainer (``mlx_lm_lora.train``, train mode dpo), which loads a second
    copy of the model as its reference. It is installed in its own virtual environment,
    ``benchmarks/.venv-mlx-lm-lora`` (created on the first run), never in the project's.
(c) where the worker binds MLX to a fast BLAS (Linux CPUs), (b) again with the same BLAS
    preloaded, so that the remaining difference is the trainers' own.

Throughput is the median steps per second of the report windows after the first (the first
pays for compilation), converted to tokens per second with the same scored-token count per step for
both, so the figures measure the same work. Memory is MLX's peak (each trainer's own
report of ``mx.get_peak_memory``), the process's peak RSS, and that peak less the RSS once
the trainer's modules are imported: the project's environment has torch (for export), which
transformers imports with mlx_lm, about 180 MB that mlx-lm-lora's environment does not have.
Held-out reward accuracy is measured the same way for every adapter, by ``cortex/evaluate``'s
worker: reward = beta x (log-prob under the fine-tune - log-prob under the base), accuracy =
the fraction of held-out pairs whose chosen reward is the larger. Run from the repository
root::

    .venv/bin/python benchmarks/preference.py --size tiny --iters 150   # learns the rule
    .venv/bin/python benchmarks/preference.py            # small model, 60 steps (throughput)
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds inspect.py, which would shadow the standard library's inspect module.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.train import SIZES, params_of  # noqa: E402

VENV = ROOT / "benchmarks" / ".venv-mlx-lm-lora"
WORDS = ["apple", "river", "stone", "cloud", "green", "house", "light", "music", "paper", "table"]
RANK, SCALE, BETA = 8, 2.0, 0.1

# Both runners report their process's peak RSS with this.
PEAK_RSS = textwrap.dedent(
    """
    import resource
    def peak_rss():
        # VmHWM: this process image's peak (ru_maxrss would keep the parent's across exec).
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes
    """
)
# mlx-lm-lora's CLI entry point with a callback slipped into its run(): its reports come from
# its own trainer. Its train_dpo indexes mx.device_info()["max_recommended_working_set_size"],
# which MLX reports only on Metal; on a CPU it is given as 0 and the wired limit left alone.
MLX_LM_LORA_RUNNER = PEAK_RSS + textwrap.dedent(
    """
    import ctypes, json, os, resource, sys
    if sys.argv[3]:  # the fast BLAS cortex-rpc's worker binds MLX to, loaded the same way
        ctypes.CDLL(sys.argv[3], mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    import mlx.core as mx
    info = mx.device_info
    if "max_recommended_working_set_size" not in info():
        mx.device_info = lambda: {**info(), "max_recommended_working_set_size": 0}
        mx.set_wired_limit = lambda limit: 0
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm_lora import train
    imported = peak_rss()
    reports = []
    class Keep(TrainingCallback):
        def on_train_loss_report(self, info):
            reports.append({k: v for k, v in info.items() if isinstance(v, (int, float))})
    run = train.run
    train.run = lambda args, training_callback=None: run(args, Keep())
    train.main(json.loads(sys.argv[2]))
    rss = peak_rss()
    json.dump({"reports": reports, "maxRss": rss, "importRss": imported}, open(sys.argv[1], "w"))
    """
)
OURS_RUNNER = PEAK_RSS + textwrap.dedent(
    """
    import resource, sys
    from cortex_rpc.accel import preload_fast_blas
    preload_fast_blas()  # first, as worker.main does: MLX binds to the BLAS loaded before it
    import mlx_lm.utils  # what the worker imports; with it transformers (and torch)
    from cortex_rpc.training import worker
    imported = peak_rss()
    code = worker.main([sys.argv[1]])
    rss = peak_rss()
    open(sys.argv[2], "w").write(f"{rss} {imported}")  # the worker's fd 1 is its log by now
    sys.exit(code)
    """
)


def ensure_venv() -> Path:
    """Return the python of mlx-lm-lora's own environment, creating it on the first run."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import mlx_lm_lora"], capture_output=True)
    if probe.returncode != 0:
        backend = "mlx[cpu]" if sys.platform.startswith("linux") else "mlx"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", backend, "mlx-lm-lora"], check=True
        )
    return python


def write_pairs(root: Path, train: int, valid: int, seed: int = 0) -> tuple[Path, Path]:
    """Write the same pairs in cortex-rpc's prepared form and in mlx-lm-lora's; return both dirs."""
    sample = ROOT / "cortex_rpc" / "data" / "sample_dataset.jsonl"
    records = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    ours, theirs = root / "ours", root / "mlx-lm-lora"
    for directory in (ours, theirs):
        directory.mkdir(parents=True)
    for name, count in (("train", train), ("valid", valid)):
        mine, other_format = [], []
        for _ in range(count):
            record = rng.choice(records)
            word, other = rng.sample(WORDS, 2)
            prompt = f"{record['prompt']} Start your answer with the word {word}."
            chosen, rejected = f"{word}. {record['response']}", f"{other}. {record['response']}"
            mine.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
            other_format.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        (ours / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mine))
        (theirs / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other_format))
    (theirs / "test.jsonl").write_text((theirs / "valid.jsonl").read_text())
    return ours, theirs


def steps_per_second(reports: list[dict]) -> float:
    """Return the median steps/s of the report windows after the first (compilation).

    The median, not the mean: on a shared machine a window that another process slowed
    down should not decide the figure.
    """
    kept = reports[1:] or reports
    rates = sorted(r["iterations_per_second"] for r in kept)
    middle = len(rates) // 2
    return rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2


def run_ours(model: Path, data: Path, work: Path, args: argparse.Namespace) -> dict:
    """(a): the cortex-rpc worker on a job folder."""
    from cortex_rpc.config.training_config import TrainingConfig
    from cortex_rpc.paths import write_atomic
    from cortex_rpc.training.contract import JobSpec, WorkerOptions

    job = work / "job"
    job.mkdir()
    config = TrainingConfig(
        iterations=args.iters, batch_size=args.batch, learning_rate=args.lr, lora_rank=RANK,
        lora_alpha=RANK * SCALE, num_layers=SIZES[args.size]["num_hidden_layers"],
        max_seq_length=args.seq, method="dpo", beta=BETA,
    )  # fmt: skip
    spec = JobSpec(
        job_id="job", model=str(model), data_dir=str(data), config=config, output_name=None,
        output_dir=str(work / "models"), adapter_dir=str(work / "ours-adapter"),
        options=WorkerOptions(
            steps_per_report=args.report, steps_per_eval=10**6, steps_per_checkpoint=10**6
        ),
    )  # fmt: skip
    write_atomic(job / JobSpec.FILE, spec.to_wire())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", OURS_RUNNER, str(job), str(work / "rss")],
        env=env,
        capture_output=True,
        text=True,
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        raise SystemExit(f"cortex-rpc worker failed: {events[-2:]}\n{done.stderr[-2000:]}")
    progress = [e for e in events if e["event"] == "progress"]
    reports = [
        {
            "iteration": e["iteration"],
            "iterations_per_second": e["tokensPerSecond"] / max(tokens_of(e, progress), 1e-9),
        }
        for e in progress
    ]
    return {
        "stepsPerSecond": steps_per_second(reports),
        "peakMemory": max(e["peakMemoryBytes"] for e in progress),
        "maxRss": int((work / "rss").read_text().split()[0]),
        "importRss": int((work / "rss").read_text().split()[1]),
        "adapter": work / "ours-adapter",
    }


def tokens_of(event: dict, progress: list[dict]) -> float:
    """Return the scored tokens per step of a report window (from trainedTokens)."""
    index = progress.index(event)
    before = progress[index - 1] if index else {"iteration": 0, "trainedTokens": 0}
    steps = event["iteration"] - before["iteration"]
    return (event["trainedTokens"] - before["trainedTokens"]) / max(steps, 1)


def run_theirs(
    python: Path, model: Path, data: Path, work: Path, args: argparse.Namespace, blas: str = ""
) -> dict:
    """(b): mlx-lm-lora's DPO trainer, through its CLI entry point (``blas``: a BLAS to preload)."""
    adapter = work / ("theirs-adapter-blas" if blas else "theirs-adapter")
    settings = {
        "model": str(model), "train": True, "train_mode": "dpo", "train_type": "lora",
        "data": str(data), "iters": args.iters, "batch_size": args.batch,
        "learning_rate": args.lr, "num_layers": SIZES[args.size]["num_hidden_layers"],
        "lora_parameters": {"rank": RANK, "dropout": 0.0, "scale": SCALE},
        "steps_per_report": args.report, "steps_per_eval": 10**6, "val_batches": 1,
        "max_seq_length": args.seq, "seed": 0, "save_every": 10**6,
        "adapter_path": str(adapter), "beta": BETA, "dpo_cpo_loss_type": "sigmoid",
        "optimizer": "adam", "fuse": False,
    }  # fmt: skip
    out = work / f"theirs{'-blas' if blas else ''}.json"
    done = subprocess.run(
        [str(python), "-c", MLX_LM_LORA_RUNNER, str(out), json.dumps(settings), blas],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"mlx-lm-lora failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    reports = result["reports"]
    return {
        "stepsPerSecond": steps_per_second(reports),
        "peakMemory": max(r["peak_memory"] for r in reports) * 1e9,
        "maxRss": result["maxRss"],
        "importRss": result["importRss"],
        "adapter": adapter,
    }


def scored_tokens_per_step(data: Path, model: Path, args: argparse.Namespace) -> float:
    """Return the mean scored tokens (chosen + rejected completions) of a batch of pairs."""
    from mlx_lm.utils import load

    from cortex_rpc.datasets.training_view import ViewOptions
    from cortex_rpc.training.preference import load_pair_datasets

    _, tokenizer = load(str(model))
    train, _, _ = load_pair_datasets(data, tokenizer, ViewOptions(max_seq_length=args.seq))
    per_pair = sum(v.trained_count for v in train.views) / len(train)
    return per_pair * args.batch


def reward_accuracy(model: Path, adapter: Path, data: Path, args: argparse.Namespace) -> dict:
    """Return cortex/evaluate's preference metrics of ``adapter`` on the held-out pairs."""
    from cortex_rpc.training.evaluate_worker import evaluate_spec

    return evaluate_spec(
        {"base": str(model), "adapter": str(adapter), "data": str(data / "valid.jsonl"),
         "maxSeqLength": args.seq, "method": "dpo", "beta": BETA}
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--report", type=int, default=10)
    parser.add_argument("--train-pairs", type=int, default=160)
    parser.add_argument("--valid-pairs", type=int, default=48)
    parser.add_argument(
        "--skip-stock", action="store_true", help="skip mlx-lm-lora on MLX's own BLAS (slow)"
    )
    args = parser.parse_args()

    from cortex_rpc.accel import preload_fast_blas

    preload_fast_blas()
    from cortex_rpc.models.tiny import TinyModelSpec, generate_tiny_model

    python = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="cortex-bench-pref-") as tmp:
        work = Path(tmp)
        model = generate_tiny_model(work / f"llama-{args.size}", TinyModelSpec(**SIZES[args.size]))
        ours_data, their_data = write_pairs(work / "data", args.train_pairs, args.valid_pairs)
        tokens = scored_tokens_per_step(ours_data, model, args)
        ours = run_ours(model, ours_data, work, args)
        rows = [("cortex-rpc", ours)]
        if not args.skip_stock:
            rows.append(("mlx-lm-lora", run_theirs(python, model, their_data, work, args)))
        blas = preload_fast_blas()
        if blas is not None:
            # The same trainer on the BLAS our worker uses: what is left is the trainers' own.
            theirs_blas = run_theirs(python, model, their_data, work, args, blas.path)
            rows.append((f"mlx-lm-lora+{blas.name}", theirs_blas))
        for _, result in rows:
            result["eval"] = reward_accuracy(model, result["adapter"], ours_data, args)
        described = params_of_safe(model)
        sizes = [(result["adapter"] / "adapters.safetensors").stat().st_size for _, result in rows]

    print(
        f"model {args.size} ({described}), {args.iters} steps of {args.batch} pairs, "
        f"LoRA rank {RANK} scale {SCALE}, beta {BETA}, {tokens:.0f} scored tokens per step"
    )
    print("adapter bytes:", ", ".join(f"{n} {b}" for (n, _), b in zip(rows, sizes, strict=True)))
    print(
        f"{'':20} {'tokens/s':>10} {'MLX peak MB':>12} {'max RSS MB':>11} "
        f"{'RSS-imports':>12} {'reward acc':>11}"
    )
    for name, result in rows:
        result["trainingRss"] = result["maxRss"] - result["importRss"]
        print(
            f"{name:20} {result['stepsPerSecond'] * tokens:10.1f} "
            f"{result['peakMemory'] / 2**20:12.1f} {result['maxRss'] / 2**20:11.1f} "
            f"{result['trainingRss'] / 2**20:12.1f} {result['eval']['rewardAccuracy']:11.3f}"
        )
    for name, other in rows[1:]:
        print(
            f"ratios cortex-rpc / {name}: tokens/s "
            f"{ours['stepsPerSecond'] / other['stepsPerSecond']:.2f}x, MLX peak "
            f"{ours['peakMemory'] / other['peakMemory']:.2f}x, max RSS "
            f"{ours['maxRss'] / other['maxRss']:.2f}x, RSS above imports "
            f"{ours['trainingRss'] / max(other['trainingRss'], 1):.2f}x"
        )
    print(
        "held-out margin (base as reference): "
        + ", ".join(f"{name} {result['eval']['margin']:.3f}" for name, result in rows)
        + f"; base preference accuracy {ours['eval']['basePreferenceAccuracy']:.3f}"
    )
    return 0


def params_of_safe(model: Path) -> str:
    """Return the model's parameter count as text (the folder is gone after the run)."""
    try:
        return f"{params_of(model) / 1e6:.1f}M parameters"
    except OSError:
        return "generated"


if __name__ == "__main__":
    raise SystemExit(main())
