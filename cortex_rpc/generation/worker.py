"""The generation worker: ``python -m cortex_rpc.generation.worker``.

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
from ..training.contract import Chunk, Generated, GenerationRequest, Ready, RequestError
from ..workers import EventWriter, open_event_writer


class LoadedModel:
    """The model in memory: a base (quantized or not) plus at most one adapter.

    Switching between LoRA/DoRA adapters of the same base keeps the base weights, the
    tokenizer and the base's own layer objects, and never walks the whole model:

    - an adapter with the layout in place (type, layers, rank, scale, dropout, keys) only has
      its weights assigned;
    - another layout puts the base's layers back by reference and wraps the target layers
      with mlx_lm's LoRA/DoRA classes; the adapter layers of the last few layouts are kept
      (without their weights), so going back to one, or from the base to an adapter, is a
      swap of references plus the weights.

    An adapter replaces every adapter parameter, or gets new adapter layers: nothing of the
    previous adapter stays. The adapter file is checked before the model changes, so a bad
    adapter leaves the current one in place. Only a different base, a different
    quantization, or a full fine-tune (which replaces base weights) reloads from disk.
    """

    KEEP_LAYOUTS = 4  # adapter layers kept for switching back, beyond the one in place

    def __init__(self) -> None:
        self.base_key: tuple | None = None
        self.adapter: str | None = None
        self.adapter_type: str | None = None
        self.layout: tuple | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.loads = 0  # full loads from disk, reported for the switching benchmark
        self._tree: _BaseTree | None = None  # the base's layers as loaded
        self._slots: dict[tuple, list[_Slot] | None] = {}  # per (num_layers, keys)
        self._layouts: dict[tuple, _Wrapped] = {}  # per layout, most recently used last
        self._current: _Wrapped | None = None  # the adapter layers in place
        self._by_mlx_lm = False  # adapter layers put in place by mlx_lm's load_adapters
        self._stamp: tuple | None = None  # the adapter files' sizes and times when read

    def get(self, base: str, adapter: str | None, bits: int | None) -> tuple[Any, Any]:
        """Return (model, tokenizer) with ``adapter`` applied, reloading only when needed."""
        from pathlib import Path

        from ..models.fine_tuned import load_with_adapter

        base_key = (base, bits)
        stamp = _adapter_stamp(adapter)  # an adapter retrained in place is read again
        if base_key == self.base_key and adapter == self.adapter and stamp == self._stamp:
            return self.model, self.tokenizer
        config = _adapter_config(adapter)
        new_layout = _adapter_layout(config)
        new_type = new_layout[0] if new_layout else None
        if base_key != self.base_key or "full" in (self.adapter_type, new_type):
            self.model = self.tokenizer = self._tree = self._current = None
            self.base_key, self.adapter, self.adapter_type, self.layout = None, None, None, None
            self._slots, self._layouts, self._by_mlx_lm = {}, {}, False
            self.model, self.tokenizer = load_with_adapter(Path(base), None, bits)
            self.loads += 1
            self._tree = _BaseTree(self.model)
            self.base_key = base_key
        if adapter is None:
            self._unwrap()
        elif new_type == "full":
            self._load_with_mlx_lm(adapter)
        else:
            self._switch(adapter, config, new_layout)
        self.adapter, self.adapter_type, self.layout = adapter, new_type, new_layout
        self._stamp = stamp
        return self.model, self.tokenizer

    def _switch(self, adapter: str, config: dict, layout: tuple) -> None:
        """Put the LoRA/DoRA ``adapter`` in place of the current one."""
        import mlx.core as mx

        weights = mx.load(os.path.join(adapter, "adapters.safetensors"))
        wrapped = self._layouts.get(layout)
        if wrapped is None or not _covers(weights, wrapped.params):
            slots = self._find_slots(config)
            wrappers = None if slots is None else _wrap(slots, config, weights)
            if slots is None or wrappers is None:
                self._load_with_mlx_lm(adapter)
                return
            wrapped = _Wrapped(slots, wrappers)
            _check(adapter, weights, wrapped.params)  # raises before the model changes
        mx.eval(list(weights.values()))  # read the file now (mx.load is lazy), model unchanged
        if wrapped is not self._current:
            self._unwrap()
            wrapped.install()
            self._current = wrapped
        for name, value in weights.items():
            owner, leaf, _ = wrapped.params[name]
            owner[leaf] = value
        self._layouts.pop(layout, None)
        self._layouts[layout] = wrapped
        while len(self._layouts) > self.KEEP_LAYOUTS + 1:
            del self._layouts[next(iter(self._layouts))]

    def _load_with_mlx_lm(self, adapter: str) -> None:
        """The general path: mlx_lm's ``load_adapters`` on the base's own layers."""
        from mlx_lm.tuner.utils import load_adapters

        self._unwrap()
        self._by_mlx_lm = True
        load_adapters(self.model, adapter)
        self.model.eval()

    def _unwrap(self) -> None:
        """Put the base's own layers back where adapter layers are."""
        if self._by_mlx_lm:
            remove_adapter_layers(self.model)
        elif self._current is not None:
            self._current.remove()
        self._current, self._by_mlx_lm = None, False
        self.adapter, self.adapter_type, self.layout = None, None, None

    def _find_slots(self, config: dict) -> list[_Slot] | None:
        """Where ``config``'s adapter layers go; None leaves the adapter to mlx_lm."""
        keys = (config.get("lora_parameters") or {}).get("keys")
        key = (config.get("num_layers"), None if keys is None else tuple(sorted(keys)))
        if key not in self._slots:
            assert self._tree is not None
            self._slots[key] = self._tree.slots(key[0], keys)
        return self._slots[key]


