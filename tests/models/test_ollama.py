"""Modelfile TEMPLATEs render a conversation as the family's own Jinja chat template does.

The Go templates are executed by Go's ``text/template`` (``ollama_render.go``, the engine
Ollama uses) when ``go`` is installed; the expected texts are the Jinja renderings, also
checked here against the replicas' vendored chat templates.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cortex_rpc.models.ollama import modelfile_text, ollama_template
from tests.families import FAMILIES, build_family

RENDERER = Path(__file__).with_name("ollama_render.go")
SYSTEM, USER, ANSWER = "SYS", "Hi", "Hello"
# system + user + assistant, as each family's Jinja template renders it (BOS left out: llama.cpp
# adds it; Llama 3's "Today Date" line left out: Go templates have no clock).
EXPECTED = {
    "llama3.2": "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December"
    " 2023\n\nSYS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>",
    "qwen2.5": "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello<|im_end|>\n",
    "qwen3": "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\nHello<|im_end|>\n",
    "gemma2": "<start_of_turn>user\nSYS\n\nHi<end_of_turn>\n<start_of_turn>model\nHello"
    "<end_of_turn>\n",
    "gemma3": "<start_of_turn>user\nSYS\n\nHi<end_of_turn>\n<start_of_turn>model\nHello"
    "<end_of_turn>\n",
    # Mistral v0.3 keeps the system prompt only in the last user turn.
    "mistral-v0.3": "[INST] Hi[/INST] Hello</s>",
    "phi3": "<|system|>\nSYS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n"
    "<|endoftext|>",
}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("families")
    return {f: AutoTokenizer.from_pretrained(str(build_family(f, root / f))) for f in FAMILIES}


def jinja(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    if messages[0]["role"] == "system" and "System role not supported" in tokenizer.chat_template:
        # Gemma 2 refuses a system turn; its convention is the prompt atop the first user turn.
        first = {"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
        messages = [first, *messages[2:]]
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    if tokenizer.bos_token and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token) :]
    return re.sub(r"Today Date: [^\n]*\n", "", text)


def go_render(template: str, messages: list[dict]) -> str:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    data = {"template": template, "system": system, "messages": messages}
    done = subprocess.run(
        ["go", "run", str(RENDERER)],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return done.stdout


CONVERSATIONS = (
    ([{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}], True),
    (
        [
            {"role": "user", "content": USER},
            {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": "Bye"},
        ],
        True,
    ),
)


@pytest.mark.parametrize("family", FAMILIES)
def test_expected_text_is_the_jinja_rendering(family, tokenizers):
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
        {"role": "assistant", "content": ANSWER},
    ]
    assert jinja(tokenizers[family], messages) == EXPECTED[family]
    assert ollama_template(tokenizers[family].chat_template) is not None


@pytest.mark.skipif(
    shutil.which("go") is None, reason="go is not installed (apt install golang-go)"
)
@pytest.mark.parametrize("family", FAMILIES)
def test_go_template_renders_as_the_chat_template(family, tokenizers):
    template = ollama_template(tokenizers[family].chat_template).template
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
        {"role": "assistant", "content": ANSWER},
    ]
    assert go_render(template, messages) == EXPECTED[family]
    for conversation, generation_prompt in CONVERSATIONS:
        expected = jinja(tokenizers[family], conversation, generation_prompt)
        assert go_render(template, conversation) == expected


def test_modelfile_names_the_gguf_and_the_stop_tokens():
    template = ollama_template("{{ '<|im_start|>' }}<think>")
    text = modelfile_text("m-f16.gguf", template)
    assert text.startswith("FROM ./m-f16.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert 'TEMPLATE """' in text
