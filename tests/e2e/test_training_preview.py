"""What gets trained, over real stdio: live model diagnostics, hover and cortex/trainingPreview."""

from __future__ import annotations

import json

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from .conftest import SERVER, request

SHORT = json.dumps(
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
)
LONG = json.dumps(
    {
        "messages": [
            {"role": "user", "content": "Tell me more"},
            {"role": "assistant", "content": "a long answer " * 20},
        ]
    }
)


@pytest_lsp.fixture(config=SERVER)
async def model_client(lsp_client: LanguageClient, tiny_model_template):
    lsp_client.initialize_result = await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={"model": str(tiny_model_template), "maxSeqLength": 16},
        )
    )
    yield
    await lsp_client.shutdown_session()


@pytest.mark.filterwarnings("ignore:Unknown progress token")  # pytest-lsp: token is ours
async def test_a_model_in_the_options_checks_what_gets_trained(
    model_client, tiny_model_template, tmp_path
):
    client = model_client
    uri = (tmp_path / "data.jsonl").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="jsonl", version=1, text=SHORT + "\n" + LONG
            )
        )
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    cut = [d for d in params.diagnostics if d.code == "record-truncated"]
    assert [d.range.start.line for d in cut] == [1] and cut[0].severity == 2

    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=0, character=2),
        )
    )
    assert "⟦Hello!<|end|>" in hover.contents.value

    model = str(tiny_model_template)
    preview = await request(
        client, "cortex/trainingPreview", {"model": model, "uri": uri, "workDoneToken": "tp"}
    )
    steps = client.progress_reports["tp"]
    assert steps[0].kind == "begin" and steps[-1].kind == "end"
    assert [r["line"] for r in preview["records"]] == [0, 1]
    assert preview["records"][1]["truncated"] is False  # the default maxSeqLength, 2048
    trained = [s["text"] for s in preview["records"][0]["segments"] if s["trained"]]
    assert trained == ["Hello!<|end|>\n"]
    assert preview["summary"]["records"] == 2 and preview["options"]["maxSeqLength"] == 2048

    one = await request(
        client,
        "cortex/trainingPreview",
        {"model": model, "text": SHORT + "\n" + LONG, "line": 1, "config": {"maxSeqLength": 16}},
    )
    assert [r["line"] for r in one["records"]] == [1] and one["records"][0]["truncated"]
    assert one["summary"]["cut"] == 1

    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/trainingPreview", {"model": model})
    assert error.value.code == -32602 and error.value.data["field"] == "dataset"
    with pytest.raises(JsonRpcException) as error:
        await request(
            client, "cortex/trainingPreview", {"model": str(tmp_path / "none"), "text": SHORT}
        )
    assert error.value.data["code"] == "model-not-found"

    result = await request(
        client,
        "cortex/validateDataset",
        {"text": LONG, "model": model, "config": {"maxSeqLength": 16}},
    )
    assert "record-truncated" in [d["code"] for d in result["diagnostics"]]

    # A longer maxSeqLength from the settings: the record is no longer cut.
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"cortex": {"maxSeqLength": 4096}})
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert "record-truncated" not in {d.code for d in params.diagnostics}
