"""Adapter switching on a warm base vs loading base + adapter from disk.

The generation worker keeps the base model in memory and swaps LoRA adapters in place
(``LoadedModel.get``). Baseline: what a fresh ``mlx_lm.load(base, adapter_path=...)`` costs,
which is what switching costs without the warm base. Run from the repository root::

    .venv/bin/python benchmarks/adapters.py            # 34M-parameter Llama, ~1 minute
    .venv/bin/python benchmarks/adapters.py --hidden 1024 --layers 16
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def make_adapter(base: Path, target: Path, rank: int, seed: int) -> Path:
    """Write a LoRA adapter with random (non-zero) weights for ``base``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    model, _ = load(str(base))
    model.freeze()
    mx.random.seed(seed)
    params = {"rank": rank, "scale": 2.0, "dropout": 0.0}
    layers = len(model.layers)
    linear_to_lora_layers(model, layers, params)
    weights = {
        name: mx.random.normal(value.shape) * 0.01
        for name, value in tree_flatten(model.trainable_parameters())
    }
    target.mkdir(parents=True)
    mx.save_safetensors(str(target / "adapters.safetensors"), weights)
    config = {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": params}
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from cortex_rpc.accel import preload_fast_blas

    preload_fast_blas()
    import mlx.core as mx

    from cortex_rpc.models.tiny import TinyModelSpec, generate_tiny_model
    from cortex_rpc.training.generate_worker import LoadedModel
    from cortex_rpc.training.output import load_with_adapter

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = TinyModelSpec(
            hidden_size=args.hidden, num_hidden_layers=args.layers,
            intermediate_size=args.hidden * 11 // 4, num_attention_heads=8,
            num_key_value_heads=8, vocab_size=32000,
        )  # fmt: skip
        base = generate_tiny_model(root / "base", spec)
        # Two adapters of one layout (rank 8) and one of another (rank 16).
        adapters = [str(make_adapter(base, root / f"a{i}", r, i)) for i, r in enumerate((8, 8, 16))]
        size = sum(p.stat().st_size for p in base.iterdir()) / 1e6

        loads = []
        for i in range(args.repeats):
            tic = time.perf_counter()
            model, _ = load_with_adapter(base, Path(adapters[i % 2]))
            mx.eval(model.parameters())  # mlx loads lazily: count the actual reading
            loads.append(time.perf_counter() - tic)
            del model

        loaded = LoadedModel()
        loaded.get(str(base), adapters[0], None)

        def switch_times(pair: tuple[str, str]) -> list[float]:
            times = []
            for i in range(args.repeats * 2):
                tic = time.perf_counter()
                model, _ = loaded.get(str(base), pair[i % 2], None)
                mx.eval(model.parameters())
                times.append(time.perf_counter() - tic)
            return times

        same = switch_times((adapters[1], adapters[0]))
        other = switch_times((adapters[2], adapters[0]))
        assert loaded.loads == 1, "switching reloaded the base"

    load_s = statistics.median(loads)
    same_s, other_s = statistics.median(same), statistics.median(other)
    print(f"base model: hidden {args.hidden}, {args.layers} layers, {size:.0f} MB on disk "
          f"(page cache warm); LoRA adapters on every linear layer")
    print(f"(baseline) load base + adapter from disk:      median {load_s * 1000:8.1f} ms")
    print(f"(cortex)   switch, same layout (rank 8 -> 8):   median {same_s * 1000:8.1f} ms"
          f"  ratio {load_s / same_s:6.1f}x")
    print(f"(cortex)   switch, new layout (rank 8 <-> 16):  median {other_s * 1000:8.1f} ms"
          f"  ratio {load_s / other_s:6.1f}x")
    print("target: >= 10x faster than a full load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
