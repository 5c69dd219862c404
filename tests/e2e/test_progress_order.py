"""Message order over raw stdio: a job's reply comes first, and $/progress Begin/End pair.

A raw client records every message in the order the server wrote it, so "the startTraining
reply before the job's first notification" is checked on the wire, not through a client
library that might buffer or reorder.
"""

from __future__ import annotations

import sys

import pytest

from ..reliability.test_stdio_faults import RawServer

TERMINAL = ("completed", "failed", "cancelled", "interrupted")
CREATE = "window/workDoneProgress/create"
# A server whose training workers cannot be launched: the interpreter it would start them
# with does not exist (as when the virtualenv was deleted under a running server).
NO_WORKER_PYTHON = [
    sys.executable,
    "-c",
    "import sys; sys.executable = '/nonexistent/bin/python'; "
    "from cortex_rpc.cli import main; main()",
]


def initialize(server: RawServer, work_done_progress: bool) -> None:
    capabilities = {"window": {"workDoneProgress": True}} if work_done_progress else {}
    assert "result" in server.request("initialize", {"capabilities": capabilities})
    server.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})


def start(server: RawServer, model, dataset, name: str, token: str | None = None) -> int:
    """Send startTraining; return its request id (the reply is read with the rest)."""
    msg_id = next(server.ids)
    params = {
        "model": str(model),
        "dataset": str(dataset),
        "outputName": name,
        "config": {"iterations": 6, "batchSize": 2, "maxSeqLength": 128},
    }
    if token is not None:
        params["workDoneToken"] = token
    server.send(
        {"jsonrpc": "2.0", "id": msg_id, "method": "cortex/startTraining", "params": params}
    )
    return msg_id


def record(server: RawServer, msg_id: int, answer_create=True, until_end: bool = True) -> list:
    """Every message until the job's terminal notification and (``until_end``) its End.

    Requests to create a progress token are answered at once when ``answer_create``, else
    left for the test to answer.
    """
    messages: list[dict] = []
    job_id = token = None
    terminal = ended = False
    while not (terminal and (ended or not until_end)):
        message = server.read(timeout=120)
        messages.append(message)
        if message.get("id") == msg_id and "method" not in message:
            assert "result" in message, message
            job_id = message["result"]["jobId"]
        elif message.get("method") == CREATE:
            token = message["params"]["token"]
            if answer_create:
                server.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
        elif message.get("method") == "cortex/trainingProgress":
            terminal = terminal or message["params"]["state"] in TERMINAL
        elif message.get("method") == "$/progress":
            token = token or message["params"]["token"]
            ended = ended or message["params"]["value"]["kind"] == "end"
    assert job_id is not None
    return messages


def reply_index(messages: list[dict], msg_id: int) -> int:
    return next(i for i, m in enumerate(messages) if m.get("id") == msg_id and "method" not in m)


def job_notifications(messages: list[dict], job_id: str) -> list[int]:
    return [
        i
        for i, m in enumerate(messages)
        if m.get("method") == "cortex/trainingProgress" and m["params"]["jobId"] == job_id
    ]


def progress_kinds(messages: list[dict], token) -> list[tuple[int, str]]:
    return [
        (i, m["params"]["value"]["kind"])
        for i, m in enumerate(messages)
        if m.get("method") == "$/progress" and m["params"]["token"] == token
    ]


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def spawn(command: list[str] | None = None) -> RawServer:
        servers.append(RawServer(command=command))
        return servers[-1]

    yield spawn
    for server in servers:
        server.close()


@pytest.mark.parametrize("progress", ["client-token", "server-token"])
def test_the_reply_comes_before_every_notification_of_the_job(
    raw, tiny_model, sample_dataset_path, progress
):
    server = raw()
    initialize(server, work_done_progress=progress == "server-token")
    token = "train-order" if progress == "client-token" else None
    msg_id = start(server, tiny_model, sample_dataset_path, "ordered", token)
    messages = record(server, msg_id)

    reply = reply_index(messages, msg_id)
    job_id = messages[reply]["result"]["jobId"]
    notes = job_notifications(messages, job_id)
    assert notes and reply < notes[0], [m.get("method", m.get("id")) for m in messages]
    assert messages[notes[0]]["params"]["state"] == "queued"
    assert messages[notes[-1]]["params"]["state"] == "completed"
    if token is None:
        create = next(i for i, m in enumerate(messages) if m.get("method") == CREATE)
        assert reply < create
        token = messages[create]["params"]["token"]
    kinds = progress_kinds(messages, token)
    assert [k for _, k in kinds][0] == "begin" and [k for _, k in kinds][-1] == "end"
    assert [k for _, k in kinds].count("begin") == 1 and [k for _, k in kinds].count("end") == 1
    assert reply < kinds[0][0] and kinds[-1][0] > notes[-1]
    if progress == "client-token":  # Begin is sent before the job is queued
        assert kinds[0][0] < notes[0]


def test_a_job_that_cannot_launch_ends_its_client_token_progress(
    raw, tiny_model, sample_dataset_path
):
    server = raw(NO_WORKER_PYTHON)
    initialize(server, work_done_progress=False)
    msg_id = start(server, tiny_model, sample_dataset_path, "unlaunchable", "train-fail")
    messages = record(server, msg_id)

    reply = reply_index(messages, msg_id)
    job_id = messages[reply]["result"]["jobId"]
    states = [messages[i]["params"]["state"] for i in job_notifications(messages, job_id)]
    assert states == ["queued", "failed"], states
    failed = messages[job_notifications(messages, job_id)[-1]]["params"]
    assert "/nonexistent/bin/python" in failed["message"], failed
    kinds = progress_kinds(messages, "train-fail")
    assert [k for _, k in kinds] == ["begin", "end"]
    assert reply < kinds[0][0] < job_notifications(messages, job_id)[0]
    assert messages[kinds[-1][0]]["params"]["value"]["message"] == failed["message"]
    # The server carries on, and lists the job failed.
    jobs = server.request("cortex/listJobs", {})["result"]["jobs"]
    assert [(j["jobId"], j["state"]) for j in jobs] == [(job_id, "failed")]


def test_a_launch_failure_before_the_client_confirms_a_token_still_ends_it(
    raw, tiny_model, sample_dataset_path
):
    server = raw(NO_WORKER_PYTHON)
    initialize(server, work_done_progress=True)
    msg_id = start(server, tiny_model, sample_dataset_path, "unlaunchable")
    # Hold the answer to the token request until the job has already failed.
    messages = record(server, msg_id, answer_create=False, until_end=False)
    create = next(m for m in messages if m.get("method") == CREATE)
    token = create["params"]["token"]
    assert progress_kinds(messages, token) == []
    server.send({"jsonrpc": "2.0", "id": create["id"], "result": None})
    later = [server.read(timeout=30), server.read(timeout=30)]

    assert [m["params"]["value"]["kind"] for m in later] == ["begin", "end"], later
    assert all(m["params"]["token"] == token for m in later)
    failed = next(
        m["params"]
        for m in messages
        if m.get("method") == "cortex/trainingProgress" and m["params"]["state"] == "failed"
    )
    assert later[1]["params"]["value"]["message"] == failed["message"]
    assert reply_index(messages, msg_id) < messages.index(create)