_ADAPTER_LEAVES = ("lora_a", "lora_b", "m")  # mlx_lm's adapter parameters


class _Slot:
    """One place where an adapter layer goes: ``parent[attr]``, the base layer it wraps."""

    __slots__ = ("parent", "attr", "base", "path")

    def __init__(self, parent: Any, attr: str | int, base: Any, path: str) -> None:
        self.parent, self.attr, self.base, self.path = parent, attr, base, path

    def put(self, module: Any) -> None:
        self.parent[self.attr] = module


class _Wrapped:
    """The adapter layers of one layout, and where their parameters are: name -> (layer,
    leaf, shape). Out of the model they hold no weights, so none can be used stale."""

    def __init__(self, slots: list[_Slot], wrappers: list[Any]) -> None:
        import mlx.core as mx

        self.slots, self.wrappers = slots, wrappers
        self.params = {
            f"{slot.path}.{leaf}": (wrapper, leaf, tuple(wrapper[leaf].shape))
            for slot, wrapper in zip(slots, wrappers, strict=True)
            for leaf in _ADAPTER_LEAVES
            if isinstance(wrapper.get(leaf), mx.array)
        }

    def install(self) -> None:
        for slot, wrapper in zip(self.slots, self.wrappers, strict=True):
            slot.put(wrapper)

    def remove(self) -> None:
        for slot in self.slots:
            slot.put(slot.base)
        for owner, leaf, _ in self.params.values():
            owner.pop(leaf, None)


class _BaseTree:
    """The modules of a freshly loaded base (no adapter), to place adapter layers later.

    Mirrors the choice of ``mlx_lm.tuner.utils.linear_to_lora_layers``: the target keys
    (given, or every linear/embedding/``to_lora`` module of any block) in the last
    ``num_layers`` blocks.
    """

    def __init__(self, model: Any) -> None:
        named = model.named_modules()
        paths = {id(module): path for path, module in named}
        self.top = {path for path, _ in named}
        self.layers = [(paths.get(id(layer)), layer, layer.named_modules())
                       for layer in model.layers]  # fmt: skip

    def slots(self, num_layers: Any, keys: Any) -> list[_Slot] | None:
        import mlx.nn as nn
        from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

        if keys is None:
            types = (nn.Linear, nn.QuantizedLinear, SwitchLinear, QuantizedSwitchLinear,
                     nn.Embedding, nn.QuantizedEmbedding)  # fmt: skip
            keys = {path for _, _, modules in self.layers for path, module in modules
                    if hasattr(module, "to_lora") or isinstance(module, types)}  # fmt: skip
        keys = set(keys)
        if "" in keys or keys & self.top:
            return None  # a whole block, or a module outside the blocks: mlx_lm's way
        slots = []
        for prefix, layer, modules in self.layers[-max(num_layers, 0) :]:
            if prefix is None:
                return None
            for path, module in modules:
                if path not in keys:
                    continue
                *parents, attr = path.split(".")
                parent = layer
                for name in parents:
                    parent = (
                        parent[int(name)] if isinstance(parent, (list, tuple)) else parent[name]
                    )
                if isinstance(parent, list):
                    attr = int(attr)
                elif not isinstance(parent, dict):
                    return None
                if parent[attr] is not module:
                    return None
                slots.append(_Slot(parent, attr, module, f"{prefix}.{path}"))
        return slots


