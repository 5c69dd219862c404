"""No silent data loss: every field that changes training is used or reported (issue 13)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cortex_rpc.datasets.editor import DatasetDocument, code_actions
from cortex_rpc.datasets.load import load, load_text
from cortex_rpc.datasets.prepare import prepare_dataset
from cortex_rpc.datasets.report import dataset_report
from cortex_rpc.errors import CortexError


def _codes(text: str, fmt: str) -> list[tuple[str, int, int, int]]:
    loaded = load_text(text, fmt)
    return [
        (d.code, d.start_line, d.start_character, d.end_character)
        for d in loaded.result.diagnostics
        if d.code != "too-few-examples"
    ]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# Sources whose every string value is text to learn (roles and part types aside).
SOURCES = {
    "prompt-response": (
        "jsonl",
        [{"prompt": f"What is {i}?", "response": f"It is {i}."} for i in range(3)],
    ),
    "prompt-completion": (
        "jsonl",
        [{"prompt": f"Count to {i}", "completion": f"{i} done"} for i in range(3)],
    ),
    "text": ("jsonl", [{"text": f"Plain text number {i}."} for i in range(3)]),
    "chat": (
        "jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": f"Be brief {i}."},
                    {"role": "user", "content": [{"type": "text", "text": f"Hi {i}"}]},
                    {"role": "assistant", "content": f"Hello {i}!"},
                ]
            }
            for i in range(3)
        ],
    ),
    "alpaca": (
        "json",
        [
            {"instruction": f"Do {i}", "input": f"with input {i}", "output": f"ok {i}"}
            for i in range(3)
        ],
    ),
    "sharegpt": (
        "jsonl",
        [
            {
                "system": f"System {i}",
                "conversations": [
                    {"from": "human", "value": f"Question {i}"},
                    {"from": "gpt", "value": f"Answer {i}"},
                ],
            }
            for i in range(3)
        ],
    ),
    "dolly": (
        "jsonl",
        [
            {"instruction": f"Sum {i}", "context": f"Context {i}", "response": f"Total {i}"}
            for i in range(3)
        ],
    ),
}
SKIP_VALUES = {"system", "user", "assistant", "human", "gpt", "text"}


def _write(tmp_path: Path, fmt: str, records: list[dict]) -> Path:
    path = tmp_path / f"data.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("shape", sorted(SOURCES))
def test_prepared_records_keep_every_source_string(shape: str, tmp_path: Path):
    fmt, records = SOURCES[shape]
    path = _write(tmp_path, fmt, records)
    assert load(path).shape == shape
    prepared = prepare_dataset(path, tmp_path / "out")
    assert prepared.train_examples + prepared.valid_examples == len(records)
    out = [
        json.loads(line)
        for name in ("train.jsonl", "valid.jsonl")
        for line in (tmp_path / "out" / name).read_text().splitlines()
    ]
    texts = [json.dumps(r, ensure_ascii=False) for r in out]
    for record in records:
        wanted = [s for s in _strings(record) if s not in SKIP_VALUES]
        assert any(all(json.dumps(s)[1:-1] in t for s in wanted) for t in texts), record
    for record in out:  # prepare writes string content, never parts
        for message in record.get("messages", []):
            assert isinstance(message["content"], str)


def test_alpaca_csv_keeps_input(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text("instruction,input,output\nTranslate,bonjour,hello\nSum,2 and 3,5\n")
    loaded = load(path)
    assert loaded.shape == "alpaca"
    assert [d.code for d in loaded.result.diagnostics] == ["too-few-examples"]
    prepare_dataset(path, tmp_path / "out")
    text = (tmp_path / "out" / "train.jsonl").read_text() + (
        tmp_path / "out" / "valid.jsonl"
    ).read_text()
    assert "Translate\\n\\nbonjour" in text and "Sum\\n\\n2 and 3" in text


def test_dolly_context_is_folded_into_the_prompt():
    line = '{"instruction": "Sum", "context": "2 and 3", "response": "5", "category": "qa"}'
    loaded = load_text(line + "\n", "jsonl")
    assert loaded.shape == "dolly"
    assert loaded.records[0].turns == [("user", "Sum\n\n2 and 3"), ("assistant", "5")]
    start = line.index('"context"')
    assert _codes(line + "\n", "jsonl") == [("dolly-context", 0, start, start + 9)]


DOLLY_CSV = (
    "instruction,context,response,category\n"
    "Sum the numbers,2 and 3,5,closed_qa\n"
    "Name a colour,,Blue,brainstorming\n"
)


def test_dolly_csv_folds_context_into_the_prompt_and_names_category(tmp_path: Path):
    """A Dolly export as CSV: the JSON Dolly path's turns, context noted, category ignored."""
    path = tmp_path / "dolly.csv"
    path.write_text(DOLLY_CSV)
    loaded = load(path)
    assert (loaded.format, loaded.shape) == ("csv", "dolly")
    assert [r.turns for r in loaded.records] == [
        [("user", "Sum the numbers\n\n2 and 3"), ("assistant", "5")],
        [("user", "Name a colour"), ("assistant", "Blue")],
    ]
    json_line = '{"instruction": "Sum the numbers", "context": "2 and 3", "response": "5"}\n'
    assert loaded.records[0].turns == load_text(json_line, "jsonl").records[0].turns
    found = [
        (d.code, d.severity, d.start_line, d.start_character, d.end_line, d.end_character)
        for d in loaded.result.diagnostics
    ]
    assert found == [
        ("too-few-examples", "warning", 0, 0, 0, 37),
        ("unknown-key", "warning", 0, 29, 0, 37),
        ("dolly-context", "information", 1, 16, 1, 23),
    ]
    assert 'Column "category" is ignored by training' in loaded.result.diagnostics[1].message
    prepare_dataset(path, tmp_path / "out")
    text = (tmp_path / "out" / "train.jsonl").read_text() + (
        tmp_path / "out" / "valid.jsonl"
    ).read_text()
    assert "Sum the numbers\\n\\n2 and 3" in text and "closed_qa" not in text


