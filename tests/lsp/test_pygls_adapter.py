"""The pygls internals ``cortex_rpc/lsp/pygls_adapter.py`` relies on are still there.

pygls does not promise anything about its private members. When an upgrade renames one,
changes a signature or stops routing through it, these tests name the member, so the fix
starts in the adapter instead of in a hung client.
"""

from __future__ import annotations

import inspect
import json
import threading
from importlib.metadata import version

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCProtocol, LanguageServerProtocol, json_rpc

from cortex_rpc.lsp import pygls_adapter
from cortex_rpc.lsp.pygls_adapter import CortexProtocol, install_stop_event
from cortex_rpc.lsp.server import CortexLanguageServer

PYGLS = f"pygls {version('pygls')}"
FIX = "update cortex_rpc/lsp/pygls_adapter.py"

# (class, member, the leading parameters we pass or receive, keyword-only ones)
PRIVATE_METHODS = [
    (JsonRPCProtocol, "_send_response", ["self", "msg_id", "result", "error"], []),
    (JsonRPCProtocol, "_send_data", ["self", "data"], []),
    (
        JsonRPCProtocol,
        "_execute_handler",
        ["self", "msg_id", "handler", "callback", "args", "kwargs"],
        [],
    ),
    (JsonRPCProtocol, "_handle_cancel_notification", ["self", "msg_id"], []),
    (JsonRPCProtocol, "_run_generator", ["self", "future"], ["gen", "result_future"]),
    (JsonRPCProtocol, "_send_handler_result", ["self", "future"], ["msg_id"]),
]
# Instance attributes of a protocol (or, for _stop_event, of its server).
PRIVATE_ATTRIBUTES = ["_request_futures", "_converter", "_shutdown", "_server"]
# Builtin features we override: they must still be registered under these methods, and be
# generators (we ``yield from`` pygls' own).
BUILTIN_FEATURES = {
    "lsp_text_document__did_open": types.TEXT_DOCUMENT_DID_OPEN,
    "lsp_text_document__did_change": types.TEXT_DOCUMENT_DID_CHANGE,
    "lsp_text_document__did_close": types.TEXT_DOCUMENT_DID_CLOSE,
    "lsp_initialize": types.INITIALIZE,
}


def _parameters(function) -> tuple[list[str], list[str]]:
    params = inspect.signature(function).parameters.values()
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keyword_only = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
    return positional, keyword_only


@pytest.mark.parametrize(
    ("owner", "name", "positional", "keyword_only"),
    PRIVATE_METHODS,
    ids=[f"{owner.__name__}.{name}" for owner, name, _, _ in PRIVATE_METHODS],
)
def test_private_methods_keep_their_signatures(owner, name, positional, keyword_only):
    member = getattr(owner, name, None)
    assert callable(member), f"{PYGLS} has no {owner.__name__}.{name}; {FIX}"
    found_positional, found_keyword_only = _parameters(member)
    assert found_positional[: len(positional)] == positional, (
        f"{PYGLS} changed {owner.__name__}.{name}{inspect.signature(member)}: expected "
        f"parameters {positional}; {FIX}"
    )
    missing = set(keyword_only) - set(found_keyword_only)
    assert not missing, (
        f"{PYGLS} changed {owner.__name__}.{name}{inspect.signature(member)}: keyword "
        f"parameters {sorted(missing)} are gone; {FIX}"
    )


def test_our_overrides_match_pygls_signatures():
    for name in ("_send_response", "_execute_handler", "_handle_cancel_notification"):
        ours = _parameters(getattr(CortexProtocol, name))[0]
        theirs = _parameters(getattr(JsonRPCProtocol, name))[0]
        assert ours == theirs, f"{PYGLS}: JsonRPCProtocol.{name} takes {theirs}, ours {ours}; {FIX}"


@pytest.mark.parametrize("name", PRIVATE_ATTRIBUTES)
def test_private_attributes_exist(name):
    protocol = LanguageServer("probe", "0").protocol
    assert hasattr(protocol, name), f"{PYGLS}: a protocol has no attribute {name!r}; {FIX}"


