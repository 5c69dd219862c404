"""``cortex/exportModel``: a fine-tune written for the tools people run models in.

Targets: ``mlx`` (fused standalone MLX, in ``mlx_models/``), ``hf`` (dequantized Hugging Face
safetensors, config, tokenizer and chat template), ``gguf`` (llama.cpp's own
``convert_hf_to_gguf.py`` on the dequantized weights; f16, q8_0, or q4_k_m with llama.cpp's
quantizer), ``ollama`` (the GGUF plus a Modelfile translated from the chat template) and
``lmstudio`` (the fused MLX model in LM Studio's ``models/<publisher>/<name>``).

Everything is written into a hidden temp folder beside the destination and renamed into place
when complete and verified; nothing half-written is ever left. The MLX work runs in
``python -m cortex_rpc.models.export_worker``; no mlx in this module, which the server imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..commands import program, python
from ..config.training_config import snake_to_camel
from ..errors import CortexError, InvalidParams
from ..paths import CortexHome, user_path, validate_model_name
from ..training.contract import ONE_SHOT_EVENT_TYPES, Error, Result, Stage, decode_event
from ..workers import log_tail, start_worker
from .export_checks import failure_message
from .fine_tuned import fine_tuned_dir, resolve_fine_tuned
from .ollama import modelfile_text, ollama_template

TARGETS = ("mlx", "hf", "gguf", "ollama", "lmstudio")
GGUF_QUANTIZATIONS = ("f32", "f16", "q8_0", "q4_k_m")
# model_type -> the Hugging Face architecture llama.cpp's converter dispatches on.
GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}
LLAMA_CPP_ENV = "CORTEX_LLAMA_CPP"
LMSTUDIO_PUBLISHER = "cortex"
EXPORT_TIMEOUT_SECONDS = 4 * 3600
STAGE_PERCENT = {
    "load": 5,
    "reference": 15,
    "fuse": 30,
    "save": 40,
    "convert": 55,
    "quantize": 70,
    "verify": 80,
}


@dataclass
class ExportResult:
    """What ``export_model`` wrote, where, and what verifying it found."""

    model: str
    target: str
    name: str
    path: str
    base_model: str
    files: list[str]
    size_bytes: int
    seconds: float
    quantization: str | None = None
    verification: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    next_commands: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        """Return the camelCase JSON form."""
        return {snake_to_camel(k): v for k, v in asdict(self).items()}


def llama_cpp_dir(home: CortexHome) -> Path:
    """Return the llama.cpp source folder holding ``convert_hf_to_gguf.py`` (or raise)."""
    configured = os.environ.get(LLAMA_CPP_ENV)
    candidate = user_path(configured) if configured else home.tools / "llama.cpp"
    if not (candidate / "convert_hf_to_gguf.py").is_file():
        raise CortexError(
            "converter-missing",
            f"llama.cpp's convert_hf_to_gguf.py is not in {candidate}. Run "
            "scripts/fetch_llama_cpp.sh (it unpacks the llama-cpp-python source distribution "
            f"from PyPI there), or set {LLAMA_CPP_ENV} to a llama.cpp checkout.",
            path=str(candidate),
        )
    return candidate


def fine_tuned_source(home: CortexHome, model: str) -> Path:
    """Return the folder of fine-tune ``model``: a name in ``mlx_models/``, or a folder path.

    A folder outside CORTEX_HOME is only ever read.
    """
    return Path(model) if Path(model).is_absolute() else fine_tuned_dir(model, home.models, "model")


def _destination(
    home: CortexHome, target: str, name: str, lmstudio_root: str | Path | None
) -> Path:
    if target == "mlx":
        return home.models / name
    if target == "lmstudio":
        root = user_path(lmstudio_root) if lmstudio_root else Path.home() / ".lmstudio"
        return root / "models" / LMSTUDIO_PUBLISHER / name
    return home.exports / name


def _next_commands(target: str, path: Path, name: str, gguf: str | None) -> list[str]:
    if target == "ollama":
        return [f"ollama create {name} -f {path / 'Modelfile'}", f"ollama run {name}"]
    if target == "gguf":
        return [f"llama-cli -m {path / str(gguf)} -cnv", f"llama-server -m {path / str(gguf)}"]
    if target == "lmstudio":
        return [f"lms load {LMSTUDIO_PUBLISHER}/{name}"]
    if target == "hf":
        return [
            f'{python()} -c "from transformers import pipeline; '
            f"pipeline('text-generation', '{path}')\""
        ]
    return [f"{program('mlx_lm.generate')} --model {path} --prompt 'Hello'"]


def _validate(target: str, quantization: str | None) -> str | None:
    if target not in TARGETS:
        raise InvalidParams(f"target must be one of {', '.join(TARGETS)}", field="target")
    if target in ("gguf", "ollama"):
        quantization = quantization or "f16"
        if quantization not in GGUF_QUANTIZATIONS:
            raise InvalidParams(
                f"quantization must be one of {', '.join(GGUF_QUANTIZATIONS)}",
                field="quantization",
            )
        return quantization
    if quantization is not None:
        raise InvalidParams(
            f"quantization applies to gguf and ollama exports, not {target}",
            field="quantization",
        )
    return None


def export_model(
    home: CortexHome,
    model: str,
    target: str,
    name: str | None = None,
    quantization: str | None = None,
    verify: bool = True,
    *,
    lmstudio_root: str | Path | None = None,
    pre_tokenizer: str | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    cancel: threading.Event | None = None,
    python: str | None = None,
) -> ExportResult:
    """Export fine-tuned ``model`` for ``target``; return what was written and verified.

    Raises CortexError: model-not-found / base-model-missing, target-exists,
    unsupported-architecture, unsupported-tokenizer, converter-missing, verification-failed
    (nothing is left at the destination), and OSError for a full disk.
    """
    quantization = _validate(target, quantization)
    base, adapter_dir, marker = resolve_fine_tuned(fine_tuned_source(home, model))
    name = validate_model_name(name or f"{adapter_dir.name}-{target}", "name")
    destination = _destination(home, target, name, lmstudio_root)
    if destination.exists():
        raise CortexError(
            "target-exists",
            f"{destination} already exists; choose another name or delete it.",
            path=str(destination),
        )
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    model_type = str(config.get("model_type") or "")
    spec: dict[str, Any] = {
        "base": str(base),
        "adapter": str(adapter_dir),
        "quantizationBits": marker.get("quantizationBits"),
        "target": target,
        "verify": verify,
        "quantization": quantization,
        "architecture": GGUF_ARCHITECTURES.get(model_type),
    }
    gguf_name = None
    if target in ("gguf", "ollama"):
        if model_type not in GGUF_ARCHITECTURES:
            raise CortexError(
                "unsupported-architecture",
                f"llama.cpp export supports {', '.join(sorted(GGUF_ARCHITECTURES))}, "
                f"not {model_type or 'an unknown model_type'}; export to hf or mlx instead.",
                modelType=model_type,
                supported=sorted(GGUF_ARCHITECTURES),
            )
        _check_llama_cpp_layout(config)
        gguf_name = f"{name}-{quantization}.gguf"
        spec.update(
            llamaCpp=str(llama_cpp_dir(home)), ggufName=gguf_name, preTokenizer=pre_tokenizer
        )
    started = time.monotonic()
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=destination.parent))
    try:
        worker = _run_worker(spec | {"outDir": str(tmp)}, tmp, on_progress, cancel, python)
        verification = worker.get("verification")
        if verification and verification["status"] == "failed":
            raise CortexError(
                "verification-failed",
                f"The {target} export does not behave like base + adapter: "
                f"{failure_message(verification)}.",
                verification=verification,
                failed=verification["failed"],
            )
        artifact = _assemble(tmp, target, gguf_name, adapter_dir)
        try:
            os.rename(artifact, destination)
        except OSError as exc:
            raise CortexError(
                "target-exists", f"{destination} appeared meanwhile.", path=str(destination)
            ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if on_progress:
        on_progress("Done", 100)
    files = sorted(str(p.relative_to(destination)) for p in destination.rglob("*") if p.is_file())
    return ExportResult(
        model=adapter_dir.name,
        target=target,
        name=name,
        path=str(destination),
        base_model=str(base),
        files=files,
        size_bytes=sum((destination / f).stat().st_size for f in files),
        seconds=round(time.monotonic() - started, 3),
        quantization=quantization,
        verification=verification,
        timings={k: round(v, 3) for k, v in worker["timings"].items()},
        next_commands=_next_commands(target, destination, name, gguf_name),
    )


def _check_llama_cpp_layout(config: dict[str, Any]) -> None:
    """Refuse what llama.cpp would convert into a different model (found by verification)."""
    pattern = config.get("sliding_window_pattern")
    if str(config.get("model_type")).startswith("gemma3") and pattern not in (None, 6):
        # llama.cpp's Gemma 3 always alternates five sliding-window layers and one global
        # one; the converter does not carry another pattern, so the GGUF would differ.
        raise CortexError(
            "unsupported-architecture",
            f"llama.cpp runs Gemma 3 with a sliding-window pattern of 6; this model's is "
            f"{pattern}, so its GGUF would not behave like it. Export to hf or mlx instead.",
            modelType=config.get("model_type"),
        )


def _assemble(tmp: Path, target: str, gguf_name: str | None, adapter_dir: Path) -> Path:
    """Return the folder (inside ``tmp``) to rename into place, the target's files only."""
    if target in ("mlx", "hf", "lmstudio"):
        artifact = tmp / "model"
        (artifact / "README.md").unlink(missing_ok=True)  # mlx_lm's hub model card
        return artifact
    artifact = tmp / "artifact"
    artifact.mkdir()
    assert gguf_name is not None
    (tmp / gguf_name).rename(artifact / gguf_name)
    if target == "ollama":
        chat_template = _chat_template(tmp / "hf")
        template = ollama_template(chat_template)
        if template is None:
            raise CortexError(
                "unsupported-template",
                "No Ollama template is known for this model's chat template (llama3, qwen2.5, "
                "qwen3, chatml, gemma, mistral and phi3 are); export to gguf instead: "
                "Ollama then uses the template embedded in the GGUF.",
            )
        (artifact / "Modelfile").write_text(modelfile_text(gguf_name, template), encoding="utf-8")
    return artifact


