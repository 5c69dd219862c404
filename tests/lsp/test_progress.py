"""JobProgressRelay: every $/progress Begin gets its End, whatever order events come in."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

from cortex_rpc.lsp.progress import JobProgressRelay
from cortex_rpc.training.service import work_done_update


class FakeServer:
    """Records what the relay sends; window/workDoneProgress/create answers when told."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.created: list[tuple[object, Future]] = []
        self.work_done_progress = SimpleNamespace(
            begin=lambda token, value: self.sent.append(("begin", token, value.title)),
            report=lambda token, value: self.sent.append(("report", token, value.message)),
            end=lambda token, value: self.sent.append(("end", token, value.message)),
        )
        self.protocol = SimpleNamespace(send_request=self._send_request)

    def notify(self, method: str, payload: dict) -> None:
        self.sent.append(("notify", payload["state"], payload["event"]))

    def _send_request(self, method: str, params) -> Future:
        future: Future = Future()
        self.created.append((params.token, future))
        return future


def event(state: str, kind: str, **fields) -> dict:
    return {"jobId": "j1", "state": state, "event": kind, **fields}


def relay_for(ls: FakeServer) -> JobProgressRelay:
    return JobProgressRelay(ls, "cortex/trainingProgress", work_done_update)


def progress_only(sent: list[tuple]) -> list[tuple]:
    return [s for s in sent if s[0] != "notify"]


def test_client_token_begins_at_once_and_ends_on_failure():
    ls = FakeServer()
    relay = relay_for(ls)
    relay.begin("j1", "t", "Fine-tuning x")
    relay(event("queued", "queued"))
    relay(event("failed", "error", message="No such file: /nope/python"))
    assert progress_only(ls.sent) == [
        ("begin", "t", "Fine-tuning x"),
        ("end", "t", "No such file: /nope/python"),
    ]
    relay(event("failed", "error", message="again"))  # nothing after the end
    assert len(progress_only(ls.sent)) == 2


def test_terminal_event_before_the_client_confirms_still_ends_after_begin():
    ls = FakeServer()
    relay = relay_for(ls)
    relay.create("j1", "Fine-tuning x")
    relay(event("queued", "queued"))
    relay(event("failed", "error", message="could not launch"))
    assert progress_only(ls.sent) == []  # no token yet
    [(token, created)] = ls.created
    created.set_result(None)
    assert progress_only(ls.sent) == [
        ("begin", token, "Fine-tuning x"),
        ("end", token, "could not launch"),
    ]
    assert [s[1] for s in ls.sent if s[0] == "notify"] == ["queued", "failed"]


def test_progress_before_confirmation_is_reported_once_begun():
    ls = FakeServer()
    relay = relay_for(ls)
    relay.create("j1", "Fine-tuning x")
    relay(event("running", "progress", iteration=1, totalIterations=4))
    relay(event("running", "progress", iteration=2, totalIterations=4))
    [(token, created)] = ls.created
    created.set_result(None)
    relay(event("running", "checkpoint"))  # repeats the last line: not reported
    relay(event("completed", "done", message="Completed"))
    kinds = [(s[0], s[1]) for s in progress_only(ls.sent)]
    assert kinds == [("begin", token), ("report", token), ("end", token)]
    assert "step 2/4" in progress_only(ls.sent)[1][2]


def test_a_refused_token_means_no_progress_at_all():
    ls = FakeServer()
    relay = relay_for(ls)
    relay.create("j1", "Fine-tuning x")
    ls.created[0][1].set_exception(RuntimeError("client said no"))
    relay(event("completed", "done", message="Completed"))
    assert progress_only(ls.sent) == []


def test_a_late_confirmation_of_an_earlier_run_is_ignored():
    ls = FakeServer()
    relay = relay_for(ls)
    relay.create("j1", "first")
    relay.begin("j1", "client-token", "second")  # a resume with the client's token
    ls.created[0][1].set_result(None)
    relay(event("completed", "done", message="Completed"))
    assert progress_only(ls.sent) == [
        ("begin", "client-token", "second"),
        ("end", "client-token", "Completed"),
    ]


def test_fail_reports_a_failed_event_and_ends():
    ls = FakeServer()
    relay = relay_for(ls)
    relay.begin("j1", "t", "Fine-tuning x")
    relay.fail("j1", "x", "The job could not start: gone")
    assert ls.sent[-2:] == [
        ("notify", "failed", "error"),
        ("end", "t", "The job could not start: gone"),
    ]