def _wrap(slots: list[_Slot], config: dict, weights: dict) -> list[Any] | None:
    """New adapter layers around the slots' base layers (None: leave it to mlx_lm).

    The classes and arguments are those of ``linear_to_lora_layers``; layers with their own
    ``to_lora`` (mlx_lm's fused ones) and configs without a ``scale`` go to mlx_lm instead.
    ``from_base`` draws a random initialisation per layer, the bulk of a switch's Python
    time, so a layer whose adapter parameters ``weights`` all give is a copy of one made for
    a base layer of the same kind and shapes, with the copy's base layer swapped: the
    initial values it shares are all replaced by the adapter's.
    """
    import mlx.nn as nn
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    lora = config.get("lora_parameters") or {}
    if "scale" not in lora:
        return None  # mlx_lm raises its explanation
    args = {"r": lora["rank"], "scale": lora["scale"], "dropout": lora["dropout"]}
    dora = config.get("fine_tune_type", "lora") == "dora"
    made: dict[tuple, tuple[Any, Any, tuple[str, ...]] | None] = {}  # kind -> template
    wrappers = []
    for slot in slots:
        layer = slot.base
        kind = _base_kind(layer)
        template = made.get(kind)
        if template is not None and all(f"{slot.path}.{n}" in weights for n in template[2]):
            wrappers.append(_copy_wrapper(template[0], template[1], layer))
            continue
        if hasattr(layer, "to_lora"):
            return None
        if isinstance(layer, (nn.Linear, nn.QuantizedLinear)):
            cls = DoRALinear if dora else LoRALinear
        elif isinstance(layer, (SwitchLinear, QuantizedSwitchLinear)) and not dora:
            cls = LoRASwitchLinear
        elif isinstance(layer, (nn.Embedding, nn.QuantizedEmbedding)):
            cls = DoRAEmbedding if dora else LoRAEmbedding
        else:
            return None  # mlx_lm raises that it cannot convert this layer
        wrapper = cls.from_base(layer, **args)
        wrapper.eval()
        if kind not in made:
            leaves = _copyable(wrapper, layer)
            made[kind] = None if leaves is None else (wrapper, layer, leaves)
        wrappers.append(wrapper)
    return wrappers


def _base_kind(layer: Any) -> tuple:
    """What an adapter layer's making depends on: the base layer's type, shapes, settings."""
    import mlx.core as mx

    return (
        type(layer),
        tuple((k, tuple(v.shape), v.dtype) for k, v in layer.items() if isinstance(v, mx.array)),
        tuple((k, v) for k, v in vars(layer).items() if isinstance(v, (bool, int, float, str))),
    )


def _copyable(wrapper: Any, base: Any) -> tuple[str, ...] | None:
    """The adapter leaves of ``wrapper`` if it is just those, ``base`` and parameter-free
    layers (dropout); None otherwise (another kind of state: not copied)."""
    import mlx.core as mx
    import mlx.nn as nn

    leaves = []
    for key, value in wrapper.items():
        if isinstance(value, mx.array) and key in _ADAPTER_LEAVES:
            leaves.append(key)
        elif value is base:
            continue
        elif not (isinstance(value, nn.Module) and len(value) == 0):
            return None
    return tuple(leaves)


