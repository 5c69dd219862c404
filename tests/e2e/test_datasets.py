"""Dataset methods and live diagnostics over real stdio (pytest-lsp)."""

from __future__ import annotations

import asyncio
import json

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from .conftest import request

BROKEN = (
    '{"prompt": "What is Python?", "response": "A language."}\n'
    '{"prompt": "What is a list?", "answer": "An ordered collection."}\n'
    '{"prompt": "What is Python?", "response": "A language."}\n'
)


async def test_dataset_methods(client, tmp_path, sample_dataset_path):
    result = await request(client, "cortex/validateDataset", {"path": str(sample_dataset_path)})
    assert result["ok"] and result["examples"] == 24 and result["shape"] == "prompt-response"
    assert result["diagnostics"] == [] and result["truncated"] is False

    result = await request(client, "cortex/validateDataset", {"text": BROKEN, "format": "jsonl"})
    assert not result["ok"]
    codes = [(d["code"], d["range"]["start"]["line"]) for d in result["diagnostics"]]
    assert ("missing-field", 1) in codes and ("duplicate", 2) in codes

    analysis = await request(client, "cortex/analyzeDataset", {"path": str(sample_dataset_path)})
    assert analysis["examples"] == 24 and analysis["sizeClass"] == "tiny"
    assert analysis["taskType"] == "chat" and 0 <= analysis["quality"]["score"] <= 100

    target = tmp_path / "mine.jsonl"
    created = await request(
        client,
        "cortex/createDataset",
        {"path": str(target), "examples": [{"prompt": "Hi", "response": "Hello"}]},
    )
    assert created["examples"] == 1 and created["warnings"]
    assert json.loads(target.read_text()) == {"prompt": "Hi", "response": "Hello"}

    sample = await request(client, "cortex/sampleDataset", {"path": str(tmp_path / "s.jsonl")})
    assert sample["examples"] == 24

    prepared = await request(
        client,
        "cortex/prepareDataset",
        {"path": str(sample_dataset_path), "outDir": str(tmp_path / "prep")},
    )
    assert prepared["trainExamples"] + prepared["validExamples"] == 24


async def test_dataset_errors(client, tmp_path):
    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/validateDataset", {"path": 3})
    assert error.value.code == -32602 and "path" in error.value.message
    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/validateDataset", {})
    assert error.value.code == -32602 and error.value.data["field"] == "path"
    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/analyzeDataset", {"path": str(tmp_path / "none.jsonl")})
    assert error.value.data["code"] == "dataset-not-found"
    (tmp_path / "x.jsonl").write_text("{}\n")
    with pytest.raises(JsonRpcException) as error:
        await request(
            client,
            "cortex/createDataset",
            {"path": str(tmp_path / "x.jsonl"), "examples": [{"prompt": "a", "response": "b"}]},
        )
    assert error.value.data["code"] == "file-exists"
    with pytest.raises(JsonRpcException) as error:
        await request(
            client,
            "cortex/createDataset",
            {"path": str(tmp_path / "y.jsonl"), "examples": [{"prompt": " ", "response": "b"}]},
        )
    assert error.value.code == -32602 and error.value.data["field"] == "examples[0].prompt"


async def test_live_diagnostics(client, tmp_path):
    capabilities = client.initialize_result.capabilities
    sync = capabilities.text_document_sync
    assert getattr(sync, "change", sync) == types.TextDocumentSyncKind.Incremental
    assert capabilities.hover_provider and capabilities.code_action_provider

    uri = (tmp_path / "data.jsonl").as_uri()
    # Registered before the document opens: the summary follows the diagnostics at once.
    summary_sent = asyncio.wrap_future(
        client.protocol.wait_for_notification("cortex/datasetSummary")
    )
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="jsonl", version=1, text=BROKEN
            )
        )
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    codes = {(d.code, d.range.start.line) for d in params.diagnostics}
    assert ("missing-field", 1) in codes and ("duplicate", 2) in codes
    summary = await summary_sent
    assert summary.text == "3 examples · chat · 3 problems"

    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=0, character=3),
        )
    )
    assert "prompt-response" in hover.contents.value

    missing = next(d for d in params.diagnostics if d.code == "missing-field")
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=missing.range,
            context=types.CodeActionContext(diagnostics=[missing]),
        )
    )
    rename = next(a for a in actions if a.title == 'Rename "answer" to "response"')
    edit = rename.edit.changes[uri][0]

    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                types.TextDocumentContentChangePartial(range=edit.range, text=edit.new_text)
            ],
        )
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert params.version == 2
    assert {d.code for d in params.diagnostics} == {"duplicate", "too-few-examples"}

    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert not params.diagnostics


async def test_dataset_report(client, tmp_path, sample_dataset_path):
    assert (
        "cortex/datasetReport"
        in client.initialize_result.capabilities.experimental["cortex"]["methods"]
    )
    data = tmp_path / "report.jsonl"
    lines = sample_dataset_path.read_text().splitlines()
    data.write_text("\n".join(lines + [lines[2].replace("What", "what"), lines[5]]) + "\n")
    report = await request(client, "cortex/datasetReport", {"path": str(data)})
    assert report["analysis"]["examples"] == 26 and report["analysis"]["duplicates"] == 2
    assert [(c["size"], c["lines"]) for c in report["nearDuplicateClusters"]] == [
        (2, [3, 25]),
        (2, [6, 26]),
    ]
    assert report["score"] == 88  # 100 - 10 (26 examples) - round(30 * 2 / 26)
    assert report["fixes"][0]["code"] == "few-examples"
    assert report["fixes"][1]["lines"] == [25, 26]
    assert report["markdown"].startswith("# Dataset report: report.jsonl")
    assert "html" not in report

    page = await request(client, "cortex/datasetReport", {"path": str(data), "format": "html"})
    assert page["html"].startswith("<!DOCTYPE html>") and "markdown" not in page
    assert page["score"] == report["score"]

    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/datasetReport", {"path": str(tmp_path / "none.jsonl")})
    assert error.value.data["code"] == "dataset-not-found"
    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/datasetReport", {"path": str(data), "format": "pdf"})
    assert error.value.code == -32602


