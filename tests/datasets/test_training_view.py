"""The training view: what the worker trains for a record, on the tiny model's template."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_rpc.datasets.training_view import (
    TemplateRenderer,
    ViewOptions,
    load_renderer,
    merge_system_message,
    summarize,
)


@pytest.fixture(scope="module")
def renderer(tiny_model_template: Path) -> TemplateRenderer:
    return load_renderer(str(tiny_model_template))


def trained_text(view) -> list[str]:
    return [s["text"] for s in view.segments() if s["trained"]]


def test_every_assistant_turn_is_trained_once_and_nothing_else(renderer: TemplateRenderer) -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Hello again."},
        ]
    }
    view = renderer.view(record)
    assert view.ok
    assert trained_text(view) == ["Hello!<|end|>\n", "Hello again.<|end|>\n"]
    assert "".join(s["text"] for s in view.segments()) == view.text
    last = renderer.view(record, ViewOptions(train_on="last"))
    assert trained_text(last) == ["Hello again.<|end|>\n"]


def test_weight_zero_turns_are_not_trained(renderer: TemplateRenderer) -> None:
    record = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bad answer", "weight": 0},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Good answer", "weight": 1},
        ]
    }
    assert trained_text(renderer.view(record)) == ["Good answer<|end|>\n"]


def test_prompt_completion_matches_mlx_lm_offsets(renderer: TemplateRenderer) -> None:
    record = {"prompt": "What is 2+2?", "completion": "4"}
    view = renderer.view(record)
    messages = [{"role": "user", "content": record["prompt"]}]
    full = renderer.tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": "4"}], return_dict=False
    )
    offset = len(
        renderer.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=False
        )
    )
    assert view.ids == list(full)
    assert view.trained == [offset <= t for t in range(len(full))]


def test_text_records_train_every_token_and_end_with_eos(renderer: TemplateRenderer) -> None:
    view = renderer.view({"text": "plain text here"})
    assert view.ids[-1] == renderer.eos_token_id
    assert view.trained == [t > 0 for t in range(len(view.ids))]


def test_truncation_counts_lost_answer_tokens(renderer: TemplateRenderer) -> None:
    record = {"prompt": "Short question", "completion": "a long answer " * 20}
    full = renderer.view(record)
    cut = renderer.view(record, ViewOptions(max_seq_length=10))
    assert cut.kept == 10 and cut.token_count == full.token_count
    assert cut.trained_count + cut.lost_to_truncation == full.trained_count
    assert cut.lost_to_truncation > 0


def test_no_prompt_masking_trains_everything(renderer: TemplateRenderer) -> None:
    view = renderer.view({"prompt": "q", "completion": "a"}, ViewOptions(mask_prompt=False))
    assert view.trained_count == view.token_count - 1


def test_merge_system_message_keeps_the_text() -> None:
    merged = merge_system_message(
        [
            {"role": "system", "content": "Rules."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Yo"},
        ]
    )
    assert merged == [
        {"role": "user", "content": "Rules.\n\nHi"},
        {"role": "assistant", "content": "Yo"},
    ]


def test_summary_counts_cuts_and_untrained_records(renderer: TemplateRenderer) -> None:
    records = [
        {"prompt": "q", "completion": "short"},
        {"prompt": "q " * 30, "completion": "cut away"},
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "x", "weight": 0},
            ]
        },
    ]
    views = renderer.views(records, ViewOptions(max_seq_length=24))
    summary = summarize(views)
    assert summary.records == 3 and summary.errors == 0
    assert summary.cut == 1 and summary.lost_trained_tokens > 0
    assert summary.untrained == 2  # the cut record loses its whole answer; weight 0 trains none
    assert summary.trained["total"] == sum(v.trained_count for v in views)


def test_the_rust_fast_path_gives_the_hf_call_s_ids_and_offsets(
    renderer: TemplateRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        {"text": "plain text here"},
        {"prompt": "What is 2+2?", "completion": "4 <|end|> ünïcode"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
            ]
        },
    ]
    assert renderer._backend() is not None
    fast = renderer.views(records)
    monkeypatch.setattr(renderer, "_backend", lambda: None)
    slow = renderer.views(records)
    assert [(v.ids, v.offsets, v.trained) for v in fast] == [
        (v.ids, v.offsets, v.trained) for v in slow
    ]
