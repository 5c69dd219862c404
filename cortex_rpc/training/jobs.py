"""The server-side job manager: one worker subprocess per job, state kept on disk.

No mlx here (the server imports this module). Each job lives in ``$CORTEX_HOME/jobs/ID/``::

    spec.json      what the worker trains (model, dataDir, config, outputName, resume, ...)
    status.json    the job's state, replaced atomically (temp file + os.replace) under a lock
    worker.log     the worker's stdout and stderr (mlx_lm's table, tracebacks)
    checkpoints/   step-NNNNNNN/ folders and latest.json (see worker.save_checkpoint)

One job trains at a time per manager; later starts queue. Jobs left by an earlier server (or a
worker that vanished) are reported ``interrupted`` and can be resumed from their checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..config.calibration import (
    CalibrationRun,
    RunMeasurement,
    RunShape,
    load_per_core,
    record_run,
)
from ..config.training_config import TrainingConfig
from ..errors import CortexError, InvalidParams
from ..models.fine_tuned import output_path
from ..paths import CortexHome, write_atomic
from ..workers import WorkerHandle, log_tail, start_worker
from .contract import (
    Blas,
    Checkpoint,
    Done,
    Error,
    JobSpec,
    JobState,
    JobStatus,
    Progress,
    Resumed,
    RunTiming,
    Started,
    Warning,
    WorkerEvent,
    WorkerOptions,
    decode_event,
    read_job_result,
)
from .metrics import TENSORBOARD_DIR

logger = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 5.0


ESTIMATE_FILE = "estimate.json"


def calibration_run(job_dir: Path, done: Done, wall_seconds: float) -> CalibrationRun | None:
    """Return the calibration record of a completed job, or None when it cannot make one.

    ``wall_seconds`` is the worker's, from launch to exit; the request's preparation (the
    proposal, the data split) recorded with the estimate is added, as the user waits for both.

    A resumed job (its steps are not the whole run), a distributed one, or one started
    without an estimate (a tuner trial, another version) is not recorded.
    """
    timing = RunTiming.from_wire(done.timing)
    try:
        estimate = json.loads((job_dir / ESTIMATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if timing is None or not isinstance(estimate, dict) or "shape" not in estimate:
        return None
    shape = RunShape.from_wire(estimate["shape"])
    wall_seconds += float(estimate.get("prepareSeconds") or 0.0)
    if timing.steps != shape.iterations or timing.step_seconds <= 0:
        return None
    steady = timing.step_seconds * timing.steps
    measured = RunMeasurement(
        wall_seconds=wall_seconds,
        fixed_seconds=max(0.0, wall_seconds - steady - timing.eval_seconds),
        step_seconds=timing.step_seconds,
        eval_seconds=timing.eval_seconds,
        peak_memory_bytes=timing.peak_memory_bytes,
        tokens_per_second=timing.tokens_per_second or 0.0,
        load_per_core=load_per_core(),
    )
    return CalibrationRun(
        shape=shape,
        measured=measured,
        estimated_seconds=estimate.get("seconds"),
        estimated_peak_memory_bytes=estimate.get("peakMemoryBytes"),
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _process_alive(pid: int | None, create_time: float | None) -> bool:
    """Return True if ``pid`` runs and is the same process (same start time) we launched."""
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _process_create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class TrainerSlot:
    """The server's one training slot: whoever holds it may train; the others wait in order.

    Training jobs, the tuner's trials and evaluations all ask this one slot, so one job
    trains at a time server-wide whichever feature started it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[tuple[str, Callable[[], None]]] = deque()
        self._holder: str | None = None

    @property
    def holder(self) -> str | None:
        """The key of whoever trains now."""
        return self._holder

    def request(self, key: str, on_granted: Callable[[], None]) -> None:
        """Call ``on_granted()`` once ``key`` holds the slot: now if free, else on release."""
        with self._lock:
            if self._holder is not None:
                self._waiting.append((key, on_granted))
                return
            self._holder = key
        on_granted()

    def withdraw(self, key: str) -> bool:
        """Take ``key`` out of the queue; return False if it was not waiting."""
        with self._lock:
            for item in self._waiting:
                if item[0] == key:
                    self._waiting.remove(item)
                    return True
        return False

    def release(self, key: str) -> None:
        """End ``key``'s turn and grant the slot to the next in line."""
        with self._lock:
            if self._holder != key:
                return
            self._holder = None
            if not self._waiting:
                return
            self._holder, on_granted = self._waiting.popleft()
        # The next holder starts from this thread; a failure there must not break ours.
        try:
            on_granted()
        except Exception:  # noqa: BLE001 - the holder reports its own failures
            logger.exception("starting the next job failed")

    @contextlib.contextmanager
    def hold(self, key: str, cancel: threading.Event | None = None) -> Iterator[None]:
        """Wait for the slot (raising ``cancelled`` if ``cancel`` is set first), then hold it."""
        granted = threading.Event()
        self.request(key, granted.set)
        while not granted.wait(0.1):
            if cancel is not None and cancel.is_set() and self.withdraw(key):
                raise CortexError("cancelled", "Cancelled while waiting for a training job")
        try:
            yield
        finally:
            self.release(key)


