"""Preference pairs: every input form becomes the canonical record; checks at exact positions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.datasets import analyze_dataset, load, load_text, prepare_dataset
from cortex_rpc.datasets.editor import DatasetDocument, code_actions, hover
from cortex_rpc.datasets.report import dataset_report
from cortex_rpc.errors import InvalidParams

USER = {"role": "user", "content": "What is 2+2?"}
GOOD = {"role": "assistant", "content": "4."}
BAD = {"role": "assistant", "content": "5, I think."}
CANONICAL = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}

FORMS = {
    "trl-strings": {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5, I think."},
    "trl-conversational": {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
    "trl-string-prompt-message-sides": {
        "prompt": "What is 2+2?",
        "chosen": [GOOD],
        "rejected": [BAD],
    },
    "trl-implicit-prompt": {"chosen": [USER, GOOD], "rejected": [USER, BAD]},
    # UltraFeedback's form: a prompt string and whole conversations as the sides.
    "trl-prompt-and-whole-conversations": {
        "prompt": "What is 2+2?",
        "chosen": [USER, GOOD],
        "rejected": [USER, BAD],
    },
    "openai": {
        "input": {"messages": [USER]},
        "preferred_output": [GOOD],
        "non_preferred_output": [BAD],
    },
}


def _pairs(record: dict, count: int = 6) -> list[dict]:
    """``count`` distinct copies of ``record`` (distinct prompts, so no duplicates)."""
    text = json.dumps(record)
    return [json.loads(text.replace("2+2", f"2+{i}")) for i in range(2, 2 + count)]


def _canonical(i: int) -> dict:
    return json.loads(json.dumps(CANONICAL).replace("2+2", f"2+{i}"))


def _prepared(tmp_path: Path, name: str, text: str, **kwargs) -> list[dict]:
    source = tmp_path / name
    source.write_text(text)
    prepared = prepare_dataset(source, tmp_path / "out", valid_fraction=0.2, **kwargs)
    lines = []
    for path in (prepared.train_path, prepared.valid_path):
        lines += [json.loads(line) for line in Path(path).read_text().splitlines()]
    return sorted(lines, key=json.dumps)


@pytest.mark.parametrize("form", list(FORMS))
def test_every_jsonl_form_prepares_to_the_canonical_record(form: str, tmp_path: Path):
    rows = _pairs(FORMS[form])
    text = "".join(json.dumps(r) + "\n" for r in rows)
    loaded = load_text(text, "jsonl")
    assert loaded.shape == "preference"
    assert loaded.result.diagnostics == []
    records = _prepared(tmp_path, "pairs.jsonl", text)
    assert records == sorted((_canonical(i) for i in range(2, 8)), key=json.dumps)


def test_json_array_and_csv_prepare_to_the_canonical_record(tmp_path: Path):
    expected = sorted((_canonical(i) for i in range(2, 8)), key=json.dumps)
    array = json.dumps(_pairs(FORMS["trl-conversational"]), indent=2)
    (tmp_path / "a").mkdir()
    assert load_text(array, "json").shape == "preference"
    assert _prepared(tmp_path / "a", "pairs.json", array) == expected
    rows = ["prompt,chosen,rejected"] + [f'What is 2+{i}?,4.,"5, I think."' for i in range(2, 8)]
    (tmp_path / "c").mkdir()
    assert _prepared(tmp_path / "c", "pairs.csv", "\n".join(rows) + "\n") == expected


def test_openai_tools_and_content_parts_are_kept_as_messages(tmp_path: Path):
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    record = {
        "input": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Add"}]}]},
        "preferred_output": [{"role": "assistant", "content": "Sure"}],
        "non_preferred_output": [{"role": "assistant", "content": "No"}],
    }
    rows = [json.loads(json.dumps(record).replace("Add", f"Add {i}")) for i in range(5)]
    rows[0]["input"]["tools"] = [tool]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    records = _prepared(tmp_path, "o.jsonl", text)
    with_tools = [r for r in records if "tools" in r]
    assert with_tools == [
        {
            "prompt": [{"role": "user", "content": "Add 0"}],
            "chosen": [{"role": "assistant", "content": "Sure"}],
            "rejected": [{"role": "assistant", "content": "No"}],
            "tools": [tool],
        }
    ]


def _diagnostics(line: str) -> list[tuple[str, int, int, str]]:
    result = load_text(line + "\n", "jsonl").result
    return [
        (d.code, d.start_character, d.end_character, d.severity)
        for d in result.diagnostics
        if d.code != "too-few-examples"
    ]


def _span(line: str, needle: str) -> tuple[int, int]:
    start = line.index(needle)
    return start, start + len(needle)


def test_identical_sides_are_an_error_on_rejected():
    line = '{"prompt": "Q?", "chosen": "Same.", "rejected": "Same."}'
    assert _diagnostics(line) == [
        ("preference-identical", *_span(line, '"Same."}')[:1], len(line) - 1, "error")
    ]


def test_identical_openai_sides_point_at_non_preferred_output():
    side = '[{"role": "assistant", "content": "A"}]'
    line = (
        '{"input": {"messages": [{"role": "user", "content": "Q"}]}, '
        f'"preferred_output": {side}, "non_preferred_output": {side}}}'
    )
    start = line.rindex(side)
    assert _diagnostics(line) == [("preference-identical", start, start + len(side), "error")]


def test_empty_sides_are_errors_at_the_empty_value():
    line = '{"prompt": "Q?", "chosen": "", "rejected": "No."}'
    assert _diagnostics(line) == [("empty-field", *_span(line, '""'), "error")]
    line = '{"prompt": "Q?", "chosen": [{"role": "assistant", "content": "A"}], "rejected": []}'
    assert _diagnostics(line) == [("empty-field", *_span(line, "[]"), "error")]
    line = (
        '{"prompt": "Q?", "chosen": [{"role": "assistant", "content": "A"}], '
        '"rejected": [{"role": "assistant", "content": " "}]}'
    )
    assert _diagnostics(line) == [("empty-field", *_span(line, '" "'), "error")]


def test_missing_prompt_is_an_error_on_the_record():
    line = '{"chosen": "4.", "rejected": "5."}'
    diagnostics = load_text(line + "\n", "jsonl").result.diagnostics
    missing = [d for d in diagnostics if d.code == "missing-field"]
    assert [(d.start_line, d.start_character, d.end_character) for d in missing] == [
        (0, 0, len(line))
    ]
    assert 'Missing "prompt"' in missing[0].message
    # Conversations that share no first turn have no implicit prompt either.
    line = json.dumps(
        {"chosen": [GOOD], "rejected": [BAD]},
    )
    assert [c for c, *_ in _diagnostics(line)] == ["missing-field"]


def test_missing_side_is_reported_by_the_schema():
    line = '{"prompt": "Q?", "chosen": "A"}'
    assert _diagnostics(line) == [("missing-field", 0, len(line), "error")]


def test_very_different_lengths_warn_on_the_longer_side():
    long = "word " * 40
    line = json.dumps({"prompt": "Q?", "chosen": long, "rejected": "No."})
    start = line.index('"word')
    assert _diagnostics(line) == [
        ("preference-length-ratio", start, start + len(json.dumps(long)), "warning")
    ]
    # Short answers of different lengths are fine (under the minimum length).
    assert _diagnostics('{"prompt": "Q?", "chosen": "Yes, it is.", "rejected": "No."}') == []


def test_an_answer_side_must_start_with_the_assistant():
    line = json.dumps({"prompt": "Q?", "chosen": [USER, GOOD], "rejected": [GOOD]})
    start = line.index('"user"')
    assert _diagnostics(line) == [("role-order", start, start + len('"user"'), "error")]


def test_a_prompt_that_differs_from_the_shared_turns_is_reported_as_ignored():
    line = json.dumps({"prompt": "Something else", "chosen": [USER, GOOD], "rejected": [USER, BAD]})
    assert _diagnostics(line) == [
        ("preference-prompt-ignored", *_span(line, '"Something else"'), "warning")
    ]


def test_wrong_types_are_schema_errors():
    line = '{"prompt": 3, "chosen": "A", "rejected": "B"}'
    assert _diagnostics(line) == [("wrong-type", *_span(line, "3"), "error")]


def test_duplicate_pairs_are_reported_and_a_different_rejected_is_not_a_duplicate():
    a = '{"prompt": "Q?", "chosen": "Yes.", "rejected": "No."}'
    b = '{"prompt": "Q?", "chosen": "Yes.", "rejected": "Maybe."}'
    result = load_text("\n".join([a, b, a]) + "\n", "jsonl").result
    assert [(d.code, d.start_line) for d in result.diagnostics if "duplicate" in d.code] == [
        ("duplicate", 2)
    ]


def test_csv_problems_point_at_the_cell(tmp_path: Path):
    text = "prompt,chosen,rejected\nQ1,Same,Same\nQ2,,No\n"
    path = tmp_path / "p.csv"
    path.write_text(text)
    result = load(path).result
    found = [
        (d.code, d.start_line, d.start_character, d.end_character)
        for d in result.diagnostics
        if d.code != "too-few-examples"
    ]
    assert found == [("preference-identical", 1, 8, 12), ("empty-field", 2, 3, 3)]


def test_analysis_and_report_count_pairs_and_length_ratios(tmp_path: Path):
    rows = [
        {"prompt": f"Q{i}?", "chosen": "A good answer " * (1 + i % 2), "rejected": "Bad answer."}
        for i in range(8)
    ]
    rows.append({"prompt": "Q long?", "chosen": "long " * 30, "rejected": "Short."})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    analysis = analyze_dataset(path).to_wire()
    assert analysis["kind"] == "preference"
    pairs = analysis["preference"]
    assert pairs["pairs"] == 9
    assert pairs["unbalancedPairs"] == 1
    assert pairs["chosenLonger"] == 9
    assert pairs["lengthRatio"]["max"] == round(len(("long " * 30).strip()) / len("Short."), 2)
    assert any("4x as long" in w for w in analysis["warnings"])
    report = dataset_report(path).to_wire("markdown")
    assert "| Preference pairs | 9 |" in report["markdown"]
    assert "| Pairs with one side over 4x the other | 1 |" in report["markdown"]


def test_sft_data_with_method_dpo_is_refused(tmp_path: Path):
    path = tmp_path / "sft.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"Q{i}", "response": "A"}) + "\n" for i in range(6))
    )
    with pytest.raises(InvalidParams) as caught:
        prepare_dataset(path, tmp_path / "out", method="dpo")
    error = caught.value
    assert error.data["code"] == "method-needs-preference-data"
    assert error.data["field"] == "method"
    assert error.data["line"] == 0
    assert "dpo trains on preference pairs" in error.message
    assert "first at line 1: prompt-response" in error.message


def test_preference_data_with_method_sft_keeps_the_chosen_answer_and_warns(tmp_path: Path):
    text = "".join(json.dumps(r) + "\n" for r in _pairs(FORMS["trl-strings"]))
    source = tmp_path / "pairs.jsonl"
    source.write_text(text)
    prepared = prepare_dataset(source, tmp_path / "out", method="sft")
    assert (prepared.kind, prepared.method, prepared.shape) == ("preference", "sft", "chat")
    assert "rejected answers are not used" in prepared.warnings[0]
    first = json.loads(Path(prepared.train_path).read_text().splitlines()[0])
    assert set(first) == {"messages"}
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["messages"][1]["content"] == "4."
    # Without a method, preference data prepares as pairs (for dpo).
    default = prepare_dataset(source, tmp_path / "out2")
    assert (default.kind, default.method, default.shape) == ("preference", "dpo", "preference")


def test_editor_hover_and_keep_chosen_rewrite():
    line = '{"prompt": "Q?", "chosen": "Yes, it is.", "rejected": "No."}'
    doc = DatasetDocument("file:///p.jsonl", line + "\n")
    text = hover(doc, 0, 3)
    assert "**preference** record" in text
    assert "chosen 11 / rejected 3 characters (ratio 3.7)" in text
    titles = [a["title"] for a in code_actions(doc, (0, 0, 0, 0))]
    assert titles == ["Convert to prompt/response keeping the chosen answer"]


def test_sft_records_in_a_preference_file_are_mixed_shapes_that_say_why():
    pairs = [json.dumps(r) for r in _pairs(FORMS["trl-strings"], 3)]
    text = "\n".join([*pairs, '{"prompt": "Hi", "response": "Hello"}']) + "\n"
    mixed = [d for d in load_text(text, "jsonl").result.diagnostics if d.code == "mixed-shapes"]
    assert [(d.start_line, d.severity) for d in mixed] == [(3, "warning")]
    assert "DPO/ORPO train on preference pairs only" in mixed[0].message
