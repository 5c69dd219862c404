"""What gets trained, on the real templates of seven families: each answer trained once, nothing else.

The expected trained text is built here independently of the engine: for every trained
assistant turn, its content followed by the family's end of turn (and, for tool calls, the
call's name and arguments in between); every other message's text must stay untrained.
"""

from __future__ import annotations

import json

import pytest

from cortex_rpc.datasets.training_view import TemplateRenderer, ViewOptions, load_renderer
from tests.families import FAMILIES

END_OF_TURN = {
    "llama3.2": "<|eot_id|>",
    "qwen2.5": "<|im_end|>",
    "qwen3": "<|im_end|>",
    "gemma2": "<end_of_turn>",
    "gemma3": "<end_of_turn>",
    "mistral-v0.3": "</s>",
    "phi3": "<|end|>",
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
SYSTEM = {"role": "system", "content": "Answer in one short sentence."}
CHATS = {
    "single": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital."},
    ],
    "system": [
        SYSTEM,
        {"role": "user", "content": "Name a primary colour."},
        {"role": "assistant", "content": "Red is one."},
    ],
    "multi-turn": [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "Tell me a fact."},
        {"role": "assistant", "content": "Honey never spoils."},
    ],
    "weights": [
        {"role": "user", "content": "Say something wrong"},
        {"role": "assistant", "content": "Cats bark loudly.", "weight": 0},
        {"role": "user", "content": "Now say something right"},
        {"role": "assistant", "content": "Cats purr softly.", "weight": 1},
    ],
    "tools": [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call12345",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call12345", "content": "temperature 3 C, overcast"},
        {"role": "assistant", "content": "It is cold in Oslo today."},
    ],
}
TOOL_FAMILIES = ("llama3.2", "qwen2.5", "qwen3", "mistral-v0.3")


@pytest.fixture(scope="module")
def renderers(family_models) -> dict[str, TemplateRenderer]:
    return {family: load_renderer(str(family_models(family))) for family in FAMILIES}


def trained_pieces(view) -> list[str]:
    return [s["text"] for s in view.segments() if s["trained"]]


def cases():
    for family in FAMILIES:
        for name in CHATS:
            if name == "tools" and family not in TOOL_FAMILIES:
                continue
            yield pytest.param(family, name, id=f"{family}-{name}")


@pytest.mark.parametrize(("family", "chat"), list(cases()))
def test_each_answer_is_trained_once_and_nothing_else(renderers, family: str, chat: str) -> None:
    renderer = renderers[family]
    messages = CHATS[chat]
    record = {"messages": messages} | ({"tools": TOOLS} if chat == "tools" else {})
    view = renderer.view(record)
    if family == "gemma2" and chat == "system":
        assert [i.code for i in view.issues] == ["template-role"]
        assert not view.ok and view.trained_count == 0
        return
    errors = [i for i in view.issues if i.severity == "error"]
    assert not errors, errors
    trained = "".join(trained_pieces(view))
    end = END_OF_TURN[family]
    answers = [m for m in messages if m["role"] == "assistant" and m.get("weight", 1) != 0]
    # Each trained answer appears exactly once in the trained text, followed by its end token.
    assert trained.count(end) == len(answers), (trained, view.text)
    for answer in answers:
        if answer["content"]:
            assert trained.count(answer["content"]) == 1
            after = trained[trained.index(answer["content"]) + len(answer["content"]) :]
            assert after.lstrip(" ").startswith(end) or "<tool_call>" in after
        else:
            call = answer["tool_calls"][0]["function"]
            assert call["name"] in trained and "Oslo" in trained
    # Nothing the user, the system or a tool wrote, and no untrained answer, is trained.
    for message in messages:
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            assert message["content"] not in trained, message
    # The token mask covers the same text: trained tokens decode to the trained pieces.
    decoded = "".join(
        view.text[start:end_]
        for flag, (start, end_) in zip(view.trained, view.offsets, strict=True)
        if flag
    )
    assert decoded == trained


@pytest.mark.parametrize("family", FAMILIES)
def test_single_turn_mask_equals_mlx_lm_where_its_prefix_rule_holds(renderers, family) -> None:
    """One user turn and one answer: mlx_lm's offset mask and the engine agree, token for token."""
    renderer = renderers[family]
    messages = CHATS["single"]
    tokenizer = renderer.tokenizer
    full = list(tokenizer.apply_chat_template(messages, return_dict=False))
    offset = len(
        tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=False)
    )
    view = renderer.view({"messages": messages})
    assert view.ids == full
    if family == "qwen3":  # the template's empty think block is masked, not trained
        assert [i.code for i in view.issues] == ["template-added-text"]
        assert view.trained_count < len(full) - offset
        assert "<think>" not in "".join(trained_pieces(view))
        trained_view = renderer.view({"messages": messages}, ViewOptions(train_template_text=True))
        assert trained_view.trained == [t >= offset for t in range(len(full))]
    else:
        assert view.trained == [t >= offset for t in range(len(full))], family


def test_mistral_system_prompt_is_reported_as_dropped(renderers) -> None:
    view = renderers["mistral-v0.3"].view({"messages": CHATS["system"]})
    assert [i.code for i in view.issues] == ["template-dropped-text"]
    assert "".join(trained_pieces(view)) == "Red is one.</s>"


def test_tool_arguments_render_as_json(renderers) -> None:
    view = renderers["qwen2.5"].view({"messages": CHATS["tools"], "tools": TOOLS})
    trained = "".join(trained_pieces(view))
    assert json.dumps({"city": "Oslo"}) in trained
