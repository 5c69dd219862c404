"""The stdio JSON-RPC server: wires protocol messages to the domain functions, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.feature_manager import is_thread_function
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCRequestMessage, LanguageServerProtocol, lsp_method

from . import __version__, protocol
from .errors import (
    APPLICATION_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    CortexError,
)
from .lsp.framing import FramingError, LockedWriter, frame, read_messages
from .options import InitializationOptions, parse_initialization_options
from .schemas import validate_params


def _is_dataset_document(uri: str, language_id: str | None) -> bool:
    from .datasets.editor import is_dataset_document

    return is_dataset_document(uri, language_id)


logger = logging.getLogger(__name__)


class _ExpectedErrorFilter(logging.Filter):
    """Drop pygls' tracebacks for errors we raise on purpose (bad params, missing models)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], JsonRpcException):
            return record.exc_info[1].code not in _EXPECTED_CODES
        return True


_EXPECTED_CODES = {INVALID_PARAMS, APPLICATION_ERROR, METHOD_NOT_FOUND}
logging.getLogger("pygls.protocol.json_rpc").addFilter(_ExpectedErrorFilter())

Handler = Callable[["CortexServer", dict[str, Any]], Any]


def file_error_message(error: OSError) -> str:
    """Return ``reason: path`` with an absurdly long path cut short."""
    name = str(error.filename) if error.filename is not None else ""
    if len(name) > 200:
        name = name[:200] + f"… ({len(name)} characters)"
    reason = error.strerror or type(error).__name__
    return f"{reason}: {name}" if name else reason


