"""Tiny offline replicas of seven model families people fine-tune.

Each replica is a directory that ``mlx_lm.load`` loads: seeded random weights in the
family's own mlx_lm architecture (hidden size 64, two layers), a small byte-level BPE
tokenizer trained on the spot (``cortex_rpc.models.tiny.build_tokenizer``) that carries the
family's real special tokens, and a ``tokenizer_config.json`` with the family's
bos/eos/pad tokens and its published chat template (vendored verbatim in ``templates/``;
see ``templates/SOURCES.txt``). Nothing is downloaded.

What is real: architecture (``model_type``), special-token strings (and for Gemma, Mistral
and Phi-3 their low ids), which of them are special, BOS handling, eos ids, chat template.
What is not: the vocabulary (a 512-entry byte-level BPE, not SentencePiece/tiktoken) and
the sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES: tuple[str, ...] = (
    "llama3.2",
    "qwen2.5",
    "qwen3",
    "gemma2",
    "gemma3",
    "mistral-v0.3",
    "phi3",
)

TEMPLATES = Path(__file__).parent / "templates"
VOCAB_SIZE = 512
SEED = 0
QUANT_GROUP_SIZE = 32
QUANT_BITS = 4

_DIMS = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "torch_dtype": "float32",
}

_QWEN_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# In the real Qwen tokenizers these are added tokens with "special": false.
_QWEN_ADDED = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_GEMMA_SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")


@dataclass(frozen=True)
class Family:
    """How to build one family's replica."""

    hf_repo: str  # the published model it imitates (and its HF-cache name)
    module: str  # mlx_lm.models.<module>
    config: dict[str, Any]  # config.json, less the shared dimensions
    special_tokens: tuple[str, ...]  # added special tokens, given the first ids in order
    tokenizer: dict[str, Any]  # tokenizer_config.json keys
    eos: tuple[str, ...]  # config.json eos_token_id, as tokens (the generation eos list)
    added_tokens: tuple[str, ...] = ()  # added tokens that are not special
    bos_prefix: str | None = None  # a post-processor prepends this, as the real tokenizer does
    template_file: bool = False  # chat_template.jinja rather than tokenizer_config.json


SPECS: dict[str, Family] = {
    "llama3.2": Family(
        hf_repo="meta-llama/Llama-3.2-1B-Instruct",
        module="llama",
        config={
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "head_dim": 16,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            "max_position_embeddings": 131072,
            "tie_word_embeddings": True,
        },
        special_tokens=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>",
            "<|reserved_special_token_2|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eom_id|>",
            "<|eot_id|>",
            "<|python_tag|>",
        ),
        tokenizer={
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "pad_token": None,
            "model_max_length": 131072,
            "clean_up_tokenization_spaces": True,
        },
        eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        bos_prefix="<|begin_of_text|>",
    ),
    "qwen2.5": Family(
        hf_repo="Qwen/Qwen2.5-0.5B-Instruct",
        module="qwen2",
        config={
            "model_type": "qwen2",
            "architectures": ["Qwen2ForCausalLM"],
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "max_position_embeddings": 32768,
            "tie_word_embeddings": True,
        },
        special_tokens=_QWEN_SPECIAL,
        added_tokens=_QWEN_ADDED,
        tokenizer={
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 131072,
            "errors": "replace",
            "split_special_tokens": False,
        },
        eos=("<|im_end|>", "<|endoftext|>"),
    ),
    "qwen3": Family(
        hf_repo="Qwen/Qwen3-0.6B",
        module="qwen3",
        config={
            "model_type": "qwen3",
            "architectures": ["Qwen3ForCausalLM"],
            "head_dim": 16,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "max_position_embeddings": 40960,
            "tie_word_embeddings": True,
        },
        special_tokens=_QWEN_SPECIAL,
        added_tokens=_QWEN_ADDED + ("<tool_response>", "</tool_response>", "<think>", "</think>"),
        tokenizer={
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 131072,
            "errors": "replace",
            "split_special_tokens": False,
        },
        eos=("<|im_end|>", "<|endoftext|>"),
        template_file=True,
    ),
    "gemma2": Family(
        hf_repo="google/gemma-2-2b-it",
        module="gemma2",
        config={
            "model_type": "gemma2",
            "architectures": ["Gemma2ForCausalLM"],
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "sliding_window": 4096,
            "max_position_embeddings": 8192,
            "hidden_activation": "gelu_pytorch_tanh",
        },
        special_tokens=_GEMMA_SPECIAL,
        tokenizer={
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "model_max_length": 8192,
        },
        eos=("<eos>", "<end_of_turn>"),
        bos_prefix="<bos>",
    ),
    "gemma3": Family(
        hf_repo="google/gemma-3-1b-it",
        module="gemma3_text",
        config={
            "model_type": "gemma3_text",
            "architectures": ["Gemma3ForCausalLM"],
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "sliding_window": 512,
            # Layer 2 of 2 is global, as every sixth layer is in the real model.
            "sliding_window_pattern": 2,
            "max_position_embeddings": 32768,
            "hidden_activation": "gelu_pytorch_tanh",
        },
        special_tokens=_GEMMA_SPECIAL + ("<start_of_image>", "<end_of_image>"),
        tokenizer={
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "model_max_length": 32768,
        },
        eos=("<eos>", "<end_of_turn>"),
        bos_prefix="<bos>",
    ),
    "mistral-v0.3": Family(
        hf_repo="mistralai/Mistral-7B-Instruct-v0.3",
        module="llama",
        config={
            "model_type": "mistral",
            "architectures": ["MistralForCausalLM"],
            "head_dim": 16,
            "rms_norm_eps": 1e-5,
            "rope_theta": 1000000.0,
            "max_position_embeddings": 32768,
            "sliding_window": None,
            "tie_word_embeddings": False,
        },
        special_tokens=(
            "<unk>",
            "<s>",
            "</s>",
            "[INST]",
            "[/INST]",
            "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ),
        tokenizer={
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": None,
            "add_bos_token": True,
            "add_eos_token": False,
            "model_max_length": 32768,
        },
        eos=("</s>",),
        bos_prefix="<s>",
    ),
    "phi3": Family(
        hf_repo="microsoft/Phi-3.5-mini-instruct",
        module="phi3",
        config={
            "model_type": "phi3",
            "architectures": ["Phi3ForCausalLM"],
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 4096,
            "original_max_position_embeddings": 4096,
            "tie_word_embeddings": False,
        },
        special_tokens=(
            "<unk>",
            "<s>",
            "</s>",
            "<|endoftext|>",
            "<|assistant|>",
            "<|system|>",
            "<|end|>",
            "<|user|>",
        ),
        tokenizer={
            "bos_token": "<s>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<unk>",
            "add_bos_token": False,
            "add_eos_token": False,
            "model_max_length": 131072,
        },
        eos=("<|end|>", "<|assistant|>", "<|endoftext|>"),
    ),
}


