"""The family replicas load in mlx_lm and transformers, and render their real chat templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.families import FAMILIES, SPECS, build_family_hf_cache, family_template

SYSTEM = "You are terse."
CHAT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
]
MULTI = [
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another."},
    {"role": "assistant", "content": "Red."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL_ID = "call12345"  # Mistral's template insists on 9 characters
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": CALL_ID,
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": CALL_ID, "name": "get_weather", "content": "sunny"},
    {"role": "assistant", "content": "It is sunny."},
]
TOOL_FAMILIES = ("llama3.2", "qwen2.5", "qwen3", "mistral-v0.3")

# What an assistant turn "Hello!" looks like in each family's rendering.
ASSISTANT_TURN = {
    "llama3.2": "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
    "qwen2.5": "<|im_start|>assistant\nHello!<|im_end|>\n",
    "qwen3": "<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n",
    "gemma2": "<start_of_turn>model\nHello!<end_of_turn>\n",
    "gemma3": "<start_of_turn>model\nHello!<end_of_turn>\n",
    "mistral-v0.3": "[/INST] Hello!</s>",
    "phi3": "<|assistant|>\nHello!<|end|>\n",
}
SYSTEM_TURN = {
    "llama3.2": "Today Date: ",  # the system header carries a date, then the system text
    "qwen2.5": f"<|im_start|>system\n{SYSTEM}<|im_end|>\n",
    "qwen3": f"<|im_start|>system\n{SYSTEM}<|im_end|>\n",
    "gemma3": f"<bos><start_of_turn>user\n{SYSTEM}\n\nHi<end_of_turn>\n",
    "phi3": f"<|system|>\n{SYSTEM}<|end|>\n",
}


def _without_phi3_eos(family: str, text: str) -> str:
    """Phi-3.5's template ends a rendering without a generation prompt with eos_token."""
    if family == "phi3":
        assert text.endswith("<|endoftext|>")
        return text.removesuffix("<|endoftext|>")
    return text


def _tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def _render(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def test_families_are_the_seven():
    assert FAMILIES == (
        "llama3.2",
        "qwen2.5",
        "qwen3",
        "gemma2",
        "gemma3",
        "mistral-v0.3",
        "phi3",
    )
    assert set(SPECS) == set(FAMILIES)
    with pytest.raises(ValueError, match="unknown family"):
        family_template("llama2")


def test_mlx_lm_loads_and_generates(family_model: Path):
    import mlx.core as mx
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(family_model))
    config = json.loads((family_model / "config.json").read_text())
    assert config["model_type"] == SPECS[family_model.name].config["model_type"]
    tokens = tokenizer.encode("Hello there")
    logits = model(mx.array([tokens]))
    assert logits.shape == (1, len(tokens), config["vocab_size"])
    text = mlx_lm.generate(model, tokenizer, "Hello there", max_tokens=3)
    assert isinstance(text, str)
    assert set(config["eos_token_id"]) <= tokenizer.eos_token_ids


def test_tokenizer_has_the_family_tokens(family_model: Path):
    spec = SPECS[family_model.name]
    tokenizer = _tokenizer(family_model)
    assert len(tokenizer) <= 600
    for token in spec.special_tokens + spec.added_tokens:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert tokenizer.convert_ids_to_tokens(ids[0]) == token
    assert set(spec.special_tokens) <= set(tokenizer.all_special_tokens) | set(
        tokenizer.added_tokens_encoder
    )
    for key in ("bos_token", "eos_token", "pad_token"):
        assert getattr(tokenizer, key) == spec.tokenizer.get(key)
    ids = tokenizer("Hi").input_ids
    if spec.bos_prefix is not None:
        assert ids[0] == tokenizer.convert_tokens_to_ids(spec.bos_prefix)
        assert tokenizer.decode(ids, skip_special_tokens=True) == "Hi"
    else:
        assert tokenizer.decode(ids) == "Hi"
    if spec.template_file:
        assert (family_model / "chat_template.jinja").read_text() == family_template(
            family_model.name
        )
        config = json.loads((family_model / "tokenizer_config.json").read_text())
        assert "chat_template" not in config
    assert tokenizer.chat_template == family_template(family_model.name)


def test_system_user_assistant(family_model: Path):
    family = family_model.name
    tokenizer = _tokenizer(family_model)
    if family == "gemma2":
        from jinja2.exceptions import TemplateError

        with pytest.raises(TemplateError, match="System role not supported"):
            _render(tokenizer, CHAT)
        return
    text = _render(tokenizer, CHAT)
    assert _without_phi3_eos(family, text).endswith(ASSISTANT_TURN[family])
    if family == "mistral-v0.3":
        # v0.3 puts the system message into the *last* user turn only when that turn is
        # the last message: a finished conversation loses it.
        assert SYSTEM not in text
        assert text == "<s>[INST] Hi[/INST] Hello!</s>"
    else:
        assert SYSTEM_TURN[family] in text
        assert SYSTEM in text
    if family == "llama3.2":
        assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
        assert f"\n\n{SYSTEM}<|eot_id|>" in text