def test_dolly_csv_without_context_column(tmp_path: Path):
    path = tmp_path / "dolly.csv"
    path.write_text("instruction,response\nSay hi,Hi\n")
    loaded = load(path)
    assert loaded.shape == "dolly"
    assert loaded.records[0].turns == [("user", "Say hi"), ("assistant", "Hi")]


def test_non_text_content_parts_are_reported_as_dropped():
    record = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            },
            {"role": "assistant", "content": "A cat."},
        ]
    }
    line = json.dumps(record)
    start = line.index('{"type": "image_url"')
    end = line.index("}}", start) + 2
    assert _codes(line + "\n", "jsonl") == [("content-part-dropped", 0, start, end)]
    assert load_text(line + "\n", "jsonl").records[0].turns[0] == ("user", "What is in")


def test_duplicate_key_warns_at_the_second_key_jsonl_and_json():
    line = '{"prompt": "first", "prompt": "second", "response": "r"}'
    start = line.index('"prompt"', 5)
    assert _codes(line + "\n", "jsonl") == [("duplicate-key", 0, start, start + 8)]
    text = '[\n  {"prompt": "a",\n   "prompt": "b", "response": "c"}\n]'
    assert _codes(text, "json") == [("duplicate-key", 2, 3, 11)]
    # A string holding '":' is no duplicate.
    assert _codes('{"prompt": "say \\": now", "response": "r"}\n', "jsonl") == []


def test_message_weight_is_reported_not_honoured():
    line = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello", "weight": 0},
            ]
        }
    )
    start = line.index('"weight"')
    diagnostics = load_text(line + "\n", "jsonl").result.diagnostics
    weight = [d for d in diagnostics if d.code == "weight-ignored"]
    assert [(d.start_character, d.end_character, d.severity) for d in weight] == [
        (start, start + 8, "information")
    ]
    assert "not honoured" in weight[0].message


