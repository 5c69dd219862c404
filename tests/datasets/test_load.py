"""load(): one read and one parse of a dataset, shared by every dataset entry point."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import threading
from pathlib import Path

import pytest

from cortex_rpc.datasets import (
    LoadedDataset,
    analyze_dataset,
    dataset_stats,
    load,
    load_text,
    prepare_dataset,
    validate_dataset,
)
from cortex_rpc.datasets.report import dataset_report
from cortex_rpc.errors import CortexError, InvalidParams

CSV = "prompt,response\n" + "".join(f"What is {i}?,It is {i}.\n" for i in range(12))
RECORD = '{{"prompt": "q{0}", "response": "a{0}"}}\n'


@pytest.fixture
def csv_as_txt(tmp_path: Path) -> Path:
    """A CSV file whose name says plain text."""
    path = tmp_path / "data.txt"
    path.write_text(CSV)
    return path


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch):
    """Count every open of a file: pathlib, open() and os.open all go through these."""
    counts: dict[Path, int] = {}

    def counted(real):
        def wrapper(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)):
                key = Path(os.fsdecode(file)).resolve()
                counts[key] = counts.get(key, 0) + 1
            return real(file, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(io, "open", counted(io.open))
    monkeypatch.setattr(builtins, "open", counted(builtins.open))
    monkeypatch.setattr(os, "open", counted(os.open))
    return lambda path: counts.get(Path(path).resolve(), 0)


def test_load_file(sample_dataset_path):
    loaded = load(sample_dataset_path)
    assert isinstance(loaded, LoadedDataset)
    assert loaded.path == sample_dataset_path and loaded.format == "jsonl"
    assert loaded.text == sample_dataset_path.read_text(encoding="utf-8")
    assert loaded.sha256 == hashlib.sha256(sample_dataset_path.read_bytes()).hexdigest()
    assert loaded.result.ok and loaded.result.examples == 24
    assert len(loaded.records) == 24 and loaded.shape == "prompt-response"
    assert loaded.check() is loaded


def test_load_reads_the_file_once(tmp_path, opens):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(RECORD.format(i) for i in range(10)))
    written = opens(path)
    loaded = load(path)
    assert opens(path) - written == 1
    prepare_dataset(loaded, tmp_path / "out")
    dataset_stats(loaded)
    analyze_dataset(loaded)
    dataset_report(loaded)
    validate_dataset(text=loaded.text)
    assert opens(path) - written == 1  # a loaded dataset is never read again
    prepare_dataset(path, tmp_path / "out2")
    assert opens(path) - written == 2  # one read for a path (was two: text, then sha256)


def test_loaded_dataset_is_what_was_read(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(RECORD.format(i) for i in range(10)))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load(path)
    path.write_text(RECORD.format("changed"))
    prepared = prepare_dataset(loaded, tmp_path / "out")
    assert prepared.sha256 == before and prepared.train_examples + prepared.valid_examples == 10


def test_sha256_is_of_the_exact_bytes(tmp_path):
    path = tmp_path / "odd.jsonl"
    data = b"\xef\xbb\xbf" + b"".join(
        b'{"prompt": "p\xff%d", "response": "r"}\r\n' % i for i in range(6)
    )
    path.write_bytes(data)
    loaded = load(path)
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert {"bom", "utf8-invalid", "crlf"} <= {d.code for d in loaded.result.diagnostics}


def test_tilde_expands_to_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data.jsonl").write_text("".join(RECORD.format(i) for i in range(10)))
    loaded = load("~/data.jsonl")
    assert loaded.path == tmp_path / "data.jsonl" and loaded.result.examples == 10
    assert validate_dataset("~/data.jsonl").examples == 10
    prepared = prepare_dataset("~/data.jsonl", tmp_path / "out")
    assert prepared.source == str(tmp_path / "data.jsonl")
    assert dataset_stats("~/data.jsonl").examples == 10


def test_csv_named_txt_with_format(csv_as_txt, tmp_path, tiny_model):
    from cortex_rpc.config.proposal import propose_for_model

    assert load(csv_as_txt).format == "csv"  # a .txt whose first line is a known CSV header
    loaded = load(csv_as_txt, "csv")
    assert loaded.format == "csv" and loaded.result.ok and len(loaded.records) == 12
    assert validate_dataset(csv_as_txt, format="csv").ok
    prepared = prepare_dataset(csv_as_txt, tmp_path / "out", format="csv")
    assert prepared.format == "csv" and prepared.train_examples + prepared.valid_examples == 12
    stats = dataset_stats(csv_as_txt, "csv")
    assert stats.examples == 12 and stats.task_type == "chat"
    proposal = propose_for_model(str(tiny_model), dataset=str(csv_as_txt), dataset_format="csv")
    assert proposal.to_wire()["dataset"]["examples"] == 12
    proposal = propose_for_model(str(tiny_model), dataset=str(csv_as_txt))
    assert proposal.to_wire()["dataset"]["examples"] == 12


def test_proposal_from_a_loaded_dataset(sample_dataset_path, tiny_model, opens):
    from cortex_rpc.config.proposal import current_machine, propose_for_model

    machine = current_machine()  # one reading of the memory available, for both proposals
    from_path = propose_for_model(
        str(tiny_model), dataset=str(sample_dataset_path), machine=machine
    )
    loaded = load(sample_dataset_path)
    reads = opens(sample_dataset_path)
    from_loaded = propose_for_model(str(tiny_model), dataset=loaded, machine=machine)
    assert opens(sample_dataset_path) == reads
    assert from_loaded.to_wire() == from_path.to_wire()


def test_validate_is_the_loaded_result(tmp_path, sample_dataset_path):
    assert validate_dataset(sample_dataset_path) == load(sample_dataset_path).validation()
    path = tmp_path / "many.jsonl"  # 1,200 duplicate warnings, then errors past the 1,000th
    same = json.dumps({"prompt": "same", "response": "same"}) + "\n"
    path.write_text(same * 1201 + '{"prompt": "x"}\n' * 3)
    loaded = load(path)
    result = validate_dataset(path)
    assert result == loaded.validation()
    assert len(result.diagnostics) == 1000 and result.truncated
    assert len(loaded.result.diagnostics) == loaded.result.total == result.total
    assert result.errors == loaded.result.errors == 3
    assert loaded.validation(limit=5).diagnostics == loaded.result.diagnostics[:5]
    text = path.read_text()
    assert validate_dataset(text=text) == load_text(text).validation()
    with pytest.raises(CortexError) as error:  # the errors after the first 1000 are found
        loaded.check()
    assert error.value.data["errors"] == 3 and len(error.value.data["diagnostics"]) == 3


def test_check_raises_dataset_invalid(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b", "response": 3}\n')
    loaded = load(path)
    with pytest.raises(CortexError) as error:
        loaded.check()
    first = [d for d in loaded.result.diagnostics if d.severity == "error"][0]
    assert error.value.code == "dataset-invalid"
    assert str(error.value) == (
        f"bad.jsonl has {loaded.result.errors} error(s); first at line 1: {first.message}"
    )
    assert error.value.data["path"] == str(path)
    assert error.value.data["errors"] == loaded.result.errors
    assert error.value.data["diagnostics"][0] == first.to_wire()
    for call in (
        lambda: prepare_dataset(path, tmp_path / "out"),
        lambda: dataset_stats(path),
    ):
        with pytest.raises(CortexError) as again:
            call()
        assert (str(again.value), again.value.data) == (str(error.value), error.value.data)
    with pytest.raises(CortexError) as from_text:
        load_text(path.read_text()).check()
    assert str(from_text.value).startswith("The text has") and "path" not in from_text.value.data


def test_load_text():
    loaded = load_text("".join(RECORD.format(i) for i in range(6)))
    assert (loaded.path, loaded.sha256, loaded.format) == (None, None, "jsonl")
    assert loaded.result.examples == 6
    assert load_text(CSV, "csv").result.ok
    with pytest.raises(ValueError):  # prepared files record their source file and its sha256
        prepare_dataset(loaded, "unused")


@pytest.mark.parametrize("name", ["missing.jsonl", "folder"])
def test_missing_file(tmp_path, name):
    (tmp_path / "folder").mkdir()
    for call in (
        lambda: load(tmp_path / name),
        lambda: validate_dataset(tmp_path / name),
        lambda: prepare_dataset(tmp_path / name, tmp_path / "out"),
        lambda: dataset_stats(tmp_path / name),
        lambda: analyze_dataset(tmp_path / name),
        lambda: dataset_report(tmp_path / name),
    ):
        with pytest.raises(CortexError) as error:
            call()
        assert error.value.code == "dataset-not-found"
        assert error.value.data["path"] == str(tmp_path / name)


def test_bad_format(tmp_path, sample_dataset_path, tiny_model):
    from cortex_rpc.config.proposal import propose_for_model

    for call in (
        lambda: load(sample_dataset_path, "xml"),
        lambda: load(tmp_path / "missing.jsonl", "xml"),  # the format is checked first
        lambda: load_text("{}", "xml"),
        lambda: validate_dataset(sample_dataset_path, format="xml"),
        lambda: prepare_dataset(sample_dataset_path, tmp_path / "out", format="xml"),
        lambda: dataset_stats(sample_dataset_path, "xml"),
        lambda: propose_for_model(
            str(tiny_model), dataset=str(sample_dataset_path), dataset_format="xml"
        ),
    ):
        with pytest.raises(InvalidParams) as error:
            call()
        assert error.value.data["field"] == "format"
    with pytest.raises(ValueError):  # a loaded dataset keeps the format it was read in
        prepare_dataset(load(sample_dataset_path), tmp_path / "out", format="csv")
    assert dataset_stats(load(sample_dataset_path), "jsonl").examples == 24


def test_cancel(sample_dataset_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CortexError) as error:
        load(sample_dataset_path, cancel=cancel)
    assert error.value.code == "cancelled"


def test_context_length_reaches_the_records(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text("".join(RECORD.format("word " * 50 + str(i)) for i in range(6)))
    assert "too-long" not in {d.code for d in load(path).result.diagnostics}
    codes = {d.code for d in load(path, context_length=10).result.diagnostics}
    assert "too-long" in codes
