"""The errors cortex-rpc reports to clients, with their JSON-RPC codes.

Domain modules raise these; ``lsp/server.py`` turns them into JSON-RPC error responses with
``data.code`` set to a stable string that clients can match on.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Application errors live in the range JSON-RPC reserves for implementations.
APPLICATION_ERROR = -32000


class CortexError(Exception):
    """An error a client can act on: a JSON-RPC code, a stable ``code`` string and a message."""

    rpc_code: int = APPLICATION_ERROR

    def __init__(self, code: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = {"code": code, **{k: v for k, v in data.items() if v is not None}}

    def __str__(self) -> str:
        return self.message


class InvalidParams(CortexError):
    """The request's params are wrong; ``field`` names the offending one (a JSON path)."""

    rpc_code = INVALID_PARAMS

    def __init__(
        self, message: str, field: str | None = None, code: str = "invalid-params", **data: Any
    ) -> None:
        super().__init__(code, message, field=field, **data)
