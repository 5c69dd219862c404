"""Per-machine calibration of the time and memory estimates, kept in ``$CORTEX_HOME``.

Why: a static FLOP model is off by 3-5x for small models, where per-step overhead (graph
building, kernel launches, Python) dominates, and it never learns. Every finished training run
(and every benchmark run) records what it measured here: wall time split into fixed costs
(process start, model and data load, compilation, final save), steady step time, evaluation
time, and MLX's peak memory, next to the run's shape (backend, method, model size, tokens per
step, ...). An estimate then scales each part of the prior model (``estimate.py``) by the
factor measured on the most similar recorded runs, so a second run of the same kind is
predicted from the first, and a new kind from its nearest neighbours.

The store is one JSON file (``calibration.json``), written atomically under a file lock; a
corrupt or unreadable file counts as no calibration (it is kept aside as
``calibration.json.corrupt``) and is replaced on the next record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..paths import write_atomic

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
VERSION = 1
MAX_RUNS = 200  # the newest are kept; enough for every shape a machine sees in practice
# A recorded run this far (in log-space units, see ``distance``) from the target weighs e^-2
# of one with the same shape.
SIMILARITY_SCALE = 1.0


@dataclass(frozen=True)
class RunShape:
    """What decides a run's time and memory: the machine, the method, the model and the work.

    ``method`` is the training objective (``sft`` now; ``dpo``/``orpo`` get their own key, as
    a preference step costs about two SFT steps). ``backend`` is ``cpu``,
    ``cpu-reference-blas`` (no fast BLAS found), ``metal`` or ``cuda``.
    """

    backend: str
    method: str
    fine_tune_type: str
    parameters: int
    size_bytes: int
    layers: int
    trained_layers: int
    hidden_size: int
    vocab_size: int
    bytes_per_parameter: float
    quantization_bits: int | None
    lora_rank: int
    batch_size: int
    seq_length: int  # the longest batch, in tokens, padded as mlx_lm pads
    tokens_per_step: float  # mean tokens one step trains through
    iterations: int
    evals: int  # validation passes (first step, every stepsPerEval, the end)
    val_tokens_per_eval: float
    val_batches_per_eval: int = 0
    grad_checkpoint: bool = False

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunShape:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def key(self) -> tuple[str, str, str]:
        """Runs are compared only within one key: same backend, method and fine-tune type."""
        return (self.backend, self.method, self.fine_tune_type)


@dataclass(frozen=True)
class RunMeasurement:
    """What one finished run measured, split as the estimate is (seconds, bytes)."""

    wall_seconds: float  # worker launch to exit, as the job manager saw it
    fixed_seconds: float  # everything except the steady steps and the evaluations
    step_seconds: float  # mean steady step (after the first, which compiles)
    eval_seconds: float  # all validation passes together
    peak_memory_bytes: int  # mx.get_peak_memory() at the end
    tokens_per_second: float = 0.0
    load_per_core: float | None = None  # the 1-minute load average per core at the end

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunMeasurement:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class CalibrationRun:
    """One recorded run: its shape, what was measured, what had been estimated."""

    shape: RunShape
    measured: RunMeasurement
    estimated_seconds: float | None = None
    estimated_peak_memory_bytes: int | None = None
    source: str = "training"  # or "benchmark"
    recorded_at: float = field(default_factory=time.time)

    def to_wire(self) -> dict[str, Any]:
        return {
            "shape": self.shape.to_wire(),
            "measured": self.measured.to_wire(),
            "estimatedSeconds": self.estimated_seconds,
            "estimatedPeakMemoryBytes": self.estimated_peak_memory_bytes,
            "source": self.source,
            "recordedAt": self.recorded_at,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> CalibrationRun:
        return cls(
            shape=RunShape.from_wire(data["shape"]),
            measured=RunMeasurement.from_wire(data["measured"]),
            estimated_seconds=data.get("estimatedSeconds"),
            estimated_peak_memory_bytes=data.get("estimatedPeakMemoryBytes"),
            source=str(data.get("source", "training")),
            recorded_at=float(data.get("recordedAt", 0.0)),
        )


@dataclass(frozen=True)
class Calibration:
    """The runs recorded on this machine (oldest first)."""

    runs: tuple[CalibrationRun, ...] = ()
    path: Path | None = None
    problem: str = ""  # why the file could not be read, when it could not

    def matching(self, shape: RunShape) -> list[CalibrationRun]:
        """Return the recorded runs comparable with ``shape`` (same backend, method, type)."""
        return [run for run in self.runs if run.shape.key() == shape.key()]


def calibration_path(home_root: Path) -> Path:
    """Return where a CORTEX_HOME keeps its calibration."""
    return Path(home_root) / CALIBRATION_FILE


def load_calibration(home_root: Path) -> Calibration:
    """Return the calibration of a CORTEX_HOME; empty when there is none or it is unreadable.

    A corrupt file (half-written by another version, edited by hand) is moved aside to
    ``calibration.json.corrupt`` and counts as no calibration; estimates then say they are
    uncalibrated instead of failing.
    """
    path = calibration_path(home_root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Calibration(path=path)
    except OSError as error:
        return Calibration(path=path, problem=f"cannot read {path}: {error}")
    try:
        data = json.loads(text)
        runs = tuple(CalibrationRun.from_wire(item) for item in data["runs"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        logger.warning("ignoring the corrupt calibration file %s: %s", path, error)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(path.name + ".corrupt"))
        return Calibration(path=path, problem=f"{path} was corrupt and is ignored")
    return Calibration(runs=runs, path=path)


def record_run(home_root: Path, run: CalibrationRun) -> Calibration:
    """Add ``run`` to the calibration of a CORTEX_HOME (atomically, under a lock); return it."""
    from filelock import FileLock

    path = calibration_path(home_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        current = load_calibration(home_root)
        runs = (*current.runs, run)[-MAX_RUNS:]
        write_atomic(path, {"version": VERSION, "runs": [r.to_wire() for r in runs]})
    return Calibration(runs=runs, path=path)


def merge_calibration(source_root: Path, target_root: Path, source: str = "benchmark") -> int:
    """Copy the runs recorded in one CORTEX_HOME into another's; return how many.

    Benchmarks train in a scratch home; this keeps what they measured on the machine's own.
    """
    runs = load_calibration(source_root).runs
    for run in runs:
        record_run(target_root, CalibrationRun(**{**run.__dict__, "source": source}))
    return len(runs)


def load_per_core(extra_threads: int = 0) -> float | None:
    """Return the runnable threads per CPU core now (plus ``extra_threads``), or None.

    ``extra_threads`` counts a worker about to start. Linux: the cores busy over the last
    50 ms (``/proc/stat``); the 1-minute load average would still count a run that has just
    ended, and overestimate every run that follows one. Elsewhere that load average.
    """
    busy = _busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    return (busy + extra_threads) / max(os.cpu_count() or 1, 1)


def _busy_cores(interval: float = 0.05) -> float | None:
    """Return how many cores were busy over ``interval`` seconds (Linux), else None."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as handle:
            values = [int(v) for v in handle.readline().split()[1:9]]
        return sum(values), values[3] + values[4]  # all time, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def contention(backend: str, load: float | None) -> float:
    """Return how much slower a CPU run is for the machine's load: runnable threads per core.

    A CPU-bound run gets about 1 / (load per core) of a core once the load exceeds the cores
    (other processes, other users); below that it runs at full speed. GPU backends: 1.
    """
    if load is None or not backend.startswith("cpu"):
        return 1.0
    return max(1.0, load)


def distance(a: RunShape, b: RunShape) -> float:
    """Return how unlike two runs' shapes are (0 for the same shape), in log-ratio units."""

    def ratio(x: float, y: float) -> float:
        return abs(math.log(max(x, 1e-9) / max(y, 1e-9)))

    d = ratio(a.parameters, b.parameters)
    d += 0.5 * ratio(a.tokens_per_step, b.tokens_per_step)
    d += 0.3 * ratio(a.trained_layers, b.trained_layers)
    d += 0.2 * ratio(a.lora_rank, b.lora_rank)
    d += 0.5 if (a.quantization_bits or 0) != (b.quantization_bits or 0) else 0.0
    d += 0.3 if a.grad_checkpoint != b.grad_checkpoint else 0.0
    return d


def weighted_factor(pairs: list[tuple[float, float]]) -> float | None:
    """Return the weighted geometric mean of (factor, weight) pairs (None when empty)."""
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    return math.exp(sum(w * math.log(max(f, 1e-9)) for f, w in pairs) / total)


def similarity(a: RunShape, b: RunShape) -> float:
    """Return the weight a recorded run ``b`` gets when estimating ``a`` (1 for the same)."""
    return math.exp(-((distance(a, b) / SIMILARITY_SCALE) ** 2))
