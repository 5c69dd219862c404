"""Validation: a table of broken inputs with their exact code and range, every format/shape."""

from __future__ import annotations

import json

import pytest

from cortex_rpc.datasets import validate_dataset
from cortex_rpc.datasets.diagnostics import CODES
from cortex_rpc.errors import CortexError, InvalidParams

GOOD = '{"prompt": "What is Python?", "response": "A programming language."}'
FILLER = "".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(6))

# (text placed before 6 good records, code, (start line, start char, end line, end char))
BROKEN = [
    ('{"prompt": "a", "answer": "b"}\n', "missing-field", (0, 16, 0, 24)),
    ('{"prompt": "a", "response": "b",}\n', "trailing-comma", (0, 31, 0, 32)),
    ('{"prompt": "a", "response": "b"},\n', "trailing-comma", (0, 32, 0, 33)),
    ('{"prompt": "a" "response": "b"}\n', "json-syntax", (0, 15, 0, 16)),
    ('{"prompt": "a", "response": "  "}\n', "empty-field", (0, 28, 0, 32)),
    ('{"prompt": 3, "response": "b"}\n', "wrong-type", (0, 11, 0, 12)),
    ("[1, 2]\n", "wrong-type", (0, 0, 0, 6)),
    ('{"foo": 1}\n', "unknown-shape", (0, 0, 0, 10)),
    ('{"prompt": "a", "response": "b", "id": 7}\n', "unknown-key", (0, 33, 0, 37)),
    ('{"messages": [{"role": "bot", "content": "x"}]}\n', "unknown-role", (0, 23, 0, 28)),
    ('{"messages": [{"role": "user", "content": "x"}]}\n', "no-assistant", (0, 13, 0, 47)),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}, '
        '{"role": "assistant", "content": "z"}]}\n',
        "role-order",
        (0, 57, 0, 63),
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}, '
        '{"role": "assistant", "content": "z"}]}\n',
        "role-order",
        (0, 57, 0, 65),
    ),
    (
        '{"messages": [{"role": "user"}, {"role": "assistant", "content": "z"}]}\n',
        "missing-field",
        (0, 14, 0, 30),
    ),
    ('{"messages": []}\n', "empty-field", (0, 13, 0, 15)),
    ("\n", "blank-line", (0, 0, 0, 0)),
    ('{"prompt": "q0", "response": "a0"}\n', "duplicate", (1, 0, 1, 34)),
    ('{"prompt": "Q0 ", "response": "A0"}\n', "near-duplicate", (1, 0, 1, 34)),
    ('{"text": "' + "x" * 2001 + '"}\n', "long-example", (0, 0, 0, 2013)),
    ('{"text": "plain"}\n', "mixed-shapes", (0, 0, 0, 17)),
    ('\ufeff{"prompt": "a", "response": "b"}\n', "bom", (0, 0, 0, 1)),
    ('{"prompt": "a", "response": "b"}\r\n', "crlf", (0, 0, 0, 32)),
    ('{"prompt": "é😀", "response": 5}\n', "wrong-type", (0, 30, 0, 31)),  # UTF-16: the emoji is 2
]


@pytest.mark.parametrize(
    ("prefix", "code", "expected"), BROKEN, ids=[f"{i}-{c}" for i, (_, c, _) in enumerate(BROKEN)]
)
def test_broken_input_has_exact_code_and_range(prefix, code, expected):
    result = validate_dataset(text=prefix + FILLER, format="jsonl")
    found = [
        (d.start_line, d.start_character, d.end_line, d.end_character)
        for d in result.diagnostics
        if d.code == code
    ]
    assert expected in found, [
        (d.code, d.start_line, d.start_character, d.end_line, d.end_character)
        for d in result.diagnostics
    ]
    assert result.ok == all(d.severity != "error" for d in result.diagnostics)
    assert CODES[code] in ("error", "warning", "information")


def test_sample_dataset_is_clean(sample_dataset_path):
    result = validate_dataset(sample_dataset_path)
    assert result.ok and result.examples == 24 and result.diagnostics == []
    assert result.to_wire()["total"] == 0


def test_every_shape_is_accepted():
    records = [
        {"prompt": "p", "response": "r"},
        {"prompt": "p", "completion": "c"},
        {"text": "t"},
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"instruction": "i", "input": "", "output": "o"},
        {"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}]},
    ]
    shapes = ["prompt-response", "prompt-completion", "text", "chat", "alpaca", "sharegpt"]
    for record, shape in zip(records, shapes, strict=True):
        text = "".join(json.dumps({**record, **({} if i == 0 else {})}) + "\n" for i in range(1))
        unique = "".join(
            text.replace('"p"', f'"p{i}"')
            .replace('"u"', f'"u{i}"')
            .replace('"i"', f'"i{i}"')
            .replace('"h"', f'"h{i}"')
            .replace('"t"', f'"t{i}"')
            for i in range(5)
        )
        result = validate_dataset(text=unique, format="jsonl")
        assert result.shape == shape and result.ok, (shape, result.to_wire())
        assert result.diagnostics == [], result.to_wire()


