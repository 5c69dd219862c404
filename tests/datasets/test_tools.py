"""Tool calling: OpenAI tools/tool_calls, legacy functions, ShareGPT function_call/observation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.datasets import validate_dataset
from cortex_rpc.datasets.analyze import analyze_dataset
from cortex_rpc.datasets.editor import DatasetDocument, code_actions
from cortex_rpc.datasets.prepare import prepare_dataset

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def loop(i: int = 0, content: object = "absent", arguments: object = '{"city": "Paris"}') -> dict:
    call = {
        "role": "assistant",
        "tool_calls": [
            {
                "id": f"c{i}",
                "type": "function",
                "function": {"name": "get_weather", "arguments": arguments},
            }
        ],
    }
    if content != "absent":
        call["content"] = content
    return {
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": f"Weather in Paris? {i}"},
            call,
            {"role": "tool", "tool_call_id": f"c{i}", "name": "get_weather", "content": "sunny"},
            {"role": "assistant", "content": f"It is sunny. {i}"},
        ],
    }


def legacy(i: int = 0) -> dict:
    return {
        "functions": [WEATHER["function"]],
        "messages": [
            {"role": "user", "content": f"Weather? {i}"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            },
            {"role": "function", "name": "get_weather", "content": "rain"},
            {"role": "assistant", "content": f"Rain. {i}"},
        ],
    }


def sharegpt(i: int = 0, as_string: bool = True) -> dict:
    tools = [WEATHER["function"]]
    return {
        "tools": json.dumps(tools) if as_string else tools,
        "conversations": [
            {"from": "human", "value": f"Weather? {i}"},
            {
                "from": "function_call",
                "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
            },
            {"from": "observation", "value": "snow"},
            {"from": "gpt", "value": f"Snow. {i}"},
        ],
    }


def lines(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def found(result) -> list[tuple]:
    return [
        (d.code, d.start_line, d.start_character, d.end_line, d.end_character)
        for d in result.diagnostics
    ]


def span(line: str, value: str, number: int = 0) -> tuple[int, int, int, int]:
    start = line.index(value)
    return (number, start, number, start + len(value))


FORMS = {
    "content-absent": (lambda i: loop(i), "chat", []),
    "content-null": (lambda i: loop(i, None), "chat", []),
    "content-empty": (lambda i: loop(i, ""), "chat", []),
    "legacy": (legacy, "chat", ["legacy-functions"]),
    "sharegpt-string": (lambda i: sharegpt(i, True), "sharegpt", []),
    "sharegpt-list": (lambda i: sharegpt(i, False), "sharegpt", []),
}


@pytest.mark.parametrize("form", FORMS)
def test_each_tool_form_is_accepted(form, tmp_path):
    make, shape, codes = FORMS[form]
    text = lines([make(i) for i in range(6)])
    result = validate_dataset(text=text, format="jsonl")
    assert result.ok, found(result)
    assert result.examples == 6
    assert sorted({d.code for d in result.diagnostics}) == codes
    if codes:  # the legacy note points at the "functions" key
        first = text.split("\n")[0]
        assert ("legacy-functions", *span(first, '"functions"')) in found(result)
    source = tmp_path / "data.jsonl"
    source.write_text(text)
    assert analyze_dataset(source).to_wire()["toolCallingRecords"] == 6
    prepared = prepare_dataset(source, tmp_path / "out")
    records = [json.loads(x) for x in Path(prepared.train_path).read_text().splitlines()]
    for record in records:
        assert record["tools"][0]["type"] == "function"
        assert record["tools"][0]["function"]["name"] == "get_weather"
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant"]
        call = record["messages"][1]["tool_calls"][0]
        assert isinstance(json.loads(call["function"]["arguments"]), dict)
        assert record["messages"][2]["tool_call_id"] == call["id"]
        assert call["type"] == "function" and call["function"]["name"] == "get_weather"


def check(record: dict) -> tuple[str, list[tuple]]:
    line = json.dumps(record)
    return line, found(validate_dataset(text=lines([record] + [loop(i) for i in range(1, 6)])))


def test_broken_arguments():
    line, got = check(loop(arguments="{city: Paris"))
    assert got == [("tool-arguments", *span(line, '"{city: Paris"'))]


def test_arguments_object_is_a_warning_with_a_fix():
    record = loop(arguments={"city": "Paris"})
    text = lines([record] + [loop(i) for i in range(1, 6)])
    line = text.split("\n")[0]
    result = validate_dataset(text=text, format="jsonl")
    assert result.ok
    assert found(result) == [("tool-arguments-object", *span(line, '{"city": "Paris"}'))]
    doc = DatasetDocument("file:///d.jsonl", text)
    (action,) = code_actions(doc, (0, 0, 1, 0))  # the whole line
    edit = action["edit"]["changes"]["file:///d.jsonl"][0]
    assert edit["newText"] == json.dumps('{"city": "Paris"}')
    doc.apply_change(
        (0, edit["range"]["start"]["character"], 0, edit["range"]["end"]["character"]),
        edit["newText"],
    )
    assert not doc.result().diagnostics


def test_dangling_tool_call_id():
    record = loop()
    record["messages"][2]["tool_call_id"] = "nope"
    line, got = check(record)
    assert got == [("tool-call-id", *span(line, '"nope"'))]


def test_unknown_function_name_suggests():
    record = loop()
    record["messages"][1]["tool_calls"][0]["function"]["name"] = "get_wether"
    line, got = check(record)
    assert got == [("unknown-tool", *span(line, '"get_wether"'))]
    result = validate_dataset(text=lines([record] + [loop(i) for i in range(1, 6)]))
    assert 'did you mean "get_weather"' in result.diagnostics[0].message


def test_bad_tool_definitions():
    record = loop()
    record["tools"] = [{"type": "fn", "function": WEATHER["function"]}]
    line, got = check(record)
    start = line.index('{"type": "fn"')
    end = line.index(', "messages"') - 1
    assert got == [("tool-definition", 0, start, 0, end)]
    record = loop()
    record["tools"] = [{"type": "function", "function": {"name": "get_weather", "parameters": "x"}}]
    line, got = check(record)
    assert got == [("tool-definition", *span(line, '"x"'))]


def test_role_order_after_tool_still_checked():
    record = loop()
    record["messages"].append({"role": "assistant", "content": "again"})
    _, got = check(record)
    assert [g[0] for g in got] == ["role-order"]


@pytest.mark.parametrize(
    ("role", "hint"),
    [("human", "user"), ("bot", "assistant"), ("model", "assistant"), ("gpt", "assistant")],
)
def test_unknown_role_hint_and_rename(role, hint):
    record = {
        "messages": [{"role": role, "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    }
    text = lines([record] + [loop(i) for i in range(1, 6)])
    result = validate_dataset(text=text)
    line = text.split("\n")[0]
    (diagnostic,) = [d for d in result.diagnostics if d.code == "unknown-role"]
    assert f'did you mean "{hint}"' in diagnostic.message
    assert found(result)[0] == ("unknown-role", *span(line, json.dumps(role)))
    doc = DatasetDocument("file:///d.jsonl", text)
    (action,) = [a for a in code_actions(doc, (0, 0, 1, 0)) if "Rename" in a["title"]]
    edit = action["edit"]["changes"]["file:///d.jsonl"][0]
    assert edit["newText"] == json.dumps(hint)


def test_prepared_tool_records_load_in_mlx_lm(tmp_path, tiny_model):
    from types import SimpleNamespace

    from mlx_lm.tuner.datasets import create_dataset
    from mlx_lm.utils import load_tokenizer

    source = tmp_path / "data.jsonl"
    source.write_text(lines([loop(i) for i in range(8)] + [legacy(i) for i in range(8, 12)]))
    prepared = prepare_dataset(source, tmp_path / "out")
    tokenizer = load_tokenizer(tiny_model)
    seen = []
    original = tokenizer.apply_chat_template

    def spy(messages, *args, **kwargs):
        seen.append((messages, kwargs.get("tools")))
        try:
            return original(messages, *args, **kwargs)
        except Exception:  # noqa: BLE001 - a template without tool support
            return original(
                [{"role": m["role"], "content": m.get("content") or ""} for m in messages],
                *args,
                **{k: v for k, v in kwargs.items() if k != "tools"},
            )

    tokenizer.apply_chat_template = spy
    rows = [json.loads(x) for x in Path(prepared.train_path).read_text().splitlines()]
    config = SimpleNamespace(
        mask_prompt=False,
        chat_feature="messages",
        prompt_feature="prompt",
        text_feature="text",
        completion_feature="completion",
    )
    dataset = create_dataset(rows, tokenizer, config)
    assert len(dataset) == len(rows)
    for i in range(len(dataset)):
        dataset.process(dataset[i]) if hasattr(dataset, "process") else dataset[i]
    assert seen and all(
        tools and tools[0]["function"]["name"] == "get_weather" for _, tools in seen
    )
    assert all(any(m.get("tool_calls") for m in messages) for messages, _ in seen)


def sharegpt_turns(*turns: dict) -> dict:
    return {"tools": [WEATHER["function"]], "conversations": list(turns)}


def call_turn(city: str, **ids: str) -> dict:
    return {
        "from": "function_call",
        "value": json.dumps({"name": "get_weather", "arguments": {"city": city}}),
        **ids,
    }


ASK = {"from": "human", "value": "Weather in Oslo and Rome?"}
REPLY = {"from": "gpt", "value": "Snow in Oslo, sun in Rome."}
OBSERVATION = {"from": "observation", "value": "snow"}


def test_sharegpt_observations_answer_their_call_by_id(tmp_path):
    """Results given out of order carry ids: each is linked to its own call, not by order."""
    record = sharegpt_turns(
        ASK,
        call_turn("Oslo", id="c1"),
        call_turn("Rome", id="c2"),
        {"from": "observation", "value": "sun", "tool_call_id": "c2"},
        {"from": "observation", "value": "snow", "tool_call_id": "c1"},
        REPLY,
    )
    text = lines([record] * 6)
    result = validate_dataset(text=text, format="jsonl")
    assert found(result) == [("duplicate", i, 0, i, len(text.split("\n")[0])) for i in range(1, 6)]
    source = tmp_path / "data.jsonl"
    source.write_text(lines([record]))
    prepare_dataset(source, tmp_path / "out")
    (prepared,) = [
        json.loads(line)
        for name in ("train.jsonl", "valid.jsonl")
        for line in (tmp_path / "out" / name).read_text().splitlines()
    ]
    messages = prepared["messages"]
    calls = {
        c["id"]: json.loads(c["function"]["arguments"])["city"]
        for m in messages
        for c in m.get("tool_calls", [])
    }
    results = {calls[m["tool_call_id"]]: m["content"] for m in messages if m["role"] == "tool"}
    assert calls == {"c1": "Oslo", "c2": "Rome"}
    # function_call turns in a row are parallel calls: one assistant message holds both
    assert [len(m["tool_calls"]) for m in messages if "tool_calls" in m] == [2]
    assert results == {"Oslo": "snow", "Rome": "sun"}


def test_sharegpt_call_id_in_the_call_json_is_used(tmp_path):
    call = {
        "from": "function_call",
        "value": json.dumps({"id": "k9", "name": "get_weather", "arguments": {"city": "Oslo"}}),
    }
    record = sharegpt_turns(ASK, call, {"from": "observation", "value": "snow", "id": "k9"}, REPLY)
    source = tmp_path / "data.jsonl"
    source.write_text(lines([record]))
    assert [d.code for d in validate_dataset(source).diagnostics] == ["too-few-examples"]
    prepare_dataset(source, tmp_path / "out")
    out = (tmp_path / "out" / "train.jsonl").read_text()
    out += (tmp_path / "out" / "valid.jsonl").read_text()
    messages = json.loads(out.split("\n")[0])["messages"]
    assert [m.get("tool_call_id") for m in messages if m["role"] == "tool"] == ["k9"]
    assert messages[1]["tool_calls"][0]["id"] == "k9"


def test_sharegpt_unanswered_call_is_reported_at_the_call():
    record = sharegpt_turns(ASK, call_turn("Oslo"), call_turn("Rome"), OBSERVATION, REPLY)
    line = json.dumps(record)
    result = validate_dataset(text=lines([record]), format="jsonl")
    second = line.index('"function_call"', line.index('"function_call"') + 1)
    assert [f for f in found(result) if f[0] != "too-few-examples"] == [
        ("tool-result-mismatch", 0, second, 0, second + len('"function_call"'))
    ]
    assert "conversations[2] function_call has no observation" in result.diagnostics[1].message


def test_sharegpt_observation_without_a_call_is_reported():
    record = sharegpt_turns(ASK, call_turn("Oslo"), OBSERVATION, OBSERVATION, REPLY)
    line = json.dumps(record)
    result = validate_dataset(text=lines([record]), format="jsonl")
    second = line.index('"observation"', line.index('"observation"') + 1)
    assert [f for f in found(result) if f[0] != "too-few-examples"] == [
        ("tool-result-mismatch", 0, second, 0, second + len('"observation"'))
    ]


def test_sharegpt_observation_id_that_answers_no_call():
    record = sharegpt_turns(
        ASK,
        call_turn("Oslo", id="c1"),
        {"from": "observation", "value": "snow", "tool_call_id": "c7"},
        REPLY,
    )
    line = json.dumps(record)
    result = validate_dataset(text=lines([record]), format="jsonl")
    got = [f for f in found(result) if f[0] != "too-few-examples"]
    assert got == [("tool-call-id", *span(line, '"c7"'))]  # not also the call it meant
    assert "unanswered call ids: c1" in result.diagnostics[1].message