def _copy_wrapper(template: Any, template_base: Any, base: Any) -> Any:
    """A shallow copy of the adapter layer ``template`` around ``base`` instead."""
    import copy

    def plain_copy(module: Any) -> Any:
        clone = copy.copy(module)  # the items (children, arrays) and attributes
        for name, value in vars(clone).items():
            if isinstance(value, (set, dict, list)):
                vars(clone)[name] = copy.copy(value)
        return clone

    clone = plain_copy(template)
    for key, value in list(clone.items()):
        if value is template_base:
            clone[key] = base
        elif isinstance(value, dict):  # a parameter-free layer such as the dropout
            clone[key] = plain_copy(value)
    return clone


def _covers(weights: dict, params: dict) -> bool:
    """Whether ``weights`` gives every parameter of ``params``, with its shape, and no other."""
    return weights.keys() == params.keys() and all(
        tuple(value.shape) == params[name][2] for name, value in weights.items()
    )


def _check(adapter: str, weights: dict, params: dict) -> None:
    """Raise like mlx_lm's ``load_adapters`` when ``weights`` does not fit ``params``."""
    errors = []
    for name, value in weights.items():
        if name not in params:
            errors.append(f"  {name}: not an adapter parameter in the model")
        elif tuple(value.shape) != params[name][2]:
            errors.append(
                f"  {name}: adapter shape {tuple(value.shape)} does not match "
                f"model parameter shape {params[name][2]}"
            )
    if errors:
        raise ValueError(
            f"Adapter at {adapter} contains incompatible tensors:\n" + "\n".join(errors)
        )


def _adapter_stamp(adapter: str | None) -> tuple | None:
    if adapter is None:
        return None
    stamps = []
    for name in ("adapter_config.json", "adapters.safetensors"):
        try:
            stat = os.stat(os.path.join(adapter, name))
        except OSError:
            return None
        stamps.append((stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(stamps)


def _adapter_config(adapter: str | None) -> dict | None:
    if adapter is None:
        return None
    with open(os.path.join(adapter, "adapter_config.json")) as handle:
        return json.load(handle)


def _adapter_layout(config: dict | None) -> tuple | None:
    """Return what decides the adapter layers: type, layers, rank, scale, dropout, keys."""
    if config is None:
        return None
    lora = config.get("lora_parameters") or {}
    keys = lora.get("keys")
    return (
        config.get("fine_tune_type", "lora"),
        config.get("num_layers"),
        lora.get("rank"),
        lora.get("scale"),
        lora.get("dropout"),
        None if keys is None else tuple(sorted(keys)),
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


def handle(request: GenerationRequest, loaded: LoadedModel, out: EventWriter) -> None:
    """Answer one request: stream chunks, then the result."""
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = loaded.get(request.model, request.adapter, request.quantization_bits)
    sampler = make_sampler(temp=float(request.temperature or 0.0))
    text = []
    last = None
    for response in stream_generate(
        model,
        tokenizer,
        chat_prompt(tokenizer, request.prompt),
        max_tokens=int(request.max_tokens or 128),
        sampler=sampler,
    ):
        last = response
        if response.text:
            text.append(response.text)
            out.emit(Chunk(id=request.id, text=response.text))
    out.emit(
        Generated(
            id=request.id,
            text="".join(text),
            tokens=last.generation_tokens if last else 0,
            tokens_per_second=last.generation_tps if last else 0.0,
            prompt_tokens=last.prompt_tokens if last else 0,
            finish_reason=last.finish_reason if last else None,
        )
    )


def main() -> int:
    """Serve requests until stdin closes."""
    out = open_event_writer()
    preload_fast_blas()
    loaded = LoadedModel()
    out.emit(Ready(pid=os.getpid()))
    for line in sys.stdin:
        if not line.strip():
            continue
        request_id = None
        try:
            data = json.loads(line)
            request_id = data.get("id") if isinstance(data, dict) else None
            handle(GenerationRequest.from_wire(data), loaded, out)
        except Exception as exc:  # noqa: BLE001 - report and keep serving
            traceback.print_exc()
            out.emit(
                RequestError(
                    id=request_id,
                    code=getattr(exc, "code", "generation-failed"),
                    message=f"{type(exc).__name__}: {exc}",
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