def test_private_attribute_types():
    server = LanguageServer("probe", "0")
    protocol = server.protocol
    assert isinstance(protocol._request_futures, dict), f"{PYGLS}: _request_futures; {FIX}"
    assert isinstance(protocol._shutdown, bool), f"{PYGLS}: _shutdown; {FIX}"
    assert protocol._server is server, f"{PYGLS}: protocol._server is not its server; {FIX}"
    assert hasattr(protocol._converter, "structure"), f"{PYGLS}: _converter; {FIX}"


def test_shutdown_sets_the_stop_event_we_install():
    server = LanguageServer("probe", "0")
    assert hasattr(server, "_stop_event"), f"{PYGLS}: a server has no _stop_event; {FIX}"
    stop = install_stop_event(server)
    server.shutdown()
    assert stop.is_set(), f"{PYGLS}: LanguageServer.shutdown() no longer sets _stop_event; {FIX}"


@pytest.mark.parametrize("name", sorted(BUILTIN_FEATURES))
def test_builtin_features_we_override(name):
    member = getattr(LanguageServerProtocol, name, None)
    assert member is not None, f"{PYGLS} has no LanguageServerProtocol.{name}; {FIX}"
    assert getattr(member, "method_name", None) == BUILTIN_FEATURES[name], (
        f"{PYGLS}: LanguageServerProtocol.{name} no longer serves {BUILTIN_FEATURES[name]}; {FIX}"
    )
    assert inspect.isgeneratorfunction(member), (
        f"{PYGLS}: LanguageServerProtocol.{name} is no longer a generator; {FIX}"
    )
    ours = CortexLanguageServer("probe", "0").protocol
    assert ours.fm.builtin_features[BUILTIN_FEATURES[name]].__func__ is getattr(
        CortexProtocol, name
    ), f"{PYGLS} does not register CortexProtocol.{name} as a builtin feature; {FIX}"


def test_the_logger_we_filter_is_pygls_rpc_logger():
    assert json_rpc.logger.name == pygls_adapter.PYGLS_RPC_LOGGER, (
        f"{PYGLS} logs requests on {json_rpc.logger.name!r}, not "
        f"{pygls_adapter.PYGLS_RPC_LOGGER!r}; {FIX}"
    )


class _RecordingWriter:
    def __init__(self, log: list) -> None:
        self.log = log

    def write(self, data: bytes) -> None:
        body = data.split(b"\r\n\r\n", 1)[1]
        self.log.append(("write", json.loads(body)))

    def close(self) -> None:
        pass


def test_after_response_runs_once_the_threaded_reply_is_written():
    """pygls must still answer a threaded request through _send_response (our hook point)."""
    server = CortexLanguageServer("probe", "0")
    log: list = []
    done = threading.Event()
    server.protocol.set_writer(_RecordingWriter(log))

    @server.feature("probe/work")
    @server.thread()
    def work(ls, params):
        msg_id = ls.protocol.msg_id
        assert msg_id == 7, f"{PYGLS}: a threaded handler no longer sees its request id; {FIX}"
        ls.protocol.after_response(msg_id, lambda: (log.append(("hook", msg_id)), done.set()))
        return {"ok": True}

    message = server.protocol.structure_message(
        {"jsonrpc": "2.0", "id": 7, "method": "probe/work", "params": {}}
    )
    server.protocol.handle_message(message)
    assert done.wait(10), f"{PYGLS}: the reply did not go through _send_response; {FIX}"
    assert log == [("write", {"jsonrpc": "2.0", "id": 7, "result": {"ok": True}}), ("hook", 7)]
    server.shutdown()


def test_after_response_runs_after_an_error_reply_too():
    server = CortexLanguageServer("probe", "0")
    log: list = []
    server.protocol.set_writer(_RecordingWriter(log))
    server.protocol.after_response(3, lambda: log.append(("hook", 3)))
    server.protocol.send_error(3, JsonRpcException(code=-32000, message="no"))
    server.protocol.send_error(3, JsonRpcException(code=-32000, message="again"))
    assert [kind for kind, _ in log] == ["write", "hook", "write"]  # once only
    assert log[0][1]["error"]["message"] == "no"
