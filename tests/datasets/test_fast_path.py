"""The fast path of validation gives exactly the diagnostics and records of the full path.

The fast path checks a clean record on plain objects only and keeps a digest of it; the
full path (``formats.FAST_PATH = False``) checks every record with positions. Both run over
the inputs of the dataset tests (their string literals, the wild files, the tool and loss
fixtures), the editor fuzz corpus and generated tool-calling records, and every diagnostic
(code, range, message, severity, data), every record state and every prepared record must
be the same.
"""

from __future__ import annotations

import ast
import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_rpc.datasets import formats, load, load_text, parallel, validate_dataset
from cortex_rpc.datasets.prepare import prepared_records
from tests.datasets import test_loss as loss_fixtures
from tests.datasets import test_tools as tool_fixtures
from tests.datasets import test_wild_files as wild_fixtures
from tests.reliability import test_editor_fuzz as editor_fuzz

HERE = Path(__file__).parent
FORMATS = (None, "jsonl", "json", "csv", "txt")
CASES = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _literals(path: Path) -> list[str]:
    """Return the string literals of a test module: the texts and lines its tests check."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 1:
            found.append(node.value)
    return sorted(set(found))


LITERAL_FILES = sorted(HERE.glob("test_*.py")) + [
    HERE.parent / "reliability" / "test_editor_fuzz.py",
    HERE.parent / "reliability" / "test_hostile_inputs.py",
]
LITERALS = {path.name: _literals(path) for path in LITERAL_FILES}


def _state_view(state: formats.RecordState) -> tuple:
    return (
        state.line,
        state.end_line,
        state.end_character,
        state.shape,
        state.is_record,
        state.blank,
        state.crlf,
        [(d.to_wire(), d.severity) for d in state.diagnostics],
        state.turns,
        state.exact,
        state.norm,
        state.chars,
        json.dumps(state.data, sort_keys=True, default=repr),
        state.split,
    )


def _result_view(result) -> tuple:
    return (
        result.to_wire(),
        result.errors,
        result.warnings,
        [d.severity for d in result.diagnostics],
    )


def _prepared(states: list[formats.RecordState]) -> Any:
    try:
        return prepared_records([s for s in states if s.turns is not None and not s.has_error])
    except Exception as error:  # noqa: BLE001 - the same failure either way is fine
        return repr(error)


def _views(run, monkeypatch: pytest.MonkeyPatch, fast: bool) -> tuple:
    monkeypatch.setattr(formats, "FAST_PATH", fast)
    try:
        validated = _result_view(run(validate=True))
    except Exception as error:  # noqa: BLE001 - the same failure either way is fine
        validated = repr(error)
    try:
        loaded = run(validate=False)
    except Exception as error:  # noqa: BLE001
        return validated, repr(error)
    return validated, (
        _result_view(loaded.result),
        [_state_view(s) for s in loaded.states],
        _prepared(loaded.states),
    )


def assert_same_text(text: str, monkeypatch: pytest.MonkeyPatch, fmt: str | None = None) -> None:
    def run(validate: bool):
        if validate:
            return validate_dataset(text=text, format=fmt, context_length=64)
        return load_text(text, fmt, context_length=64)

    fast = _views(run, monkeypatch, True)
    full = _views(run, monkeypatch, False)
    assert fast == full, (text[:200], fmt)


def assert_same_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also checked in parts of a few lines each, in parallel processes (``parallel.py``)."""

    def run(validate: bool):
        return validate_dataset(path) if validate else load(path)

    fast = _views(run, monkeypatch, True)
    full = _views(run, monkeypatch, False)
    assert fast == full, path.name
    monkeypatch.setattr(parallel, "PART_BYTES", max(1, path.stat().st_size // 3))
    monkeypatch.setenv("CORTEX_VALIDATION_WORKERS", "3")
    in_parts = _views(run, monkeypatch, True)
    assert in_parts == fast, path.name


@pytest.mark.parametrize("module", sorted(LITERALS))
def test_every_literal_of_the_dataset_tests(module, monkeypatch):
    literals = LITERALS[module]
    for text in literals:
        for fmt in FORMATS:
            assert_same_text(text, monkeypatch, fmt)
    # All at once, one per line: duplicates, mixed shapes, blank lines across records.
    lines = [t for t in literals if "\n" not in t]
    assert_same_text("\n".join(lines + lines[:20]) + "\n", monkeypatch, "jsonl")


@pytest.mark.parametrize("wild", wild_fixtures.WILD, ids=[w[0] for w in wild_fixtures.WILD])
def test_wild_files(wild, tmp_path, monkeypatch):
    name, data = wild[0], wild[1]
    path = tmp_path / name
    path.write_bytes(data)
    assert_same_file(path, monkeypatch)


@pytest.mark.parametrize("name", sorted(wild_fixtures.ROOT_CAUSE_DATA))
def test_root_cause_files(name, tmp_path, monkeypatch):
    path = tmp_path / name
    path.write_bytes(wild_fixtures.ROOT_CAUSE_DATA[name])
    assert_same_file(path, monkeypatch)


def test_the_bundled_sample_dataset(sample_dataset_path, monkeypatch):
    assert_same_file(sample_dataset_path, monkeypatch)


def _jsonl(records: list[Any]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def test_tool_and_loss_fixtures(monkeypatch):
    for make, _, _ in tool_fixtures.FORMS.values():
        assert_same_text(_jsonl([make(i) for i in range(6)] + [make(0)]), monkeypatch)
    for fmt, records in loss_fixtures.SOURCES.values():
        assert_same_text(_jsonl(records * 2), monkeypatch, fmt if fmt == "jsonl" else None)


def _benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "benchmark_datasets", HERE.parent.parent / "benchmarks" / "datasets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_benchmark_file(tmp_path, monkeypatch):
    """The benchmark's chat and tool-calling records with 1 % defects, streamed from a file."""
    path = tmp_path / "bench.jsonl"
    _benchmark().generate(path, 3000)
    text = path.read_text()
    rng = random.Random(3)
    lines = text.split("\n")
    for _ in range(60):  # duplicates, near-duplicates, CRLF, blank lines
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i] = rng.choice([lines[j], lines[j].upper(), lines[j] + "\r", "", " "])
    path.write_text("\n".join(lines))
    assert_same_file(path, monkeypatch)


# -- generated tool-calling records, mutated --------------------------------------------------

VALUES = [None, True, 0, 1, 2.5, "", " ", "x", "{}", '{"city": "Paris"}', [], {}, ["a"]]


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*path, index))
    return out


