"""Server-side text generation through a warm worker process (no mlx in the server).

``ModelRunner.generate`` sends one request to ``worker.py`` and relays its streamed
chunks; the worker keeps the last model loaded, and is restarted if it dies.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..models.fine_tuned import base_and_adapter
from ..training.contract import (
    GENERATION_EVENT_TYPES,
    Chunk,
    Generated,
    GenerationRequest,
    Ready,
    RequestError,
    WorkerEvent,
    decode_event,
)
from ..workers import WorkerHandle, start_worker


class ModelRunner:
    """Runs generation requests one at a time on a warm worker process."""

    def __init__(self, python: str | None = None, log_path: Path | None = None) -> None:
        self.python = python
        self.log_path = log_path
        self._lock = threading.Lock()
        self._worker: WorkerHandle | None = None
        self._ids = itertools.count(1)

    def _next_event(self) -> WorkerEvent | None:
        assert self._worker is not None
        while (data := self._worker.next_event()) is not None:
            event = decode_event(data, GENERATION_EVENT_TYPES)
            if event is not None:
                return event
        return None

    def _ensure_worker(self) -> WorkerHandle:
        if self._worker is not None and self._worker.process.poll() is None:
            return self._worker
        self.close()
        self._worker = start_worker(
            "cortex_rpc.generation.worker",
            log_path=self.log_path,
            python=self.python,
            stdin=True,
        )
        if not isinstance(self._next_event(), Ready):
            self.close()
            raise CortexError("generation-failed", "The generation worker did not start")
        return self._worker

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
        base, adapter_dir, bits = base_and_adapter(model_path, adapter)
        with self._lock:
            for _attempt in range(2):
                worker = self._ensure_worker()
                request = GenerationRequest(
                    id=next(self._ids),
                    model=base,
                    adapter=adapter_dir,
                    quantization_bits=bits,
                    prompt=prompt,
                    max_tokens=max_tokens,
                    temperature=temperature,
                )
                try:
                    worker.send(request.to_wire())
                except (BrokenPipeError, OSError):
                    self.close()
                    continue
                while (event := self._next_event()) is not None:
                    if getattr(event, "id", None) != request.id:
                        continue
                    if isinstance(event, Chunk) and on_chunk is not None:
                        on_chunk(event.text)
                    elif isinstance(event, Generated):
                        return {
                            "text": event.text,
                            "tokens": event.tokens,
                            "tokensPerSecond": event.tokens_per_second,
                            "finishReason": event.finish_reason,
                        }
                    elif isinstance(event, RequestError):
                        raise CortexError(event.code or "generation-failed", event.message)
                # The worker died mid-request: restart it once, then give up.
                self.close()
        raise CortexError("generation-failed", "The generation worker stopped unexpectedly")

    def close(self) -> None:
        """Stop the worker (it is started again by the next request)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()


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
