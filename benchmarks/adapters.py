"""Adapter switching on a warm base vs loading base + adapter from disk.

The generation worker keeps the base model in memory and swaps LoRA adapters in place
(``LoadedModel.get``). Baseline: what the server does without a warm base, a fresh
``mlx_lm.load`` of the base (weights and tokenizer) plus ``load_adapters``
(``load_with_adapter``), weights evaluated. Cases, each timed from the call until the
adapter's weights are evaluated:

- same layout: rank 8 -> another rank-8 adapter (only the weights change);
- new layout: rank 8 -> a rank never seen before on this base (new adapter layers);
- layout seen before: back to rank 8 (adapter layers kept from earlier, as when
  ``cortex/compareAdapters`` goes base -> A -> B -> base).

The base is a generated Llama (seeded random weights, float32, the small bundled
tokenizer, so the baseline's tokenizer load is cheaper than a real model's). Run from
the repository root::

    .venv/bin/python benchmarks/adapters.py            # 238M parameters, 953 MB, ~15 s
    .venv/bin/python benchmarks/adapters.py --hidden 512 --layers 8   # 42M, 168 MB
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


def make_adapters(base: Path, root: Path, ranks: list[int]) -> list[str]:
    """Write LoRA adapters of ``ranks`` with random (non-zero) weights for ``base``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    from cortex_rpc.generation.worker import remove_adapter_layers

    model, _ = load(str(base))
    model.freeze()
    layers = len(model.layers)
    paths = []
    for i, rank in enumerate(ranks):
        mx.random.seed(i)
        params = {"rank": rank, "scale": 2.0, "dropout": 0.0}
        linear_to_lora_layers(model, layers, params)
        weights = {
            name: mx.random.normal(value.shape) * 0.01
            for name, value in tree_flatten(model.trainable_parameters())
        }
        remove_adapter_layers(model)
        target = root / f"a{i}-rank{rank}"
        target.mkdir(parents=True)
        mx.save_safetensors(str(target / "adapters.safetensors"), weights)
        config = {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": params}
        (target / "adapter_config.json").write_text(json.dumps(config))
        paths.append(str(target))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from cortex_rpc.accel import preload_fast_blas

    preload_fast_blas()
    import mlx.core as mx
    from mlx_lm.utils import load_tokenizer

    from cortex_rpc.generation.worker import LoadedModel
    from cortex_rpc.models.fine_tuned import load_with_adapter
    from cortex_rpc.models.tiny import TinyModelSpec, generate_tiny_model

    median = statistics.median
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = TinyModelSpec(
            hidden_size=args.hidden, num_hidden_layers=args.layers,
            intermediate_size=args.hidden * 11 // 4, num_attention_heads=8,
            num_key_value_heads=8, vocab_size=32000,
        )  # fmt: skip
        base = generate_tiny_model(root / "base", spec)
        size = sum(p.stat().st_size for p in base.iterdir()) / 1e6
        # Two adapters of rank 8, then for each new-layout switch one of a rank not used
        # before on this base: 16, 14, 18, 12, 20, ... (about 16 on average).
        fresh = sorted((r for r in range(6, 16 + 2 * args.repeats, 2) if r != 8),
                       key=lambda r: (abs(r - 16), r))[: args.repeats]  # fmt: skip
        rank8, other8, *new = make_adapters(base, root / "adapters", [8, 8, *fresh])
        megabytes = [Path(a, "adapters.safetensors").stat().st_size / 1e6 for a in (rank8, *new)]

        def timed(call) -> float:
            tic = time.perf_counter()
            model = call()
            mx.eval(model.parameters())  # mlx loads lazily: count the actual reading
            return time.perf_counter() - tic

        loads, tokenizer = [], []
        for i in range(args.repeats):
            adapter = Path((rank8, other8)[i % 2])
            loads.append(timed(lambda a=adapter: load_with_adapter(base, a)[0]))
            tic = time.perf_counter()
            load_tokenizer(base)
            tokenizer.append(time.perf_counter() - tic)

        loaded = LoadedModel()
        loaded.get(str(base), rank8, None)
        same, first, back = [], [], []
        for i in range(args.repeats * 2):
            adapter = (other8, rank8)[i % 2]
            same.append(timed(lambda a=adapter: loaded.get(str(base), a, None)[0]))
        for adapter in new:  # rank 8 in place before each
            first.append(timed(lambda a=adapter: loaded.get(str(base), a, None)[0]))
            back.append(timed(lambda: loaded.get(str(base), rank8, None)[0]))
        assert loaded.loads == 1, "switching reloaded the base"

    load_s = median(loads)
    print(
        f"base model: hidden {args.hidden}, {args.layers} layers, {size / 4:.0f}M float32 "
        f"parameters, {size:.0f} MB on disk (page cache warm); LoRA on all 7 linear layers "
        f"of every block; medians of {args.repeats} loads, {len(same)} / {len(first)} / "
        f"{len(back)} switches"
    )
    print(
        f"adapter files: rank 8 {megabytes[0]:.1f} MB; unseen ranks {min(fresh)}..{max(fresh)} "
        f"{min(megabytes[1:]):.1f}..{max(megabytes[1:]):.1f} MB"
    )
    print(
        f"(baseline) load base + adapter from disk (mlx_lm)     median {load_s * 1000:8.1f} ms"
        f"  (tokenizer: {median(tokenizer) * 1000:.1f} ms of it)"
    )
    for label, times in (
        ("same layout (rank 8 -> 8)", same),
        (f"new layout (8 -> unseen {min(fresh)}..{max(fresh)})", first),
        ("layout seen before (-> rank 8)", back),
    ):
        print(
            f"(cortex)   switch, {label:33s} median {median(times) * 1000:8.1f} ms"
            f"  ratio {load_s / median(times):6.1f}x"
        )
    print("target: >= 10x faster than a full load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
