"""The export worker: ``python -m cortex_rpc.models.export_worker SPEC.json``.

All the MLX work of ``cortex/exportModel`` happens here, never in the server: load base +
adapter (a QLoRA base quantized in memory as it was trained), take the reference greedy tokens
and logits of base + adapter on the verification prompts, fuse with mlx_lm (dequantized unless
the target is ``mlx``), save with mlx_lm's ``save``, run llama.cpp's own ``convert_hf_to_gguf.py``
for GGUF (and llama.cpp's quantizer for k-quants), then run the artifact (llama.cpp or
transformers) on the same prompts. It writes only under the spec's ``outDir`` and reports
``stage`` events, then one ``result`` (or ``error``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..training.contract import Stage
from ..workers import run_one_shot
from .export_checks import VERIFY_PROMPTS, compare_runs
from .quantization import QUANT_GROUP_SIZE

GREEDY_TOKENS = 8
# Runs the converter with llama.cpp's pre-tokenizer detection pinned (``preTokenizer``), for
# tokenizers it does not know by hash; verification then checks the GGUF tokenizes alike.
_CONVERT_PINNED = (
    "import runpy, sys\n"
    "script, pre = sys.argv[1], sys.argv[2]\n"
    "sys.argv = [script] + sys.argv[3:]\n"
    "sys.path.insert(0, str(__import__('pathlib').Path(script).parent))\n"
    "from conversion import base\n"
    "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre\n"
    "runpy.run_path(script, run_name='__main__')\n"
)
LLAMA_FTYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def prompt_ids(tokenizer: Any) -> list[tuple[str, list[int]]]:
    """Return (rendered text, token ids) of each verification prompt, chat template applied."""
    rendered = []
    for messages in VERIFY_PROMPTS:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        rendered.append((text, list(tokenizer.encode(text, add_special_tokens=False))))
    return rendered


def mlx_reference(model: Any, prompts: list[tuple[str, list[int]]]) -> list[dict[str, Any]]:
    """Return each prompt's greedy tokens and the float32 logits that chose them (MLX)."""
    import mlx.core as mx
    import numpy as np

    runs = []
    for text, ids in prompts:
        tokens: list[int] = []
        logits = []
        for _ in range(GREEDY_TOKENS):
            out = model(mx.array([ids + tokens]))[0, -1].astype(mx.float32)
            row = np.array(out)
            logits.append(row)
            tokens.append(int(row.argmax()))
        runs.append({"text": text, "ids": ids, "tokens": tokens, "logits": np.stack(logits)})
    return runs


def fuse(model: Any, config: dict[str, Any], dequantize: bool) -> Any:
    """Fuse the adapter into the weights (mlx_lm's ``fuse``); dequantize if asked."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model

    fused = [
        (n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")
    ]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    return model


def convert_gguf(
    hf_dir: Path, out: Path, outtype: str, llama_cpp: Path, pre_tokenizer: str | None, log: Path
) -> None:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` on ``hf_dir`` (raises CortexError)."""
    script = llama_cpp / "convert_hf_to_gguf.py"
    args = [str(hf_dir), "--outfile", str(out), "--outtype", outtype]
    if pre_tokenizer:
        command = [sys.executable, "-c", _CONVERT_PINNED, str(script), pre_tokenizer, *args]
    else:
        command = [sys.executable, str(script), *args]
    with open(log, "ab") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        lines = [x for x in text.splitlines() if x.strip() and not x.startswith("INFO")]
        last = lines[-1] if lines else f"exit {done.returncode}"
        if "pre-tokenizer was not recognized" in text:
            raise CortexError(
                "unsupported-tokenizer",
                "llama.cpp does not recognize this tokenizer's pre-tokenizer; pass "
                "preTokenizer (e.g. 'llama-bpe', 'qwen2', 'gpt-2') if you know which one it uses.",
            )
        if "tokenizer.model" in last:
            raise CortexError(
                "unsupported-tokenizer",
                f"llama.cpp's converter for this architecture needs the SentencePiece "
                f"tokenizer.model, which the base model lacks: {last}",
            )
        if "not supported" in text and "Model" in last:
            raise CortexError("unsupported-architecture", f"llama.cpp cannot convert it: {last}")
        raise CortexError("conversion-failed", f"convert_hf_to_gguf.py failed: {last}")


