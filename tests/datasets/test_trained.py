"""Model-aware dataset checks, fixes, hovers and previews, without a server (tiny model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cortex_rpc.datasets import load_text, validate_dataset
from cortex_rpc.datasets.editor import DatasetDocument, code_actions, hover, publish_payload
from cortex_rpc.datasets.trained import (
    MERGE_TITLE,
    check_all,
    training_preview,
    view_options,
)
from cortex_rpc.datasets.training_view import TemplateRenderer, load_renderer
from cortex_rpc.errors import InvalidParams
from cortex_rpc.models.tiny import CHAT_TEMPLATE

SYSTEM = "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}\n"
TEMPLATES = {
    # Gemma 2 style: a system message is refused.
    "refuses-system": "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}" + CHAT_TEMPLATE,
    # Mistral v0.3 style: the system message is left out.
    "drops-system": CHAT_TEMPLATE.replace(SYSTEM, "{% if message['role'] == 'system' %}"),
    # Qwen3 style: empty think tags before every answer.
    "think": CHAT_TEMPLATE.replace(
        "<|assistant|>{{ message['content'] }}",
        "<|assistant|><think></think>{{ message['content'] }}",
    ),
}


def chat(*turns: tuple[str, str], **extra) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns], **extra})


WITH_SYSTEM = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"))
PLAIN = chat(("user", "Hi"), ("assistant", "Hello!"))


@pytest.fixture(scope="module")
def renderer(tiny_model_template: Path) -> TemplateRenderer:
    return load_renderer(str(tiny_model_template))


@pytest.fixture(scope="module")
def variant(tiny_model_template: Path, tmp_path_factory: pytest.TempPathFactory):
    """A renderer for a copy of the tiny model with one of TEMPLATES as its chat template."""
    made: dict[str, TemplateRenderer] = {}

    def make(name: str) -> TemplateRenderer:
        if name not in made:
            target = tmp_path_factory.mktemp("templates") / name
            shutil.copytree(tiny_model_template, target)
            config_path = target / "tokenizer_config.json"
            config = json.loads(config_path.read_text())
            config["chat_template"] = TEMPLATES[name]
            config_path.write_text(json.dumps(config))
            made[name] = load_renderer(str(target))
        return made[name]

    return make


def codes(result) -> list[tuple[str, int, str]]:
    return [(d.code, d.start_line, d.severity) for d in result.diagnostics]


def test_a_refused_system_role_is_an_error_on_the_whole_record(variant) -> None:
    text = PLAIN + "\n" + WITH_SYSTEM + "\n"
    result = validate_dataset(text=text, format="jsonl", renderer=variant("refuses-system"))
    refused = [d for d in result.diagnostics if d.code == "template-role"]
    assert [(d.start_line, d.severity) for d in refused] == [(1, "error")]
    assert (refused[0].start_character, refused[0].end_line) == (0, 1)
    assert refused[0].end_character == len(WITH_SYSTEM)
    assert "System role not supported" in refused[0].message and not result.ok
    assert not [
        d for d in result.diagnostics if d.code.startswith("template") and d.start_line == 0
    ]


def test_the_merge_fix_replaces_the_record_and_clears_the_error(variant) -> None:
    renderer = variant("refuses-system")
    doc = DatasetDocument(
        "file:///d.jsonl", PLAIN + "\n" + WITH_SYSTEM, language_id="jsonl", renderer=renderer
    )
    assert ("template-role", 1) in [(d.code, d.start_line) for d in doc.result().diagnostics]
    # Computed from the document, not from diagnostics the client sends back.
    action = next(a for a in code_actions(doc, (1, 3, 1, 3)) if a["title"] == MERGE_TITLE)
    edit = action["edit"]["changes"]["file:///d.jsonl"][0]
    assert edit["range"]["start"] == {"line": 1, "character": 0}
    assert json.loads(edit["newText"]) == {
        "messages": [
            {"role": "user", "content": "Be brief.\n\nHi"},
            {"role": "assistant", "content": "Hello!"},
        ]
    }
    doc.apply_change((1, 0, 1, edit["range"]["end"]["character"]), edit["newText"])
    assert not [d for d in doc.result().diagnostics if d.code.startswith("template")]
    assert not [a for a in code_actions(doc, (0, 0, 0, 0)) if a["title"] == MERGE_TITLE]


def test_a_dropped_system_prompt_is_a_warning_with_the_merge_fix(variant) -> None:
    renderer = variant("drops-system")
    result = validate_dataset(text=WITH_SYSTEM, format="jsonl", renderer=renderer)
    assert ("template-dropped-text", 0, "warning") in codes(result)
    doc = DatasetDocument("file:///d.jsonl", WITH_SYSTEM, language_id="jsonl", renderer=renderer)
    wire = publish_payload(doc, None)[0]["diagnostics"]
    dropped = next(d for d in wire if d["code"] == "template-dropped-text")
    actions = code_actions(doc, (0, 0, 0, 0))
    merge = next(a for a in actions if a["title"] == MERGE_TITLE)
    assert merge["diagnostics"] == [dropped] and merge["isPreferred"]


def test_added_template_text_is_reported_once_per_file(variant) -> None:
    text = "\n".join([PLAIN, chat(("user", "a"), ("assistant", "b")), PLAIN.replace("Hi", "Yo")])
    result = validate_dataset(text=text, format="jsonl", renderer=variant("think"))
    added = [d for d in result.diagnostics if d.code == "template-added-text"]
    assert len(added) == 1 and added[0].start_line == 0 and added[0].severity == "information"
    assert added[0].data == {"records": 3, "text": "<think></think>"}
    assert "3 records" in added[0].message and result.ok


def test_untrained_and_truncated_records_are_warnings(renderer: TemplateRenderer) -> None:
    long_answer = chat(("user", "Short question"), ("assistant", "a long answer " * 20))
    untrained = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "x", "weight": 0},
            ]
        }
    )
    text = "\n".join([PLAIN, long_answer, untrained])
    options = view_options({"maxSeqLength": 16})
    result = validate_dataset(text=text, format="jsonl", renderer=renderer, options=options)
    found = codes(result)
    assert ("record-truncated", 1, "warning") in found
    assert ("record-untrained", 2, "warning") in found
    assert not [c for c in found if c[1] == 0 and c[0].startswith("record-")]
    cut = next(d for d in result.diagnostics if d.code == "record-truncated")
    view = renderer.view(json.loads(long_answer), options)
    assert cut.data == {
        "tokens": view.token_count,
        "maxSeqLength": 16,
        "lostTrainedTokens": view.lost_to_truncation,
    }
    assert f"{view.token_count} tokens" in cut.message


def test_text_records_in_a_chat_file_render_as_answers(renderer: TemplateRenderer) -> None:
    states = load_text(PLAIN + '\n{"text": "plain words"}', "jsonl").states
    checked = check_all(states, renderer, view_options()).checked()
    assert "<|assistant|>plain words<|end|>" in checked[1][1].view.text
    alone = load_text('{"text": "plain words"}', "jsonl").states
    assert check_all(alone, renderer, view_options()).checked()[0][1].view.text == "plain words"


def test_an_edit_renders_only_the_edited_record(renderer: TemplateRenderer) -> None:
    calls = []

    class Counting(TemplateRenderer):
        def view(self, record, options):
            calls.append(record)
            return super().view(record, options)

    counting = Counting(renderer.tokenizer)
    lines = [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(6)]
    doc = DatasetDocument(
        "file:///d.jsonl", "\n".join(lines), language_id="jsonl", renderer=counting
    )
    publish_payload(doc, None)
    assert len(calls) == 6
    doc.apply_change((2, 0, 2, len(lines[2])), chat(("user", "new"), ("assistant", "edited")))
    params, summary = publish_payload(doc, None)
    assert len(calls) == 7 and calls[-1]["messages"][1]["content"] == "edited"
    fresh = DatasetDocument("file:///d.jsonl", doc.text, language_id="jsonl", renderer=counting)
    assert publish_payload(fresh, None) == (params, summary)


def test_hover_and_summary_show_what_is_trained(renderer: TemplateRenderer) -> None:
    doc = DatasetDocument("file:///d.jsonl", PLAIN, language_id="jsonl", renderer=renderer)
    text = hover(doc, 0, 0)
    view = renderer.view(json.loads(PLAIN))
    assert f"{view.token_count} tokens" in text and f"**{view.trained_count} trained**" in text
    assert "⟦Hello!<|end|>\n⟧" in text and "```text\n" in text
    summary = publish_payload(doc, None)[1]
    assert summary["trainedTokens"] == view.trained_count
    assert summary["training"]["records"] == 1
    assert summary["text"].endswith(f"· {view.trained_count} trained tokens")
    without = DatasetDocument("file:///d.jsonl", PLAIN, language_id="jsonl")
    assert "trainedTokens" not in publish_payload(without, None)[1]
    assert "⟦" not in hover(without, 0, 0)


def test_hover_caps_the_rendered_text(renderer: TemplateRenderer) -> None:
    record = chat(("user", "q"), ("assistant", "word " * 2000))
    doc = DatasetDocument("file:///d.jsonl", record, language_id="jsonl", renderer=renderer)
    text = hover(doc, 0, 0)
    assert len(text) < 2500 and "…" in text


def test_preview_shows_some_records_and_summarizes_all(renderer: TemplateRenderer) -> None:
    lines = [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(5)]
    states = load_text("\n".join(lines), "jsonl").states
    options = view_options({"trainOn": "last", "maxSeqLength": 64})
    seen = []
    preview = training_preview(
        states, renderer, options, limit=2, on_progress=lambda d, t: seen.append((d, t))
    )
    wire = preview.to_wire()
    assert [r["line"] for r in wire["records"]] == [0, 1]
    assert wire["summary"]["records"] == 5 and seen[-1] == (5, 5)
    assert wire["options"] == {
        "trainOn": "last",
        "trainTemplateText": False,
        "maxSeqLength": 64,
        "maskPrompt": True,
    }
    first = wire["records"][0]
    assert [s["text"] for s in first["segments"] if s["trained"]] == ["a0<|end|>\n"]
    assert set(first) >= {"tokens", "trainedTokens", "truncated", "lostTrainedTokens", "issues"}
    one = training_preview(states, renderer, options, line=3).to_wire()
    assert [r["line"] for r in one["records"]] == [3] and one["summary"]["records"] == 5


def test_model_diagnostics_skip_records_with_errors(renderer: TemplateRenderer) -> None:
    states = load_text('{"prompt": "x"}\n' + PLAIN, "jsonl").states
    checks = check_all(states, renderer, view_options())
    assert [s.line for s, _ in checks.checked()] == [1] and len(checks.done) == 1
    assert checks.diagnostics() == []


def test_an_invalid_config_names_its_field() -> None:
    with pytest.raises(InvalidParams) as error:
        view_options({"trainOn": "first"})
    assert error.value.data["field"] == "config.trainOn"


def test_a_big_file_publishes_first_and_fills_in_its_model_checks(variant) -> None:
    """didOpen publishes without waiting for every record to render; the rest follows, and
    the final publish equals a fresh, fully rendered check."""
    import asyncio

    from cortex_rpc.datasets.documents import RENDER_CHUNK, DatasetDocuments
    from cortex_rpc.datasets.training_view import ViewOptions

    renderer = variant("think")
    lines = [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(RENDER_CHUNK * 3)]
    text = "\n".join(lines)
    published: list[dict] = []
    summaries: list[dict] = []

    async def scenario() -> None:
        docs = DatasetDocuments(published.append, summaries.append, lambda: 0.0)
        docs.training = (renderer, ViewOptions())
        docs.open("file:///big.jsonl", text, "jsonl", 1)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if summaries and "training" in summaries[-1]:
                break
        docs.worker.shutdown(wait=True)

    asyncio.run(scenario())
    assert summaries[0]["trainingPending"] == RENDER_CHUNK * 2
    final = summaries[-1]["training"]
    assert final["records"] == len(lines)
    fresh = DatasetDocument("file:///big.jsonl", text, language_id="jsonl", renderer=renderer)
    assert (published[-1], summaries[-1]) == publish_payload(fresh, 1)
    added = [d for d in published[-1]["diagnostics"] if d["code"] == "template-added-text"]
    assert len(added) == 1 and added[0]["data"]["records"] == len(lines)


def test_with_a_model_token_counts_replace_the_character_estimates(renderer) -> None:
    """long-example counts characters; with a model, record-truncated counts real tokens."""
    long = chat(("user", "Hi"), ("assistant", "word " * 500))
    without = validate_dataset(text=long, format="jsonl")
    assert "long-example" in [d.code for d in without.diagnostics]
    options = view_options({"maxSeqLength": 64})
    checked = validate_dataset(text=long, format="jsonl", renderer=renderer, options=options)
    codes = [d.code for d in checked.diagnostics]
    assert "long-example" not in codes and "record-truncated" in codes
    doc = DatasetDocument(
        "file:///d.jsonl", long, language_id="jsonl", renderer=renderer, view_options=options
    )
    assert [d.code for d in doc.result().diagnostics] == codes