def _action_params(uri, start, end, diagnostics=(), only=None):
    return types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(*start), end=types.Position(*end)),
        context=types.CodeActionContext(diagnostics=list(diagnostics), only=only),
    )


async def _open(client, uri, text, language_id="jsonl"):
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id=language_id, version=1, text=text
            )
        )
    )
    return await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)


async def test_code_actions_ignore_what_the_client_sends_back(client, tmp_path):
    comma = '{"prompt": "Hi", "response": "Hello"},'
    good = [json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) for i in range(5)]
    text = "\n".join([good[0], comma, "", '{"prompt": "x", "answer": "y"}', *good[1:]]) + "\n"
    uri = (tmp_path / "fixes.jsonl").as_uri()
    published = (await _open(client, uri, text)).diagnostics
    assert {d.code for d in published} >= {"trailing-comma", "blank-line", "missing-field"}

    # eglot 1.9 at the end of the comma's line: the range before point, no diagnostics.
    actions = await client.text_document_code_action_async(
        _action_params(uri, (1, 0), (1, len(comma)))
    )
    (fix,) = actions
    assert fix.title == "Remove the trailing comma" and fix.diagnostics[0].code == "trailing-comma"
    # eglot on the blank line: every diagnostic of the buffer; only the blank line's fix.
    actions = await client.text_document_code_action_async(
        _action_params(uri, (2, 0), (2, 0), published)
    )
    assert [a.title for a in actions] == ["Remove this blank line"]
    # ALE strips data: the rename still comes from the server's own diagnostic.
    missing = next(d for d in published if d.code == "missing-field")
    stripped = types.Diagnostic(range=missing.range, message=missing.message, code=missing.code)
    actions = await client.text_document_code_action_async(
        _action_params(uri, (3, 0), (4, 0), [stripped])
    )
    assert [a.title for a in actions] == ['Rename "answer" to "response"']
    refactors = await client.text_document_code_action_async(
        _action_params(uri, (3, 0), (4, 0), only=[types.CodeActionKind.Refactor])
    )
    assert refactors is None
    kinds = client.initialize_result.capabilities.code_action_provider.code_action_kinds
    assert list(kinds) == ["quickfix", "refactor.rewrite"]

    (change,) = fix.edit.changes[uri]
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                types.TextDocumentContentChangePartial(range=change.range, text=change.new_text)
            ],
        )
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert params.version == 2 and "trailing-comma" not in {d.code for d in params.diagnostics}


async def test_did_save_publishes_and_settings_apply_without_restart(
    client, tmp_path, tiny_model_template
):
    assert client.initialize_result.capabilities.text_document_sync.save
    uri = (tmp_path / "data.jsonl").as_uri()
    await _open(client, uri, BROKEN)
    summary_sent = asyncio.wrap_future(
        client.protocol.wait_for_notification("cortex/datasetSummary")
    )
    client.text_document_did_save(
        types.DidSaveTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert params.uri == uri and (await summary_sent).text == "3 examples · chat · 3 problems"

    # datasetFiles: package.json is checked by default, then no longer, then again.
    package = (tmp_path / "package.json").as_uri()
    assert (await _open(client, package, '{"name": "x"}', "json")).diagnostics
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"cortex": {"datasetFiles": ["*.jsonl"]}})
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert (params.uri, list(params.diagnostics)) == (package, [])
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=package),
            position=types.Position(line=0, character=2),
        )
    )
    assert hover is None
    # A .json file opened while it is not a dataset is checked once the patterns name it.
    train = (tmp_path / "train.json").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=train, language_id="json", version=1, text='[{"prompt": "a"}]'
            )
        )
    )
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"cortex": {"datasetFiles": ["*.jsonl", "**/train*.json"]}}
        )
    )
    params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert params.uri == train and "missing-field" in {d.code for d in params.diagnostics}

    # model by name, found once modelDirs names its folder: the model checks start.
    name = tiny_model_template.name
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"cortex": {"model": name}})
    )
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert any(f"No model named or at {name!r}" in m.message for m in client.log_messages)
    summary_sent = asyncio.wrap_future(
        client.protocol.wait_for_notification("cortex/datasetSummary")
    )
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"cortex": {"modelDirs": [str(tiny_model_template.parent)]}}
        )
    )
    for _ in range(20):  # the other documents' summaries, and this one's while it renders
        summary = await asyncio.wait_for(summary_sent, 60)
        if summary.uri == uri and getattr(summary, "trainedTokens", None):
            break
        summary_sent = asyncio.wrap_future(
            client.protocol.wait_for_notification("cortex/datasetSummary")
        )
    assert summary.uri == uri and summary.trainedTokens > 0
