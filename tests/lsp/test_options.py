"""initializationOptions and workspace settings: defaults, and warnings for bad values."""

from __future__ import annotations

from cortex_rpc.options import (
    InitializationOptions,
    apply_settings,
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
    assert apply_settings(options, {"maxSeqLength": None}) == ({"max_seq_length"}, [])
    assert (options.model, options.max_seq_length) == ("tiny", None)
    assert apply_settings(options, {"model": None}) == ({"model"}, [])
    assert options.model is None
    assert apply_settings(options, {"model": None}) == (set(), [])  # unchanged: nothing to redo


def test_settings_accept_what_initialization_options_accept() -> None:
    options = InitializationOptions()
    changed, warnings = apply_settings(
        options,
        {
            "modelDirs": ["~/models"],
            "datasetFiles": ["**/*.jsonl"],
            "diagnosticsDebounceMs": 40,
            "defaultModel": "tiny",
            "serverPath": "cortex-rpc",  # an editor's own setting in the same section
        },
    )
    assert warnings == []
    assert changed == {"model_dirs", "dataset_files", "diagnostics_debounce_ms", "default_model"}
    assert options.model_dirs[0].endswith("/models") and not options.model_dirs[0].startswith("~")
    assert apply_settings(options, {"modelDirs": None, "datasetFiles": None})[0] == {
        "model_dirs",
        "dataset_files",
    }
    assert (options.model_dirs, options.dataset_files) == ([], None)


def test_bad_settings_keep_the_current_values() -> None:
    options = InitializationOptions(model_dirs=["/m"], diagnostics_debounce_ms=40)
    changed, warnings = apply_settings(
        options, {"modelDirs": "/x", "datasetFiles": [""], "diagnosticsDebounceMs": -1}
    )
    assert changed == set() and len(warnings) == 3
    assert (options.model_dirs, options.diagnostics_debounce_ms) == (["/m"], 40)
    assert "keeping 40" in warnings[1]


def test_the_home_changes_only_at_the_next_start() -> None:
    options = InitializationOptions(cortex_home="/a")
    changed, warnings = apply_settings(options, {"cortexHome": "/b"})
    assert (changed, options.cortex_home) == (set(), "/a")
    assert warnings == ["cortexHome changes apply when the server restarts"]
