"""A small typed asyncio client for cortex-rpc: spawn the server, call methods, stream notifications.

Usable from scripts and notebooks::

    async with CortexClient() as client:
        info = await client.inspect_model("/models/llama")
        job = await client.start_training(model, "data.jsonl", "my-model")
        async for progress in client.training_progress(job["jobId"]):
            print(progress["epoch"], progress["trainLoss"])
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from cortex_rpc.training.contract import TERMINAL_STATES


class CortexRpcError(Exception):
    """A JSON-RPC error answered by the server; ``code_name`` is ``data.code`` when present."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}

    @property
    def code_name(self) -> str | None:
        return self.data.get("code") if isinstance(self.data, dict) else None


def default_server_command() -> list[str]:
    """Return the command that starts the server: $CORTEX_RPC, else this Python's module."""
    configured = os.environ.get("CORTEX_RPC")
    if configured:
        return configured.split()
    return [sys.executable, "-m", "cortex_rpc"]


class CortexClient:
    """An LSP-framed JSON-RPC connection to a ``cortex-rpc`` child process."""

    def __init__(
        self,
        command: list[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        initialization_options: dict[str, Any] | None = None,
    ) -> None:
        self.command = command or default_server_command()
        self.env = env
        self.initialization_options = initialization_options or {}
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscribers: dict[str, list[asyncio.Queue[dict[str, Any]]]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    async def __aenter__(self) -> CortexClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> dict[str, Any]:
        """Spawn the server and run the ``initialize`` handshake."""
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self.env,
            limit=2**26,
            # Its own session: a Ctrl-C in the terminal reaches the client, which decides
            # (cancel or detach), not the server.
            start_new_session=True,
        )
        self._reader_task = asyncio.create_task(self._read_loop())
        result = await self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "capabilities": {"window": {"workDoneProgress": True}},
                "initializationOptions": self.initialization_options,
            },
        )
        await self.notify("initialized", {})
        self.server_info = result.get("serverInfo", {})
        self.capabilities = result.get("capabilities", {})
        return result

    async def close(self) -> None:
        """Shut the server down cleanly (shutdown, exit) and wait for it."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.request("shutdown"), 10)
                await self.notify("exit")
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        if self._reader_task:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self._process = None

    @property
    def methods(self) -> list[str]:
        """The custom methods the server advertises."""
        return self.capabilities.get("experimental", {}).get("cortex", {}).get("methods", [])

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None, "not started"
        body = json.dumps(message).encode()
        async with self._write_lock:
            self._process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await self._process.stdin.drain()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a request and return its result; raise CortexRpcError for an error reply.

        Cancelling the awaiting task sends ``$/cancelRequest`` to the server.
        """
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        await self._send(message)
        try:
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.notify("$/cancelRequest", {"id": msg_id})
            raise
        finally:
            self._pending.pop(msg_id, None)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._send(message)

    def subscribe(self, method: str) -> asyncio.Queue[dict[str, Any]]:
        """Return a queue that receives every notification named ``method`` from now on."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.setdefault(method, []).append(queue)
        return queue

    def unsubscribe(self, method: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with contextlib.suppress(ValueError, KeyError):
            self._subscribers[method].remove(queue)

    async def notifications(self, method: str) -> AsyncIterator[dict[str, Any]]:
        """Iterate over notifications named ``method`` as they arrive."""
        queue = self.subscribe(method)
        try:
            while True:
                yield await queue.get()
        finally:
            self.unsubscribe(method, queue)

    async def _read_loop(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        try:
            while True:
                length = None
                while True:
                    line = await stdout.readline()
                    if not line:
                        raise EOFError
                    if line in (b"\r\n", b"\n"):
                        break
                    name, _, value = line.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length is None:
                    continue
                self._dispatch(json.loads(await stdout.readexactly(length)))
        except (EOFError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CortexRpcError(-32099, "cortex-rpc server exited"))
            for queues in self._subscribers.values():
                for queue in queues:
                    queue.put_nowait({"__closed__": True})

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message and "method" not in message:
            future = self._pending.get(message["id"])
            if future is None or future.done():
                return
            if "error" in message:
                error = message["error"]
                future.set_exception(
                    CortexRpcError(
                        error.get("code", -32603), error.get("message", ""), error.get("data")
                    )
                )
            else:
                future.set_result(message.get("result"))
        elif "id" in message:
            # A server-to-client request (e.g. window/workDoneProgress/create): accept it.
            asyncio.ensure_future(
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            )
        else:
            for queue in self._subscribers.get(message.get("method", ""), []):
                queue.put_nowait(message.get("params") or {})

    # Typed wrappers, one per method of docs/protocol.md.

    async def system_info(self) -> dict[str, Any]:
        return await self.request("cortex/systemInfo")

    async def inspect_model(self, path: str) -> dict[str, Any]:
        return await self.request("cortex/inspectModel", {"path": str(path)})

    async def list_models(self) -> list[dict[str, Any]]:
        return (await self.request("cortex/listModels", {}))["models"]

    async def propose_config(
        self,
        model: str,
        dataset: str | None = None,
        preset: str = "balanced",
        overrides: dict[str, Any] | None = None,
        *,
        format: str | None = None,
        method: str | None = None,
    ) -> dict[str, Any]:
        """The smart config; ``format`` overrides the dataset's format detection.

        ``method`` (sft, dpo, orpo): None lets the server pick by the data (dpo for
        preference pairs); ``overrides["method"]`` wins over it.
        """
        params: dict[str, Any] = {"model": str(model), "preset": preset}
        if dataset is not None:
            params["dataset"] = str(dataset)
        if format is not None:
            params["format"] = format
        if method is not None:
            params["method"] = method
        if overrides:
            params["overrides"] = overrides
        return await self.request("cortex/proposeConfig", params)

    async def validate_dataset(
        self, path: str | None = None, *, text: str | None = None, format: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if path is not None:
            params["path"] = str(path)
        if text is not None:
            params["text"] = text
        if format is not None:
            params["format"] = format
        return await self.request("cortex/validateDataset", params)

    async def analyze_dataset(self, path: str, model: str | None = None) -> dict[str, Any]:
        params = {"path": str(path)} | ({"model": str(model)} if model else {})
        return await self.request("cortex/analyzeDataset", params)

    async def dataset_report(
        self, path: str, model: str | None = None, format: str = "markdown"
    ) -> dict[str, Any]:
        """The data-quality report; ``format`` "markdown" or "html" adds that rendering."""
        params = {"path": str(path), "format": format} | ({"model": str(model)} if model else {})
        return await self.request("cortex/datasetReport", params)

    async def training_preview(
        self,
        model: str,
        dataset: str | None = None,
        *,
        uri: str | None = None,
        line: int | None = None,
        limit: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Records as the trainer sees them: ``{records, summary, options}``.

        A file (``dataset``) or an open document (``uri``); ``line`` (0-based) starts at that
        record; ``config`` takes ``trainOn``, ``trainTemplateText`` and ``maxSeqLength``.
        """
        params: dict[str, Any] = {"model": str(model)}
        if dataset is not None:
            params["dataset"] = str(dataset)
        if uri is not None:
            params["uri"] = uri
        if line is not None:
            params["line"] = line
        if limit is not None:
            params["limit"] = limit
        if config:
            params["config"] = config
        return await self.request("cortex/trainingPreview", params)

    async def create_dataset(
        self, path: str, examples: list[dict[str, str]], overwrite: bool = False
    ) -> dict[str, Any]:
        return await self.request(
            "cortex/createDataset",
            {"path": str(path), "examples": examples, "overwrite": overwrite},
        )

    async def sample_dataset(self, path: str, overwrite: bool = False) -> dict[str, Any]:
        return await self.request(
            "cortex/sampleDataset", {"path": str(path), "overwrite": overwrite}
        )

    async def start_training(
        self,
        model: str,
        dataset: str,
        output_name: str,
        *,
        preset: str = "balanced",
        config: dict[str, Any] | None = None,
        method: str | None = None,
    ) -> dict[str, Any]:
        """Start a job; ``method`` as for ``propose_config`` (``config["method"]`` wins)."""
        params: dict[str, Any] = {
            "model": str(model),
            "dataset": str(dataset),
            "outputName": output_name,
            "preset": preset,
        }
        if config:
            params["config"] = config
        if method is not None:
            params["method"] = method
        return await self.request("cortex/startTraining", params)

    async def detach(self) -> None:
        """Let running jobs finish after this client goes away (the server stays until then)."""
        await self.notify("cortex/detach", {})

    async def cancel_training(self, job_id: str) -> dict[str, Any]:
        return await self.request("cortex/cancelTraining", {"jobId": job_id})

    async def resume_training(self, job_id: str) -> dict[str, Any]:
        return await self.request("cortex/resumeTraining", {"jobId": job_id})

    async def list_jobs(self) -> list[dict[str, Any]]:
        return (await self.request("cortex/listJobs", {}))["jobs"]

    async def training_progress(
        self, job_id: str, queue: asyncio.Queue[dict[str, Any]] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield a job's progress notifications until it reaches a terminal state.

        Pass a ``queue`` from ``subscribe("cortex/trainingProgress")`` taken before the job
        was started, so that no early notification is missed.
        """
        queue = queue or self.subscribe("cortex/trainingProgress")
        try:
            while True:
                note = await queue.get()
                if note.get("__closed__"):
                    raise CortexRpcError(-32099, "cortex-rpc server exited during training")
                if note.get("jobId") != job_id:
                    continue
                yield note
                if note.get("state") in TERMINAL_STATES:
                    return
        finally:
            self.unsubscribe("cortex/trainingProgress", queue)

    @contextlib.asynccontextmanager
    async def _forwarding(
        self, method: str, callback: Callable[[dict[str, Any]], None] | None
    ) -> AsyncIterator[None]:
        """Pass each ``method`` notification to ``callback`` while the body runs.

        Notifications arrive before the reply that ends the body; any not yet delivered
        then are delivered on the way out, so none is lost.
        """
        if callback is None:
            yield
            return
        queue = self.subscribe(method)

        async def forward() -> None:
            while not (note := await queue.get()).get("__closed__"):
                callback(note)

        pump = asyncio.create_task(forward())
        try:
            yield
        finally:
            self.unsubscribe(method, queue)
            pump.cancel()
            while not queue.empty():
                note = queue.get_nowait()
                if not note.get("__closed__"):
                    callback(note)

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        adapter: str | None = None,
        on_chunk: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Generate from a model; ``on_chunk`` receives text as it streams."""
        params: dict[str, Any] = {
            "model": str(model),
            "prompt": prompt,
            "maxTokens": max_tokens,
            "temperature": temperature,
        }
        if adapter:
            params["adapter"] = str(adapter)
        callback = None if on_chunk is None else (lambda chunk: on_chunk(chunk.get("text", "")))
        async with self._forwarding("cortex/generateChunk", callback):
            return await self.request("cortex/generate", params)

    async def list_adapters(self, base_model: str) -> list[dict[str, Any]]:
        return (await self.request("cortex/listAdapters", {"baseModel": str(base_model)}))[
            "adapters"
        ]

    async def compare_adapters(
        self, base_model: str, adapters: list[str], prompts: list[str], max_tokens: int = 64
    ) -> dict[str, Any]:
        return await self.request(
            "cortex/compareAdapters",
            {
                "baseModel": str(base_model),
                "adapters": list(adapters),
                "prompts": list(prompts),
                "maxTokens": max_tokens,
            },
        )

    async def evaluate(
        self, model: str, dataset: str, *, split: str = "valid", max_examples: int | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": str(model), "dataset": str(dataset), "split": split}
        if max_examples is not None:
            params["maxExamples"] = max_examples
        return await self.request("cortex/evaluate", params)

    async def tune_hyperparameters(
        self,
        model: str,
        dataset: str,
        budget_seconds: float,
        *,
        trials: int | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Run the search; ``on_progress`` receives each ``cortex/tuningProgress`` payload."""
        params: dict[str, Any] = {
            "model": str(model),
            "dataset": str(dataset),
            "budgetSeconds": budget_seconds,
        }
        if trials is not None:
            params["trials"] = trials
        async with self._forwarding("cortex/tuningProgress", on_progress):
            return await self.request("cortex/tuneHyperparameters", params)

    async def fuse_model(self, name: str, output_name: str) -> dict[str, Any]:
        return await self.request("cortex/fuseModel", {"name": name, "outputName": output_name})

    async def export_model(
        self,
        model: str,
        target: str,
        *,
        name: str | None = None,
        quantization: str | None = None,
        verify: bool = True,
        lmstudio_root: str | None = None,
        pre_tokenizer: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": str(model), "target": target, "verify": verify}
        optional = {
            "name": name,
            "quantization": quantization,
            "lmstudioRoot": lmstudio_root,
            "preTokenizer": pre_tokenizer,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return await self.request("cortex/exportModel", params)

    async def delete_model(self, name: str) -> dict[str, Any]:
        return await self.request("cortex/deleteModel", {"name": name})