@pytest.mark.parametrize(
    "record, convert",
    [
        ({"prompt": "Q", "chosen": "good", "rejected": "bad"}, {"prompt": "Q", "response": "good"}),
        (
            {
                "prompt": [{"role": "user", "content": "Q"}],
                "chosen": [{"role": "assistant", "content": "good"}],
                "rejected": [{"role": "assistant", "content": "bad"}],
            },
            {"prompt": "Q", "response": "good"},
        ),
        (
            {
                "input": {"messages": [{"role": "user", "content": "Q"}]},
                "preferred_output": [{"role": "assistant", "content": "good"}],
                "non_preferred_output": [{"role": "assistant", "content": "bad"}],
            },
            {"prompt": "Q", "response": "good"},
        ),
    ],
)
def test_preference_records_are_valid_and_convert_to_sft_keeping_the_chosen_answer(
    record: dict, convert: dict
):
    line = json.dumps(record)
    loaded = load_text(line + "\n", "jsonl")
    assert loaded.shape == "preference"
    errors = [d for d in loaded.result.diagnostics if d.severity == "error"]
    assert errors == []
    doc = DatasetDocument("file:///p.jsonl", line + "\n")
    actions = code_actions(doc, (0, 0, 0, 0))
    fix = next(a for a in actions if a["title"].startswith("Convert"))
    assert fix["title"] == "Convert to prompt/response keeping the chosen answer"
    assert fix["kind"] == "refactor.rewrite"
    new_text = fix["edit"]["changes"]["file:///p.jsonl"][0]["newText"]
    assert json.loads(new_text) == convert
    assert load_text(new_text + "\n", "jsonl").shape == "prompt-response"


