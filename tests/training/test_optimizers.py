"""Learning-rate schedules and optimizers: mlx's own functions, at the steps the run uses."""

from __future__ import annotations

import pytest

from cortex_rpc.config.training_config import EarlyStopping, TrainingConfig
from cortex_rpc.errors import InvalidParams
from cortex_rpc.training.optimizers import (
    build_optimizer,
    learning_rate_schedule,
    optimizer_updates,
    plan_schedule,
)

STEPS = [0, 1, 5, 9, 10, 11, 50, 99, 100, 150]


def _values(schedule, steps=STEPS) -> list[float]:
    import mlx.core as mx

    return [float(schedule(mx.array(s))) for s in steps]


def test_warmup_then_cosine_equals_mlxs_joined_schedules():
    import mlx.optimizers as optim

    config = TrainingConfig(
        iterations=100, learning_rate=2e-4, lr_schedule="cosine", warmup_steps=10,
        lr_floor_ratio=0.1,
    )  # fmt: skip
    ours = learning_rate_schedule(plan_schedule(config))
    theirs = optim.join_schedules(
        [optim.linear_schedule(0.0, 2e-4, 10), optim.cosine_decay(2e-4, 90, 2e-5)], [10]
    )
    assert _values(ours) == pytest.approx(_values(theirs), rel=1e-6)
    at = dict(zip(STEPS, _values(ours), strict=True))
    assert at[0] == 0.0 and at[5] == pytest.approx(1e-4) and at[10] == pytest.approx(2e-4)
    assert 2e-5 < at[99] < 2.1e-5 and at[150] == pytest.approx(2e-5)  # the floor, reached after


def test_linear_decay_and_warmup_ratio_equal_mlxs_linear_schedules():
    import mlx.optimizers as optim

    # 200 iterations / 2 accumulated = 100 updates; 5% warmup = 5 updates.
    config = TrainingConfig(
        iterations=200, grad_accumulation_steps=2, learning_rate=1e-3, lr_schedule="linear",
        warmup_ratio=0.05,
    )  # fmt: skip
    plan = plan_schedule(config)
    assert (plan.updates, plan.warmup, plan.floor) == (100, 5, 0.0)
    theirs = optim.join_schedules(
        [optim.linear_schedule(0.0, 1e-3, 5), optim.linear_schedule(1e-3, 0.0, 95)], [5]
    )
    assert _values(learning_rate_schedule(plan)) == pytest.approx(_values(theirs), abs=1e-12)


def test_constant_is_the_plain_rate_and_constant_with_warmup_holds_after_it():
    assert learning_rate_schedule(plan_schedule(TrainingConfig(iterations=10))) == 1e-4
    plan = plan_schedule(TrainingConfig(iterations=10, learning_rate=1e-3, warmup_steps=4))
    assert _values(learning_rate_schedule(plan), [0, 2, 4, 9, 20]) == pytest.approx(
        [0.0, 5e-4, 1e-3, 1e-3, 1e-3]
    )


def test_a_warmup_longer_than_the_run_is_clamped_with_a_warning():
    plan = plan_schedule(TrainingConfig(iterations=8, lr_schedule="cosine", warmup_steps=50))
    assert plan.warmup == 7 and "warmupSteps 50" in (plan.warning or "")
    assert optimizer_updates(TrainingConfig(iterations=3, grad_accumulation_steps=8)) == 1


@pytest.mark.parametrize("name", ["adam", "adamw", "adafactor", "muon"])
def test_each_optimizer_follows_the_schedule_it_was_built_with(name: str):
    """After k updates the optimizer's learning rate is the schedule at update k - 1."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    config = TrainingConfig(
        iterations=6, learning_rate=1e-2, lr_schedule="cosine", warmup_steps=2,
        optimizer=name, weight_decay=0.05,
    )  # fmt: skip
    plan = plan_schedule(config)
    optimizer = build_optimizer(config, plan)
    expected = {"adam": optim.Adam, "adamw": optim.AdamW, "adafactor": optim.Adafactor}
    assert isinstance(optimizer, expected.get(name, getattr(optim, "Muon", None)))
    if name != "adam":
        assert optimizer.weight_decay == 0.05
    layer = nn.Linear(4, 4)
    schedule = learning_rate_schedule(plan)
    before = layer.weight
    for k in range(1, 7):
        grads = {"weight": mx.ones((4, 4)), "bias": mx.ones((4,))}
        optimizer.update(layer, grads)
        mx.eval(layer.parameters(), optimizer.state)
        assert optimizer.learning_rate.item() == pytest.approx(float(schedule(mx.array(k - 1))))
        assert int(optimizer.step.item()) == k
    assert not mx.array_equal(before, layer.weight)  # it trained


def test_new_fields_are_validated_and_round_trip_on_the_wire():
    wire = {
        "lrSchedule": "cosine", "warmupRatio": 0.1, "lrFloorRatio": 0.1, "optimizer": "adamw",
        "weightDecay": 0.02, "keepBest": False, "earlyStopping": {"patience": 3, "minDelta": 0.01},
    }  # fmt: skip
    config = TrainingConfig.from_wire(wire)
    assert config.early_stopping == EarlyStopping(patience=3, min_delta=0.01)
    assert TrainingConfig.from_wire(config.to_wire()) == config
    assert {k: config.to_wire()[k] for k in wire} == wire
    assert TrainingConfig.from_wire({"earlyStopping": {"patience": 2}}).early_stopping == (
        EarlyStopping(patience=2, min_delta=0.0)
    )
    bad = [
        ({"lrSchedule": "step"}, "config.lrSchedule"),
        ({"optimizer": "sgd"}, "config.optimizer"),
        ({"warmupRatio": 1.5}, "config.warmupRatio"),
        ({"warmupSteps": -1}, "config.warmupSteps"),
        ({"lrFloorRatio": True}, "config.lrFloorRatio"),
        ({"keepBest": "yes"}, "config.keepBest"),
        ({"earlyStopping": 3}, "config.earlyStopping"),
        ({"earlyStopping": {"patience": 0}}, "config.earlyStopping.patience"),
        ({"earlyStopping": {"patience": 2, "minDelta": -1}}, "config.earlyStopping.minDelta"),
        ({"earlyStopping": {"patience": 2, "delta": 1}}, "config.earlyStopping"),
    ]
    for overrides, field in bad:
        with pytest.raises(InvalidParams) as error:
            TrainingConfig.from_wire(overrides)
        assert error.value.data["field"] == field, overrides