def quantize_gguf(source: Path, out: Path, quantization: str) -> None:
    """Quantize a GGUF with llama.cpp's own quantizer (through llama-cpp-python)."""
    try:
        import llama_cpp
    except ImportError:
        raise CortexError(
            "quantizer-missing",
            f"{quantization} needs llama.cpp's quantizer: pip install llama-cpp-python "
            "(it builds llama.cpp), or run llama-quantize on the f16 GGUF yourself.",
        ) from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_FTYPES[quantization])
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if code != 0:
        raise CortexError("conversion-failed", f"llama.cpp's quantizer failed ({code})")


def run_llama_cpp(gguf: Path, reference: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the GGUF with llama.cpp on the reference prompts; return what it produced."""
    import numpy as np
    from llama_cpp import Llama

    context = max(len(r["ids"]) for r in reference) + GREEDY_TOKENS + 8
    llm = Llama(str(gguf), n_ctx=context, logits_all=True, verbose=False, seed=0)
    runs = []
    for ref in reference:
        ids = ref["ids"]
        tokenized = llm.tokenize(ref["text"].encode(), add_bos=False, special=True)
        # Teacher-forced on MLX's tokens: the logits at each position MLX chose one.
        llm.reset()
        llm.eval(ids + ref["tokens"][:-1])
        forced = np.array(llm.scores[len(ids) - 1 : len(ids) - 1 + GREEDY_TOKENS], np.float32)
        llm.reset()
        llm.eval(ids)
        tokens = []
        for _ in range(GREEDY_TOKENS):
            tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([tokens[-1]])
        runs.append({"tokenized": [int(t) for t in tokenized], "tokens": tokens, "logits": forced})
    meta = llm.metadata
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return {
        "runs": runs,
        "chatTemplate": meta.get("tokenizer.chat_template"),
        "eosTokenIds": [int(eos)] if eos is not None else [],
    }


def run_transformers(hf_dir: Path, reference: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the HF folder with transformers (float32) on the reference prompts."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()
    runs = []
    with torch.no_grad():
        for ref in reference:
            ids = ref["ids"]
            out = model(torch.tensor([ids + ref["tokens"][:-1]])).logits[0].float().numpy()
            forced = out[len(ids) - 1 : len(ids) - 1 + GREEDY_TOKENS]
            tokens = [int(t) for t in np.argmax(forced, axis=-1)]
            runs.append(
                {
                    "tokenized": list(tokenizer.encode(ref["text"], add_special_tokens=False)),
                    "tokens": tokens,
                    "logits": forced,
                }
            )
    eos = model.generation_config.eos_token_id if model.generation_config else None
    eos_ids = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
    return {"runs": runs, "chatTemplate": tokenizer.chat_template, "eosTokenIds": eos_ids}


def forced_logits(model: Any, ref: dict[str, Any]) -> Any:
    """Return the model's float32 logits at each of the reference's greedy positions, fed
    the reference's own tokens (teacher forcing)."""
    import mlx.core as mx
    import numpy as np

    ids = ref["ids"]
    out = model(mx.array([ids + ref["tokens"][:-1]]))[0].astype(mx.float32)
    return np.array(out)[len(ids) - 1 : len(ids) - 1 + GREEDY_TOKENS]


def base_logits(model: Any, reference: list[dict[str, Any]]) -> list[Any] | None:
    """Return the bare base's logits on the reference (adapters taken out), or None for a
    model without adapters: what an export that lost its adapter would give."""
    from ..errors import CortexError
    from ..training.preference import adapters_disabled

    try:
        with adapters_disabled(model):
            return [forced_logits(model, ref) for ref in reference]
    except CortexError:
        return None


def run_mlx(model_dir: Path, reference: list[dict[str, Any]]) -> dict[str, Any]:
    """Load the fused MLX folder alone and run it on the reference prompts."""
    from mlx_lm.utils import load

    model, tokenizer = load(str(model_dir))
    runs = []
    for ref in reference:
        forced = forced_logits(model, ref)
        runs.append(
            {
                "tokenized": list(tokenizer.encode(ref["text"], add_special_tokens=False)),
                "tokens": [int(t) for t in forced.argmax(axis=-1)],
                "logits": forced,
            }
        )
    eos = sorted(int(t) for t in tokenizer.eos_token_ids)
    return {"runs": runs, "chatTemplate": tokenizer.chat_template, "eosTokenIds": eos}


def export_spec(spec: dict[str, Any], stage: Any) -> dict[str, Any]:
    """Write the spec's target under ``outDir``; return what was written and verified."""
    from mlx_lm.utils import save

    from .fine_tuned import load_with_adapter

    target, out = spec["target"], Path(spec["outDir"])
    base = Path(spec["base"])
    started = time.monotonic()
    stage("load", "Loading base + adapter")
    model, tokenizer = load_with_adapter(base, Path(spec["adapter"]), spec.get("quantizationBits"))
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    reference = None
    if spec.get("verify"):
        stage("reference", "Greedy tokens of base + adapter (MLX)")
        reference = mlx_reference(model, prompt_ids(tokenizer))
        bare = base_logits(model, reference)
        template = tokenizer.chat_template
        eos_ids = sorted(int(t) for t in tokenizer.eos_token_ids)
    stage("fuse", "Fusing the adapter")
    model = fuse(model, config, dequantize=target not in ("mlx", "lmstudio"))
    bits = spec.get("quantizationBits")
    requantized = None
    if target in ("mlx", "lmstudio") and (bits or "quantization" in config):
        # mlx_lm's fuse re-quantizes a quantized layer with the adapter added: judged as the
        # quantized model it is, not as the exact base + adapter.
        requantized = f"mlx-q{bits or config['quantization'].get('bits', 4)}"
    if bits and target in ("mlx", "lmstudio") and "quantization" not in config:
        # A QLoRA base was quantized in memory: the fused folder says so, or it would not load.
        config["quantization"] = {"group_size": QUANT_GROUP_SIZE, "bits": int(bits)}
    if config.get("architectures") is None and spec.get("architecture"):
        config["architectures"] = [spec["architecture"]]
    model_dir = out / ("model" if target in ("mlx", "hf", "lmstudio") else "hf")
    stage("save", "Saving the fused weights")
    save(model_dir, str(base), model, tokenizer, config, donate_model=True)
    del model
    result: dict[str, Any] = {
        "files": {},
        "timings": {"loadFuseSaveSeconds": time.monotonic() - started},
    }
    if target in ("gguf", "ollama"):
        quantization = spec["quantization"]
        gguf = out / spec["ggufName"]
        stage("convert", f"Converting to GGUF ({quantization}) with llama.cpp")
        converted = time.monotonic()
        outtype = quantization if quantization in ("f32", "f16", "q8_0") else "f16"
        first = gguf if outtype == quantization else out / "f16.gguf"
        llama_cpp = Path(spec["llamaCpp"])
        convert_gguf(
            model_dir, first, outtype, llama_cpp, spec.get("preTokenizer"), out / "convert.log"
        )
        if first != gguf:
            stage("quantize", f"Quantizing to {quantization} with llama.cpp")
            quantize_gguf(first, gguf, quantization)
            first.unlink()
        result["timings"]["convertSeconds"] = time.monotonic() - converted
        result["files"]["gguf"] = gguf.name
    if reference is not None:
        stage("verify", "Running the export on the verification prompts")
        checked = time.monotonic()
        if target == "hf":
            exported = run_transformers(model_dir, reference)
            tool = "transformers"
        elif target in ("mlx", "lmstudio"):
            exported = run_mlx(model_dir, reference)
            tool = "mlx"
        else:
            try:
                exported = run_llama_cpp(out / spec["ggufName"], reference)
            except ImportError:
                exported = None
            tool = "llama.cpp"
        if exported is None:
            result["verification"] = {
                "status": "skipped",
                "tool": tool,
                "reason": "llama-cpp-python is not installed (pip install llama-cpp-python)",
            }
        else:
            result["verification"] = compare_runs(
                reference,
                exported,
                template=template,
                eos_ids=eos_ids,
                tool=tool,
                quantization=spec.get("quantization") or requantized or "float",
                base=bare,
                float16=dtype in ("float16", "bfloat16") or bool(spec.get("quantizationBits")),
            )
        result["timings"]["verifySeconds"] = time.monotonic() - checked
    return result


def main() -> int:
    """``python -m cortex_rpc.models.export_worker SPEC.json``: one export, one result event."""

    def export(spec: dict[str, Any], events: Any) -> dict[str, Any]:
        return export_spec(
            spec, lambda name, message: events.emit(Stage(name=name, message=message))
        )

    return run_one_shot(
        "python -m cortex_rpc.models.export_worker SPEC.json", export, "export-failed"
    )


if __name__ == "__main__":
    sys.exit(main())