def _spec(family: str) -> Family:
    try:
        return SPECS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}") from None


def family_template(family: str) -> str:
    """The family's published chat template, verbatim."""
    _spec(family)
    return (TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")


def _bos_processor(bos: str, bos_id: int) -> Any:
    from tokenizers import processors

    return processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, bos_id)],
    )


def build_family(family: str, directory: Path, *, quantized: bool = False) -> Path:
    """Write a loadable tiny replica of ``family`` to ``directory``; return the directory.

    ``quantized`` quantizes the weights to 4 bits (group size 32) the way ``mlx_lm.convert``
    does, so the directory looks like an ``mlx-community/...-4bit`` download.
    """
    from tokenizers import Tokenizer

    from cortex_rpc.models.tiny import build_tokenizer, write_random_weights

    spec = _spec(family)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    template = family_template(family)
    tokenizer_config = {
        **spec.tokenizer,
        "chat_template": None if spec.template_file else template,
    }
    post = None
    if spec.bos_prefix is not None:
        post = _bos_processor(spec.bos_prefix, spec.special_tokens.index(spec.bos_prefix))
    build_tokenizer(
        directory,
        VOCAB_SIZE,
        special_tokens=spec.special_tokens,
        added_tokens=spec.added_tokens,
        config=tokenizer_config,
        post_processor=post,
    )
    if spec.template_file:
        (directory / "chat_template.jinja").write_text(template, encoding="utf-8")

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    token_id = tokenizer.token_to_id
    config: dict[str, Any] = {
        **_DIMS,
        **spec.config,
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "eos_token_id": [token_id(token) for token in spec.eos],
    }
    bos = spec.tokenizer.get("bos_token")
    if bos is not None:
        config["bos_token_id"] = token_id(bos)
    pad = spec.tokenizer.get("pad_token")
    if pad is not None:
        config["pad_token_id"] = token_id(pad)
    write_random_weights(directory, config, seed=SEED, module=spec.module)
    if quantized:
        _quantize_in_place(directory)
    return directory


def _quantize_in_place(directory: Path) -> None:
    """4-bit quantize the weights in ``directory`` as ``mlx_lm.convert(quantize=True)`` does."""
    from mlx_lm.utils import load_model, quantize_model, save_config, save_model

    model, config = load_model(directory)
    model, config = quantize_model(model, config, QUANT_GROUP_SIZE, QUANT_BITS)
    save_model(directory, model)
    save_config(config, config_path=directory / "config.json")


def build_family_hf_cache(family: str, hub_cache: Path, *, quantized: bool = False) -> Path:
    """Build ``family`` into a Hugging Face hub cache; return its snapshot directory.

    The layout is huggingface_hub's: ``<hub_cache>/models--org--name/`` with ``blobs/``,
    ``refs/main`` and ``snapshots/<commit>/`` whose files link to the blobs. With
    ``HF_HUB_CACHE=<hub_cache>`` (or ``HF_HOME=<parent>`` when ``hub_cache`` is
    ``<parent>/hub``) and ``HF_HUB_OFFLINE=1``, ``mlx_lm.load(spec.hf_repo)`` finds it.
    """
    spec = _spec(family)
    repo_dir = Path(hub_cache) / ("models--" + spec.hf_repo.replace("/", "--"))
    commit = hashlib.sha1(f"cortex-tiny:{family}:{quantized}".encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repo_dir) as scratch:
        built = build_family(family, Path(scratch) / "model", quantized=quantized)
        for source in sorted(built.iterdir()):
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
            blob = blobs / digest
            if not blob.exists():
                shutil.move(str(source), blob)
            link = snapshot / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def family_info(directory: Path) -> dict[str, Any]:
    """The ``config.json`` of a built replica (a convenience for tests)."""
    return json.loads((Path(directory) / "config.json").read_text())