def test_json_formats():
    text = json.dumps([{"prompt": f"p{i}", "response": "r"} for i in range(5)], indent=1)
    assert validate_dataset(text=text).format == "json"
    assert validate_dataset(text=text).ok
    wrapped = json.dumps({"data": [{"prompt": f"p{i}", "response": "r"} for i in range(5)]})
    assert validate_dataset(text=wrapped, format="json").examples == 5
    broken = '[\n {"prompt": "p", "response": "r"},\n {"prompt": "", "response": "r"},\n]'
    codes = {
        (d.code, d.start_line, d.start_character)
        for d in validate_dataset(text=broken, format="json").diagnostics
    }
    assert ("trailing-comma", 2, 32) in codes and ("empty-field", 2, 12) in codes
    bad = validate_dataset(text='[{"prompt": "p"\n "response": 1}]', format="json")
    assert ("json-syntax", 1, 1) in [
        (d.code, d.start_line, d.start_character) for d in bad.diagnostics
    ]
    assert "json-root" in [d.code for d in validate_dataset(text="42", format="json").diagnostics]


def test_csv_format():
    text = (
        'prompt,response\n"What is 1, 2?","A ""list""\nof two"\nx,y,z\n'
        + "".join(f"p{i},r{i}\n" for i in range(4))
        + "q,\n"
    )
    result = validate_dataset(text=text, format="csv")
    assert result.examples == 6 and result.shape == "prompt-response"
    codes = {(d.code, d.start_line, d.start_character, d.end_character) for d in result.diagnostics}
    assert ("csv-field-count", 3, 0, 5) in codes
    assert ("empty-field", 8, 2, 2) in codes
    alt = validate_dataset(
        text="question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(5)), format="csv"
    )
    assert alt.ok and alt.shape == "prompt-response"
    alpaca = validate_dataset(
        text="instruction,input,output\n" + "".join(f"i{i},,o{i}\n" for i in range(5)), format="csv"
    )
    assert alpaca.ok and alpaca.shape == "alpaca"
    codes = [d.code for d in validate_dataset(text="a,b\n1,2\n", format="csv").diagnostics]
    assert "csv-header" in codes


def test_txt_formats():
    text = "Q: What?\nA: This.\nAnd more.\n\nQ: Lonely\n\n" + "".join(
        f"Q: q{i}\nA: a{i}\n\n" for i in range(4)
    )
    result = validate_dataset(text=text, format="txt")
    assert result.examples == 6
    assert [(d.code, d.start_line) for d in result.diagnostics] == [("missing-field", 4)]
    chat = "User: hi\nAssistant: hello\nUser: more\nAssistant: sure\n\n" + "".join(
        f"User: u{i}\nAssistant: a{i}\n\n" for i in range(4)
    )
    result = validate_dataset(text=chat, format="txt")
    assert result.ok and result.shape == "chat" and result.examples == 5


def test_utf8_errors_and_detection(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9", "response": "x"}\n' + FILLER.encode())
    result = validate_dataset(path)
    assert [(d.code, d.start_line, d.start_character) for d in result.diagnostics] == [
        ("utf8-invalid", 0, 15)
    ]
    with pytest.raises(CortexError) as error:
        validate_dataset(tmp_path / "missing.jsonl")
    assert error.value.code == "dataset-not-found"
    with pytest.raises(InvalidParams):
        validate_dataset()


def test_diagnostics_are_capped_with_total():
    text = "".join("{bad\n" for _ in range(1500))
    result = validate_dataset(text=text, format="jsonl")
    wire = result.to_wire()
    assert len(wire["diagnostics"]) == 1000 and wire["total"] == 1501 and wire["truncated"]


def test_cancel_stops_validation():
    import threading

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CortexError) as error:
        validate_dataset(text=FILLER * 1000, format="jsonl", cancel=cancel)
    assert error.value.code == "cancelled"


def test_wire_diagnostic_shape():
    result = validate_dataset(text='{"prompt": "a", "answer": "b"}\n' + FILLER)
    wire = result.to_wire()["diagnostics"][0]
    assert wire["severity"] == 1 and wire["source"] == "cortex"
    assert wire["range"] == {
        "start": {"line": 0, "character": 16},
        "end": {"line": 0, "character": 24},
    }
    assert "rename" in wire["message"]


@pytest.mark.parametrize("via_file", [False, True])
def test_file_level_ranges_end_at_the_utf16_end_of_line(tmp_path, via_file):
    # An emoji is two UTF-16 units: the squiggle must reach the end of the line.
    line = json.dumps({"prompt": "Hi 👋", "response": "Hello 🙂"}, ensure_ascii=False)
    if via_file:  # a file on disk is streamed (StreamChecks), an open document is not
        path = tmp_path / "few.jsonl"
        path.write_text(line + "\n", encoding="utf-8")
        result = validate_dataset(path)
    else:
        result = validate_dataset(text=line + "\n", format="jsonl")
    (few,) = [d for d in result.diagnostics if d.code == "too-few-examples"]
    assert (few.start_line, few.start_character, few.end_line) == (0, 0, 0)
    assert few.end_character == len(line.encode("utf-16-le")) // 2 == len(line) + 2


def test_no_examples_and_text_structure_ranges_are_utf16():
    line = "🙂 text before the first block"
    result = validate_dataset(text=f"{line}\nQ: a\nA: b\n", format="txt")
    ends = {d.code: (d.start_line, d.end_character) for d in result.diagnostics}
    assert ends == {"txt-structure": (0, len(line) + 1), "too-few-examples": (0, len(line) + 1)}
    bad = "not json 🙂"
    (none,) = [
        d
        for d in validate_dataset(text=bad + "\n", format="jsonl").diagnostics
        if d.code == "no-examples"
    ]
    assert none.end_character == len(bad) + 1
