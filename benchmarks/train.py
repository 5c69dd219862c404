"""LoRA training throughput: mlx_lm (stock BLAS, fast BLAS), cortex-rpc's worker, torch + PEFT.

The same generated Llama, data (the bundled sample as chat records), seed and settings go
through each runner; each reports tokens per second over the iterations after the first
(the first pays for compilation). Run from the repository root::

    .venv/bin/python benchmarks/train.py                  # small model, ~2 minutes
    .venv/bin/python benchmarks/train.py --size 34m --iters 20 --skip-stock   # DESIGN.md's figure
    .venv/bin/python benchmarks/train.py --torch-python /path/to/venv/bin/python

(c) is cortex-rpc end to end: a ``cortex-rpc`` server over stdio, ``cortex/startTraining`` on
the sample file (prepared by the server into the same split the other runners use), tokens/s
read from the ``cortex/trainingProgress`` notifications. Its run is added to the machine's
calibration of estimates ($CORTEX_HOME, else ~/.cortex) unless ``--no-record``.
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds inspect.py, which would shadow the standard library's inspect module.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {
    # name: TinyModelSpec fields
    "tiny": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=1024),
    "small": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=704,
                  num_attention_heads=4, num_key_value_heads=4, vocab_size=1024),
    "34m": dict(hidden_size=512, num_hidden_layers=8, intermediate_size=1408,
                num_attention_heads=8, num_key_value_heads=8, vocab_size=32000),
}  # fmt: skip
LORA_KEYS = [
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
]  # fmt: skip

# Runs mlx_lm's real CLI entry point (mlx_lm.lora.main) with a callback slipped into its
# train() call, so tokens/s come from mlx_lm's own reports rather than scraped output.
MLX_LM_RUNNER = textwrap.dedent(
    """
    import json, sys
    if sys.argv[1] == "blas":
        from cortex_rpc.accel import preload_fast_blas
        assert preload_fast_blas() is not None, "no fast BLAS found"
    out = sys.argv[2]
    from mlx_lm import lora
    from mlx_lm.tuner.trainer import TrainingCallback
    reports = []
    class Keep(TrainingCallback):
        def on_train_loss_report(self, info):
            reports.append({k: float(v) for k, v in info.items()})
    original = lora.train
    def train(**kwargs):
        kwargs["training_callback"] = Keep()
        return original(**kwargs)
    lora.train = train
    sys.argv = ["mlx_lm.lora"] + sys.argv[3:]
    lora.main()
    json.dump(reports, open(out, "w"))
    """
)


def make_fixture(root: Path, size: str) -> tuple[Path, Path, Path]:
    """Generate the model, and prepare the sample exactly as cortex-rpc does for a job.

    Every runner trains on the same split: the one ``prepare_dataset`` makes (seed 0), which
    is also what (c) gets when the server prepares the same file.
    """
    from cortex_rpc.accel import preload_fast_blas

    preload_fast_blas()
    from cortex_rpc.datasets import prepare_dataset
    from cortex_rpc.models.tiny import TinyModelSpec, generate_tiny_model

    model = generate_tiny_model(root / f"llama-{size}", TinyModelSpec(**SIZES[size]))
    sample = ROOT / "cortex_rpc" / "data" / "sample_dataset.jsonl"
    data = root / "data"
    prepare_dataset(sample, data, seed=0)
    # mlx_lm refuses a validation set smaller than the batch even when it never evaluates
    # (steps-per-eval is out of reach here): pad valid.jsonl; train.jsonl stays identical.
    valid = (data / "valid.jsonl").read_text().splitlines()
    train = (data / "train.jsonl").read_text().splitlines()
    padded = (valid + train)[: max(4, len(valid))]
    (data / "valid.jsonl").write_text("".join(line + "\n" for line in padded))
    return model, data, sample


def params_of(model: Path) -> int:
    """Return the parameter count of a generated model from its safetensors header."""
    with open(model / "model.safetensors", "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def summarise(windows: list[tuple[float, float]]) -> float:
    """Return tokens/s over (tokens, seconds) windows, dropping the first (compilation)."""
    kept = windows[1:] or windows
    tokens = sum(t for t, _ in kept)
    seconds = sum(s for _, s in kept)
    return tokens / seconds if seconds else 0.0


def run_mlx_lm(model: Path, data: Path, args: argparse.Namespace, blas: bool, work: Path) -> float:
    """(a)/(b): mlx_lm's LoRA CLI, with or without the fast BLAS preloaded."""
    config = work / f"lora-{blas}.yaml"
    lora_parameters = {"rank": 8, "scale": 2.0, "dropout": 0.0, "keys": LORA_KEYS}
    config.write_text(json.dumps({"lora_parameters": lora_parameters}))  # JSON is YAML
    out = work / f"mlx_lm-{blas}.json"
    argv = [
        "--model", str(model), "--train", "--data", str(data), "--iters", str(args.iters),
        "--batch-size", "4", "--num-layers", "-1", "--learning-rate", "1e-4",
        "--steps-per-report", "1", "--steps-per-eval", "100000", "--val-batches", "1",
        "--max-seq-length", str(args.seq), "--seed", "0", "--save-every", "100000",
        "--adapter-path", str(work / f"adapters-{blas}"), "-c", str(config),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-c", MLX_LM_RUNNER, "blas" if blas else "stock", str(out), *argv],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if not args.verbose else None,
    )
    reports = json.loads(out.read_text())
    return summarise(
        [(r["tokens_per_second"] / r["iterations_per_second"], 1 / r["iterations_per_second"])
         for r in reports]
    )  # fmt: skip


