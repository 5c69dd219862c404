"""The language server base: ``cortex_method`` handlers, notifications, logging, stdio serving."""

from __future__ import annotations

import errno
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from ..errors import APPLICATION_ERROR, CortexError
from ..schemas import validate_params
from .pygls_adapter import EXPECTED_CODES, CortexProtocol
from .stdio import serve_stdio

logger = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def file_error_message(error: OSError) -> str:
    """Return ``reason: path`` with an absurdly long path cut short."""
    name = str(error.filename) if error.filename is not None else ""
    if len(name) > 200:
        name = name[:200] + f"… ({len(name)} characters)"
    reason = error.strerror or type(error).__name__
    return f"{reason}: {name}" if name else reason


class CortexLanguageServer(LanguageServer):
    """A pygls language server that also serves ``cortex/*`` methods with plain dict params.

    Subclasses add the state they keep between requests and say which documents they keep
    themselves (``keeps_own_document``).
    """

    protocol: CortexProtocol

    def __init__(self, name: str, version: str) -> None:
        super().__init__(name, version, protocol_cls=CortexProtocol)
        self.cortex_methods: set[str] = set()
        # Run on the way out (end of input, exit, a signal), before the thread pool stops.
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
            def run(ls: CortexLanguageServer, params: Any) -> Any:
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

    def after_response(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once the reply to the request being served has been written."""
        self.protocol.after_response(self.request.msg_id, callback)

    def experimental_capabilities(self) -> dict[str, Any] | None:
        """Return ``capabilities.experimental`` for the initialize result."""
        return None

    def keeps_own_document(self, uri: str, language_id: str | None = None) -> bool:
        """Return True for a document the server tracks itself instead of pygls' workspace.

        ``language_id`` is given on didOpen only; later events ask about known documents.
        """
        return False

    def report_server_error(self, error: Exception, source: Any) -> None:
        # pygls' default sends window/showMessage, which recurses when the client is gone.
        expected = isinstance(error, JsonRpcException) and error.code in EXPECTED_CODES
        logger.log(logging.DEBUG if expected else logging.ERROR, "%s", error)

    def notify(self, method: str, payload: dict[str, Any]) -> None:
        """Send a custom notification to the client."""
        self.protocol.notify(method, payload)

    def send_notification(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification whose params are plain JSON types, as they are (fast)."""
        self.protocol.send_message({"jsonrpc": "2.0", "method": method, "params": params})

    def log(self, message: str, level: types.MessageType = types.MessageType.Info) -> None:
        """Show ``message`` in the client's log (window/logMessage) and on stderr."""
        logger.info(message)
        try:
            self.window_log_message(types.LogMessageParams(type=level, message=message))
        except Exception:  # noqa: BLE001 - the client may already be gone
            logger.debug("could not send logMessage", exc_info=True)

    @property
    def client_creates_progress(self) -> bool:
        """True when the client accepts ``window/workDoneProgress/create``."""
        window = getattr(self.client_capabilities, "window", None)
        return bool(window is not None and getattr(window, "work_done_progress", False))

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve LSP over the given byte streams until ``exit`` or end of input."""
        try:
            serve_stdio(self, stdin or sys.stdin.buffer, stdout or sys.stdout.buffer)
        finally:
            for hook in self.on_exit:
                try:
                    hook()
                except Exception:  # noqa: BLE001 - shutting down regardless
                    logger.exception("exit hook failed")
            self.shutdown()