def _chat_template(hf_dir: Path) -> str | None:
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    with contextlib.suppress(OSError, ValueError):
        value = json.loads((hf_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        template = value.get("chat_template")
        return template if isinstance(template, str) else None
    return None


def _run_worker(
    spec: dict[str, Any],
    tmp: Path,
    on_progress: Callable[[str, int], None] | None,
    cancel: threading.Event | None,
    python: str | None,
) -> dict[str, Any]:
    """Run the export worker on ``spec``; return its result (raises CortexError)."""
    (tmp / "spec.json").write_text(json.dumps(spec))
    worker = start_worker(
        "cortex_rpc.models.export_worker",
        [str(tmp / "spec.json")],
        log_path=tmp / "worker.log",
        python=python,
    )
    try:
        worker.kill_on(cancel, "export-cancel")
        final = None
        for data in worker.events():
            event = decode_event(data, ONE_SHOT_EVENT_TYPES)
            if isinstance(event, Stage) and on_progress:
                on_progress(event.message, STAGE_PERCENT.get(event.name, 50))
            if event is not None and event.final:
                final = event
        returncode = worker.wait(EXPORT_TIMEOUT_SECONDS)
    finally:
        worker.close()
    if cancel is not None and cancel.is_set():
        raise CortexError("cancelled", "Export cancelled")
    if isinstance(final, Error):
        if "No space left" in final.message:
            raise OSError(28, final.message)
        raise CortexError(final.code, final.message)
    if not isinstance(final, Result) or returncode != 0:
        tail = log_tail(tmp / "worker.log")
        raise CortexError("export-failed", f"The export worker failed (exit {returncode}): {tail}")
    return final.value
