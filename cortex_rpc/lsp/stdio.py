"""The stdio loop: framed messages in on a reader thread, dispatched on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, BinaryIO

from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from .framing import FramingError, LockedWriter, frame, read_messages
from .pygls_adapter import CortexProtocol, install_stop_event


def serve_stdio(server: LanguageServer, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Serve ``server`` over the byte streams until ``exit``, ``shutdown()`` or end of input.

    Reading uses ``framing.read_messages`` (pygls' reader cannot resynchronise after a bad
    frame); writes go through one LockedWriter, so messages from threads never interleave.
    """
    protocol: CortexProtocol = server.protocol
    writer = LockedWriter(stdout)
    protocol.set_writer(writer)
    stop = install_stop_event(server)
    # exit ends the loop with SystemExit (pygls calls sys.exit); a signal may raise either.
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        asyncio.run(_serve(protocol, stdin, writer, stop))


async def _serve(
    protocol: CortexProtocol, stdin: BinaryIO, writer: LockedWriter, stop: threading.Event
) -> None:
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def on_message(data: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(_dispatch, protocol, data)

    def on_error(error: FramingError) -> None:
        writer.write(frame(error.to_response()))

    def read() -> None:
        try:
            read_messages(stdin, on_message, on_error, stop)
        finally:
            loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

    threading.Thread(target=read, name="cortex-stdin", daemon=True).start()
    await finished


def _dispatch(protocol: CortexProtocol, data: dict[str, Any]) -> None:
    try:
        message = protocol.structure_message(data)
    except JsonRpcException as error:
        if data.get("id") is not None and "method" in data:
            protocol.send_error(data["id"], error)
        return
    protocol.handle_message(message)