def test_multi_turn_prompt_is_a_prefix(family_model: Path):
    family = family_model.name
    tokenizer = _tokenizer(family_model)
    full = _render(tokenizer, MULTI)
    prompt = _render(tokenizer, MULTI[:-1], add_generation_prompt=True)
    assert full.startswith(prompt)
    assert "Blue." in full and "Red." in full
    turn = ASSISTANT_TURN[family].replace("Hello!", "Red.")
    assert _without_phi3_eos(family, full).endswith(turn)


def test_qwen3_think_blocks(family_models):
    tokenizer = _tokenizer(family_models("qwen3"))
    # The final assistant turn (after the last user query) always gets a think block,
    # empty when there was no reasoning; earlier turns have theirs stripped.
    full = _render(tokenizer, MULTI)
    assert "<|im_start|>assistant\nBlue.<|im_end|>" in full
    assert full.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nRed.<|im_end|>\n")
    reasoned = [*MULTI[:3], {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nRed."}]
    assert "<think>\nhmm\n</think>\n\nRed." in _render(tokenizer, reasoned)
    early = [{**MULTI[0]}, {"role": "assistant", "content": "<think>x</think>Blue."}, MULTI[2]]
    assert "<|im_start|>assistant\nBlue.<|im_end|>" in _render(tokenizer, early)
    off = _render(tokenizer, MULTI[:1], add_generation_prompt=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    on = _render(tokenizer, MULTI[:1], add_generation_prompt=True)
    assert on.endswith("<|im_start|>assistant\n")


def test_mistral_system_prompt_is_not_a_prefix(family_models):
    """The documented v0.3 quirk behind mlx_lm's prompt-mask bug."""
    tokenizer = _tokenizer(family_models("mistral-v0.3"))
    prompt = _render(tokenizer, CHAT[:-1], add_generation_prompt=True)
    full = _render(tokenizer, CHAT)
    assert prompt == f"<s>[INST] {SYSTEM}\n\nHi[/INST]"
    assert not full.startswith(prompt)


@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_tool_calling(family_models, family: str):
    tokenizer = _tokenizer(family_models(family))
    text = _render(tokenizer, TOOL_CHAT, tools=TOOLS)
    assert "get_weather" in text and "sunny" in text and "It is sunny." in text
    expected = {
        "llama3.2": [
            "Environment: ipython\n",
            '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", '
            '"parameters": {"city": "Paris"}}<|eot_id|>',
            # A string is "iterable" to Jinja, so the template JSON-quotes string results.
            '<|start_header_id|>ipython<|end_header_id|>\n\n"sunny"<|eot_id|>',
        ],
        "qwen2.5": [
            "<tools>\n",
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>",
        ],
        "qwen3": [
            "<tools>\n",
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>",
        ],
        "mistral-v0.3": [
            '[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather"',
            '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, '
            f'"id": "{CALL_ID}"}}]</s>',
            f'[TOOL_RESULTS] {{"content": sunny, "call_id": "{CALL_ID}"}}[/TOOL_RESULTS]',
        ],
    }[family]
    for piece in expected:
        assert piece in text, piece


def test_mistral_rejects_short_tool_call_ids(family_models):
    from jinja2.exceptions import TemplateError

    tokenizer = _tokenizer(family_models("mistral-v0.3"))
    bad = json.loads(json.dumps(TOOL_CHAT).replace(CALL_ID, "c1"))
    with pytest.raises(TemplateError, match="length 9"):
        _render(tokenizer, bad, tools=TOOLS)


@pytest.mark.parametrize("family", ["llama3.2", "gemma3"])
def test_quantized_variant(family_models, family: str):
    import mlx_lm

    directory = family_models(family, quantized=True)
    config = json.loads((directory / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["group_size"] == 32
    model, tokenizer = mlx_lm.load(str(directory))
    assert isinstance(mlx_lm.generate(model, tokenizer, "Hi", max_tokens=2), str)
    assert tokenizer.chat_template == family_template(family)


def test_hf_cache_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants as hf_constants
    import mlx_lm

    hub = tmp_path / "hf-home" / "hub"
    snapshot = build_family_hf_cache("qwen2.5", hub)
    repo = SPECS["qwen2.5"].hf_repo
    assert snapshot.parent.parent.name == "models--Qwen--Qwen2.5-0.5B-Instruct"
    assert (snapshot / "config.json").is_symlink()
    assert (hub / "models--Qwen--Qwen2.5-0.5B-Instruct" / "refs" / "main").read_text() == (
        snapshot.name
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    model, tokenizer = mlx_lm.load(repo)
    assert isinstance(mlx_lm.generate(model, tokenizer, "Hi", max_tokens=2), str)
    assert tokenizer.eos_token == "<|im_end|>"
