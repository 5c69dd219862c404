"""Benchmark model inspection and server start-up.

1. Parameter detection on a sparse, 15-shard Llama-2-70B (real safetensors headers, data
   left as a hole) with ``inspect_model`` (headers only), against loading the tensors with
   MLX (``mx.load`` + eval). Loading 138 GB does not fit a small machine, so by default the
   baseline loads the first shards and extrapolates by bytes (``--full`` loads them all).
2. Time from spawning ``cortex-rpc`` to its ``initialize`` response (median of N runs).

Targets: inspection under 20 ms for 70B; initialize under 300 ms after spawn.
"""

from __future__ import annotations

import os
import sys

# This script shares its name with the stdlib's ``inspect``; keep its folder off sys.path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from cortex_rpc.lsp.framing import frame  # noqa: E402
from cortex_rpc.models.inspect import inspect_model, weight_files  # noqa: E402
from cortex_rpc.models.synthetic import write_sparse_model  # noqa: E402


def time_inspection(directory: Path, repeats: int) -> tuple[float, int]:
    timings = []
    parameters = 0
    for _ in range(repeats):
        started = time.perf_counter()
        parameters = inspect_model(directory).parameters
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), parameters


def time_loading(directory: Path, shards: int | None) -> tuple[float, float, int]:
    """Return (seconds measured, extrapolated seconds for all shards, parameters counted)."""
    import mlx.core as mx

    files = weight_files(directory)
    chosen = files if shards is None else files[:shards]
    started = time.perf_counter()
    loaded_bytes = 0
    parameters = 0
    for path in chosen:
        tensors = mx.load(str(path))
        mx.eval(list(tensors.values()))
        parameters += sum(t.size for t in tensors.values())
        loaded_bytes += path.stat().st_size
        del tensors
    measured = time.perf_counter() - started
    total_bytes = sum(p.stat().st_size for p in files)
    return measured, measured * total_bytes / loaded_bytes, parameters


def read_reply(stream) -> dict:
    header = b""
    while not header.endswith(b"\r\n\r\n"):
        header += stream.read(1)
    length = int(header.split(b":")[1].split(b"\r\n")[0])
    return json.loads(stream.read(length))


def time_initialize(runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "cortex_rpc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        server.stdin.write(
            frame(
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
            )
        )
        server.stdin.flush()
        read_reply(server.stdout)
        timings.append(time.perf_counter() - started)
        server.kill()
        server.wait()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--baseline-shards",
        type=int,
        default=1,
        help="shards the loading baseline reads (extrapolated to all)",
    )
    parser.add_argument("--full", action="store_true", help="load every shard (138 GB read)")
    parser.add_argument("--init-runs", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = write_sparse_model(Path(tmp) / "llama-2-70b", "llama-2-70b", shards=15)
        inspect_s, parameters = time_inspection(directory, args.repeats)
        measured, load_s, _ = time_loading(directory, None if args.full else args.baseline_shards)
        how = (
            "all shards"
            if args.full
            else (f"{args.baseline_shards} of 15 shards in {measured:.2f} s, extrapolated by bytes")
        )
        print(f"70B sparse model, 15 shards: {parameters:,} parameters")
        print(
            f"  inspect_model (headers only): {inspect_s * 1000:.2f} ms (median of "
            f"{args.repeats}; target < 20 ms)"
        )
        print(f"  loading the tensors (mx.load + eval): {load_s:.1f} s ({how})")
        print(f"  ratio: {load_s / inspect_s:,.0f}x faster than loading")

    timings = time_initialize(args.init_runs)
    print(
        f"spawn -> initialize response: median {statistics.median(timings) * 1000:.0f} ms, "
        f"min {min(timings) * 1000:.0f} ms over {len(timings)} runs (target < 300 ms)"
    )


if __name__ == "__main__":
    main()
