"""Export time per target for a ~100M-parameter generated model, and what verification found.

The base is the Qwen 2.5 replica (its real chat template and special tokens, a small generated
BPE tokenizer) with seeded random weights at ~100M parameters (hidden 768, 16 layers, float32);
the fine-tune is a LoRA adapter with random non-zero weights on every layer. Each target is
exported with ``export_model`` (worker process, verification on) and timed; the table shows
the seconds per stage, the token agreement and the largest logit difference.

``--quantized`` also measures the 4-bit case: the same model quantized to 4 bits, an adapter on
it, and the validation loss of base + adapter (as trained) vs the fused, dequantized ``hf``
export loaded alone, on the bundled sample dataset (must be within 2 %).

Needs llama.cpp's converter (``scripts/fetch_llama_cpp.sh`` or ``CORTEX_LLAMA_CPP``) and, for the
GGUF verification and q4_k_m, llama-cpp-python. Run from the repository root::

    .venv/bin/python benchmarks/export.py                 # ~100M parameters
    .venv/bin/python benchmarks/export.py --hidden 256 --layers 4 --quantized   # quick
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))  # tests.families and tests.models.test_export

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

TARGETS = [
    ("mlx", None),
    ("hf", None),
    ("gguf", "f16"),
    ("gguf", "q8_0"),
    ("gguf", "q4_k_m"),
    ("ollama", "f16"),
    ("lmstudio", None),
]
# The replica's tokenizer pre-tokenizes as GPT-2 (ByteLevel, its regex).
PRE_TOKENIZER = "gpt-2"


def build_base(root: Path, hidden: int, layers: int) -> tuple[Path, int]:
    """Write the Qwen 2.5 replica at ``hidden`` x ``layers``; return it and its parameters."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load

    from cortex_rpc.models.tiny import write_random_weights
    from tests.families import build_family

    base = build_family("qwen2.5", root / "qwen2.5-base")
    config = json.loads((base / "config.json").read_text())
    config.update(
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=hidden * 8 // 3,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
    )
    write_random_weights(base, config, seed=0, module="qwen2")
    model, _ = load(str(base))
    return base, sum(v.size for _, v in tree_flatten(model.parameters()))


def quantize(base: Path, out: Path) -> Path:
    """Return a 4-bit (group size 64) copy of ``base``, as mlx_lm.convert writes it."""
    from mlx_lm import convert

    convert(str(base), str(out), quantize=True, q_bits=4, q_group_size=64)
    return out


def loss(model_dir: Path, adapter: Path | None, data: Path) -> float:
    """Validation loss (mlx_lm's evaluate, answers only) of a model folder (+ adapter)."""
    from mlx_lm.tuner.trainer import evaluate

    from cortex_rpc.models.fine_tuned import load_with_adapter
    from cortex_rpc.training.evaluate_worker import _dataset

    model, tokenizer = load_with_adapter(model_dir, adapter)
    dataset, _ = _dataset(data, tokenizer)
    return float(evaluate(model, dataset, batch_size=1, num_batches=-1, max_seq_length=512))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--quantized", action="store_true", help="also the 4-bit loss check")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from cortex_rpc.datasets import write_sample_dataset
    from cortex_rpc.models.export import export_model
    from cortex_rpc.paths import CortexHome
    from cortex_rpc.training.evaluate import write_eval_records
    from tests.models.test_export import make_fine_tune

    rows = []
    with tempfile.TemporaryDirectory(prefix="cortex-bench-export-") as tmp:
        root = Path(tmp)
        home = CortexHome(root / "home")
        base, parameters = build_base(root, args.hidden, args.layers)
        make_fine_tune(base, home.models, "bench-ft", layers=args.layers)
        print(f"base: {parameters / 1e6:.1f}M parameters, float32", file=sys.stderr)
        for target, quantization in TARGETS:
            started = time.monotonic()
            result = export_model(
                home,
                "bench-ft",
                target,
                name=f"bench-{target}-{quantization or 'float'}",
                quantization=quantization,
                lmstudio_root=root / "lmstudio",
                pre_tokenizer=PRE_TOKENIZER if target in ("gguf", "ollama") else None,
            )
            verification = result.verification or {}
            rows.append(
                {
                    "target": target,
                    "quantization": quantization,
                    "seconds": round(time.monotonic() - started, 1),
                    **{k: round(v, 1) for k, v in result.timings.items()},
                    "sizeMB": round(result.size_bytes / 1e6, 1),
                    "verifiedWith": verification.get("tool"),
                    "status": verification.get("status"),
                    "tokenAgreement": verification.get("tokenAgreement"),
                    "maxLogitDiff": verification.get("maxLogitDiff"),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
        quantized = None
        if args.quantized:
            q4 = quantize(base, root / "qwen2.5-4bit")
            make_fine_tune(q4, home.models, "bench-q4-ft", layers=args.layers)
            exported = export_model(home, "bench-q4-ft", "hf", name="bench-q4-hf")
            write_sample_dataset(root / "sample.jsonl")
            data, _ = write_eval_records(root / "sample.jsonl", root / "eval", split="all")
            trained = loss(q4, home.models / "bench-q4-ft", data)
            fused = loss(Path(exported.path), None, data)
            quantized = {
                "baseAdapterLoss": round(trained, 4),
                "exportedLoss": round(fused, 4),
                "relativeDifference": round(abs(fused - trained) / trained, 5),
                "within2Percent": abs(fused - trained) / trained <= 0.02,
                "hfVerification": exported.verification["status"],
            }
    if args.json:
        print(json.dumps({"parameters": parameters, "targets": rows, "quantized": quantized}))
        return 0
    print(f"\n{parameters / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} layers)")
    header = f"{'target':<10}{'quant':<8}{'total s':>8}{'convert s':>10}{'verify s':>9}"
    print(header + f"{'MB':>8}  {'verified':<13}{'agree':>6}{'max |dlogit|':>14}")
    for row in rows:
        print(
            f"{row['target']:<10}{row['quantization'] or '-':<8}{row['seconds']:>8}"
            f"{row.get('convertSeconds', '-'):>10}{row.get('verifySeconds', '-'):>9}"
            f"{row['sizeMB']:>8}  {str(row['verifiedWith']) + ' ' + str(row['status']):<13}"
            f"{(row['tokenAgreement'] or 0):>6.0%}{(row['maxLogitDiff'] or 0):>14.3g}"
        )
    if quantized:
        print(
            f"\n4-bit base: loss base+adapter {quantized['baseAdapterLoss']} vs fused hf export "
            f"{quantized['exportedLoss']} ({quantized['relativeDifference']:.2%}, "
            f"{'within' if quantized['within2Percent'] else 'NOT within'} 2 %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
