"""A switched model is exactly a fresh load: no weights or layers of an earlier adapter stay.

Fast: random adapters written directly (no training) for the tiny generated model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _write_adapter(
    base: Path,
    target: Path,
    *,
    rank: int = 4,
    kind: str = "lora",
    num_layers: int = 2,
    keys: list[str] | None = None,
    seed: int = 0,
    drop: str | None = None,
) -> str:
    """Write an adapter with random non-zero weights (``drop``: leave out names ending so)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    model, _ = load(str(base))
    model.freeze()
    params = {"rank": rank, "scale": 2.0, "dropout": 0.0}
    if keys is not None:
        params["keys"] = keys
    linear_to_lora_layers(model, num_layers, params, use_dora=kind == "dora")
    mx.random.seed(seed)
    weights = {}
    for name, value in tree_flatten(model.trainable_parameters()):
        noise = mx.random.normal(value.shape) * 0.05
        weights[name] = value * (1 + noise) if name.endswith(".m") else noise
    if drop is not None:
        weights = {k: v for k, v in weights.items() if not k.endswith(drop)}
    target.mkdir(parents=True)
    mx.save_safetensors(str(target / "adapters.safetensors"), weights)
    config = {"fine_tune_type": kind, "num_layers": num_layers, "lora_parameters": params}
    (target / "adapter_config.json").write_text(json.dumps(config))
    return str(target)


def _outputs(model, tokenizer) -> tuple[list[float], str]:
    """Last-position logits of a prompt, and 8 greedy tokens."""
    import mlx.core as mx
    from mlx_lm.generate import generate

    logits = model(mx.array([tokenizer.encode("What is Python?")]))[0, -1].tolist()
    return logits, generate(model, tokenizer, "What is Python?", max_tokens=8)


@pytest.fixture(scope="module")
def adapters(tiny_model_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tiny_model_template
    root = tmp_path_factory.mktemp("adapters")
    specs = {
        "a4": {"rank": 4, "seed": 1},
        "b8": {"rank": 8, "seed": 2},  # another layout
        "c4": {"rank": 4, "seed": 3},  # the layout of a4
        "dora": {"rank": 4, "kind": "dora", "seed": 4},
        "one-layer": {"rank": 4, "num_layers": 1, "keys": ["self_attn.q_proj"], "seed": 5},
        "no-b": {"rank": 4, "seed": 6, "drop": ".mlp.up_proj.lora_b"},  # a4's layout, partial
        # A module outside the blocks: applied by mlx_lm's own load_adapters.
        "embed": {"rank": 4, "keys": ["model.embed_tokens", "self_attn.v_proj"], "seed": 7},
    }
    return {name: _write_adapter(base, root / name, **spec) for name, spec in specs.items()}


@pytest.mark.parametrize("bits", [None, 4])
def test_every_switch_gives_what_a_fresh_load_gives(tiny_model_template, adapters, bits):
    from cortex_rpc.generation.worker import LoadedModel
    from cortex_rpc.models.fine_tuned import load_with_adapter

    base = str(tiny_model_template)
    fresh = {}
    for name in [None, *adapters]:
        adapter = adapters.get(name)
        fresh[name] = _outputs(*load_with_adapter(Path(base), adapter and Path(adapter), bits))
    assert fresh["a4"][0] != pytest.approx(fresh[None][0], abs=1e-4)
    assert fresh["c4"][0] != pytest.approx(fresh["a4"][0], abs=1e-4)

    loaded = LoadedModel()
    order = ["a4", "b8", "a4", "c4", "dora", None, "b8", "one-layer", "a4", "no-b", "c4",
             "no-b", None, "dora", "embed", "b8", "embed", None, "c4", None]  # fmt: skip
    for name in order:
        model, tokenizer = loaded.get(base, adapters.get(name), bits)
        logits, text = _outputs(model, tokenizer)
        assert text == fresh[name][1], name
        assert logits == pytest.approx(fresh[name][0], abs=1e-5), name
    assert loaded.loads == 1


def test_a_bad_adapter_leaves_the_current_one(tiny_model_template, adapters, tmp_path):
    import mlx.core as mx

    from cortex_rpc.generation.worker import LoadedModel

    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads(Path(adapters["b8"], "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps(config))
    weights = mx.load(str(Path(adapters["a4"], "adapters.safetensors")))  # rank 4, not 8
    mx.save_safetensors(str(bad / "adapters.safetensors"), weights)

    base = str(tiny_model_template)
    loaded = LoadedModel()
    for current in ("a4", "b8"):
        model, tokenizer = loaded.get(base, adapters[current], None)
        before = _outputs(model, tokenizer)
        with pytest.raises(ValueError, match="does not match"):
            loaded.get(base, str(bad), None)
        assert loaded.adapter == adapters[current]
        assert _outputs(model, tokenizer) == before
        assert loaded.get(base, adapters[current], None)[0] is model


def test_copied_adapter_layers_match_mlx_lm(tiny_model_template):
    """Adapter layers copied from one made for a same-shaped base equal mlx_lm's own."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    from cortex_rpc.generation.worker import _BaseTree, _wrap

    def described(module) -> list:
        return [
            (type(m).__name__, k, sorted(
                (n, v) for n, v in vars(m).items() if isinstance(v, (bool, int, float, str))
            ))
            for k, m in module.named_modules()
        ] + [(k, v.shape, v.dtype) for k, v in tree_flatten(module.parameters())]  # fmt: skip

    for kind, bits in (("lora", None), ("dora", None), ("lora", 4)):
        model, _ = load(str(tiny_model_template))
        if bits:
            nn.quantize(model, 64, bits, class_predicate=lambda _p, m: isinstance(m, nn.Linear)
                        and m.weight.shape[-1] % 64 == 0)  # fmt: skip
        lora = {"rank": 4, "scale": 2.0, "dropout": 0.1}
        config = {"fine_tune_type": kind, "num_layers": 2, "lora_parameters": lora}
        slots = _BaseTree(model).slots(2, None)
        names = {f"{s.path}.{leaf}" for s in slots for leaf in ("lora_a", "lora_b", "m")}
        ours = _wrap(slots, config, dict.fromkeys(names, mx.zeros(1)))
        assert len({id(w) for w in ours}) == len(slots)
        assert all(w.linear is s.base for w, s in zip(ours, slots, strict=True))
        assert all(w.dropout is not ours[0].dropout for w in ours[1:])
        linear_to_lora_layers(model, 2, lora, use_dora=kind == "dora")
        model.eval()
        for slot, wrapper in zip(slots, ours, strict=True):
            theirs = dict(model.named_modules())[slot.path]
            assert described(wrapper) == described(theirs), slot.path


def test_an_adapter_rewritten_in_place_is_read_again(tiny_model_template, adapters, tmp_path):
    import os
    import shutil

    from cortex_rpc.generation.worker import LoadedModel
    from cortex_rpc.models.fine_tuned import load_with_adapter

    base = str(tiny_model_template)
    adapter = tmp_path / "retrained"
    shutil.copytree(adapters["a4"], adapter)
    loaded = LoadedModel()
    before = _outputs(*loaded.get(base, str(adapter), None))
    target = adapter / "adapters.safetensors"
    shutil.copyfile(Path(adapters["c4"], "adapters.safetensors"), target)  # same layout
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    logits, text = _outputs(*loaded.get(base, str(adapter), None))
    fresh_logits, fresh_text = _outputs(*load_with_adapter(Path(base), adapter))
    assert text == fresh_text
    assert logits == pytest.approx(fresh_logits, abs=1e-5)
    assert logits != pytest.approx(before[0], abs=1e-4)
    assert loaded.loads == 1
