"""``$/progress`` plumbing: a work-done context for one request, and the relay for jobs.

Every ``begin`` sent here is followed by exactly one ``end`` for its token: the context
manager ends in ``finally``, and the relay ends a job's progress on its terminal event, even
one that came before the client confirmed a token the server asked it to create.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from lsprotocol import types

from .server import CortexLanguageServer

logger = logging.getLogger(__name__)


class WorkDoneStep(Protocol):
    """What a job event means for ``$/progress`` (``training.service.WorkDoneUpdate``)."""

    kind: str  # "report" or "end"
    message: str
    percentage: int | None


@contextlib.contextmanager
def work_done(
    ls: CortexLanguageServer, token: str | int | None, title: str
) -> Iterator[Callable[[str, int], None]]:
    """Report ``$/progress`` under the client's ``workDoneToken`` (a no-op without one)."""
    if token is None:
        yield lambda message, percentage: None
        return
    ls.work_done_progress.begin(
        token,
        types.WorkDoneProgressBegin(
            title=title, cancellable=True, message="Starting", percentage=0
        ),
    )

    def report(message: str, percentage: int) -> None:
        ls.work_done_progress.report(
            token, types.WorkDoneProgressReport(message=message, percentage=percentage)
        )

    try:
        yield report
    finally:
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="Done"))


@dataclass
class _JobProgress:
    """One job's ``$/progress``: its token and, until it has begun, the latest step."""

    token: Any
    title: str
    begun: bool = False
    pending: WorkDoneStep | None = None


class JobProgressRelay:
    """Forwards job events as a notification and, per job, as ``$/progress``.

    ``relay(payload)`` is the job manager's ``on_event``: it sends ``notification`` with the
    payload, then the ``$/progress`` report or end that ``to_step(payload)`` says (reports
    only for the events in ``report_events``; the others repeat the last progress line).
    Called from several threads; one lock keeps a job's ``$/progress`` in order.
    """

    def __init__(
        self,
        ls: CortexLanguageServer,
        notification: str,
        to_step: Callable[[dict[str, Any]], WorkDoneStep],
        report_events: tuple[str, ...] = ("progress", "resumed"),
    ) -> None:
        self.ls = ls
        self.notification = notification
        self.to_step = to_step
        self.report_events = report_events
        self._jobs: dict[str, _JobProgress] = {}
        self._lock = threading.Lock()

    def begin(self, job_id: str, token: Any, title: str) -> None:
        """Begin the job's progress under the client's ``token``."""
        with self._lock:
            self._jobs[job_id] = job = _JobProgress(token, title)
            self._begin(job)

    def create(self, job_id: str, title: str) -> None:
        """Ask the client to create a token for the job, and begin once it has.

        Steps that arrive before the client answers are kept (the latest one), so the
        progress still ends if the job ended meanwhile. If the client refuses, the job has
        no ``$/progress`` at all.
        """
        token = f"cortex-training-{job_id}-{time.monotonic_ns()}"
        with self._lock:
            self._jobs[job_id] = _JobProgress(token, title)
        created = self.ls.protocol.send_request(
            types.WINDOW_WORK_DONE_PROGRESS_CREATE, types.WorkDoneProgressCreateParams(token=token)
        )
        created.add_done_callback(lambda future: self._created(job_id, token, future))

    def fail(self, job_id: str, output_name: str | None, message: str) -> None:
        """Report a job the manager could not take: a ``failed`` event and its progress end."""
        self(
            {
                "jobId": job_id,
                "state": "failed",
                "event": "error",
                "outputName": output_name,
                "message": message,
            }
        )

    def __call__(self, payload: dict[str, Any]) -> None:
        self.ls.notify(self.notification, payload)
        with self._lock:
            job = self._jobs.get(payload["jobId"])
            if job is None:
                return
            step = self.to_step(payload)
            if step.kind == "report" and payload.get("event") not in self.report_events:
                return
            if not job.begun:
                if job.pending is None or job.pending.kind != "end":
                    job.pending = step
                return
            self._send(payload["jobId"], job, step)

    def _created(self, job_id: str, token: Any, future: Future) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.token != token:
                return  # superseded by a newer run of the job
            error = "cancelled" if future.cancelled() else future.exception()
            if error is not None:
                logger.info("client refused progress token %s: %s", token, error)
                del self._jobs[job_id]
                return
            self._begin(job)
            if job.pending is not None:
                self._send(job_id, job, job.pending)

    def _begin(self, job: _JobProgress) -> None:
        job.begun = True
        self.ls.work_done_progress.begin(
            job.token,
            types.WorkDoneProgressBegin(
                title=job.title, cancellable=False, message="Starting", percentage=0
            ),
        )

    def _send(self, job_id: str, job: _JobProgress, step: WorkDoneStep) -> None:
        progress = self.ls.work_done_progress
        if step.kind == "end":
            del self._jobs[job_id]
            progress.end(job.token, types.WorkDoneProgressEnd(message=step.message))
        else:
            progress.report(
                job.token,
                types.WorkDoneProgressReport(message=step.message, percentage=step.percentage),
            )
