"""pygls' protocol, fixed where JSON-RPC clients trip it up: the one module that uses its internals.

Every private pygls member cortex-rpc overrides or calls is used here, and only here, each
with the reason; ``tests/lsp/test_pygls_adapter.py`` fails by name when pygls changes one.
The rest of the code calls the public methods this module adds (``after_response``,
``send_error``, ``send_message``, ``to_wire``, ``from_wire``, ``shutdown_requested``).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.feature_manager import is_thread_function
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCRequestMessage, LanguageServerProtocol, lsp_method

from ..errors import APPLICATION_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND

logger = logging.getLogger(__name__)

# Errors we raise on purpose (bad params, missing models): a reply, not a server fault.
EXPECTED_CODES = frozenset({INVALID_PARAMS, APPLICATION_ERROR, METHOD_NOT_FOUND})
# pygls logs every failed request with a traceback on this logger.
PYGLS_RPC_LOGGER = "pygls.protocol.json_rpc"


class _ExpectedErrorFilter(logging.Filter):
    """Drop pygls' tracebacks for the errors in EXPECTED_CODES."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], JsonRpcException):
            return record.exc_info[1].code not in EXPECTED_CODES
        return True


logging.getLogger(PYGLS_RPC_LOGGER).addFilter(_ExpectedErrorFilter())


class CortexProtocol(LanguageServerProtocol):
    """pygls' protocol, fixed where JSON-RPC clients trip it up.

    Custom ``cortex/*`` params stay plain dicts (validated against their schema later),
    requests after ``shutdown`` get -32600 instead of silence, ``$/cancelRequest`` also
    reaches handlers that are already running, documents the server keeps itself skip
    pygls' workspace copy, and a callback can run right after a response is written.

    The server must provide ``cortex_methods`` (names for the ``experimental`` capability),
    ``experimental_capabilities()`` and ``keeps_own_document(uri, language_id)``.
    """

    def __init__(self, server: LanguageServer, converter: Any) -> None:
        super().__init__(server, converter)
        # $/cancelRequest sets the event of a running cortex handler (see cortex_method).
        self.cancel_events: dict[Any, threading.Event] = {}
        self._after_response: dict[Any, list[Callable[[], None]]] = {}
        self._after_response_lock = threading.Lock()

    # -- public additions ------------------------------------------------------------------------

    def after_response(self, msg_id: Any, callback: Callable[[], None]) -> None:
        """Run ``callback()`` right after the response to request ``msg_id`` is written.

        It runs on the thread that writes the response (a worker thread for a threaded
        handler), once, whether the response is a result or an error; an exception in it is
        logged. A handler uses it for work whose notifications must follow its reply.
        """
        with self._after_response_lock:
            self._after_response.setdefault(msg_id, []).append(callback)

    def send_error(self, msg_id: Any, error: JsonRpcException) -> None:
        """Answer request ``msg_id`` with ``error``."""
        self._send_response(msg_id, error=error.to_response_error())

    def send_message(self, message: dict[str, Any]) -> None:
        """Write a JSON-RPC message given as plain dicts, without converting it."""
        # pygls' notify() first structures params into lsprotocol types, which costs
        # milliseconds for a thousand diagnostics; _send_data writes a dict as it is.
        self._send_data(message)

    def to_wire(self, value: Any) -> Any:
        """Return an lsprotocol object as plain JSON types."""
        return self._converter.unstructure(value)

    def from_wire(self, data: Any, cls: type) -> Any:
        """Return plain JSON ``data`` structured as lsprotocol type ``cls``."""
        return self._converter.structure(data, cls)

    @property
    def shutdown_requested(self) -> bool:
        """True once the client has sent ``shutdown`` (so ``exit`` ends with code 0)."""
        return self._shutdown

    # -- overrides of public pygls methods -------------------------------------------------------

    def structure_message(self, data: dict[str, Any]) -> Any:
        method = data.get("method")
        if "id" in data and isinstance(method, str) and method.startswith("cortex/"):
            return JsonRPCRequestMessage(
                id=data["id"], method=method, jsonrpc=data["jsonrpc"], params=data.get("params")
            )
        return super().structure_message(data)

    def handle_message(self, message: Any) -> None:
        is_request = getattr(message, "method", None) is not None and hasattr(message, "id")
        # pygls drops requests after shutdown silently; the client would wait forever.
        if self._shutdown and is_request and message.method != types.EXIT:
            self.send_error(
                message.id,
                JsonRpcException(
                    code=INVALID_REQUEST, message="Server is shutting down; send 'exit'"
                ),
            )
            return
        super().handle_message(message)

    # -- overrides of private pygls members ------------------------------------------------------

    def _send_response(
        self, msg_id: Any, result: Any | None = None, error: types.ResponseError | None = None
    ) -> None:
        # Every response pygls writes goes through here: the after-response hook point.
        try:
            super()._send_response(msg_id, result, error)
        finally:
            with self._after_response_lock:
                callbacks = self._after_response.pop(msg_id, [])
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - the response is out; log and go on
                    logger.exception("after-response callback for %r failed", msg_id)

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        # pygls can only cancel a request that has not started; a running cortex handler
        # polls its cancel event instead.
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

    # -- builtin features (pygls' lsp_* methods) -------------------------------------------------

    # Dataset documents keep their own line index (datasets.documents); pygls' workspace copy
    # re-splits the whole text on every edit, which is too slow for a 100,000-line file.

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Any:
        document = params.text_document
        if not self._server.keeps_own_document(document.uri, document.language_id):
            yield from super().lsp_text_document__did_open(params)
        elif (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Any:
        if not self._server.keeps_own_document(params.text_document.uri):
            yield from super().lsp_text_document__did_change(params)
        elif (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Any:
        if not self._server.keeps_own_document(params.text_document.uri):
            yield from super().lsp_text_document__did_close(params)
        elif (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Any:
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = self._server.experimental_capabilities()
        return result


def install_stop_event(server: LanguageServer) -> threading.Event:
    """Return an event that pygls' ``server.shutdown()`` sets, for our own stdio reader."""
    # pygls keeps it private and sets it in shutdown(); its own start_io creates it.
    server._stop_event = threading.Event()
    return server._stop_event