class CortexProtocol(LanguageServerProtocol):
    """pygls' protocol, fixed where JSON-RPC clients trip it up.

    Custom ``cortex/*`` params stay plain dicts (validated against their schema later),
    requests after ``shutdown`` get -32600 instead of silence, and ``$/cancelRequest``
    also reaches handlers that are already running.
    """

    def __init__(self, server: LanguageServer, converter: Any) -> None:
        super().__init__(server, converter)
        self.cancel_events: dict[Any, threading.Event] = {}

    def structure_message(self, data: dict[str, Any]) -> Any:
        method = data.get("method")
        if "id" in data and isinstance(method, str) and method.startswith("cortex/"):
            return JsonRPCRequestMessage(
                id=data["id"], method=method, jsonrpc=data["jsonrpc"], params=data.get("params")
            )
        return super().structure_message(data)

    def handle_message(self, message: Any) -> None:
        is_request = getattr(message, "method", None) is not None and hasattr(message, "id")
        if self._shutdown and is_request and message.method != types.EXIT:
            self._send_response(
                message.id,
                error=JsonRpcException(
                    code=INVALID_REQUEST, message="Server is shutting down; send 'exit'"
                ).to_response_error(),
            )
            return
        super().handle_message(message)

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        event = self.cancel_events.get(msg_id)
        if event is not None:
            event.set()
        super()._handle_cancel_notification(msg_id)

    def _execute_handler(
        self,
        msg_id: Any,
        handler: Any,
        callback: Any,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        # pygls submits threaded handlers without the request's context, so inside them
        # ``msg_id`` would be None: run them in a copy of the context that holds it.
        if not is_thread_function(handler):
            super()._execute_handler(msg_id, handler, callback, args, kwargs)
            if getattr(callback, "func", None) == self._run_generator:
                # A step yielded by a generator handler (hover, code actions) is filed under a
                # fresh id that nothing ever removes or cancels: drop it, or it leaks.
                self._request_futures.pop(msg_id, None)
            return
        context = contextvars.copy_context()
        future = self._server.thread_pool.submit(
            context.run, handler, *(args or ()), **(kwargs or {})
        )
        self._request_futures[msg_id] = future
        future.add_done_callback(callback)

    # Dataset documents keep their own line index (datasets.editor); pygls' workspace copy
    # re-splits the whole text on every edit, which is too slow for a 100,000-line file.
    def _dataset_uri(self, uri: str, language_id: str | None = None) -> bool:
        return getattr(self._server, "dataset_documents", None) is not None and (
            uri in self._server.dataset_documents
            or (language_id is not None and _is_dataset_document(uri, language_id))
        )

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Any:
        document = params.text_document
        if not self._dataset_uri(document.uri, document.language_id):
            yield from super().lsp_text_document__did_open(params)
        elif (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Any:
        if not self._dataset_uri(params.text_document.uri):
            yield from super().lsp_text_document__did_change(params)
        elif (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Any:
        if not self._dataset_uri(params.text_document.uri):
            yield from super().lsp_text_document__did_close(params)
        elif (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Any:
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = {
            "cortex": {"methods": sorted(self._server.cortex_methods), "version": __version__}
        }
        return result


class CortexServer(LanguageServer):
    """The cortex-rpc language server and the state it keeps between requests."""

    def __init__(self) -> None:
        super().__init__(protocol.SERVER_NAME, __version__, protocol_cls=CortexProtocol)
        self.options = InitializationOptions()
        self.cortex_methods: set[str] = set()
        self.on_exit: list[Callable[[], None]] = []
        # Per-thread view of the request a cortex handler is serving: ``msg_id`` and
        # ``cancel`` (a threading.Event set by $/cancelRequest).
        self.request = threading.local()

    def cortex_method(self, name: str) -> Callable[[Handler], Handler]:
        """Register ``handler(server, params_dict)`` for ``name``, run in the thread pool.

        Params are validated against ``schemas/rpc/<name>.params.schema.json`` first, and a
        CortexError becomes a JSON-RPC error with ``data.code``.
        """

        def decorator(handler: Handler) -> Handler:
            def run(ls: CortexServer, params: Any) -> Any:
                msg_id = ls.protocol.msg_id  # set by CortexProtocol._execute_handler
                cancel = threading.Event()
                ls.protocol.cancel_events[msg_id] = cancel
                ls.request.msg_id, ls.request.cancel = msg_id, cancel
                try:
                    return handler(ls, validate_params(name, params))
                except CortexError as error:
                    raise JsonRpcException(
                        code=error.rpc_code, message=error.message, data=error.data
                    ) from error
                except OSError as error:
                    # A path the user gave that the OS refuses (too long, no permission, a
                    # directory, disk full): an application error naming it, not a crash.
                    raise JsonRpcException(
                        code=APPLICATION_ERROR,
                        message=file_error_message(error),
                        data={"code": "file-error", "errno": errno.errorcode.get(error.errno)},
                    ) from error
                finally:
                    ls.protocol.cancel_events.pop(msg_id, None)

            self.feature(name)(self.thread()(run))
            self.cortex_methods.add(name)
            return handler

        return decorator

    def report_server_error(self, error: Exception, source: Any) -> None:
        # pygls' default sends window/showMessage, which recurses when the client is gone.
        expected = isinstance(error, JsonRpcException) and error.code in _EXPECTED_CODES
        logger.log(logging.DEBUG if expected else logging.ERROR, "%s", error)

    def notify(self, method: str, payload: dict[str, Any]) -> None:
        """Send a custom notification to the client."""
        self.protocol.notify(method, payload)

    def log(self, message: str, level: types.MessageType = types.MessageType.Info) -> None:
        """Show ``message`` in the client's log (window/logMessage) and on stderr."""
        logger.info(message)
        try:
            self.window_log_message(types.LogMessageParams(type=level, message=message))
        except Exception:  # noqa: BLE001 - the client may already be gone
            logger.debug("could not send logMessage", exc_info=True)

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve LSP over the given byte streams until ``exit`` or end of input."""
        self._stop_event = threading.Event()
        writer = LockedWriter(stdout or sys.stdout.buffer)
        self.protocol.set_writer(writer)
        try:
            asyncio.run(self._serve(stdin or sys.stdin.buffer, writer))
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            for hook in self.on_exit:
                try:
                    hook()
                except Exception:  # noqa: BLE001 - shutting down regardless
                    logger.exception("exit hook failed")
            self.shutdown()

    async def _serve(self, stdin: BinaryIO, writer: LockedWriter) -> None:
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def on_message(data: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(self._dispatch, data)

        def on_error(error: FramingError) -> None:
            writer.write(frame(error.to_response()))

        def read() -> None:
            try:
                read_messages(stdin, on_message, on_error, self._stop_event)
            finally:
                loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

        threading.Thread(target=read, name="cortex-stdin", daemon=True).start()
        await finished

    def _dispatch(self, data: dict[str, Any]) -> None:
        try:
            message = self.protocol.structure_message(data)
        except JsonRpcException as error:
            if data.get("id") is not None and "method" in data:
                self.protocol._send_response(data["id"], error=error.to_response_error())
            return
        self.protocol.handle_message(message)


server = CortexServer()


@server.feature(types.INITIALIZE)
def initialize(ls: CortexServer, params: types.InitializeParams) -> None:
    ls.options, warnings = parse_initialization_options(params.initialization_options)
    if ls.options.cortex_home:
        import os

        os.environ["CORTEX_HOME"] = ls.options.cortex_home
    for warning in warnings:
        ls.log(warning, types.MessageType.Warning)


@server.cortex_method(protocol.SYSTEM_INFO)
def system_info(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .accel import system_info

    return system_info()


@server.cortex_method(protocol.INSPECT_MODEL)
def inspect_model(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.inspect import inspect_model
    from .models.registry import resolve_model

    return inspect_model(resolve_model(params["path"], ls.options.model_dirs)).to_wire()


@server.cortex_method(protocol.LIST_MODELS)
def list_models(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.registry import list_models

    return {"models": [entry.to_wire() for entry in list_models(ls.options.model_dirs)]}


@server.cortex_method(protocol.PROPOSE_CONFIG)
def propose_config(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .config.proposal import propose_for_model

    return propose_for_model(
        params["model"],
        dataset=params.get("dataset"),
        dataset_stats=params.get("datasetStats"),
        preset=params.get("preset", "balanced"),
        overrides=params.get("overrides"),
        model_dirs=ls.options.model_dirs,
    ).to_wire()


# -- datasets ---------------------------------------------------------------------------------


@server.cortex_method(protocol.VALIDATE_DATASET)
def validate_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import validate_dataset

    return validate_dataset(
        params.get("path"),
        text=params.get("text"),
        format=params.get("format"),
        context_length=params.get("contextLength"),
        cancel=ls.request.cancel,
    ).to_wire()


@server.cortex_method(protocol.ANALYZE_DATASET)
def analyze_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import analyze_dataset
    from .models.registry import resolve_model

    model = params.get("model")
    model_path = resolve_model(model, ls.options.model_dirs) if model else None
    return analyze_dataset(params["path"], model_path=model_path).to_wire()


@server.cortex_method(protocol.DATASET_REPORT)
def dataset_report(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets.report import dataset_report
    from .models.registry import resolve_model

    model = params.get("model")
    model_path = resolve_model(model, ls.options.model_dirs) if model else None
    report = dataset_report(params["path"], model_path=model_path, cancel=ls.request.cancel)
    return report.to_wire(render=params.get("format", "markdown"))


@server.cortex_method(protocol.CREATE_DATASET)
def create_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import create_dataset

    return create_dataset(
        params["path"], params["examples"], overwrite=params.get("overwrite", False)
    )


@server.cortex_method(protocol.SAMPLE_DATASET)
def sample_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import write_sample_dataset

    return write_sample_dataset(params["path"], overwrite=params.get("overwrite", False))


@server.cortex_method(protocol.PREPARE_DATASET)
def prepare_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import prepare_dataset
    from .datasets.prepare import default_out_dir

    return prepare_dataset(
        params["path"],
        params.get("outDir") or default_out_dir(),
        format=params.get("format"),
        valid_fraction=params.get("validFraction", 0.1),
        seed=params.get("seed", 0),
    ).to_wire()


# -- datasets: live diagnostics -----------------------------------------------------------------


class DatasetDocuments:
    """Open dataset documents, checked on one worker thread so the event loop never waits.

    Edits apply in order on that thread; diagnostics are published at once for an edit after
    a quiet spell, and at most once per ``diagnosticsDebounceMs`` during a burst of edits.
    """

    def __init__(self, ls: CortexServer) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.ls = ls
        self.docs: dict[str, Any] = {}
        self.versions: dict[str, int | None] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.last_edit: dict[str, float] = {}
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="cortex-datasets")

    def __contains__(self, uri: str) -> bool:
        return uri in self.versions

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.worker.submit(fn, *args)

    def schedule(self, uri: str, immediate: bool = False) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet = now - self.last_edit.get(uri, float("-inf"))
        self.last_edit[uri] = now
        delay = self.ls.options.diagnostics_debounce_ms / 1000
        if (timer := self.timers.pop(uri, None)) is not None:
            timer.cancel()
        if immediate or quiet >= delay:
            self.submit(self.publish, uri)
        else:
            self.timers[uri] = loop.call_later(delay, lambda: self.submit(self.publish, uri))

    def publish(self, uri: str) -> None:
        from .datasets.editor import publish_payload

        doc = self.docs.get(uri)
        if doc is None:
            return
        params, summary = publish_payload(doc, self.versions.get(uri))
        self.send(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS, params)
        self.ls.notify(protocol.DATASET_SUMMARY, summary)

    def send(self, method: str, params: dict[str, Any]) -> None:
        # Plain dicts straight to JSON: pygls would first convert them to lsprotocol types,
        # which costs milliseconds for a thousand diagnostics.
        self.ls.protocol._send_data({"jsonrpc": "2.0", "method": method, "params": params})

    def open(self, uri: str, text: str, language_id: str) -> None:
        from .datasets.editor import DatasetDocument

        self.docs[uri] = DatasetDocument(uri, text, language_id=language_id)

    def change(self, uri: str, changes: list[tuple[Any, str]]) -> None:
        doc = self.docs.get(uri)
        if doc is None:
            return
        for change_range, text in changes:
            doc.apply_change(change_range, text)

    def close(self, uri: str) -> None:
        self.docs.pop(uri, None)
        self.send(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS, {"uri": uri, "diagnostics": []})


server.dataset_documents = DatasetDocuments(server)


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: CortexServer, params: types.DidOpenTextDocumentParams) -> None:
    document = params.text_document
    if not _is_dataset_document(document.uri, document.language_id):
        return
    docs = ls.dataset_documents
    docs.versions[document.uri] = document.version
    docs.submit(docs.open, document.uri, document.text, document.language_id)
    docs.schedule(document.uri, immediate=True)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: CortexServer, params: types.DidChangeTextDocumentParams) -> None:
    docs, uri = ls.dataset_documents, params.text_document.uri
    if uri not in docs:
        return
    changes = []
    for change in params.content_changes:
        if isinstance(change, types.TextDocumentContentChangePartial):
            r = change.range
            changes.append(
                ((r.start.line, r.start.character, r.end.line, r.end.character), change.text)
            )
        else:
            changes.append((None, change.text))
    docs.versions[uri] = params.text_document.version
    docs.submit(docs.change, uri, changes)
    docs.schedule(uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: CortexServer, params: types.DidCloseTextDocumentParams) -> None:
    docs, uri = ls.dataset_documents, params.text_document.uri
    if uri not in docs:
        return
    docs.versions.pop(uri, None)
    if (timer := docs.timers.pop(uri, None)) is not None:
        timer.cancel()
    docs.submit(docs.close, uri)


async def _document_result(job: Any) -> Any:
    return await asyncio.wrap_future(job)


# Hover and code actions are generator handlers, not coroutines: pygls runs a generator at once,
# so the document work is queued behind the edits that came before the request and ahead of
# those after it. A coroutine would start a loop turn later, after edits sent after the request
# (LSP forbids reordering a request with didChange).
@server.feature(types.TEXT_DOCUMENT_HOVER)
def hover(ls: CortexServer, params: types.HoverParams) -> Any:
    from .datasets.editor import hover

    docs, uri = ls.dataset_documents, params.text_document.uri
    if uri not in docs:
        return None
    position = params.position
    text = yield (
        _document_result,
        (
            docs.submit(
                lambda: (
                    docs.docs.get(uri) and hover(docs.docs[uri], position.line, position.character)
                )
            ),
        ),
        {},
    )
    if not text:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


@server.feature(types.TEXT_DOCUMENT_CODE_ACTION)
def code_action(ls: CortexServer, params: types.CodeActionParams) -> Any:
    from .datasets.editor import code_actions

    docs, uri = ls.dataset_documents, params.text_document.uri
    if uri not in docs:
        return None
    r = params.range
    diagnostics = [ls.protocol._converter.unstructure(d) for d in params.context.diagnostics]
    actions = yield (
        _document_result,
        (
            docs.submit(
                lambda: (
                    docs.docs.get(uri)
                    and code_actions(
                        docs.docs[uri],
                        (r.start.line, r.start.character, r.end.line, r.end.character),
                        diagnostics,
                    )
                )
            ),
        ),
        {},
    )
    if not actions:
        return None
    return [ls.protocol._converter.structure(a, types.CodeAction) for a in actions]


# -- training ---------------------------------------------------------------------------------


class TrainingProgressRelay:
    """Forwards job events as ``cortex/trainingProgress`` and, per job, as ``$/progress``."""

    def __init__(self, ls: CortexServer) -> None:
        self.ls = ls
        self.tokens: dict[str, Any] = {}  # jobId -> work-done token, once begun

    def begin(self, job_id: str, token: Any, title: str) -> None:
        self.tokens[job_id] = token
        self.ls.work_done_progress.begin(
            token,
            types.WorkDoneProgressBegin(
                title=title, cancellable=False, message="Starting", percentage=0
            ),
        )

    def __call__(self, payload: dict[str, Any]) -> None:
        from .training.service import work_done_update

        self.ls.notify(protocol.TRAINING_PROGRESS, payload)
        token = self.tokens.get(payload["jobId"])
        if token is None:
            return
        update = work_done_update(payload)
        if update.kind == "report" and payload.get("event") not in ("progress", "resumed"):
            return  # checkpoints and warnings repeat the last progress line
        if update.kind == "end":
            self.tokens.pop(payload["jobId"], None)
            self.ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=update.message))
        else:
            self.ls.work_done_progress.report(
                token,
                types.WorkDoneProgressReport(message=update.message, percentage=update.percentage),
            )


def _jobs(ls: CortexServer) -> Any:
    """The job manager, created on first use (after initialize has set CORTEX_HOME)."""
    if getattr(ls, "_jobs", None) is None:
        from .paths import cortex_home
        from .training.jobs import TrainingJobs

        ls._progress_relay = TrainingProgressRelay(ls)
        ls._jobs = TrainingJobs(cortex_home(), on_event=ls._progress_relay)
        ls.on_exit.append(lambda: _stop_jobs(ls))
    return ls._jobs


def _stop_jobs(ls: CortexServer) -> None:
    """On exit, cancel jobs (resumable) unless the client detached: then let them finish."""
    if getattr(ls, "detached", False):
        ls._jobs.wait_all()
    ls._jobs.shutdown()


@server.feature(protocol.DETACH)
def detach(ls: CortexServer, params: Any) -> None:
    ls.detached = True


def _client_creates_progress(ls: CortexServer) -> bool:
    window = getattr(ls.client_capabilities, "window", None)
    return bool(window is not None and getattr(window, "work_done_progress", False))


@server.cortex_method(protocol.START_TRAINING)
def start_training(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .training.service import start_training

    jobs = _jobs(ls)
    result = start_training(
        jobs,
        model=params["model"],
        dataset=params["dataset"],
        output_name=params["outputName"],
        preset=params.get("preset", "balanced"),
        config=params.get("config"),
        dataset_format=params.get("format"),
        model_dirs=ls.options.model_dirs,
        options={
            **params.get("options", {}),
            **({"distributed": params["distributed"]} if params.get("distributed") else {}),
        },
        continue_from=params.get("continueFrom"),
        replay_fraction=params.get("replayFraction"),
    )
    _begin_progress(ls, result["jobId"], params["outputName"], params.get("workDoneToken"))
    return result


def _begin_progress(ls: CortexServer, job_id: str, output_name: str, token: Any) -> None:
    """Report the job through ``$/progress``: the client's token, or one we ask it to create."""
    title = f"Fine-tuning {output_name}"
    if token is not None:
        ls._progress_relay.begin(job_id, token, title)
    elif _client_creates_progress(ls):
        token = f"cortex-training-{job_id}-{time.monotonic_ns()}"
        ls.work_done_progress.create(
            token, callback=lambda *_: ls._progress_relay.begin(job_id, token, title)
        )


@server.cortex_method(protocol.CANCEL_TRAINING)
def cancel_training(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    return _jobs(ls).cancel(params["jobId"])


@server.cortex_method(protocol.RESUME_TRAINING)
def resume_training(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    job = _jobs(ls).resume(params["jobId"])
    _begin_progress(ls, job["jobId"], job["outputName"], params.get("workDoneToken"))
    return job


@server.cortex_method(protocol.LIST_JOBS)
def list_jobs(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    return {"jobs": _jobs(ls).list_jobs()}


@server.cortex_method(protocol.DELETE_MODEL)
def delete_model(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.manage import delete_model

    return delete_model(params["name"])


@server.cortex_method(protocol.FUSE_MODEL)
def fuse_model(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.manage import fuse_model

    return fuse_model(params["name"], params["outputName"])


def _runner(ls: CortexServer) -> Any:
    """The warm generation worker, started on first use."""
    if getattr(ls, "_model_runner", None) is None:
        from .generation.runner import ModelRunner

        ls._model_runner = ModelRunner()
        ls.on_exit.append(ls._model_runner.close)
    return ls._model_runner


@server.cortex_method(protocol.LIST_ADAPTERS)
def list_adapters(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.registry import list_adapters

    return list_adapters(params["baseModel"], ls.options.model_dirs)


@contextlib.contextmanager
def _work_done(
    ls: CortexServer, token: str | int | None, title: str
) -> Iterator[Callable[[str, int], None]]:
    """Report ``$/progress`` under the client's ``workDoneToken`` (a no-op without one)."""
    if token is None:
        yield lambda message, percentage: None
        return
    ls.work_done_progress.begin(
        token,
        types.WorkDoneProgressBegin(
            title=title, cancellable=True, message="Starting", percentage=0
        ),
    )

    def report(message: str, percentage: int) -> None:
        ls.work_done_progress.report(
            token, types.WorkDoneProgressReport(message=message, percentage=percentage)
        )

    try:
        yield report
    finally:
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="Done"))


@server.cortex_method(protocol.COMPARE_ADAPTERS)
def compare_adapters(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .generation.runner import compare_adapters
    from .models.registry import resolve_model

    dirs = ls.options.model_dirs
    base = resolve_model(params["baseModel"], dirs)
    adapters = [resolve_model(name, dirs) for name in params["adapters"]]
    with _work_done(ls, params.get("workDoneToken"), "Comparing adapters") as report:
        return compare_adapters(
            _runner(ls),
            base,
            adapters,
            params["prompts"],
            max_tokens=params.get("maxTokens", 64),
            cancel=ls.request.cancel,
            on_output=lambda done, total: report(
                f"{done}/{total} generations", round(100 * done / total)
            ),
        )


@server.cortex_method(protocol.GENERATE)
def generate(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.registry import resolve_model

    request_id = ls.request.msg_id
    adapter = params.get("adapter")
    return _runner(ls).generate(
        resolve_model(params["model"], ls.options.model_dirs),
        params["prompt"],
        max_tokens=params.get("maxTokens", 128),
        temperature=params.get("temperature", 0.0),
        adapter=resolve_model(adapter, ls.options.model_dirs) if adapter else None,
        on_chunk=lambda text: ls.notify(
            protocol.GENERATE_CHUNK, {"requestId": request_id, "text": text}
        ),
    )


# -- tuning, evaluation, continual learning ---------------------------------------------------
# (continual learning is startTraining's ``continueFrom``, wired above)


@server.cortex_method(protocol.EVALUATE)
def evaluate(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.registry import resolve_model
    from .training.evaluate import evaluate_model

    return evaluate_model(
        resolve_model(params["model"], ls.options.model_dirs),
        params["dataset"],
        split=params.get("split", "valid"),
        max_examples=params.get("maxExamples"),
        cancel=ls.request.cancel,
    )


@server.cortex_method(protocol.TUNE_HYPERPARAMETERS)
def tune_hyperparameters(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .training.tuning import tune_hyperparameters, tuning_work_done

    with _work_done(ls, params.get("workDoneToken"), "Tuning hyperparameters") as report:

        def on_progress(payload: dict[str, Any]) -> None:
            ls.notify(protocol.TUNING_PROGRESS, payload)
            if payload["event"] != "done":
                report(*tuning_work_done(payload))

        return tune_hyperparameters(
            params["model"],
            params["dataset"],
            params["budgetSeconds"],
            trials=params.get("trials", 8),
            seed=params.get("seed", 0),
            model_dirs=ls.options.model_dirs,
            on_progress=on_progress,
            cancel=ls.request.cancel,
        )
