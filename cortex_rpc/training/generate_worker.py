"""The generation worker: ``python -m cortex_rpc.training.generate_worker``.

Keeps one model (base + optional adapter) loaded between requests, so "load now and chat"
pays for loading once. Requests arrive as JSON lines on stdin::

    {"id": 1, "model": BASE_DIR, "adapter": ADAPTER_DIR|null, "quantizationBits": null,
     "prompt": "...", "maxTokens": 64, "temperature": 0.0}

Replies go to the event fd (see ``events.py``), one JSON line each: ``{"id", "chunk"}`` per
piece of text, then ``{"id", "result": {text, tokens, tokensPerSecond, ...}}`` or
``{"id", "error": {code, message}}``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from ..accel import preload_fast_blas
from .events import EventWriter, open_event_writer


class LoadedModel:
    """The model in memory: a base (quantized or not) plus at most one adapter.

    Switching between LoRA/DoRA adapters of the same base keeps the base weights: the
    adapter layers are unwrapped back to the base's own linear layers and the next adapter
    is applied. Only a different base, different quantization, or a full fine-tune (which
    replaces base weights) reloads from disk.
    """

    def __init__(self) -> None:
        self.base_key: tuple | None = None
        self.adapter: str | None = None
        self.adapter_type: str | None = None
        self.layout: tuple | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.loads = 0  # full loads from disk, reported for the switching benchmark

    def get(self, base: str, adapter: str | None, bits: int | None) -> tuple[Any, Any]:
        """Return (model, tokenizer) with ``adapter`` applied, reloading only when needed."""
        from pathlib import Path

        from mlx_lm.tuner.utils import load_adapters

        from .output import load_with_adapter

        base_key = (base, bits)
        if base_key == self.base_key and adapter == self.adapter:
            return self.model, self.tokenizer
        new_layout = _adapter_layout(adapter)
        new_type = new_layout[0] if new_layout else None
        if base_key != self.base_key or "full" in (self.adapter_type, new_type):
            self.model = self.tokenizer = None
            self.model, self.tokenizer = load_with_adapter(Path(base), None, bits)
            self.loads += 1
        elif adapter is not None and new_layout == self.layout:
            # Same layers, rank and keys: only the adapter weights change.
            import mlx.core as mx

            weights = mx.load(os.path.join(adapter, "adapters.safetensors"))
            self.model.load_weights(list(weights.items()), strict=False)
            self.adapter = adapter
            return self.model, self.tokenizer
        else:
            remove_adapter_layers(self.model)
        self.base_key, self.adapter, self.adapter_type, self.layout = base_key, None, None, None
        if adapter is not None:
            load_adapters(self.model, adapter)
            self.model.eval()
            self.adapter, self.adapter_type, self.layout = adapter, new_type, new_layout
        return self.model, self.tokenizer


def _adapter_layout(adapter: str | None) -> tuple | None:
    """Return what decides the adapter layers' shapes: type, layers, rank, scale, keys."""
    if adapter is None:
        return None
    with open(os.path.join(adapter, "adapter_config.json")) as handle:
        config = json.load(handle)
    lora = config.get("lora_parameters") or {}
    return (
        config.get("fine_tune_type", "lora"),
        config.get("num_layers"),
        lora.get("rank"),
        lora.get("scale"),
        lora.get("dropout"),
        tuple(lora.get("keys") or ()),
    )


def remove_adapter_layers(model: Any) -> int:
    """Replace every LoRA/DoRA wrapper by the base layer it wraps; return how many."""
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    wrappers = (LoRALinear, LoRASwitchLinear, LoRAEmbedding, DoRALinear, DoRAEmbedding)
    found = [
        (name, module.linear if hasattr(module, "linear") else module.embedding)
        for name, module in model.named_modules()
        if isinstance(module, wrappers)
    ]
    if found:
        model.update_modules(tree_unflatten(found))
    return len(found)


def chat_prompt(tokenizer: Any, prompt: str) -> Any:
    """Return the prompt with the tokenizer's chat template applied (plain text if none)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True
        )
    return prompt


def handle(request: dict, loaded: LoadedModel, out: EventWriter) -> None:
    """Answer one request: stream chunks, then the result."""
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    rid = request.get("id")
    model, tokenizer = loaded.get(
        request["model"], request.get("adapter"), request.get("quantizationBits")
    )
    sampler = make_sampler(temp=float(request.get("temperature") or 0.0))
    text = []
    last = None
    for response in stream_generate(
        model,
        tokenizer,
        chat_prompt(tokenizer, request["prompt"]),
        max_tokens=int(request.get("maxTokens") or 128),
        sampler=sampler,
    ):
        last = response
        if response.text:
            text.append(response.text)
            out.emit("chunk", id=rid, text=response.text)
    out.emit(
        "result",
        id=rid,
        text="".join(text),
        tokens=last.generation_tokens if last else 0,
        tokensPerSecond=last.generation_tps if last else 0.0,
        promptTokens=last.prompt_tokens if last else 0,
        finishReason=last.finish_reason if last else None,
    )


def main() -> int:
    """Serve requests until stdin closes."""
    out = open_event_writer()
    preload_fast_blas()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loaded = LoadedModel()
    out.emit("ready", pid=os.getpid())
    for line in sys.stdin:
        if not line.strip():
            continue
        request: dict = {}
        try:
            request = json.loads(line)
            handle(request, loaded, out)
        except Exception as exc:  # noqa: BLE001 - report and keep serving
            traceback.print_exc()
            out.emit(
                "error",
                id=request.get("id"),
                code=getattr(exc, "code", "generation-failed"),
                message=f"{type(exc).__name__}: {exc}",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
