"""Files as people really have them: each read (or named) with one diagnostic of its own."""

from __future__ import annotations

import gzip
import json

import pytest

from cortex_rpc.datasets.editor import DatasetDocument, code_actions
from cortex_rpc.datasets.load import load, load_text
from cortex_rpc.datasets.prepare import prepare_dataset
from cortex_rpc.errors import CortexError

RECORDS = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(5)]
JSONL = "".join(json.dumps(r) + "\n" for r in RECORDS)
CSV = "prompt,response\n" + "".join(f"q{i},a{i}\n" for i in range(5))
ALPACA = "".join(
    f"### Instruction:\nDo {i}\n\n### Input:\nx{i}\n\n### Response:\nDone {i}\n\n" for i in range(5)
)
PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
ALPACA_TEMPLATE = "".join(
    f"{PREAMBLE}\n\n### Instruction:\nDo {i}\n\n### Response:\nDone {i}\n\n" for i in range(5)
)
ALPACA_HEADER = f"{PREAMBLE}\n\n{ALPACA}"
PRETTY = "".join(json.dumps(r, indent=2) + "\n" for r in RECORDS)
TREE = {
    "message_id": "m1",
    "parent_id": None,
    "role": "prompter",
    "text": "Hi",
    "replies": [
        {"message_id": "m2", "parent_id": "m1", "role": "assistant", "text": "Hello", "replies": []}
    ],
}
EXPORT = "".join(
    json.dumps(
        {
            "message_id": f"m{i}",
            "parent_id": None if i == 0 else "m0",
            "message_tree_id": "t",
            "role": "prompter" if i == 0 else "assistant",
            "text": "x",
        }
    )
    + "\n"
    for i in range(5)
)
SPLITS = {
    "train": RECORDS,
    "validation": [{"prompt": "v", "response": "w"}],
    "test": [{"prompt": "t", "response": "u"}],
}

