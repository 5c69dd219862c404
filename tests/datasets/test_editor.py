"""Editor features: incremental updates equal a full re-check; hover, code actions, summary."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_rpc.datasets import validate_dataset
from cortex_rpc.datasets.editor import (
    DatasetDocument,
    code_actions,
    hover,
    is_dataset_document,
    summary,
)
from cortex_rpc.datasets.formats import decode

URI = "file:///tmp/data.jsonl"
LINES = [json.dumps({"prompt": f"question {i}", "response": f"answer {i}"}) for i in range(30)]
EDITS = [
    '{"prompt": "question 3", "response": "answer 3"}',
    '{"prompt": "x", "answer": "y"}',
    "",
    "{broken",
    '{"messages": [{"role": "user", "content": "u"}]}',
    '{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}',
    "\ufeff{",
]


def _full(doc: DatasetDocument):
    return validate_dataset(text=doc.text, format="jsonl")


def test_incremental_edits_equal_full_recheck():
    rng = random.Random(7)
    doc = DatasetDocument(URI, "\n".join(LINES) + "\n")
    for _ in range(60):
        line = rng.randrange(len(doc.lines))
        end = min(len(doc.lines) - 1, line + rng.randrange(3))
        change = (line, 0, end, len(doc.lines[end])) if rng.random() < 0.8 else (line, 1, line, 1)
        doc.apply_change(change, rng.choice(EDITS))
        incremental = doc.result()
        full = _full(doc)
        assert incremental.diagnostics == full.diagnostics
        assert (incremental.examples, incremental.shape) == (full.examples, full.shape)


def test_hover_actions_and_summary():
    text = "\n".join([*LINES[:5], '{"prompt": "x", "answer": "y"}', LINES[0]]) + "\n"
    doc = DatasetDocument(URI, text)
    assert "**prompt-response** record" in hover(doc, 0, 2)
    assert hover(doc, 7, 0) is None
    actions = code_actions(doc, (5, 0, 6, 0))
    assert actions[0]["title"] == 'Rename "answer" to "response"'
    assert actions[0]["edit"]["changes"][URI][0]["newText"] == '"response"'
    removal = code_actions(doc, (6, 0, 6, 0))[0]
    assert removal["edit"]["changes"][URI][0]["range"] == {
        "start": {"line": 6, "character": 0},
        "end": {"line": 7, "character": 0},
    }
    convert = [a for a in code_actions(doc, (1, 0, 1, 0)) if "chat" in a["title"]]
    assert json.loads(convert[0]["edit"]["changes"][URI][0]["newText"])["messages"][0] == {
        "role": "user",
        "content": "question 1",
    }
    assert summary(doc)["text"] == "7 examples · chat · 2 problems"


def _titles(doc: DatasetDocument, range_: tuple[int, int, int, int], only=None) -> list[str]:
    return [a["title"] for a in code_actions(doc, range_, only)]


def test_fixes_come_from_the_documents_own_diagnostics_in_the_range():
    comma = '{"prompt": "a", "response": "b"},'
    text = "\n".join([LINES[0], comma, "", '{"prompt": "x", "answer": "y"}', *LINES[1:5]]) + "\n"
    doc = DatasetDocument(URI, text)
    # eglot before the comma: the object before point, which ends where the comma starts.
    assert _titles(doc, (1, 0, 1, len(comma) - 1)) == ["Remove the trailing comma"]
    # A range over the line, and a cursor right after the comma.
    (fix,) = code_actions(doc, (1, 0, 2, 0))
    assert fix["title"] == "Remove the trailing comma" and fix["kind"] == "quickfix"
    assert fix["diagnostics"][0]["code"] == "trailing-comma"
    assert _titles(doc, (1, len(comma), 1, len(comma))) == ["Remove the trailing comma"]
    doc.apply_change((1, len(comma) - 1, 1, len(comma)), "")
    assert not [d for d in doc.result().diagnostics if d.code == "trailing-comma"]
    # A cursor on the blank line: its fix only, not those of the lines around it.
    assert _titles(doc, (2, 0, 2, 0)) == _titles(doc, (2, 0, 3, 0)) == ["Remove this blank line"]
    # A range over a whole line takes that line's diagnostics and none of the next line's.
    assert "Rename" not in " ".join(_titles(doc, (2, 0, 3, 0)))
    assert _titles(doc, (3, 0, 4, 0))[0] == 'Rename "answer" to "response"'
    assert _titles(doc, (3, 0, 3, 0)) == []  # before the key: nothing to rename there


def test_code_actions_honour_the_requested_kinds():
    text = "\n".join([*LINES[:5], '{"prompt": "x", "answer": "y"}']) + "\n"
    doc = DatasetDocument(URI, text)
    everything = code_actions(doc, (5, 0, 6, 0))
    assert {a["kind"] for a in everything} == {"quickfix"}
    assert _titles(doc, (5, 0, 6, 0), ["refactor"]) == []
    assert _titles(doc, (1, 0, 1, 0), ["refactor"]) == ["Convert this record to the chat shape"]
    assert _titles(doc, (1, 0, 1, 0), ["refactor.rewrite"]) == _titles(doc, (1, 0, 1, 0))
    assert _titles(doc, (1, 0, 1, 0), ["quickfix", "source"]) == []
    assert _titles(doc, (1, 0, 1, 0), ["refactor.extract"]) == []
    assert len(_titles(doc, (5, 0, 6, 0), ["quickfix"])) == len(everything)


VSCODE_DEFAULT = ["**/*.jsonl", "**/*{data,dataset,train,valid,test}*.{json,csv,txt}"]


@pytest.mark.parametrize(
    ("path", "patterns", "checked"),
    [
        ("/w/a/b.jsonl", None, True),
        ("/w/package.json", None, True),  # no patterns: every dataset extension
        ("/w/notes.md", None, False),
        ("/w/a/b.jsonl", VSCODE_DEFAULT, True),
        ("/w/package.json", VSCODE_DEFAULT, False),
        ("/w/my-train.json", VSCODE_DEFAULT, True),
        ("/w/test.csv", VSCODE_DEFAULT, True),
        ("/w/train/notes.txt", VSCODE_DEFAULT, False),  # * stays inside a name
        ("/w/deep/x.jsonl", ["*.jsonl"], True),  # no "/": the name, in any folder
        ("/w/deep/x.jsonl", ["w/*.jsonl"], False),  # with "/": the end of the path
        ("/w/x.jsonl", ["w/*.jsonl"], True),
        ("/w/d/e/x.json", ["/w/**/x.json"], True),
        ("/w/a1.json", ["a[0-9].json"], True),
        ("/w/ab.json", ["a[!b].json"], False),
        ("/w/a.jsonl.bak", ["*.jsonl"], False),
    ],
)
def test_dataset_file_patterns_match_as_editor_globs(path, patterns, checked):
    assert is_dataset_document("file://" + path, "json", patterns) is checked
    assert is_dataset_document("file://" + path, "jsonl", patterns)  # languageId jsonl: always


records = st.fixed_dictionaries(
    {
        "prompt": st.text(min_size=1).filter(str.strip),
        "response": st.text(min_size=1).filter(str.strip),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=5, max_size=12, unique_by=lambda r: (r["prompt"].lower(),)))
def test_random_valid_records_pass(examples):
    text = "".join(json.dumps(e, ensure_ascii=bool(len(e["prompt"]) % 2)) + "\n" for e in examples)
    result = validate_dataset(text=text, format="jsonl")
    assert result.ok and result.examples == len(examples)


@settings(max_examples=60, deadline=None)
@given(
    mutations=st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=3)), max_size=6),
    fmt=st.sampled_from(["jsonl", "json", "csv", "txt"]),
)
def test_byte_mutations_never_crash_and_stay_in_range(mutations, fmt, tmp_path_factory):
    data = bytearray(("\n".join(LINES[:8]) + "\n").encode())
    if fmt == "json":
        data = bytearray(json.dumps([json.loads(x) for x in LINES[:8]], indent=1).encode())
    for position, chunk in mutations:
        position %= len(data) + 1
        data[position : position + 1] = chunk
    path = tmp_path_factory.mktemp("m") / f"data.{fmt}"
    path.write_bytes(bytes(data))
    result = validate_dataset(path)
    # Positions refer to the text as the loader decodes it (UTF-8, or UTF-16/32 by their BOM).
    text = decode(bytes(data))[0].split("\n")
    for d in result.diagnostics:
        assert 0 <= d.start_line <= d.end_line < len(text)
        assert d.start_character >= 0 and d.end_character >= 0
        assert d.end_character <= len(text[d.end_line].encode("utf-16-le")) // 2


def test_a_big_document_is_published_first_from_one_streamed_pass(monkeypatch):
    """The early publish of a big JSONL document holds what the document's own one does."""
    from cortex_rpc.datasets import editor, parallel

    monkeypatch.setattr(editor, "OPENING_CHARS", 1000)
    monkeypatch.setattr(parallel, "PART_BYTES", 2000)
    rng = random.Random(4)
    lines = [
        json.dumps({"prompt": f"q{i % 50}", "completion": f"a{i}" if i % 7 else "a"})
        for i in range(300)
    ]
    for i in rng.sample(range(300), 20):
        lines[i] = rng.choice(["", '{"prompt": 1}', lines[i] + "\r", '{"messages": []}'])
    text = "\n".join(lines) + "\n"
    uri = "file:///data/train.json"  # a .json file of JSON Lines: the note is in both
    early = editor.opening_payload(uri, text, "json", 3, with_model=False)
    doc = DatasetDocument(uri, text, language_id="json")
    params, _ = editor.publish_payload(doc, 3)
    assert early is not None and early["version"] == 3
    assert early["diagnostics"] == params["diagnostics"] and len(early["diagnostics"]) > 20
    assert editor.opening_payload(uri, text[:900], "json", 3, with_model=False) is None
    pretty = json.dumps([json.loads(line) for line in lines[:40] if line.startswith("{")], indent=2)
    assert editor.opening_payload("file:///d.json", pretty * 3, "json", 1, with_model=False) is None
