"""cortex/serve over real stdio: mlx_lm's OpenAI server answers with the adapter's output."""

from __future__ import annotations

import urllib.error

import pytest
from pygls.exceptions import JsonRpcException

from cortex_rpc.generation.serving import chat
from tests.families import build_family
from tests.models.test_export import make_fine_tune

from .conftest import request

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def mlx_answer(base, adapter, max_tokens: int) -> str:
    from mlx_lm import generate

    from cortex_rpc.models.fine_tuned import load_with_adapter

    model, tokenizer = load_with_adapter(base, adapter)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    return generate(model, tokenizer, prompt, max_tokens=max_tokens)


async def test_serve_answers_with_the_adapter_and_stops(client, cortex_home, tmp_path):
    base = build_family("qwen2.5", tmp_path / "qwen2.5")
    adapter = make_fine_tune(base, cortex_home / "mlx_models", "served-ft")
    served = await request(client, "cortex/serve", {"model": "served-ft"})
    assert served["url"].startswith("http://127.0.0.1:") and served["url"].endswith("/v1")
    listed = await request(client, "cortex/listServers")
    assert [s["model"] for s in listed["servers"]] == ["served-ft"]
    reply = chat(served["url"], MESSAGES, max_tokens=8)
    answer = reply["choices"][0]["message"]["content"]
    assert answer and answer == mlx_answer(base, adapter, 8)

    stopped = await request(client, "cortex/stopServing", {"model": "served-ft"})
    assert stopped["stopped"] is True
    assert (await request(client, "cortex/listServers"))["servers"] == []
    with pytest.raises((urllib.error.URLError, OSError)):
        chat(served["url"], MESSAGES, max_tokens=1)
    with pytest.raises(JsonRpcException):
        await request(client, "cortex/stopServing", {"model": "served-ft"})