# (file name, bytes, format, shape, records, [(code, start line, char, end line, char)])
WILD = [
    ("u16bom.jsonl", b"\xff\xfe" + JSONL.encode("utf-16-le"), "jsonl", "prompt-response", 5,
     [("utf16", 0, 0, 0, 34)]),
    ("u16.jsonl", JSONL.encode("utf-16-le"), "jsonl", "prompt-response", 5,
     [("utf16", 0, 0, 0, 34)]),
    ("u32.jsonl", JSONL.encode("utf-32"), "jsonl", "prompt-response", 5, [("utf32", 0, 0, 0, 34)]),
    ("data.jsonl.gz", gzip.compress(JSONL.encode()), "jsonl", "prompt-response", 5,
     [("gzip", 0, 0, 0, 0)]),
    ("data.tsv", CSV.replace(",", "\t").encode(), "csv", "prompt-response", 5, []),
    ("semi.csv", CSV.replace(",", ";").encode(), "csv", "prompt-response", 5,
     [("csv-delimiter", 0, 0, 0, 15)]),
    ("alpaca.txt", ALPACA.encode(), "txt", "alpaca", 5, []),
    ("template.txt", ALPACA_TEMPLATE.encode(), "txt", "alpaca", 5, [("txt-preamble", 0, 0, 0, 105)]),
    ("header.txt", ALPACA_HEADER.encode(), "txt", "alpaca", 5,
     [("txt-preamble-ignored", 0, 0, 0, 105)]),
    ("paragraphs.txt", b"First paragraph here.\nStill first.\n\nSecond paragraph.\n", "txt",
     "prompt-response", 0, [("txt-no-markers", 0, 0, 0, 21)]),
    ("repr.jsonl", ("{'prompt': 'a', 'response': None, 'ok': True}\n" + JSONL).encode(), "jsonl",
     "prompt-response", 5, [("python-repr", 0, 1, 0, 2)]),
    ("hf.json", JSONL.encode(), "jsonl", "prompt-response", 5, [("jsonl-in-json", 0, 0, 0, 34)]),
    ("splits.json", json.dumps(SPLITS, indent=1).encode(), "json", "prompt-response", 7, []),
    ("pretty.jsonl", PRETTY.encode(), "jsonl", "prompt-response", 5, [("pretty-json", 0, 0, 3, 1)]),
    ("tree.json", json.dumps(TREE, indent=2).encode(), "json", "prompt-response", 0,
     [("oasst-tree", 0, 0, 14, 1)]),
    ("export.jsonl", EXPORT.encode(), "jsonl", "prompt-response", 0, [("oasst-tree", 0, 0, 0, 96)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "data", "fmt", "shape", "count", "expected"), WILD, ids=[w[0] for w in WILD]
)
def test_wild_file_is_read_or_named(tmp_path, name, data, fmt, shape, count, expected):
    path = tmp_path / name
    path.write_bytes(data)
    loaded = load(path)
    assert (loaded.format, loaded.shape, len(loaded.records)) == (fmt, shape, count)
    found = [
        (d.code, d.start_line, d.start_character, d.end_line, d.end_character)
        for d in loaded.result.diagnostics
    ]
    assert found == expected


ROOT_CAUSE_FILES = [
    ("paragraphs.txt", "txt-no-markers", (0, 0, 0, 21)),
    ("tree.json", "oasst-tree", (0, 0, 14, 1)),
    ("export.jsonl", "oasst-tree", (0, 0, 0, 96)),
    ("header.csv", "csv-header", (0, 0, 0, 3)),
    ("broken.json", "json-syntax", (0, 33, 0, 34)),
]
ROOT_CAUSE_DATA = {
    "header.csv": b"a,b\nx,y\n",
    "broken.json": b'[{"prompt": "a", "response": "b" "x"}]\n',
}


@pytest.mark.parametrize(("name", "code", "where"), ROOT_CAUSE_FILES)
def test_one_diagnostic_for_a_file_level_root_cause(tmp_path, name, code, where):
    """The root cause alone: not also the no-examples / too-few-examples it causes."""
    data = ROOT_CAUSE_DATA.get(name) or next(w[1] for w in WILD if w[0] == name)
    path = tmp_path / name
    path.write_bytes(data)
    loaded = load(path)
    found = [
        (d.code, (d.start_line, d.start_character, d.end_line, d.end_character))
        for d in loaded.result.diagnostics
    ]
    assert found == [(code, where)]
    with pytest.raises(CortexError) as error:
        prepare_dataset(path, tmp_path / "out")
    (message,) = [d.message for d in loaded.result.diagnostics]
    assert error.value.message.endswith(message)
    assert [d["code"] for d in error.value.data["diagnostics"]] == [code]


def test_a_file_of_broken_jsonl_lines_keeps_no_examples_after_them(tmp_path):
    """Per-line errors are not file-level: no-examples stays, quoted after the first error."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a" "response": "b"}\n')
    codes = [d.code for d in load(path).result.diagnostics]
    assert codes == ["no-examples", "json-syntax"]
    with pytest.raises(CortexError) as error:
        prepare_dataset(path, tmp_path / "out")
    assert "Invalid JSON" in error.value.message


def test_a_preamble_repeated_per_record_is_kept_in_each_prompt(tmp_path):
    """Alpaca's prompt template: the preamble before every block is prompt text, not answer."""
    path = tmp_path / "template.txt"
    path.write_text(ALPACA_TEMPLATE)
    loaded = load(path)
    assert [r.data for r in loaded.records] == [
        {"instruction": f"{PREAMBLE}\n\nDo {i}", "output": f"Done {i}"} for i in range(5)
    ]
    assert [(r.line, r.line + r.end_line) for r in loaded.records] == [
        (2 + 8 * i, 6 + 8 * i) for i in range(5)
    ]
    (diagnostic,) = loaded.result.diagnostics
    assert diagnostic.severity == "information" and "kept" in diagnostic.message
    prepare_dataset(path, tmp_path / "out")
    lines = [
        json.loads(line)
        for name in ("train.jsonl", "valid.jsonl")
        for line in (tmp_path / "out" / name).read_text().splitlines()
    ]
    assert sorted(r["messages"][0]["content"] for r in lines) == [
        f"{PREAMBLE}\n\nDo {i}" for i in range(5)
    ]
    assert all(PREAMBLE not in r["messages"][1]["content"] for r in lines)


def test_a_preamble_once_at_the_top_is_reported_as_ignored(tmp_path):
    path = tmp_path / "header.txt"
    path.write_text(ALPACA_HEADER)
    loaded = load(path)
    assert [r.data for r in loaded.records] == [
        {"instruction": f"Do {i}", "input": f"x{i}", "output": f"Done {i}"} for i in range(5)
    ]
    (diagnostic,) = loaded.result.diagnostics
    assert diagnostic.severity == "warning" and "ignored by training" in diagnostic.message
    assert load(path, "txt").result.diagnostics == loaded.result.diagnostics


def test_a_preamble_before_some_records_is_kept_in_those_only():
    blocks = [f"### Instruction:\nDo {i}\n\n### Response:\nDone {i}\n\n" for i in range(3)]
    text = f"{PREAMBLE}\n\n{blocks[0]}{blocks[1]}{PREAMBLE}\n\n{blocks[2]}"
    loaded = load_text(text, "txt")
    assert [r.data["instruction"] for r in loaded.records] == [
        f"{PREAMBLE}\n\nDo 0",
        "Do 1",
        f"{PREAMBLE}\n\nDo 2",
    ]
    assert loaded.records[1].data["output"] == "Done 1"  # the copy is not read as its answer
    (diagnostic,) = loaded.result.diagnostics[1:]  # after too-few-examples
    assert (diagnostic.code, diagnostic.start_line, diagnostic.end_character) == (
        "txt-preamble",
        0,
        105,
    )
    assert "before 2 of the 3" in diagnostic.message


def test_a_one_record_file_keeps_its_preamble():
    text = f"{PREAMBLE}\n### Instruction:\nDo it\n### Response:\nDone\n"
    loaded = load_text(text)
    assert loaded.format == "txt"
    assert loaded.records[0].turns == [("user", f"{PREAMBLE}\n\nDo it"), ("assistant", "Done")]
    assert [(d.code, d.start_line, d.end_character) for d in loaded.result.diagnostics] == [
        ("too-few-examples", 0, 105),
        ("txt-preamble", 0, 105),
    ]


def test_python_repr_message_names_the_cause(tmp_path):
    path = tmp_path / "repr.jsonl"
    path.write_text("{'prompt': 'a', 'response': 'b'}\n" + JSONL)
    (diagnostic,) = load(path).result.diagnostics
    assert diagnostic.severity == "error" and "Python dict" in diagnostic.message
    assert "double quotes" in diagnostic.message


def test_alpaca_markers_become_instruction_input_output(tmp_path):
    path = tmp_path / "alpaca.txt"
    path.write_text(ALPACA)
    first = load(path).records[0]
    assert first.data == {"instruction": "Do 0", "input": "x0", "output": "Done 0"}


@pytest.mark.parametrize("name", ["u16bom.jsonl", "data.jsonl.gz", "semi.csv", "hf.json"])
def test_prepare_reads_the_wild_file(tmp_path, name):
    data = next(w[1] for w in WILD if w[0] == name)
    path = tmp_path / name
    path.write_bytes(data)
    prepared = prepare_dataset(path, tmp_path / "out")
    assert prepared.train_examples + prepared.valid_examples == 5
    lines = (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line)["messages"][0]["role"] == "user" for line in lines)


