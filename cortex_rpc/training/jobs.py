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
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..config.training_config import TrainingConfig
from ..errors import CortexError, InvalidParams
from ..paths import validate_model_name
from .events import EVENT_FD_ENV
from .output import output_path, read_job_result

logger = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running", "cancelling")
RESUMABLE_STATES = ("cancelled", "interrupted", "failed")
CANCEL_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 15
# Fields of a progress event that are copied into notifications and status.json.
PROGRESS_FIELDS = (
    "iteration",
    "totalIterations",
    "epoch",
    "totalEpochs",
    "trainLoss",
    "valLoss",
    "learningRate",
    "tokensPerSecond",
    "etaSeconds",
    "peakMemoryBytes",
    "trainedTokens",
)
LIST_FIELDS = (
    "jobId",
    "state",
    "outputName",
    "outputPath",
    "model",
    "iteration",
    "totalIterations",
    "trainLoss",
    "valLoss",
    "createdAt",
    "updatedAt",
    "message",
    "resumable",
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file ('' if there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class _Running:
    """A live worker: its process, and whether a cancel was asked for."""

    def __init__(self, process: subprocess.Popen, distributed: bool = False) -> None:
        self.process = process
        self.distributed = distributed
        self.cancel_requested = False
        self.final_event: dict | None = None


class TrainingJobs:
    """Starts, queues, cancels and resumes training jobs; reports their events to ``on_event``.

    ``on_event(payload)`` is called from reader threads with a ``cortex/trainingProgress``
    payload: ``{jobId, state, event, ...progress fields, message?, outputPath?, adapterBytes?}``.
    """

    def __init__(
        self,
        home: Path,
        on_event: Callable[[dict], None] | None = None,
        python: str | None = None,
    ) -> None:
        self.home = Path(home)
        self.jobs_root = self.home / "jobs"
        self.models_dir = self.home / "mlx_models"
        self.on_event = on_event or (lambda payload: None)
        self.python = python or sys.executable
        self._lock = threading.RLock()
        self._queue: deque[str] = deque()
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
        return self.jobs_root / job_id

    def _read_status(self, job_id: str) -> dict:
        try:
            return json.loads((self._job_dir(job_id) / "status.json").read_text())
        except (OSError, ValueError) as exc:
            raise CortexError("job-not-found", f"No training job {job_id!r}") from exc

    def _update_status(self, job_id: str, **changes: Any) -> dict:
        job_dir = self._job_dir(job_id)
        with FileLock(str(job_dir / "status.lock")):
            try:
                status = json.loads((job_dir / "status.json").read_text())
            except (OSError, ValueError):
                status = {"jobId": job_id}
            status.update(changes)
            status["updatedAt"] = _now()
            try:
                _write_json_atomic(job_dir / "status.json", status)
            except OSError as exc:
                # A full disk must not silence the job: the client still hears every state
                # (the file keeps its last good state, which later reads as interrupted).
                logger.warning("could not write %s: %s", job_dir / "status.json", exc)
                status["storageError"] = str(exc)
        return status

    def _notify(self, status: dict, event: str, **extra: Any) -> None:
        payload = {
            "jobId": status["jobId"],
            "state": status["state"],
            "event": event,
            "outputName": status.get("outputName"),
        }
        for key in PROGRESS_FIELDS:
            if status.get(key) is not None:
                payload[key] = status[key]
        payload.update({k: v for k, v in extra.items() if v is not None})
        # A broken client callback must not kill the job's reader thread.
        with contextlib.suppress(Exception):
            self.on_event(payload)

    # -- public API -----------------------------------------------------------------------------

    def start(
        self,
        model_path: str | Path,
        data_dir: str | Path,
        output_name: str,
        config: TrainingConfig,
        dataset_info: dict | None = None,
        options: dict | None = None,
        prepare: Callable[[Path], dict] | None = None,
        submit: bool = True,
    ) -> dict:
        """Create a job and start it (or queue it behind the running one; see ``submit``).

        Returns ``{jobId, state, outputPath, config}``. Raises ``model-exists`` when the name
        is taken by a saved model or by another active job. ``options`` may carry worker
        settings: stepsPerReport, stepsPerEval, stepsPerCheckpoint, valBatches, maskPrompt,
        loraKeys, distributed. With ``prepare``, ``data_dir`` is ignored: the job's own
        ``data/`` folder is filled by ``prepare(folder)``, which returns the dataset info, so
        the job never reads the user's file again.
        """
        validate_model_name(output_name)
        target = output_path(output_name, self.models_dir)
        for job in self.list_jobs():
            if job["outputName"] == output_name and job["state"] in ACTIVE_STATES:
                raise CortexError(
                    "model-exists",
                    f"Job {job['jobId']} is already training a model named {output_name!r}.",
                )
        model_path = Path(model_path).resolve()
        if not (model_path / "config.json").exists():
            raise InvalidParams(f"{model_path} is not a model folder", field="model")
        if config.iterations <= 0:
            raise InvalidParams("config.iterations must be computed", field="config.iterations")
        if options and options.get("distributed"):
            from .distributed import validate

            options = {**options, "distributed": validate(options["distributed"])}
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        job_dir = self.jobs_root / job_id
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
        spec = {
            "jobId": job_id,
            "model": str(model_path),
            "dataDir": str(data_dir),
            "config": config.to_wire(),
            "outputName": output_name,
            "outputDir": str(self.models_dir),
            "adapterDir": str(job_dir / "final"),
            "datasetInfo": dataset_info or {},
            "resume": False,
            **(options or {}),
        }
        _write_json_atomic(job_dir / "spec.json", spec)
        now = _now()
        status = {
            "jobId": job_id,
            "state": "queued",
            "outputName": output_name,
            "outputPath": str(target),
            "model": str(model_path),
            "iteration": 0,
            "totalIterations": config.iterations,
            "trainLoss": None,
            "valLoss": None,
            "createdAt": now,
            "updatedAt": now,
            "message": "Queued",
            "ownerPid": os.getpid(),
            "ownerCreateTime": _process_create_time(os.getpid()),
        }
        _write_json_atomic(job_dir / "status.json", status)
        if submit:
            self.submit(job_id)
        return {
            "jobId": job_id,
            "state": self._read_status(job_id)["state"],
            "outputPath": str(target),
            "config": config.to_wire(),
        }

    def submit(self, job_id: str) -> None:
        """Queue a created job (announcing ``queued``) and start it when the trainer is free.

        The server creates with ``submit=False`` and submits once the startTraining reply is
        written, so no notification of a job reaches a client before its id does.
        """
        status = self._read_status(job_id)
        with self._lock:
            if job_id in self._queue or job_id in self._running:
                return
            self._queue.append(job_id)
        self._notify(status, "queued")
        self._start_next()

    def cancel(self, job_id: str) -> dict:
        """Stop a job: SIGTERM (the worker checkpoints and exits), SIGKILL after 5 s.

        A queued job is simply dequeued. Returns the job's list entry.
        """
        with self._lock:
            if job_id in self._queue:
                self._queue.remove(job_id)
                status = self._update_status(
                    job_id, state="cancelled", message="Cancelled before it started"
                )
                self._notify(status, "cancelled", message=status["message"])
                return self._public(status)
            running = self._running.get(job_id)
        if running is None:
            status = self._effective_status(self._read_status(job_id))
            if status["state"] in ACTIVE_STATES:
                # Owned by another server process: signal its worker directly.
                pid = status.get("pid")
                if pid and _process_alive(pid, status.get("pidCreateTime")):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGTERM)
                    return self._public(status)
            return self._public(status)
        running.cancel_requested = True
        status = self._update_status(job_id, state="cancelling", message="Cancelling")
        self._notify(status, "cancelling")
        if running.distributed:
            # SIGTERM the ranks, not mlx.launch: it must live to relay the "cancelled" event.
            self._signal_ranks(running.process, signal.SIGTERM)
        else:
            self._signal(running.process, signal.SIGTERM)
        threading.Thread(
            target=self._kill_later, args=(running.process,), daemon=True, name=f"kill-{job_id}"
        ).start()
        return self._public(status)

    def resume(self, job_id: str, submit: bool = True) -> dict:
        """Continue a cancelled, interrupted or failed job from its last checkpoint."""
        status = self._effective_status(self._read_status(job_id))
        if status["state"] not in RESUMABLE_STATES:
            raise CortexError(
                "job-not-resumable",
                f"Job {job_id} is {status['state']}; only cancelled, interrupted or failed jobs "
                "can be resumed.",
            )
        job_dir = self._job_dir(job_id)
        spec = json.loads((job_dir / "spec.json").read_text())
        output_path(spec["outputName"], self.models_dir)
        spec["resume"] = True
        _write_json_atomic(job_dir / "spec.json", spec)
        status = self._update_status(
            job_id,
            state="queued",
            message="Queued to resume",
            ownerPid=os.getpid(),
            ownerCreateTime=_process_create_time(os.getpid()),
        )
        if submit:
            self.submit(job_id)
        return self._public(self._read_status(job_id))

    def list_jobs(self) -> list[dict]:
        """Return every job on disk, newest first, with vanished workers shown ``interrupted``."""
        if not self.jobs_root.exists():
            return []
        jobs = []
        for job_dir in self.jobs_root.iterdir():
            if not (job_dir / "status.json").exists():
                continue
            try:
                status = self._read_status(job_dir.name)
            except CortexError:
                continue
            jobs.append(self._public(self._effective_status(status)))
        jobs.sort(key=lambda j: (j.get("createdAt") or "", j["jobId"]), reverse=True)
        return jobs

    def get(self, job_id: str) -> dict:
        """Return one job's list entry."""
        return self._public(self._effective_status(self._read_status(job_id)))

    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """Block until the job leaves the queued/running states (for tests and scripts)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            with self._lock:
                ours = job_id in self._running or job_id in self._queue or job_id in self._finishing
            if job["state"] not in ACTIVE_STATES and not ours:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']}")
            time.sleep(0.05)

    def wait_all(self) -> None:
        """Block until every queued and running job of this manager has finished."""
        while True:
            with self._lock:
                pending = list(self._running) + list(self._queue) + list(self._finishing)
            if not pending:
                return
            self.wait(pending[0])

    def shutdown(self) -> None:
        """Cancel running jobs cleanly (they stay resumable) and mark queued ones interrupted."""
        with self._lock:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            running = list(self._running)
        for job_id in queued:
            status = self._update_status(
                job_id, state="interrupted", message="The server stopped before it ran"
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

    def _public(self, status: dict) -> dict:
        entry = {key: status.get(key) for key in LIST_FIELDS}
        entry["resumable"] = status.get("state") in RESUMABLE_STATES
        for key in ("adapterBytes", "tokensPerSecond", "epoch", "totalEpochs", "checkpoint"):
            if status.get(key) is not None:
                entry[key] = status[key]
        return entry

    def _effective_status(self, status: dict) -> dict:
        """Return the status with a vanished worker or owner shown as ``interrupted``.

        A worker that recorded its result before it vanished finished its job: ``completed``.
        """
        job_id = status["jobId"]
        with self._lock:
            if job_id in self._running or job_id in self._queue or job_id in self._finishing:
                return status
        state = status.get("state")
        if state in ("running", "cancelling"):
            if _process_alive(status.get("pid"), status.get("pidCreateTime")):
                return status
        elif state == "queued":
            if _process_alive(status.get("ownerPid"), status.get("ownerCreateTime")):
                return status
        else:
            return status
        result = read_job_result(self._job_dir(job_id))
        if result is not None and state != "queued":
            # The worker finished after its server died (kill -9): the model is saved.
            changes = {
                "state": "completed",
                "message": "Completed (while no server was listening)",
                **{
                    key: result.get(key)
                    for key in ("iteration", "trainLoss", "valLoss", "outputPath", "adapterBytes")
                },
            }
        else:
            changes = {
                "state": "interrupted",
                "message": "The worker stopped without finishing (server restart or crash)",
            }
        with contextlib.suppress(OSError):
            return self._update_status(job_id, **changes)
        return {**status, **changes}

    def _start_next(self) -> None:
        with self._lock:
            if self._closed or self._running or not self._queue:
                return
            job_id = self._queue.popleft()
            try:
                spec_distributed = json.loads(
                    (self._job_dir(job_id) / "spec.json").read_text()
                ).get("distributed")
                process = self._launch(job_id)
            except Exception as exc:  # noqa: BLE001 - report and move on to the next job
                status = self._update_status(job_id, state="failed", message=str(exc))
                self._notify(status, "error", message=str(exc))
                threading.Thread(target=self._start_next, daemon=True).start()
                return
            self._running[job_id] = _Running(process, distributed=bool(spec_distributed))
        status = self._update_status(
            job_id,
            state="running",
            message="Starting",
            pid=process.pid,
            pidCreateTime=_process_create_time(process.pid),
        )
        self._notify(status, "running")

    def _worker_command(self, job_dir: Path, spec: dict) -> list[str]:
        distributed = spec.get("distributed")
        if not distributed:
            return [self.python, "-m", "cortex_rpc.training.worker", str(job_dir)]
        from .distributed import launch_command

        return launch_command(self.python, job_dir, distributed)

    def _launch(self, job_id: str) -> subprocess.Popen:
        job_dir = self._job_dir(job_id)
        spec = json.loads((job_dir / "spec.json").read_text())
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        distributed = bool(spec.get("distributed"))
        if distributed:
            # mlx.launch relays rank 0's stdout: events arrive on its stdout (distributed.py).
            env.pop(EVENT_FD_ENV, None)
        else:
            env[EVENT_FD_ENV] = str(write_fd)
        log = open(job_dir / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            process = subprocess.Popen(
                self._worker_command(job_dir, spec),
                stdin=subprocess.DEVNULL,
                stdout=write_fd if distributed else log,
                stderr=log,
                pass_fds=() if distributed else (write_fd,),
                env=env,
                # Own process group: cancel signals the worker (and mlx.launch's ranks) only.
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
            log.close()
        thread = threading.Thread(
            target=self._read_events,
            args=(job_id, process, read_fd),
            daemon=True,
            name=f"training-{job_id}",
        )
        self._threads[job_id] = thread
        thread.start()
        return process

    def _read_events(self, job_id: str, process: subprocess.Popen, read_fd: int) -> None:
        final: dict | None = None
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                kind = event.get("event")
                if kind in ("done", "cancelled", "error"):
                    final = event
                    continue
                self._handle_event(job_id, event)
        returncode = process.wait()
        self._finish(job_id, returncode, final)

    def _handle_event(self, job_id: str, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            changes = {k: event[k] for k in PROGRESS_FIELDS if k in event}
            status = self._update_status(job_id, message="Training", **changes)
            if status["state"] == "cancelling":
                return
            self._notify(status, "progress")
        elif kind == "checkpoint":
            status = self._update_status(job_id, checkpoint=event.get("path"))
            self._notify(status, "checkpoint", checkpointPath=event.get("path"))
        elif kind in ("started", "resumed"):
            changes = {"message": "Training"}
            if "iteration" in event:
                changes["iteration"] = event["iteration"]
            if "totalIterations" in event:
                changes["totalIterations"] = event["totalIterations"]
            status = self._update_status(job_id, **changes)
            details = (
                "examples",
                "validationExamples",
                "batchSize",
                "numLayers",
                "quantizationBits",
                "ranks",
                "path",
            )
            self._notify(status, kind, **{k: event[k] for k in details if k in event})
        elif kind == "warning":
            status = self._read_status(job_id)
            self._notify(status, "warning", message=event.get("message"))

    def _finish(self, job_id: str, returncode: int, final: dict | None) -> None:
        with self._lock:
            running = self._running.pop(job_id, None)
            self._finishing.add(job_id)
        try:
            self._record_outcome(job_id, returncode, final, running)
        finally:
            with self._lock:
                self._finishing.discard(job_id)
        self._start_next()

    def _record_outcome(
        self, job_id: str, returncode: int, final: dict | None, running: _Running | None
    ) -> None:
        cancel_requested = running is not None and running.cancel_requested
        kind = (final or {}).get("event")
        extra: dict[str, Any] = {}
        if kind == "done" and returncode == 0:
            changes = {
                "state": "completed",
                "message": "Completed",
                "iteration": final.get("iteration"),
                "trainLoss": final.get("trainLoss"),
                "valLoss": final.get("valLoss"),
                "outputPath": final.get("outputPath"),
                "adapterBytes": final.get("adapterBytes"),
            }
            extra = {
                "outputPath": final.get("outputPath"),
                "adapterBytes": final.get("adapterBytes"),
                "evaluation": final.get("evaluation"),
                "lossCurvePath": final.get("lossCurvePath"),
            }
        elif kind == "cancelled" or (cancel_requested and kind != "error"):
            changes = {
                "state": "cancelled",
                "message": "Cancelled; resume continues from the last checkpoint",
            }
        elif kind == "error":
            changes = {
                "state": "failed",
                "message": final.get("message") or "Training failed",
                "errorCode": final.get("code"),
            }
            extra = {"code": final.get("code")}
        else:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            tail = log_tail(self._job_dir(job_id) / "worker.log")
            hint = ""
            if returncode == -signal.SIGKILL and not cancel_requested:
                # Nobody here sent it: on Linux that is usually the kernel's OOM killer.
                hint = " If the system ran out of memory, try a smaller batch or 4-bit."
            message = f"The worker stopped ({how}).{hint} {tail}".strip()
            changes = {"state": "failed", "message": message}
            extra = {"code": "worker-crashed"}
        changes["returnCode"] = returncode
        status = self._update_status(job_id, **changes)
        event = {"completed": "done", "cancelled": "cancelled"}.get(status["state"], "error")
        self._notify(status, event, message=status["message"], **extra)

    @staticmethod
    def _signal(process: subprocess.Popen, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    @staticmethod
    def _signal_ranks(process: subprocess.Popen, signum: int) -> None:
        import psutil

        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            with contextlib.suppress(psutil.Error):
                if "cortex_rpc.training.worker" in " ".join(child.cmdline()):
                    child.send_signal(signum)

    def _kill_later(self, process: subprocess.Popen) -> None:
        try:
            process.wait(CANCEL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self._signal(process, signal.SIGKILL)
