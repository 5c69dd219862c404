"""Where MLX's CPU backend loses to torch in a LoRA training step: matmul, attention, elementwise.

The same operations at the shapes of benchmarks/train.py's 34M model (batch 4, sequence 256,
hidden 512, MLP 1408, 8 heads) are timed forward + backward in MLX (OpenBLAS preloaded, as
the worker runs) and in torch (all cores). Run from the repository root::

    .venv/bin/python benchmarks/profile_cpu.py --torch-python /tmp/torchvenv/bin/python
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

SHAPES = {"batch": 4, "seq": 256, "hidden": 512, "mlp": 1408, "heads": 8}
REPEATS = 20

TORCH_PROFILE = textwrap.dedent(
    """
    import json, sys, time
    import torch
    import torch.nn.functional as F
    s = json.loads(sys.argv[1]); repeats = int(sys.argv[2])
    torch.manual_seed(0)
    b, t, h, m, nh = s["batch"], s["seq"], s["hidden"], s["mlp"], s["heads"]
    def timed(fn, *args):
        for _ in range(3):
            fn(*args)
        tic = time.perf_counter()
        for _ in range(repeats):
            fn(*args)
        return (time.perf_counter() - tic) / repeats * 1000
    x = torch.randn(b * t, h, requires_grad=True)
    w = torch.randn(m, h, requires_grad=True)
    def matmul(x, w):
        F.linear(x, w).sum().backward()
    q = torch.randn(b, nh, t, h // nh, requires_grad=True)
    def attention(q):
        F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
    y = torch.randn(b * t, m, requires_grad=True)
    g = torch.randn(m, requires_grad=True)
    def elementwise(y, g):
        n = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) * g
        (F.silu(n) * n).sum().backward()
    print(json.dumps({"threads": torch.get_num_threads(),
                      "matmul": timed(matmul, x, w), "attention": timed(attention, q),
                      "elementwise": timed(elementwise, y, g)}))
    """
)


def profile_mlx() -> dict[str, float]:
    from cortex_rpc.accel import preload_fast_blas

    preload_fast_blas()
    import mlx.core as mx

    s = SHAPES
    b, t, h, m, nh = s["batch"], s["seq"], s["hidden"], s["mlp"], s["heads"]

    def timed(fn, *args) -> float:
        for _ in range(3):
            mx.eval(fn(*args))
        tic = time.perf_counter()
        for _ in range(REPEATS):
            mx.eval(fn(*args))
        return (time.perf_counter() - tic) / REPEATS * 1000

    x, w = mx.random.normal((b * t, h)), mx.random.normal((m, h))
    matmul = mx.grad(lambda x, w: (x @ w.T).sum(), argnums=(0, 1))
    q = mx.random.normal((b, nh, t, h // nh))
    scale = (h // nh) ** -0.5
    attention = mx.grad(
        lambda q: mx.fast.scaled_dot_product_attention(q, q, q, scale=scale, mask="causal").sum()
    )
    y, g = mx.random.normal((b * t, m)), mx.random.normal((m,))

    def norm_act(y: mx.array, g: mx.array) -> mx.array:
        n = mx.fast.rms_norm(y, g, 1e-5)
        return (n * mx.sigmoid(n) * n).sum()

    elementwise = mx.grad(norm_act, argnums=(0, 1))
    return {
        "matmul": timed(matmul, x, w),
        "attention": timed(attention, q),
        "elementwise": timed(elementwise, y, g),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", help="interpreter with torch (default: this one)")
    args = parser.parse_args()
    mlx_times = profile_mlx()
    python = args.torch_python or sys.executable
    done = subprocess.run(
        [python, "-c", TORCH_PROFILE, json.dumps(SHAPES), str(REPEATS)],
        capture_output=True, text=True,
    )  # fmt: skip
    torch_times = json.loads(done.stdout) if done.returncode == 0 else None
    print(f"shapes: {SHAPES}; forward + backward, median of {REPEATS}, milliseconds")
    print(f"{'op':<12} {'mlx (OpenBLAS)':>15} {'torch':>10} {'mlx/torch':>10}")
    for op in ("matmul", "attention", "elementwise"):
        if torch_times is None:
            print(f"{op:<12} {mlx_times[op]:>15.2f} {'-':>10}")
            continue
        ratio = mlx_times[op] / torch_times[op]
        print(f"{op:<12} {mlx_times[op]:>15.2f} {torch_times[op]:>10.2f} {ratio:>10.2f}")
    if torch_times is None:
        print("torch not found: pass --torch-python (see docs/performance.md)")
    else:
        print(f"torch threads: {torch_times['threads']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
