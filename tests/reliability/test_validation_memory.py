"""Validating a large JSONL file keeps a few dozen bytes per record, not the records.

Peak memory (VmHWM) of a child process that validates a generated 300,000-line file, against
the peak of the same child validating its first 200 lines plus a per-record budget: state that
grows with the records' text (the old per-record state, about 1.6 KB a record) fails it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads VmHWM from /proc/self/status"
)

ROOT = Path(__file__).resolve().parents[2]
LINES = 300_000
# One pass keeps about 180 bytes a record (the duplicate table's digest, index and slot, the
# shape arrays); merging parallel parts grows that table by the later parts' at once.
BYTES_PER_RECORD = 240

CHILD = """
import sys
from cortex_rpc.datasets import formats, parallel, validate_dataset
formats.FAST_PATH = sys.argv[2] == "fast"
parallel.PART_BYTES = 1 << 20  # in parts: the merged state is bounded as well
result = validate_dataset(sys.argv[1])
def peak(pid):
    line = next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
workers = max([peak(w.process.pid) for w in parallel._idle], default=0)
print(peak("self"), result.examples, result.total, workers)
"""


def peak(path: Path, mode: str = "fast") -> tuple[int, int, int, int]:
    """Return (peak bytes, examples, diagnostics, largest peak of its part workers) of a
    child validating ``path``."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    ).stdout.split()
    return int(out[0]), int(out[1]), int(out[2]), int(out[3])


def generate(path: Path, lines: int) -> None:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "datasets.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.generate(path, lines)


def test_validating_300k_lines_stays_within_a_per_record_budget(tmp_path):
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    generate(big, LINES)
    with big.open() as lines:  # with defects: the baseline has loaded what they need too
        small.write_text("".join(next(lines) for _ in range(200)))
    baseline, _, _, _ = peak(small)
    used, examples, total, worker = peak(big)
    bound = baseline + LINES * BYTES_PER_RECORD
    assert examples > 0.98 * LINES and total > 0
    for who, value in (("the validating process", used), ("a part worker", worker)):
        assert value <= bound, (
            f"{who}: peak {value / 1e6:.0f} MB over the bound {bound / 1e6:.0f} MB "
            f"({baseline / 1e6:.0f} MB baseline + {LINES:,} x {BYTES_PER_RECORD} bytes)"
        )