def run_cortex(model: Path, sample: Path, args: argparse.Namespace, work: Path) -> float:
    """(c): cortex-rpc end to end: a real server over stdio, startTraining, notifications."""
    import asyncio

    from cortex_client import CortexClient

    async def train() -> list[dict]:
        env = dict(os.environ, CORTEX_HOME=str(work / "cortex-home"))
        async with CortexClient(env=env) as client:
            queue = client.subscribe("cortex/trainingProgress")
            job = await client.request("cortex/startTraining", {
                "model": str(model), "dataset": str(sample), "outputName": "bench",
                "config": {"iterations": args.iters, "batchSize": 4,
                           "numLayers": SIZES[args.size]["num_hidden_layers"],
                           "learningRate": 1e-4, "loraRank": 8, "loraAlpha": 16,
                           "maxSeqLength": args.seq, "seed": 0},
                "options": {"stepsPerReport": 1, "stepsPerEval": 100000,
                            "stepsPerCheckpoint": 100000, "valBatches": 1,
                            "maskPrompt": False, "loraKeys": LORA_KEYS},
            })  # fmt: skip
            return [note async for note in client.training_progress(job["jobId"], queue)]

    events = asyncio.run(train())
    if events[-1]["state"] != "completed":
        raise RuntimeError(f"cortex job {events[-1]['state']}: {events[-1].get('message')}")
    windows, previous = [], 0
    for event in events:
        if event["event"] == "progress":
            tokens = event.get("trainedTokens", 0) - previous
            previous = event.get("trainedTokens", 0)
            windows.append((tokens, tokens / event["tokensPerSecond"]))
    return summarise(windows)


