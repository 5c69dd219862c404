"""The optimizer and learning-rate schedule of a run, built from mlx.optimizers' own pieces.

Why mlx's schedule functions (``linear_schedule``, ``cosine_decay``, ``join_schedules``) and
not a formula of our own: the optimizer evaluates them on its ``step`` counter, which lives in
``optimizer.state`` and is saved with every checkpoint, so a resumed run continues the
schedule exactly where it stopped; and they are what ``mlx_lm.lora --lr-schedule`` uses.

The schedule counts optimizer updates, not iterations: with gradient accumulation one update
happens every ``gradAccumulationSteps`` iterations. Update ``s`` (0-based) uses:

- warmup (``s < w``): ``linear_schedule(0, lr, w)``, from 0 up to the peak;
- then ``cosine_decay(lr, T - w, floor)`` or ``linear_schedule(lr, floor, T - w)`` at ``s - w``,
  which reach ``floor = lrFloorRatio x lr`` just after the last update ``T - 1`` (the last
  step is not wasted at the floor), or the constant ``lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config.training_config import TrainingConfig
from ..errors import CortexError


@dataclass(frozen=True)
class SchedulePlan:
    """The numbers a schedule is built from, and what was clamped to make it fit the run."""

    updates: int  # optimizer updates in the whole run (T)
    warmup: int  # warmup updates (w)
    peak: float
    floor: float
    kind: str
    warning: str | None = None


def optimizer_updates(config: TrainingConfig, iterations: int | None = None) -> int:
    """Return how many optimizer updates ``iterations`` (default the config's) make."""
    total = config.iterations if iterations is None else iterations
    return max(1, total // max(1, config.grad_accumulation_steps))


def plan_schedule(config: TrainingConfig, iterations: int | None = None) -> SchedulePlan:
    """Return the warmup and decay lengths of ``config``'s schedule over its run."""
    updates = optimizer_updates(config, iterations)
    if config.warmup_steps > 0:
        warmup = config.warmup_steps
        source = f"warmupSteps {config.warmup_steps}"
    else:
        warmup = math.ceil(config.warmup_ratio * updates)
        source = f"warmupRatio {config.warmup_ratio:g}"
    warning = None
    if warmup >= updates and warmup > 0:
        # At least one update after the warmup, or the decay would have no length.
        clamped = updates - 1
        warning = (
            f"{source} asks for {warmup} warmup updates but the run makes only {updates}; "
            f"warming up over {clamped}. Lower the warmup or train longer."
        )
        warmup = clamped
    return SchedulePlan(
        updates=updates,
        warmup=warmup,
        peak=config.learning_rate,
        floor=config.learning_rate * config.lr_floor_ratio,
        kind=config.lr_schedule,
        warning=warning,
    )


def learning_rate_schedule(plan: SchedulePlan) -> Any:
    """Return the float or mlx schedule the optimizer takes as ``learning_rate``.

    A constant schedule without warmup is the plain float, as before schedules existed, so
    such runs train exactly as they did.
    """
    import mlx.optimizers as optim

    decay_steps = max(1, plan.updates - plan.warmup)
    if plan.kind == "cosine":
        main = optim.cosine_decay(plan.peak, decay_steps, plan.floor)
    elif plan.kind == "linear":
        main = optim.linear_schedule(plan.peak, plan.floor, decay_steps)
    elif plan.warmup:
        main = optim.linear_schedule(plan.peak, plan.peak, 1)  # constant, as a schedule
    else:
        return plan.peak
    if not plan.warmup:
        return main
    warmup = optim.linear_schedule(0.0, plan.peak, plan.warmup)
    return optim.join_schedules([warmup, main], [plan.warmup])


def build_optimizer(config: TrainingConfig, plan: SchedulePlan) -> Any:
    """Return the mlx optimizer ``config.optimizer`` names, on ``plan``'s schedule.

    Adafactor gets ``relative_step=False`` and ``scale_parameter=False`` so that learningRate
    and the schedule mean what they say (its defaults ignore the learning rate and scale it by
    each weight's RMS, which is 0 for LoRA's zero-initialised B matrices).
    """
    import mlx.optimizers as optim

    lr = learning_rate_schedule(plan)
    name = config.optimizer
    if name == "adam":
        return optim.Adam(learning_rate=lr)
    if name == "adamw":
        return optim.AdamW(learning_rate=lr, weight_decay=config.weight_decay)
    if name == "adafactor":
        return optim.Adafactor(
            learning_rate=lr,
            relative_step=False,
            scale_parameter=False,
            weight_decay=config.weight_decay,
        )
    if name == "muon":
        if not hasattr(optim, "Muon"):
            import mlx.core as mx

            raise CortexError(
                "invalid-config",
                f"optimizer muon needs an mlx with mlx.optimizers.Muon (installed: "
                f"{mx.__version__}); upgrade mlx or choose adamw.",
            )
        return optim.Muon(learning_rate=lr, weight_decay=config.weight_decay)
    raise CortexError("invalid-config", f"Unknown optimizer {name!r}; use adam, adamw, adafactor")