def test_first_error_quoted_is_the_root_cause(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{bad\n{worse\n")
    with pytest.raises(CortexError) as exc:
        load(path).check()
    assert "first at line 1: Invalid JSON" in exc.value.message
    assert "No examples" not in exc.value.message


def test_one_record_prepares_with_an_empty_validation_split(tmp_path: Path):
    path = tmp_path / "one.jsonl"
    path.write_text('{"prompt": "Q", "response": "A"}\n')
    prepared = prepare_dataset(path, tmp_path / "out")
    assert (prepared.train_examples, prepared.valid_examples) == (1, 0)
    assert (tmp_path / "out" / "valid.jsonl").read_text() == ""


def test_empty_records_are_never_near_duplicates(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    lines = ['{"text": "!!!"}', '{"text": "???"}', '{"text": "..."}']
    lines += [
        json.dumps(
            {"prompt": f"Distinct question {i} about topic {i * 7}", "response": f"Answer {i}"}
        )
        for i in range(3)
    ]
    path.write_text("\n".join(lines) + "\n")
    report = dataset_report(path)
    assert report.clusters == []


def test_cluster_sample_is_a_real_record(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    a = {"prompt": "What is the capital of France?", "response": "Paris is the capital."}
    b = {"prompt": "What is the capital of France ?", "response": "Paris is the capital!"}
    c = {"prompt": "How many legs has a spider?", "response": "Eight."}
    path.write_text("".join(json.dumps(r) + "\n" for r in (a, b, c)))
    clusters = dataset_report(path).clusters
    assert [c.lines for c in clusters] == [[1, 2]]
    assert "capital of France" in clusters[0].sample


# A chat template that renders what the tiny model's ignores: tools, tool calls, tool
# results and content given as text parts (as real templates such as Llama 3's and Qwen's do).
TOOLS_TEMPLATE = (
    "{% if tools %}<|system|>{{ tools | tojson }}\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% elif message['content'] %}"
    "{% set text = message['content'] | map(attribute='text') | join('') %}"
    "{% else %}{% set text = '' %}{% endif %}"
    "{% if message['role'] == 'system' %}<|system|>{{ text }}\n"
    "{% elif message['role'] == 'user' %}<|user|>{{ text }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ text }}"
    "{% for call in message.tool_calls or [] %}"
    "[{{ call['id'] }} {{ call['function']['name'] }}({{ call['function']['arguments'] }})]"
    "{% endfor %}<|end|>\n"
    "{% elif message['role'] == 'tool' %}<|user|>[{{ message.tool_call_id }}] {{ text }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
PARITY_FORMS = {
    "text": [{"text": f"Some text {i} to learn."} for i in range(4)],
    "completion": [{"prompt": f"Q{i}?", "completion": f"A{i}."} for i in range(4)],
    "chat": [
        {
            "messages": [
                {"role": "user", "content": f"Hi {i}"},
                {"role": "assistant", "content": f"Hello {i}"},
            ]
        }
        for i in range(4)
    ],
    "chat-tools": [
        {
            "tools": [WEATHER_TOOL],
            "messages": [
                {"role": "system", "content": "Use tools."},
                {"role": "user", "content": f"Weather in city {i}?"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": f"c{i}",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": json.dumps({"city": f"city {i}"}),
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": f"c{i}", "name": "get_weather", "content": "sun"},
                {"role": "assistant", "content": f"Sunny in city {i}."},
            ],
        }
        for i in range(4)
    ],
    "chat-parts": [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"Part one {i}. "},
                        {"type": "text", "text": "Part two."},
                    ],
                },
                {"role": "assistant", "content": [{"type": "text", "text": f"Answer {i}"}]},
            ]
        }
        for i in range(4)
    ],
}


@pytest.mark.parametrize("template", ["tiny", "tools"])
def test_mlx_lm_parity_token_ids(tiny_model: Path, tmp_path: Path, template: str):
    """Raw records into mlx_lm and cortex's prepared files into mlx_lm tokenize the same.

    With the tiny model's template (which ignores tools) and with one that renders tools,
    calls, tool results and text parts. Content parts are left out with the tiny template:
    it writes a list's Python repr, which cortex rightly does not reproduce.
    """
    import types

    from mlx_lm.tuner.datasets import load_local_dataset
    from mlx_lm.utils import load as load_model

    if template == "tools":
        config_path = tiny_model / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = TOOLS_TEMPLATE
        config_path.write_text(json.dumps(config))
    _, tokenizer = load_model(str(tiny_model))
    options = types.SimpleNamespace(mask_prompt=False)
    forms = {k: v for k, v in PARITY_FORMS.items() if template == "tools" or k != "chat-parts"}
    for name, records in forms.items():
        raw = tmp_path / f"raw-{name}"
        raw.mkdir()
        body = "".join(json.dumps(r) + "\n" for r in records)
        (raw / "train.jsonl").write_text(body)
        src = tmp_path / f"{name}.jsonl"
        src.write_text(body)
        out = tmp_path / f"out-{name}"
        prepare_dataset(src, out)
        direct, _, _ = load_local_dataset(raw, tokenizer, options)
        train, valid, _ = load_local_dataset(out, tokenizer, options)
        want = Counter(tuple(direct.process(direct[i])[0]) for i in range(len(direct)))
        got = Counter(tuple(ds.process(ds[i])[0]) for ds in (train, valid) for i in range(len(ds)))
        assert got == want, name
        if template == "tools" and name == "chat-tools":  # the template did render the calls
            rendered = tokenizer.apply_chat_template(
                records[0]["messages"], tools=records[0]["tools"], tokenize=False
            )
            assert "[c0 get_weather(" in rendered and "[c0] sun" in rendered
            assert "get_weather" in rendered.split("\n", 1)[0]
        if template == "tools" and name == "chat-tools":  # ShareGPT's form of the same records
            sharegpt = [
                {
                    "system": "Use tools.",
                    "tools": [WEATHER_TOOL["function"]],
                    "conversations": [
                        {"from": "human", "value": f"Weather in city {i}?"},
                        {
                            "from": "function_call",
                            "id": f"c{i}",
                            "value": json.dumps(
                                {"name": "get_weather", "arguments": {"city": f"city {i}"}}
                            ),
                        },
                        {"from": "observation", "tool_call_id": f"c{i}", "value": "sun"},
                        {"from": "gpt", "value": f"Sunny in city {i}."},
                    ],
                }
                for i in range(4)
            ]
            src = tmp_path / "sharegpt.jsonl"
            src.write_text("".join(json.dumps(r) + "\n" for r in sharegpt))
            prepare_dataset(src, tmp_path / "out-sharegpt")
            train, valid, _ = load_local_dataset(tmp_path / "out-sharegpt", tokenizer, options)
            got = Counter(
                tuple(ds.process(ds[i])[0]) for ds in (train, valid) for i in range(len(ds))
            )
            assert got == want, "sharegpt"
        if template == "tools" and name == "chat-parts":
            rendered = tokenizer.apply_chat_template(records[0]["messages"], tokenize=False)
            assert rendered == "<|user|>Part one 0. Part two.\n<|assistant|>Answer 0<|end|>\n"