def test_prepare_uses_the_files_validation_split(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(SPLITS, indent=1))
    prepared = prepare_dataset(path, tmp_path / "out")
    assert (prepared.train_examples, prepared.valid_examples) == (5, 1)
    valid = (tmp_path / "out" / "valid.jsonl").read_text()
    assert json.loads(valid) == {
        "messages": [{"role": "user", "content": "v"}, {"role": "assistant", "content": "w"}]
    }
    train = [
        json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    ]
    assert [m["messages"][0]["content"] for m in train] == [f"q{i}" for i in range(5)]


def test_pretty_json_quick_fix_rewrites_the_document_as_jsonl():
    doc = DatasetDocument("file:///x/pretty.jsonl", PRETTY)
    (action,) = [a for a in code_actions(doc, (0, 0, 0, 0)) if a["kind"] == "quickfix"]
    (change,) = action["edit"]["changes"]["file:///x/pretty.jsonl"]
    assert change["range"] == {
        "start": {"line": 0, "character": 0},
        "end": {"line": 20, "character": 0},
    }
    assert change["newText"] == JSONL
    doc.apply_change((0, 0, 20, 0), change["newText"])
    assert doc.result().diagnostics == [] and doc.result().examples == 5


def test_editing_pretty_json_matches_a_fresh_check():
    doc = DatasetDocument("file:///x/pretty.jsonl", PRETTY)
    doc.apply_change((1, 2, 1, 10), '"answer"')
    fresh = DatasetDocument("file:///x/pretty.jsonl", doc.text)
    assert doc.result().diagnostics == fresh.result().diagnostics
    assert "pretty-json" in [d.code for d in doc.result().diagnostics]


def test_a_gzip_that_inflates_past_the_limit_is_refused(tmp_path, monkeypatch):
    """A small .gz may claim gigabytes: decompression stops at the limit with a clear error."""
    import gzip
    import importlib

    from cortex_rpc.errors import CortexError

    load_module = importlib.import_module("cortex_rpc.datasets.load")  # the package exports load()

    record = b'{"prompt": "What is 1?", "response": "One."}\n'
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(record * 200))
    monkeypatch.setattr(load_module, "MAX_DECOMPRESSED_BYTES", 1000)
    with pytest.raises(CortexError) as error:
        load_module.load(path)
    assert error.value.code == "dataset-too-large"
    # Concatenated members (gzip's own format) within the limit read whole.
    monkeypatch.setattr(load_module, "MAX_DECOMPRESSED_BYTES", 1 << 20)
    path.write_bytes(gzip.compress(record * 3) + gzip.compress(record * 2))
    assert load_module.load(path).result.examples == 5