@st.composite
def tool_records(draw) -> dict:
    bench = draw(st.integers(0, 10**6))
    rng = random.Random(bench)
    module = BENCHMARK
    sources = [
        module.tool_record(rng, bench),
        module.good_record(rng, bench),
        tool_fixtures.loop(bench),
        tool_fixtures.legacy(bench),
        tool_fixtures.sharegpt(bench, True),
        tool_fixtures.sharegpt(bench, False),
    ]
    record = copy.deepcopy(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(record) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = record
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["delete", "set", "role", "copy"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "set":
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(VALUES)))
        elif action == "role" and isinstance(parent, dict):
            parent[path[-1]] = draw(
                st.sampled_from(["user", "assistant", "system", "tool", "function", "bot", "gpt"])
            )
        elif action == "copy" and isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
    return record


BENCHMARK = _benchmark()


@CASES
@given(st.lists(tool_records(), min_size=1, max_size=6))
def test_generated_tool_calling_records(monkeypatch, records):
    text = _jsonl(records + records[:1])
    assert_same_text(text, monkeypatch)
    assert_same_text(json.dumps(records, indent=1), monkeypatch, "json")


# -- the editor fuzz corpus ------------------------------------------------------------------


@CASES
@given(editor_fuzz.edit_sessions())
def test_editor_fuzz_corpus(monkeypatch, session):
    text, _, final = session
    assert_same_text(text, monkeypatch)
    assert_same_text(final, monkeypatch, "jsonl")


@CASES
@given(st.lists(st.sampled_from(editor_fuzz.FRAGMENTS), max_size=12))
def test_fuzz_fragments_joined(monkeypatch, fragments):
    assert_same_text("\n".join(fragments), monkeypatch, "jsonl")
    assert_same_text("".join(fragments), monkeypatch)


EDGE_FILES = {
    "empty.jsonl": b"",
    "blank.jsonl": b"\n\n \n",
    "no-newline.jsonl": b'{"prompt": "a", "response": "b"}',
    "crlf.jsonl": b'{"prompt": "a", "response": "b"}\r\n{"prompt": "a", "response": "b"}\r\n',
    "bom.jsonl": b'\xef\xbb\xbf{"prompt": "a", "response": "b"}\n',
    "late-invalid-utf8.jsonl": b'{"prompt": "a", "response": "b"}\n' * 3000
    + b'{"prompt": "\xff", "response": "b"}\n',
    "lone-cr.jsonl": b'{"prompt": "a", "response": "b"}\r{"text": "x"}\n',
    "oasst-late.jsonl": b'\n\n{"message_id": "1", "parent_id": null, "text": "hi"}\n',
}


@pytest.mark.parametrize("name", sorted(EDGE_FILES))
def test_streamed_edge_files(name, tmp_path, monkeypatch):
    path = tmp_path / name
    path.write_bytes(EDGE_FILES[name])
    assert_same_file(path, monkeypatch)


def test_a_format_given_overrides_the_extension(tmp_path, monkeypatch):
    path = tmp_path / "table.jsonl"
    path.write_text("prompt,response\n" + "".join(f"q{i},a{i}\n" for i in range(6)))

    def run(validate: bool):
        return validate_dataset(path, format="csv") if validate else load(path, "csv")

    fast = _views(run, monkeypatch, True)
    assert fast == _views(run, monkeypatch, False)
    assert fast[0][0]["format"] == "csv"


@given(
    st.lists(
        st.text(
            alphabet=st.sampled_from(list("aAzZ \t\n\r\x0b\x0c\x1c\x1f\x00\x85\xa0\u2028é\u212aİ")),
            max_size=12,
        ),
        min_size=1,
        max_size=4,
    )
)
@CASES
def test_the_normalised_digest_is_that_of_the_split_words(texts):
    """The shortcut for single-spaced ASCII text digests exactly the text the words give."""
    turns = [("user", text) for text in texts]
    joined = " \x00 ".join(texts)
    if joined.count("\x00") < len(texts):
        words = (" " + " ".join(joined.lower().split())).encode("utf-8", "surrogatepass")
    else:
        words = "\x1f".join(" ".join(t.lower().split()) for t in texts).encode()
    assert formats.turn_digests(turns)[1] == formats.xxh3_128_digest(words)
