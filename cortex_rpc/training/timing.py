"""Measured time of a training run: step windows, validation passes, phases, and the ETA.

No mlx here: the worker feeds it what mlx_lm's reports measure, and the ETA and the run's
timing summary (sent with ``done`` and recorded in the machine's calibration) come from it.
Why not the elapsed wall time per step: the first steps pay for compilation and the
validation passes are not steps, so an ETA from elapsed time is far off early in a run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .contract import RunTiming


@dataclass
class StepTimer:
    """Collects a run's measured times; ``eta`` and ``summary`` answer from them."""

    total_iterations: int
    steps_per_eval: int
    start_iteration: int = 0
    has_validation: bool = True
    started: float = field(default_factory=time.perf_counter)
    windows: list[tuple[int, float]] = field(default_factory=list)  # (steps, seconds)
    eval_times: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    _last_iteration: int | None = None
    _mark: float | None = None

    def phase(self, name: str) -> None:
        """Record the seconds since the previous phase (or the start) as phase ``name``."""
        now = time.perf_counter()
        self.phases[name] = now - (self._mark if self._mark is not None else self.started)
        self._mark = now

    def window(self, iteration: int, iterations_per_second: float) -> None:
        """Record a report window ending at ``iteration`` at the measured steps per second."""
        previous = self.start_iteration if self._last_iteration is None else self._last_iteration
        steps = max(1, iteration - previous)
        self._last_iteration = iteration
        self.windows.append((steps, steps / max(iterations_per_second, 1e-9)))

    def evaluation(self, seconds: float) -> None:
        """Record one validation pass."""
        self.eval_times.append(float(seconds))

    def step_seconds(self) -> float | None:
        """Return the mean steady step: after the first window (compilation) when there are more."""
        kept = self.windows[1:] or self.windows
        steps = sum(n for n, _ in kept)
        return sum(s for _, s in kept) / steps if steps else None

    def evals_left(self, iteration: int) -> int:
        """Return the validation passes still to come after ``iteration``."""
        if not self.has_validation:
            return 0
        every = max(1, self.steps_per_eval)
        total = self.total_iterations
        later = set(range((iteration // every + 1) * every, total + 1, every))
        if total > iteration:
            later.add(total)
        return len(later)

    def eta(self, iteration: int) -> float | None:
        """Return the seconds left: steps left x measured step, plus the passes left."""
        step = self.step_seconds()
        if step is None:
            return None
        per_eval = sum(self.eval_times) / len(self.eval_times) if self.eval_times else 0.0
        left = max(0, self.total_iterations - iteration)
        return left * step + self.evals_left(iteration) * per_eval

    def summary(self, peak_memory_bytes: int, tokens_per_second: float | None) -> RunTiming:
        """Return what this run measured (phases as recorded, ``total`` since the start)."""
        train = sum(s for _, s in self.windows)
        steps = sum(n for n, _ in self.windows)
        step = self.step_seconds() or 0.0
        return RunTiming(
            worker_seconds=time.perf_counter() - self.started,
            load_seconds=self.phases.get("load", 0.0),
            data_seconds=self.phases.get("data", 0.0),
            save_seconds=self.phases.get("save", 0.0),
            train_seconds=train,
            steps=steps,
            step_seconds=step,
            compile_seconds=max(0.0, train - step * steps),
            eval_seconds=sum(self.eval_times),
            evals=len(self.eval_times),
            peak_memory_bytes=int(peak_memory_bytes),
            tokens_per_second=tokens_per_second,
        )
