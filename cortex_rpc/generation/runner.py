"""Server-side text generation through a warm worker process (no mlx in the server).

``ModelRunner.generate`` sends one request to ``worker.py`` and relays its streamed
chunks; the worker keeps the last model loaded, and is restarted if it dies.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..training.events import EVENT_FD_ENV
from ..training.output import read_marker, resolve_fine_tuned


def resolve_model(
    model_path: str | Path, adapter: str | Path | None
) -> tuple[str, str | None, int | None]:
    """Return (base dir, adapter dir, quantization bits) for a base or fine-tuned model.

    ``model_path`` may itself be a fine-tuned folder (its marker names the base).
    """
    model_path = Path(model_path)
    if adapter is None and read_marker(model_path) is not None:
        adapter = model_path
    bits = None
    if adapter is not None:
        base, adapter_dir, marker = resolve_fine_tuned(adapter)
        bits = marker.get("quantizationBits")
        if read_marker(model_path) is not None:
            model_path = base
        if model_path.resolve() != base.resolve():
            raise CortexError(
                "adapter-mismatch",
                f"{adapter_dir.name} was trained on {base}, not on {model_path}; pick one of "
                "the adapters cortex/listAdapters shows for this base.",
            )
        return str(model_path.resolve()), str(adapter_dir.resolve()), bits
    if not (model_path / "config.json").exists():
        raise CortexError("model-not-found", f"{model_path} is not a model folder")
    return str(model_path.resolve()), None, None


class ModelRunner:
    """Runs generation requests one at a time on a warm worker process."""

    def __init__(self, python: str | None = None, log_path: Path | None = None) -> None:
        self.python = python or sys.executable
        self.log_path = log_path
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._events: Any = None
        self._ids = itertools.count(1)

    def _ensure_worker(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self.close()
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env[EVENT_FD_ENV] = str(write_fd)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [self.python, "-m", "cortex_rpc.generation.worker"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                pass_fds=(write_fd,),
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
            if self.log_path:
                log.close()
        self._events = os.fdopen(read_fd, "r", encoding="utf-8")
        ready = self._read()
        if ready is None or ready.get("event") != "ready":
            raise CortexError("generation-failed", "The generation worker did not start")

    def _read(self) -> dict | None:
        line = self._events.readline()
        return json.loads(line) if line else None

    def generate(
        self,
        model_path: str | Path,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        adapter: str | Path | None = None,
        on_chunk: Callable[[str], None] | None = None,
    ) -> dict:
        """Return ``{text, tokens, tokensPerSecond}``, calling ``on_chunk(text)`` as text arrives."""
        base, adapter_dir, bits = resolve_model(model_path, adapter)
        with self._lock:
            for attempt in range(2):
                self._ensure_worker()
                request = {
                    "id": next(self._ids),
                    "model": base,
                    "adapter": adapter_dir,
                    "quantizationBits": bits,
                    "prompt": prompt,
                    "maxTokens": max_tokens,
                    "temperature": temperature,
                }
                try:
                    self._process.stdin.write((json.dumps(request) + "\n").encode())
                    self._process.stdin.flush()
                except (BrokenPipeError, OSError):
                    self.close()
                    continue
                while True:
                    event = self._read()
                    if event is None:
                        # The worker died mid-request: restart it once, then give up.
                        self.close()
                        break
                    if event.get("id") != request["id"]:
                        continue
                    kind = event.get("event")
                    if kind == "chunk" and on_chunk is not None:
                        on_chunk(event["text"])
                    elif kind == "result":
                        return {
                            "text": event["text"],
                            "tokens": event["tokens"],
                            "tokensPerSecond": event["tokensPerSecond"],
                            "finishReason": event.get("finishReason"),
                        }
                    elif kind == "error":
                        raise CortexError(
                            event.get("code") or "generation-failed", event["message"]
                        )
                if attempt == 1:
                    break
        raise CortexError("generation-failed", "The generation worker stopped unexpectedly")

    def close(self) -> None:
        """Stop the worker (it is started again by the next request)."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._events is not None:
            with contextlib.suppress(OSError):
                self._events.close()
            self._events = None


def compare_adapters(
    runner: ModelRunner,
    base_model: str | Path,
    adapters: list[Path],
    prompts: list[str],
    max_tokens: int = 64,
    *,
    cancel: threading.Event | None = None,
    on_output: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Answer each prompt with the base and with every adapter, on one warm base model.

    Prompts are the outer loop so a table row is complete as soon as it is computed; the
    worker switches adapters without reloading the base. ``on_output(done, total)`` follows
    each generation; ``cancel`` is checked between them (a generation is short).
    """
    models: list[Path | None] = [None, *adapters]
    total, done = len(prompts) * len(models), 0
    rows = []
    for prompt in prompts:
        outputs = []
        for adapter in models:
            if cancel is not None and cancel.is_set():
                raise CortexError(
                    "cancelled", f"Comparison cancelled after {done} of {total} generations"
                )
            reply = runner.generate(base_model, prompt, max_tokens=max_tokens, adapter=adapter)
            outputs.append(
                {
                    "model": Path(adapter).name if adapter else "base",
                    "text": reply["text"],
                    "tokens": reply["tokens"],
                }
            )
            done += 1
            if on_output is not None:
                on_output(done, total)
        rows.append({"prompt": prompt, "outputs": outputs})
    return {"baseModel": str(base_model), "rows": rows}
