"""An LSP client connected to a real ``cortex-rpc`` process over stdio (pytest-lsp)."""

from __future__ import annotations

import sys

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "cortex_rpc"])


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    lsp_client.initialize_result = await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True)
            ),
            initialization_options={"modelDirs": []},
        )
    )
    yield
    await lsp_client.shutdown_session()


async def request(client: LanguageClient, method: str, params: dict | None = None):
    """Send a custom request and return its result as plain JSON types."""
    result = await client.protocol.send_request_async(method, params)
    return to_plain(result)


def to_plain(value):
    """Turn pygls' namedtuple results back into dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: to_plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value
