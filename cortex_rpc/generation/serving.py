"""``cortex/serve``: mlx_lm's OpenAI-compatible server for a fine-tune, on 127.0.0.1 only.

Each server is ``python -m mlx_lm server --model BASE --adapter-path ADAPTER`` in its own
process group (``start_worker``), bound to the loopback interface, answered once with a
one-token chat completion before its URL is returned (so the first real request finds the
model loaded). They stop with ``cortex/stopServing`` or when the cortex-rpc server exits.
No mlx here: the server imports this module.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..models.fine_tuned import resolve_fine_tuned
from ..workers import WorkerHandle, log_tail, start_worker

HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 300.0


@dataclass
class ModelServer:
    """One running mlx_lm server: what it serves and where."""

    model: str
    base_model: str
    port: int
    worker: WorkerHandle
    log: Path
    started_at: float

    @property
    def url(self) -> str:
        """The OpenAI API base URL (``…/v1``)."""
        return f"http://{HOST}:{self.port}/v1"

    def to_wire(self) -> dict[str, Any]:
        """Return ``{model, baseModel, url, port, pid, startedAt}``."""
        return {
            "model": self.model,
            "baseModel": self.base_model,
            "url": self.url,
            "port": self.port,
            "pid": self.worker.pid,
            "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
        }


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def chat(url: str, messages: list[dict[str, str]], max_tokens: int = 16) -> dict[str, Any]:
    """POST one greedy ``/chat/completions`` request to ``url`` and return the reply."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    request = urllib.request.Request(
        f"{url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


class ModelServers:
    """The mlx_lm servers this cortex-rpc process started, by model name."""

    def __init__(self) -> None:
        self._servers: dict[str, ModelServer] = {}
        self._lock = threading.Lock()
        self._scratch = Path(tempfile.mkdtemp(prefix="cortex-serve-"))

    def serve(self, model: str | Path, port: int | None = None) -> dict[str, Any]:
        """Start (or return the running) server for fine-tune ``model``; return its entry."""
        base, adapter_dir, _marker = resolve_fine_tuned(model)
        name = adapter_dir.name
        with self._lock:
            running = self._servers.get(name)
            if running is not None and running.worker.process.poll() is None:
                return running.to_wire()
        port = port or free_port()
        log = self._scratch / f"{name}-{port}.log"
        worker = start_worker(
            "mlx_lm",
            ["server", "--model", str(base), "--adapter-path", str(adapter_dir)]
            + ["--host", HOST, "--port", str(port), "--temp", "0"],
            log_path=log,
            events=False,
        )
        server = ModelServer(name, str(base), port, worker, log, time.time())
        try:
            self._wait_ready(server)
        except BaseException:
            worker.signal(15)
            worker.kill_after(5)
            raise
        with self._lock:
            self._servers[name] = server
        return server.to_wire()

    def _wait_ready(self, server: ModelServer) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if server.worker.process.poll() is not None:
                tail = "\n".join(log_tail(server.log).splitlines()[-6:])
                code = "port-in-use" if "Address already in use" in tail else "serve-failed"
                raise CortexError(code, f"mlx_lm server exited: {tail}", port=server.port)
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                chat(server.url, [{"role": "user", "content": "Hi"}], max_tokens=1)
                return
            time.sleep(0.5)
        raise CortexError("serve-failed", f"mlx_lm server not ready in {READY_TIMEOUT_SECONDS} s")

    def stop(self, model: str) -> dict[str, Any]:
        """Stop the server of ``model``; return its entry (``model-not-served`` if none)."""
        with self._lock:
            server = self._servers.pop(Path(model).name, None)
        if server is None:
            raise CortexError("model-not-served", f"No server is running for {model!r}")
        server.worker.signal(15)
        try:
            server.worker.wait(10)
        except Exception:  # noqa: BLE001 - it did not stop in time: kill it
            server.worker.signal(9)
            server.worker.wait()
        return {**server.to_wire(), "stopped": True}

    def list(self) -> dict[str, Any]:
        """Return ``{servers: [...]}``, the ones still running."""
        with self._lock:
            alive = [s for s in self._servers.values() if s.worker.process.poll() is None]
        return {"servers": [s.to_wire() for s in alive]}

    def close(self) -> None:
        """Stop every server (the cortex-rpc server is exiting)."""
        for name in list(self._servers):
            with contextlib.suppress(CortexError):
                self.stop(name)
