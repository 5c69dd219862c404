"""Benchmark the ``cortex/startTraining`` reply on a 100,000-line dataset: this tree vs a baseline.

The reply comes once the request has been checked, the dataset validated, the config proposed
and the job's training files prepared; training itself starts after it. The same stdio
request is timed, from sending it to its reply, on two real servers:

- (a) the baseline: a git ref of this repository (default ``78c30e9``, before the pipeline got
  its typed contract and a dataset was read once per request), checked out into a temporary
  worktree and run with the same interpreter;
- (b) this working tree.

Each server answers ``--runs`` requests (the first is a warm-up, not counted); each job is
cancelled at once. The dataset is 100,000 valid chat records (``benchmarks/datasets.py``'s
generator without its defects), the model a generated tiny Llama. Prints the medians and
(a)/(b).
"""

from __future__ import annotations

import os
import sys

# Keep this folder off sys.path (its scripts share names with stdlib modules).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_dataset(path: Path, lines: int) -> None:
    import importlib.util

    # benchmarks/datasets.py's record generator (its name shadows a library: load it by path).
    spec = importlib.util.spec_from_file_location("dataset_bench", ROOT / "benchmarks/datasets.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    good_record = generator.good_record

    rng = random.Random(0)
    with path.open("w") as out:
        for i in range(lines):
            out.write(json.dumps(good_record(rng, i)) + "\n")


class Server:
    """A cortex-rpc process from ``tree``, spoken to over stdio."""

    def __init__(self, tree: Path, home: Path) -> None:
        env = {**os.environ, "PYTHONPATH": f"{tree}:{tree / 'clients' / 'python'}"}
        env["CORTEX_HOME"] = str(home)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cortex_rpc"],
            cwd=tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.ids = iter(range(1, 10**6))

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.process.stdin.flush()

    def read(self) -> dict:
        length = 0
        while (line := self.process.stdout.readline().strip()) != b"":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(self.process.stdout.read(length))

    def request(self, method: str, params: dict) -> tuple[float, dict]:
        msg_id = next(self.ids)
        sent = time.perf_counter()
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        while True:
            message = self.read()
            if message.get("id") == msg_id and "method" not in message:
                return time.perf_counter() - sent, message

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def time_replies(tree: Path, home: Path, model: Path, data: Path, runs: int) -> list[float]:
    server = Server(tree, home)
    try:
        server.request("initialize", {"capabilities": {}})
        server.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        times = []
        for run in range(runs):
            seconds, reply = server.request(
                "cortex/startTraining",
                {
                    "model": str(model),
                    "dataset": str(data),
                    "outputName": f"bench-{run}",
                    "preset": "quick",
                    "config": {"iterations": 1},
                },
            )
            assert "result" in reply, reply
            server.request("cortex/cancelTraining", {"jobId": reply["result"]["jobId"]})
            times.append(seconds)
        return times[1:]
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=4, help="requests per server (1 warm-up)")
    parser.add_argument("--baseline", default="78c30e9", help="git ref to compare against")
    args = parser.parse_args()

    from cortex_rpc.models.tiny import TinyModelSpec, generate_tiny_model

    with tempfile.TemporaryDirectory(prefix="cortex-bench-start-") as tmp:
        root = Path(tmp)
        data = root / "data.jsonl"
        write_dataset(data, args.lines)
        size_mb = data.stat().st_size / 1e6
        model = generate_tiny_model(root / "tiny", TinyModelSpec())
        baseline = root / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(baseline),
             args.baseline],
            check=True,
        )  # fmt: skip
        try:
            before = time_replies(baseline, root / "home-a", model, data, args.runs)
            after = time_replies(ROOT, root / "home-b", model, data, args.runs)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
                check=False,
            )
            shutil.rmtree(baseline, ignore_errors=True)
    a, b = statistics.median(before), statistics.median(after)
    print(f"startTraining reply, {args.lines:,} chat lines ({size_mb:.1f} MB), median of "
          f"{len(after)} (after a warm-up):")  # fmt: skip
    print(f"  (a) baseline {args.baseline}: {a:.2f} s  {[round(t, 2) for t in before]}")
    print(f"  (b) this tree:       {b:.2f} s  {[round(t, 2) for t in after]}")
    print(f"  (a)/(b) = {a / b:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