class _Running:
    """A live worker: its handle, and whether a cancel was asked for."""

    def __init__(self, worker: WorkerHandle, distributed: bool = False) -> None:
        self.worker = worker
        self.distributed = distributed
        self.cancel_requested = False
        self.launched = time.monotonic()  # the wall time a calibration records starts here


class TrainingJobs:
    """Starts, queues, cancels and resumes training jobs; reports their events to ``on_event``.

    ``on_event(payload)`` is called from reader threads with a ``cortex/trainingProgress``
    payload (``JobStatus.notification``). Jobs train when ``slot`` (the server's one
    ``TrainerSlot``, shared with the tuner and evaluations) is theirs.
    """

    def __init__(
        self,
        home: CortexHome,
        on_event: Callable[[dict], None] | None = None,
        python: str | None = None,
        slot: TrainerSlot | None = None,
    ) -> None:
        self.home = home
        self.root = home.jobs
        self.on_event = on_event or (lambda payload: None)
        self.python = python
        self.slot = slot or TrainerSlot()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._queued: set[str] = set()
        self._running: dict[str, _Running] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._closed = False
        # Jobs whose worker has exited while _finish records and announces the outcome: still
        # ours, so no reader calls them interrupted and wait() returns only once it is told.
        self._finishing: set[str] = set()

    # -- status files ---------------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or ".." in job_id:
            raise InvalidParams(f"jobId {job_id!r} is not a job id", field="jobId")
        return self.root / job_id

    def _read_status(self, job_id: str) -> JobStatus:
        try:
            data = json.loads((self._job_dir(job_id) / "status.json").read_text())
            return JobStatus.from_wire(data)
        except (OSError, ValueError, TypeError) as exc:
            raise CortexError("job-not-found", f"No training job {job_id!r}") from exc

    def _update_status(self, job_id: str, **changes: Any) -> JobStatus:
        """Apply ``changes`` (snake_case JobStatus fields) under the job's file lock."""
        job_dir = self._job_dir(job_id)
        with FileLock(str(job_dir / "status.lock")):
            try:
                status = JobStatus.from_wire(json.loads((job_dir / "status.json").read_text()))
            except (OSError, ValueError, TypeError):
                status = JobStatus(job_id=job_id, state=JobState.INTERRUPTED)
            status = status.changed(**changes, updated_at=_now(), storage_error=None)
            try:
                write_atomic(job_dir / "status.json", status.to_wire())
            except OSError as exc:
                # A full disk must not silence the job: the client still hears every state
                # (the file keeps its last good state, which later reads as interrupted).
                logger.warning("could not write %s: %s", job_dir / "status.json", exc)
                status = status.changed(storage_error=str(exc))
        with self._changed:
            self._changed.notify_all()
        return status

    def _notify(self, status: JobStatus, event: str, **extra: Any) -> None:
        # A broken client callback must not kill the job's reader thread.
        with contextlib.suppress(Exception):
            self.on_event(status.notification(event, **extra))

    def _ours(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._running or job_id in self._queued or job_id in self._finishing

    # -- public API -----------------------------------------------------------------------------

    def start(
        self,
        model_path: str | Path,
        data_dir: str | Path | None,
        output_name: str | None,
        config: TrainingConfig,
        dataset_info: dict | None = None,
        options: WorkerOptions | None = None,
        prepare: Callable[[Path], dict] | None = None,
        submit: bool = True,
        estimate: dict[str, Any] | None = None,
        requested_at: float | None = None,
    ) -> dict:
        """Create a job and start it (or queue it behind the running one; see ``submit``).

        Returns ``{jobId, state, outputPath, config}``. Raises ``model-exists`` when the name
        is taken by a saved model or by another active job. ``output_name`` None trains
        without saving a model (the tuner's trials). With ``prepare``, ``data_dir`` is
        ignored: the job's own ``data/`` folder is filled by ``prepare(folder)``, which
        returns the dataset info, so the job never reads the user's file again. ``estimate``
        (the proposal's, with its run shape) is kept in the job's folder: when the job
        completes, what it measured is recorded against it in the machine's calibration;
        ``requested_at`` (``time.monotonic()`` when the request came) counts the preparation
        before the worker in the wall time recorded.
        """
        options = options or WorkerOptions()
        target = None
        if output_name is not None:
            target = output_path(output_name, self.home.models)
            for job in self.list_jobs():
                if job["outputName"] == output_name and JobState(job["state"]).active:
                    raise CortexError(
                        "model-exists",
                        f"Job {job['jobId']} is already training a model named {output_name!r}.",
                    )
        model_path = Path(model_path).resolve()
        if not (model_path / "config.json").exists():
            raise InvalidParams(f"{model_path} is not a model folder", field="model")
        if config.iterations <= 0:
            raise InvalidParams("config.iterations must be computed", field="config.iterations")
        if options.distributed:
            from dataclasses import replace

            from .distributed import validate

            options = replace(options, distributed=validate(options.distributed))
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        job_dir = self.root / job_id
        job_dir.mkdir(parents=True)
        try:
            if prepare is not None:
                data_dir = job_dir / "data"
                dataset_info = prepare(data_dir)
            data_dir = Path(data_dir).resolve()
            if not (data_dir / "train.jsonl").exists():
                raise InvalidParams(f"{data_dir} has no train.jsonl", field="dataDir")
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        spec = JobSpec(
            job_id=job_id,
            model=str(model_path),
            data_dir=str(data_dir),
            config=config,
            output_name=output_name,
            output_dir=str(self.home.models),
            adapter_dir=str(job_dir / "final"),
            dataset_info=dataset_info or {},
            options=options,
        )
        write_atomic(job_dir / JobSpec.FILE, spec.to_wire())
        if estimate is not None:
            prepared = time.monotonic() - requested_at if requested_at is not None else 0.0
            write_atomic(job_dir / ESTIMATE_FILE, {**estimate, "prepareSeconds": prepared})
        now = _now()
        status = JobStatus(
            job_id=job_id,
            state=JobState.QUEUED,
            output_name=output_name,
            output_path=str(target) if target is not None else None,
            model=str(model_path),
            progress=Progress(iteration=0, total_iterations=config.iterations),
            created_at=now,
            updated_at=now,
            message="Queued",
            owner_pid=os.getpid(),
            owner_create_time=_process_create_time(os.getpid()),
        )
        write_atomic(job_dir / "status.json", status.to_wire())
        if submit:
            self.submit(job_id)
        return {
            "jobId": job_id,
            "state": self._read_status(job_id).state.value,
            "outputPath": status.output_path,
            "config": config.to_wire(),
        }

    def submit(self, job_id: str) -> None:
        """Queue a created job (announcing ``queued``) and start it when the slot is free.

        The server creates with ``submit=False`` and submits once the startTraining reply is
        written, so no notification of a job reaches a client before its id does.
        """
        status = self._read_status(job_id)
        with self._lock:
            if self._ours(job_id) or self._closed:
                return
            self._queued.add(job_id)
        self._notify(status, "queued")
        self.slot.request(job_id, lambda: self._launch_granted(job_id))

    def cancel(self, job_id: str) -> dict:
        """Stop a job: SIGTERM (the worker checkpoints and exits), SIGKILL after 5 s.

        A queued job is simply dequeued. Returns the job's list entry.
        """
        with self._lock:
            if job_id in self._queued:
                self._queued.discard(job_id)
                self.slot.withdraw(job_id)
                status = self._update_status(
                    job_id, state=JobState.CANCELLED, message="Cancelled before it started"
                )
                self._notify(status, "cancelled", message=status.message)
                return status.entry()
            running = self._running.get(job_id)
        if running is None:
            status = self._effective_status(self._read_status(job_id))
            if status.state.active and _process_alive(status.pid, status.pid_create_time):
                # Owned by another server process: signal its worker directly.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(status.pid, signal.SIGTERM)
            return status.entry()
        running.cancel_requested = True
        status = self._update_status(job_id, state=JobState.CANCELLING, message="Cancelling")
        self._notify(status, "cancelling")
        if running.distributed:
            # SIGTERM the ranks, not mlx.launch: it must live to relay the "cancelled" event.
            self._signal_ranks(running.worker.pid, signal.SIGTERM)
            running.worker.kill_after(CANCEL_GRACE_SECONDS)
        else:
            running.worker.stop(CANCEL_GRACE_SECONDS)
        return status.entry()

    def resume(self, job_id: str, submit: bool = True) -> dict:
        """Continue a cancelled, interrupted or failed job from its last checkpoint."""
        status = self._effective_status(self._read_status(job_id))
        if not status.state.resumable:
            raise CortexError(
                "job-not-resumable",
                f"Job {job_id} is {status.state.value}; only cancelled, interrupted or failed "
                "jobs can be resumed.",
            )
        job_dir = self._job_dir(job_id)
        spec = JobSpec.read(job_dir)
        if spec.output_name is not None:
            output_path(spec.output_name, Path(spec.output_dir))
        from dataclasses import replace

        write_atomic(job_dir / JobSpec.FILE, replace(spec, resume=True).to_wire())
        status = self._update_status(
            job_id,
            state=JobState.QUEUED,
            message="Queued to resume",
            owner_pid=os.getpid(),
            owner_create_time=_process_create_time(os.getpid()),
        )
        if submit:
            self.submit(job_id)
        return self._read_status(job_id).entry()

    def list_jobs(self) -> list[dict]:
        """Return every job on disk, newest first, with vanished workers shown ``interrupted``."""
        if not self.root.exists():
            return []
        jobs = []
        for job_dir in self.root.iterdir():
            if not (job_dir / "status.json").exists():
                continue
            try:
                status = self._read_status(job_dir.name)
            except CortexError:
                continue
            jobs.append(self._listed(status))
        jobs.sort(key=lambda j: (j.get("createdAt") or "", j["jobId"]), reverse=True)
        return jobs

    def get(self, job_id: str) -> dict:
        """Return one job's list entry."""
        return self._listed(self._read_status(job_id))

    def _listed(self, status: JobStatus) -> dict:
        """Return a job's list entry, with the folder of its TensorBoard event files."""
        entry = self._effective_status(status).entry()
        entry["logDir"] = str(self._job_dir(status.job_id) / TENSORBOARD_DIR)
        return entry

    def wait(
        self, job_id: str, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> dict:
        """Block until the job has ended; return its entry (TimeoutError after ``timeout``).

        Setting ``cancel`` cancels the job (once) and keeps waiting for it to stop.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cancelled = False
        while True:
            job = self.get(job_id)
            with self._changed:
                if not JobState(job["state"]).active and not self._ours(job_id):
                    return job
                if cancel is not None and cancel.is_set() and not cancelled:
                    cancelled = True
                    self.cancel(job_id)
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {job_id} still {job['state']}")
                # Woken by any change of ours; a job of another server is polled.
                self._changed.wait(0.25 if left is None else min(0.25, left))

    def wait_all(self) -> None:
        """Block until every queued and running job of this manager has finished."""
        while True:
            with self._lock:
                pending = [*self._running, *self._queued, *self._finishing]
            if not pending:
                return
            self.wait(pending[0])

    def shutdown(self) -> None:
        """Cancel running jobs cleanly (they stay resumable) and mark queued ones interrupted."""
        with self._lock:
            self._closed = True
            queued = list(self._queued)
            self._queued.clear()
            running = list(self._running)
        for job_id in queued:
            self.slot.withdraw(job_id)
            status = self._update_status(
                job_id, state=JobState.INTERRUPTED, message="The server stopped before it ran"
            )
            self._notify(status, "interrupted")
        for job_id in running:
            with contextlib.suppress(CortexError):
                self.cancel(job_id)
        for job_id in running:
            thread = self._threads.get(job_id)
            if thread is not None:
                thread.join(CANCEL_GRACE_SECONDS + 5)

    # -- internals ------------------------------------------------------------------------------

    def _effective_status(self, status: JobStatus) -> JobStatus:
        """Return the status with a vanished worker or owner shown as ``interrupted``.

        A worker that recorded its result before it vanished finished its job: ``completed``.
        """
        job_id = status.job_id
        if self._ours(job_id):
            return status
        if status.state in (JobState.RUNNING, JobState.CANCELLING):
            if _process_alive(status.pid, status.pid_create_time):
                return status
        elif status.state == JobState.QUEUED:
            if _process_alive(status.owner_pid, status.owner_create_time):
                return status
        else:
            return status
        result = read_job_result(self._job_dir(job_id))
        done = decode_event({**result, "event": "done"}) if result is not None else None
        if isinstance(done, Done) and status.state != JobState.QUEUED:
            # The worker finished after its server died (kill -9): the model is saved.
            changes: dict[str, Any] = {
                "state": JobState.COMPLETED,
                "message": f"{done.message()} (while no server was listening)",
                **self._done_fields(done),
            }
        else:
            changes = {
                "state": JobState.INTERRUPTED,
                "message": "The worker stopped without finishing (server restart or crash)",
            }
        with contextlib.suppress(OSError):
            return self._update_status(job_id, **changes)
        return status.changed(**changes)

    @staticmethod
    def _done_fields(done: Done) -> dict[str, Any]:
        return {
            "iteration": done.iteration,
            "train_loss": done.train_loss,
            "val_loss": done.val_loss,
            "output_path": done.output_path,
            "adapter_bytes": done.adapter_bytes,
        }

    def _launch_granted(self, job_id: str) -> None:
        """Start the job's worker now that the slot is its; a failure ends the job."""
        with self._lock:
            if job_id not in self._queued or self._closed:
                self._queued.discard(job_id)
                self.slot.release(job_id)
                return
            try:
                spec = JobSpec.read(self._job_dir(job_id))
                worker = self._launch(spec)
            except Exception as exc:  # noqa: BLE001 - report and hand the slot on
                self._queued.discard(job_id)
                status = self._update_status(job_id, state=JobState.FAILED, message=str(exc))
                self._notify(status, "error", message=str(exc), code="launch-failed")
                self.slot.release(job_id)
                return
            self._queued.discard(job_id)
            self._running[job_id] = _Running(worker, distributed=bool(spec.options.distributed))
        status = self._update_status(
            job_id,
            state=JobState.RUNNING,
            message="Starting",
            pid=worker.pid,
            pid_create_time=_process_create_time(worker.pid),
        )
        self._notify(status, "running")

    def _launch(self, spec: JobSpec) -> WorkerHandle:
        job_dir = self._job_dir(spec.job_id)
        command = None
        if spec.options.distributed:
            import sys

            from .distributed import launch_command

            command = launch_command(
                self.python or sys.executable, job_dir, spec.options.distributed
            )
        worker = start_worker(
            "cortex_rpc.training.worker",
            [str(job_dir)],
            log_path=job_dir / "worker.log",
            python=self.python,
            # mlx.launch relays rank 0's stdout: events arrive on its stdout (distributed.py).
            events_on_stdout=command is not None,
            command=command,
        )
        thread = threading.Thread(
            target=self._read_events,
            args=(spec.job_id, worker),
            daemon=True,
            name=f"training-{spec.job_id}",
        )
        self._threads[spec.job_id] = thread
        thread.start()
        return worker

    def _read_events(self, job_id: str, worker: WorkerHandle) -> None:
        final: WorkerEvent | None = None
        for data in worker.events():
            event = decode_event(data)
            if event is None:
                logger.warning("job %s: ignored a line outside the contract: %.200s", job_id, data)
            elif event.final:
                final = event
            else:
                self._handle_event(job_id, event)
        worker.close_events()
        returncode = worker.wait()
        self._finish(job_id, returncode, final)

    def _handle_event(self, job_id: str, event: WorkerEvent) -> None:
        if isinstance(event, Progress):
            fields = {k: v for k, v in vars(event).items() if v is not None}
            status = self._update_status(job_id, message="Training", **fields)
            if status.state == JobState.CANCELLING:
                return
            self._notify(status, "progress")
        elif isinstance(event, Checkpoint):
            status = self._update_status(job_id, checkpoint=event.path)
            self._notify(status, "checkpoint", checkpointPath=event.path)
        elif isinstance(event, (Started, Resumed)):
            changes: dict[str, Any] = {"message": "Training", "iteration": event.iteration}
            if isinstance(event, Started):
                changes["total_iterations"] = event.total_iterations
            status = self._update_status(job_id, **changes)
            details = event.to_wire()
            details.pop("event")
            details.pop("iteration", None)
            details.pop("totalIterations", None)
            self._notify(status, event.kind, **details)
        elif isinstance(event, Warning):
            self._notify(self._read_status(job_id), "warning", message=event.message)
        elif isinstance(event, Blas):
            if event.name is None:
                message = (
                    "No fast BLAS was found: MLX uses its reference BLAS and trains about 20x "
                    "slower on this CPU. Install OpenBLAS (Debian: libopenblas0-pthread) or "
                    "set CORTEX_BLAS to a BLAS library."
                )
                logger.warning("job %s: %s", job_id, message)
                self._notify(self._read_status(job_id), "warning", message=message)
            else:
                logger.info("job %s: BLAS %s (%s)", job_id, event.name, event.path)

    def _finish(self, job_id: str, returncode: int, final: WorkerEvent | None) -> None:
        with self._lock:
            running = self._running.pop(job_id, None)
            self._finishing.add(job_id)
        try:
            self._record_outcome(job_id, returncode, final, running)
        finally:
            with self._changed:
                self._finishing.discard(job_id)
                self._changed.notify_all()
            self.slot.release(job_id)

    def _record_outcome(
        self, job_id: str, returncode: int, final: WorkerEvent | None, running: _Running | None
    ) -> None:
        cancel_requested = running is not None and running.cancel_requested
        extra: dict[str, Any] = {}
        if isinstance(final, Done) and returncode == 0:
            changes: dict[str, Any] = {
                "state": JobState.COMPLETED,
                "message": final.message(),
                **self._done_fields(final),
            }
            extra = {
                "outputPath": final.output_path,
                "adapterBytes": final.adapter_bytes,
                "evaluation": final.evaluation,
                "lossCurvePath": final.loss_curve_path,
                "stopReason": final.stop_reason,
                "bestIteration": final.best_iteration,
                "bestValLoss": final.best_val_loss,
                "keptIteration": final.kept_iteration,
            }
            if running is not None and not running.distributed:
                self._calibrate(job_id, final, time.monotonic() - running.launched)
        elif (
            final is not None
            and final.kind == "cancelled"
            or (cancel_requested and not isinstance(final, Error))
        ):
            changes = {
                "state": JobState.CANCELLED,
                "message": "Cancelled; resume continues from the last checkpoint",
            }
        elif isinstance(final, Error):
            changes = {
                "state": JobState.FAILED,
                "message": final.message or "Training failed",
                "error_code": final.code,
            }
            extra = {"code": final.code}
        else:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            tail = log_tail(self._job_dir(job_id) / "worker.log")
            hint = ""
            if returncode == -signal.SIGKILL and not cancel_requested:
                # Nobody here sent it: on Linux that is usually the kernel's OOM killer.
                hint = " If the system ran out of memory, try a smaller batch or 4-bit."
            message = f"The worker stopped ({how}).{hint} {tail}".strip()
            changes = {"state": JobState.FAILED, "message": message}
            extra = {"code": "worker-crashed"}
        changes["return_code"] = returncode
        status = self._update_status(job_id, **changes)
        event = {JobState.COMPLETED: "done", JobState.CANCELLED: "cancelled"}.get(
            status.state, "error"
        )
        self._notify(status, event, message=status.message, **extra)

    def _calibrate(self, job_id: str, done: Done, wall_seconds: float) -> None:
        """Record what a completed job measured in the machine's calibration (never fails it)."""
        try:
            run = calibration_run(self._job_dir(job_id), done, wall_seconds)
            if run is not None:
                record_run(self.home.root, run)
        except Exception:  # noqa: BLE001 - a calibration problem must not fail a finished job
            logger.warning("job %s: could not record its calibration", job_id, exc_info=True)

    @staticmethod
    def _signal_ranks(pid: int, signum: int) -> None:
        import psutil

        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            with contextlib.suppress(psutil.Error):
                if "cortex_rpc.training.worker" in " ".join(child.cmdline()):
                    child.send_signal(signum)
