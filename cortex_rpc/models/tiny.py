"""Generate a tiny Llama-architecture model locally, with no network.

The demo and the tests need a real model that mlx_lm can load and train in seconds on a CPU.
This builds one from ``mlx_lm.models.llama`` with seeded random weights and trains a small
byte-level BPE tokenizer on the spot, saved in the Hugging Face layout mlx_lm expects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}<|end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|pad|>"]


@dataclass(frozen=True)
class TinyModelSpec:
    """Dimensions of a generated Llama model; the defaults give about one million parameters."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 1024
    max_position_embeddings: int = 512
    seed: int = 0


def _tokenizer_corpus() -> list[str]:
    sample = resources.files("cortex_rpc.data").joinpath("sample_dataset.jsonl").read_text()
    texts = []
    for line in sample.splitlines():
        record = json.loads(line)
        texts.extend([record["prompt"], record["response"]])
    # Printable ASCII so that any English text tokenizes without unknown pieces.
    texts.append("".join(chr(c) for c in range(32, 127)))
    return texts


def build_tokenizer(
    directory: Path,
    vocab_size: int,
    *,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    added_tokens: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    post_processor: Any = None,
) -> None:
    """Train a byte-level BPE tokenizer and save it as a ``PreTrainedTokenizerFast``.

    ``special_tokens`` take the first ids, in order; ``added_tokens`` are added as plain
    (non-special) added tokens. ``config`` overrides keys of ``tokenizer_config.json``; a
    ``chat_template`` of ``None`` writes none (the template then lives in ``chat_template.jinja``).
    ``post_processor`` is a ``tokenizers.processors`` object, e.g. one that prepends a BOS.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    if added_tokens:
        tokenizer.add_tokens([AddedToken(token, special=False) for token in added_tokens])
    if post_processor is not None:
        tokenizer.post_processor = post_processor
    tokenizer.save(str(directory / "tokenizer.json"))
    merged: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|end|>",
        "pad_token": "<|pad|>",
        "bos_token": None,
        "unk_token": None,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        **(config or {}),
    }
    if merged["chat_template"] is None:
        del merged["chat_template"]
    (directory / "tokenizer_config.json").write_text(json.dumps(merged, indent=2))
    special_map = {
        key: merged[key]
        for key in ("bos_token", "eos_token", "unk_token", "pad_token")
        if merged.get(key) is not None
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))


def write_random_weights(
    directory: Path, config: Mapping[str, Any], *, seed: int, module: str = "llama"
) -> None:
    """Save seeded random weights of ``mlx_lm.models.<module>`` and ``config.json``."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    arch = importlib.import_module(f"mlx_lm.models.{module}")
    mx.random.seed(seed)
    model = arch.Model(arch.ModelArgs.from_dict(dict(config)))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(directory / "model.safetensors"), weights, metadata={"format": "mlx"})
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def generate_tiny_model(directory: str | Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Write a loadable tiny Llama model (weights, config, tokenizer) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer(directory, spec.vocab_size)
    vocab_size = json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]
    # BPE may stop short of the requested size on a small corpus; size the embedding to fit.
    actual_vocab = max(len(vocab_size) + len(SPECIAL_TOKENS), 1)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "intermediate_size": spec.intermediate_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "vocab_size": max(spec.vocab_size, actual_vocab),
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "eos_token_id": 0,
    }
    write_random_weights(directory, config, seed=spec.seed)
    (directory / "cortex-tiny.json").write_text(json.dumps(asdict(spec), indent=2))
    return directory


def main(argv: list[str] | None = None) -> int:
    """``python -m cortex_rpc.models.tiny DIR [--hidden-size N ...]``: MLX in its own process.

    Clients (the demo, the editor tests) call this instead of importing mlx themselves.
    """
    import argparse
    from dataclasses import fields

    parser = argparse.ArgumentParser(
        prog="python -m cortex_rpc.models.tiny", description=main.__doc__.splitlines()[0]
    )
    parser.add_argument("directory", type=Path)
    for spec_field in fields(TinyModelSpec):
        parser.add_argument(
            f"--{spec_field.name.replace('_', '-')}", type=int, default=spec_field.default
        )
    args = vars(parser.parse_args(argv))
    generate_tiny_model(args.pop("directory"), TinyModelSpec(**args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