TORCH_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    model_dir, data_dir, iters, seq, out = sys.argv[1:6]
    torch.manual_seed(0)
    config = LlamaConfig.from_pretrained(model_dir)
    model = LlamaForCausalLM(config)
    model.load_state_dict(load_file(model_dir + "/model.safetensors"), strict=False)
    model.tie_weights()
    keys = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=keys))
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    rows = [json.loads(l) for l in open(data_dir + "/train.jsonl")]
    seqs = [tok.apply_chat_template(r["messages"], tokenize=True) for r in rows]
    seqs = [s if isinstance(s, list) else s["input_ids"] for s in seqs]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    windows = []
    for it in range(int(iters)):
        batch = [seqs[(it * 4 + j) % len(seqs)][: int(seq)] for j in range(4)]
        width = max(map(len, batch))
        ids = torch.zeros((4, width), dtype=torch.long)
        mask = torch.zeros((4, width), dtype=torch.long)
        for j, s in enumerate(batch):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        tic = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        windows.append((int(mask.sum()) - 4, time.perf_counter() - tic))
    json.dump(windows, open(out, "w"))
    """
)


def torch_python(args: argparse.Namespace) -> str | None:
    """Return an interpreter that has torch and peft, or None."""
    candidates = [args.torch_python] if args.torch_python else [sys.executable]
    for python in candidates:
        probe = subprocess.run(
            [python, "-c", "import torch, peft, transformers"], capture_output=True
        )
        if probe.returncode == 0:
            return python
    return None


def run_torch(python: str, model: Path, data: Path, args: argparse.Namespace, work: Path) -> float:
    """(d): torch + PEFT LoRA on the CPU, same weights, tokens and batch size."""
    out = work / "torch.json"
    subprocess.run(
        [python, "-c", TORCH_RUNNER, str(model), str(data), str(args.iters), str(args.seq),
         str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=None if args.verbose else subprocess.DEVNULL,
    )  # fmt: skip
    return summarise([tuple(w) for w in json.loads(out.read_text())])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--seq", type=int, default=256, help="max sequence length")
    parser.add_argument("--skip-stock", action="store_true", help="skip (a), the slow one")
    parser.add_argument("--torch-python", help="interpreter with torch + peft for (d)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--no-record", action="store_true", help="do not add (c)'s run to the calibration"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cortex-bench-") as tmp:
        work = Path(tmp)
        model, data, sample = make_fixture(work, args.size)
        print(f"model: generated Llama '{args.size}', {params_of(model) / 1e6:.1f}M parameters; "
              f"{args.iters} iterations, batch 4, max seq {args.seq}, LoRA r8 alpha16 on all "
              f"linear layers of every block, the sample's 22 training examples")  # fmt: skip
        results: dict[str, float | None] = {}
        labels = {
            "a": "(a) mlx_lm.lora, stock mlx[cpu] wheel",
            "b": "(b) mlx_lm.lora + OpenBLAS preloaded",
            "c": "(c) cortex-rpc over stdio (startTraining)",
            "d": "(d) torch + PEFT LoRA (CPU)",
        }
        for key in "abcd":
            tic = time.perf_counter()
            if key == "a" and args.skip_stock:
                print(f"{labels[key]:<42} skipped (--skip-stock)")
                results[key] = None
                continue
            if key == "d":
                python = torch_python(args)
                if python is None:
                    print(f"{labels[key]:<42} skipped: torch/peft not installed "
                          "(pip install torch==2.13.0 peft, or --torch-python)")  # fmt: skip
                    results[key] = None
                    continue
                results[key] = run_torch(python, model, data, args, work)
            elif key in "ab":
                results[key] = run_mlx_lm(model, data, args, key == "b", work)
            else:
                results[key] = run_cortex(model, sample, args, work)
            print(f"{labels[key]:<42} {results[key]:>10.0f} tok/s  "
                  f"(run {time.perf_counter() - tic:.0f} s)")  # fmt: skip
        if not args.no_record and (work / "cortex-home").exists():
            # (c)'s job was recorded in its scratch home; keep it in the machine's own.
            from cortex_rpc.config.calibration import merge_calibration
            from cortex_rpc.paths import CortexHome

            merge_calibration(work / "cortex-home", CortexHome.default().root)
        c = results["c"]
        for other in "bad":
            if c and results[other]:
                print(f"ratio (c)/({other}): {c / results[other]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
