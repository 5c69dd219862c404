"""``cortex-rpc``: start the language server on stdio."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from . import __version__


def _protect_stdout() -> None:
    """Keep fd 1 for the protocol only: anything else that prints goes to stderr.

    Libraries (mlx_lm's progress tables, tokenizer warnings) write to stdout; one stray
    line would corrupt the JSON-RPC stream the editor is reading.
    """
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.__stdout__ = sys.stderr  # type: ignore[misc]
    global _protocol_out
    _protocol_out = os.fdopen(protocol_fd, "wb", buffering=0)


_protocol_out = None


def _stop_gracefully_on_signals() -> None:
    """SIGTERM and SIGHUP end the server the way stdin EOF does: jobs cancelled, resumable.

    Python's default would end the process at once and leave training workers (which run in
    their own session) training for nobody. A second signal ends it at once.
    """

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cortex-rpc",
        description="Language-server-style JSON-RPC backend for LoRA fine-tuning with MLX. "
        "Speaks LSP base protocol (Content-Length framing) on stdin/stdout; see docs/protocol.md.",
    )
    parser.add_argument("--version", action="version", version=f"cortex-rpc {__version__}")
    parser.add_argument("--stdio", action="store_true", help="serve on stdio (the default)")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("CORTEX_LOG_LEVEL", "WARNING"),
        help="stderr log level (DEBUG, INFO, WARNING, ERROR); default WARNING",
    )
    parser.add_argument("--log-file", help="also write the log to this file")
    args = parser.parse_args(argv)

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(
        level=args.log_level.upper(),
        handlers=handlers,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _protect_stdout()
    _stop_gracefully_on_signals()
    from .server import server

    server.start_io(sys.stdin.buffer, _protocol_out)
    code = 0 if server.protocol.shutdown_requested else 1
    logging.shutdown()
    sys.stderr.flush()
    # The stdin reader thread may still be blocked in read(); a normal interpreter exit
    # would then abort on the stdin lock. Everything is flushed and closed by now.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
