"""Incremental re-checking of an open dataset, fuzzed: after any sequence of edits the live
diagnostics, summary and hovers equal those of the same text opened fresh."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_rpc.datasets.editor import DatasetDocument, hover, publish_payload

FRAGMENTS = [
    '{"prompt": "a", "response": "b"}',
    '{"prompt": "a", "response": "b"}',
    '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
    '{"text": "plain"}',
    '{"answer": 1}',
    '{"prompt": "é😀", "response": "𝄞"}',
    "not json",
    "{",
    "}",
    '"',
    ",",
    "\n",
    "\n\n",
    "",
    " ",
    "😀",
    "\t",
    '{"prompt": ',
    '"x"}',
    "\r\n",
    # Issue 13's diagnostics: duplicate keys, preference data, content parts, weights, Dolly.
    '{"prompt": "a", "prompt": "b", "response": "c"}',
    '{"prompt": "p", "chosen": "c", "rejected": "r"}',
    '{"messages": [{"role": "user", "content": [{"type": "image_url"}]}, '
    '{"role": "assistant", "content": "x", "weight": 0}]}',
    '{"instruction": "i", "context": "c", "response": "r"}',
]
CASES = settings(
    max_examples=int(os.environ.get("CORTEX_EDITOR_FUZZ_CASES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@st.composite
def edit_sessions(draw):
    lines = draw(st.lists(st.sampled_from(FRAGMENTS[:7]), min_size=0, max_size=8))
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n"]))
    edits = []
    current = text
    for _ in range(draw(st.integers(1, 12))):
        rows = current.split("\n")
        start_line = draw(st.integers(0, len(rows) - 1))
        end_line = draw(st.integers(start_line, min(len(rows) - 1, start_line + 2)))
        start_char = draw(st.integers(0, len(rows[start_line])))
        end_char = draw(
            st.integers(0 if end_line > start_line else start_char, len(rows[end_line]))
        )
        new = "".join(draw(st.lists(st.sampled_from(FRAGMENTS), max_size=3)))
        whole = draw(st.integers(0, 20)) == 0  # now and then a full-text change
        offset = sum(len(r) + 1 for r in rows[:start_line]) + start_char
        end = sum(len(r) + 1 for r in rows[:end_line]) + end_char
        if whole:
            edits.append((None, new))
            current = new
        else:
            edits.append(
                (
                    (
                        start_line,
                        utf16(rows[start_line][:start_char]),
                        end_line,
                        utf16(rows[end_line][:end_char]),
                    ),
                    new,
                )
            )
            current = current[:offset] + new + current[end:]
    return text, edits, current


def view(doc: DatasetDocument) -> tuple:
    params, summary = publish_payload(doc, None)
    hovers = tuple(hover(doc, line, 0) for line in range(len(doc.lines)))
    return params["diagnostics"], summary, hovers


@CASES
@given(edit_sessions())
def test_edits_then_check_equals_a_fresh_check(session):
    text, edits, final = session
    live = DatasetDocument("file:///live.jsonl", text, language_id="jsonl")
    for change_range, new in edits:
        live.apply_change(change_range, new)
    assert "\n".join(live.lines) == final
    fresh = DatasetDocument("file:///live.jsonl", final, language_id="jsonl")
    assert view(live) == view(fresh)


@pytest.fixture(scope="module")
def tiny_renderer(tiny_model_template):
    from cortex_rpc.datasets.trained import view_options
    from cortex_rpc.datasets.training_view import load_renderer

    return load_renderer(str(tiny_model_template)), view_options({"maxSeqLength": 16})


@settings(
    max_examples=int(os.environ.get("CORTEX_EDITOR_FUZZ_MODEL_CASES", "60")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(session=edit_sessions())
def test_with_a_model_edits_then_check_equals_a_fresh_check(tiny_renderer, session):
    renderer, options = tiny_renderer
    text, edits, final = session
    live = DatasetDocument(
        "file:///live.jsonl", text, language_id="jsonl", renderer=renderer, view_options=options
    )
    for change_range, new in edits:
        live.apply_change(change_range, new)
        publish_payload(live, None)  # the cache of record views lives across edits
    fresh = DatasetDocument(
        "file:///live.jsonl", final, language_id="jsonl", renderer=renderer, view_options=options
    )
    assert view(live) == view(fresh)
