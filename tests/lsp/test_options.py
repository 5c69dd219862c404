"""initializationOptions and workspace settings: defaults, and warnings for bad values."""

from __future__ import annotations

from cortex_rpc.options import (
    InitializationOptions,
    apply_training_options,
    parse_initialization_options,
)


def test_model_and_max_seq_length_are_read() -> None:
    options, warnings = parse_initialization_options({"model": "tiny", "maxSeqLength": 512})
    assert (options.model, options.max_seq_length, warnings) == ("tiny", 512, [])


def test_bad_training_options_are_warnings_and_keep_the_defaults() -> None:
    options, warnings = parse_initialization_options({"model": 3, "maxSeqLength": 8})
    assert (options.model, options.max_seq_length) == (None, None)
    assert len(warnings) == 2 and "maxSeqLength" in warnings[1]


def test_settings_change_only_what_they_name_and_null_clears() -> None:
    options = InitializationOptions(model="tiny", max_seq_length=512)
    assert apply_training_options(options, {"maxSeqLength": None}) == []
    assert (options.model, options.max_seq_length) == ("tiny", None)
    apply_training_options(options, {"model": None})
    assert options.model is None
