"""The configuration explanation: each setting once, its stages in order, the final value."""

from __future__ import annotations

import re

from cortex_rpc.config.explain import STAGES, format_value
from cortex_rpc.config.smart import DatasetProfile, MachineProfile, propose_config, size_class_for
from cortex_rpc.config.training_config import camel_to_snake
from cortex_rpc.models.inspect import inspect_model

MACHINE = MachineProfile(backend="cpu", usable_memory_bytes=64 * 10**9)
DEMO_OVERRIDES = {"epochs": 70, "batchSize": 4, "learningRate": 1e-3, "loraRank": 16}


def chat(examples: int, mean_chars: float = 300.0) -> DatasetProfile:
    return DatasetProfile(
        examples=examples,
        size_class=size_class_for(examples),
        task_type="chat",
        mean_chars=mean_chars,
        max_chars=int(mean_chars * 2),
    )


def setting_lines(explanations: list[str]) -> dict[str, str]:
    lines = {}
    for line in explanations:
        match = re.match(r"^([a-z][A-Za-z]+) (\S+): ", line)
        if match:
            assert match.group(1) not in lines, f"{match.group(1)} told twice"
            lines[match.group(1)] = line
    return lines


def test_preset_dataset_override_each_setting_once_in_order(tiny_model):
    proposal = propose_config(inspect_model(tiny_model), chat(24), "quick", MACHINE, DEMO_OVERRIDES)
    lines = setting_lines(proposal.explanations)
    epochs = lines["epochs"]
    # The final value first, then each stage in order, with what it chose.
    assert epochs.startswith("epochs 70: tiny-model default 5; Quick preset 2")
    assert (
        epochs.index("Quick preset 2")
        < epochs.index("dataset 3")
        < epochs.index("your override 70")
    )
    assert "small dataset, 24 examples" in epochs
    assert lines["learningRate"].endswith("your override 1e-3 (unchanged)")
    assert lines["iterations"] == "iterations 420: = 70 epochs x 24 examples / batch 4"
    # No other line restates a setting's value (the old "Training for 3 epochs").
    others = [e for e in proposal.explanations if e not in lines.values()]
    assert not any(re.search(r"\d+ epochs?\b", e) for e in others), others
    # Each final value is the config's.
    wire = proposal.config.to_wire()
    for name, line in lines.items():
        value = line.split(":")[0].split(" ", 1)[1]
        assert value == format_value(camel_to_snake(name), wire[name]), (name, line)


def test_choices_carry_the_stages_in_order(tiny_model):
    proposal = propose_config(inspect_model(tiny_model), chat(24), "quick", MACHINE, DEMO_OVERRIDES)
    for choice in proposal.to_wire()["choices"]:
        stages = [STAGES.index(step["stage"]) for step in choice["steps"]]
        assert stages == sorted(stages), choice
        assert choice["value"] == proposal.config.to_wire()[choice["setting"]]


def test_characters_are_characters_and_tokens_tokens(tiny_model):
    # No tokenizer views: lengths come from characters, and the lines say which is which.
    proposal = propose_config(
        inspect_model(tiny_model), chat(24, mean_chars=2600), "balanced", MACHINE
    )
    text = "\n".join(proposal.explanations)
    assert "chars" not in text
    assert "mean 2600 characters > 2000 characters" in text
    short = propose_config(inspect_model(tiny_model), chat(24, mean_chars=100), "quick", MACHINE)
    line = next(e for e in short.explanations if e.startswith("maxSeqLength 128:"))
    assert "tokens estimated from characters: the longest example has 200 characters" in line
    assert "chars " not in line
