"""The training pipeline's contract: what crosses from server to worker and back. No mlx here.

Three processes meet at these types. The server writes a ``JobSpec`` to ``spec.json``; the
worker reads it back with ``JobSpec.read`` and reports ``WorkerEvent``s, one JSON line each,
on its event fd; the job manager decodes them with ``decode_event`` and keeps a
``JobStatus`` per job, from which every ``cortex/trainingProgress`` notification and
``cortex/listJobs`` entry is derived. ``schemas/rpc`` and the clients' copies of the wire
shapes are checked against this module by ``tests/training/test_contract.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from ..config.training_config import TrainingConfig, camel_to_snake, snake_to_camel
from ..errors import InvalidParams
from ..paths import write_atomic


class JobState(str, enum.Enum):
    """Where a job is. Terminal states never change again (except by resuming)."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def active(self) -> bool:
        """True while a worker runs or will run for the job."""
        return self in ACTIVE_STATES

    @property
    def terminal(self) -> bool:
        """True once the job has ended."""
        return self in TERMINAL_STATES

    @property
    def resumable(self) -> bool:
        """True when ``resumeTraining`` can continue the job from its checkpoint."""
        return self in RESUMABLE_STATES


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING})
TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED}
)
RESUMABLE_STATES = frozenset({JobState.CANCELLED, JobState.INTERRUPTED, JobState.FAILED})


def json_safe(value: Any) -> Any:
    """Return ``value`` as JSON can hold it: NaN and infinity (a diverging loss) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _to_wire(obj: Any, *, drop_none: bool = False) -> dict[str, Any]:
    out = {}
    for f in fields(obj):
        value = json_safe(getattr(obj, f.name))
        if value is None and drop_none:
            continue
        out[snake_to_camel(f.name)] = value
    return out


def _from_wire(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Return the constructor arguments of ``cls`` found in ``data`` (unknown keys ignored)."""
    names = {f.name for f in fields(cls)}
    return {camel_to_snake(k): v for k, v in data.items() if camel_to_snake(k) in names}


# -- what the server asks the worker to do ------------------------------------------------------


@dataclass(frozen=True)
class WorkerOptions:
    """Worker settings apart from the training config.

    The first seven are what a client may set (``startTraining.options``, checked by its schema);
    the rest are set by the server itself: continual learning and the tuner's trials.
    """

    steps_per_report: int | None = None
    steps_per_eval: int | None = None
    steps_per_checkpoint: int | None = None
    val_batches: int = -1
    mask_prompt: bool = True
    lora_keys: tuple[str, ...] | None = None
    wandb: bool = False
    distributed: dict[str, Any] | None = None
    init_adapters: str | None = None
    continued_from: dict[str, Any] | None = None
    resume_from: str | None = None
    checkpoint_at_end: bool = False

    CLIENT_FIELDS: ClassVar[tuple[str, ...]] = (
        "stepsPerReport",
        "stepsPerEval",
        "stepsPerCheckpoint",
        "valBatches",
        "maskPrompt",
        "loraKeys",
        "wandb",
    )

    @classmethod
    def from_client(cls, options: dict[str, Any] | None) -> WorkerOptions:
        """Return the options a client sent (already schema-checked); others are refused."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.CLIENT_FIELDS))
        if unknown:
            raise InvalidParams(f"options.{unknown[0]} is not a worker option", field="options")
        return cls.from_wire(options)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> WorkerOptions:
        """Return the options stored in a spec."""
        args = _from_wire(cls, data)
        if args.get("lora_keys") is not None:
            args["lora_keys"] = tuple(args["lora_keys"])
        return cls(**args)

    def to_wire(self) -> dict[str, Any]:
        """Return the options as stored in ``spec.json`` (unset ones left out)."""
        return _to_wire(self, drop_none=True)


@dataclass(frozen=True)
class JobSpec:
    """Everything one worker run needs; written once per job (``resume`` flips on resume).

    Options live in their own part, so no option can overwrite a core field.
    """

    job_id: str
    model: str
    data_dir: str
    config: TrainingConfig
    output_name: str | None
    output_dir: str
    adapter_dir: str
    dataset_info: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    options: WorkerOptions = field(default_factory=WorkerOptions)

    FILE: ClassVar[str] = "spec.json"

    def to_wire(self) -> dict[str, Any]:
        """Return the spec as JSON-ready data."""
        return {
            "jobId": self.job_id,
            "model": self.model,
            "dataDir": self.data_dir,
            "config": self.config.to_wire(),
            "outputName": self.output_name,
            "outputDir": self.output_dir,
            "adapterDir": self.adapter_dir,
            "datasetInfo": self.dataset_info,
            "resume": self.resume,
            "options": self.options.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobSpec:
        """Return the spec stored in ``data``.

        Specs written before options had their own part kept them at the top level; those
        are read as options, so an interrupted job of an older version still resumes.
        """
        options = data.get("options")
        if not isinstance(options, dict):
            options = {k: v for k, v in data.items() if camel_to_snake(k) in _OPTION_NAMES}
        return cls(
            job_id=data["jobId"],
            model=data["model"],
            data_dir=data["dataDir"],
            config=TrainingConfig.from_wire(data["config"]),
            output_name=data.get("outputName"),
            output_dir=data["outputDir"],
            adapter_dir=data["adapterDir"],
            dataset_info=data.get("datasetInfo") or {},
            resume=bool(data.get("resume")),
            options=WorkerOptions.from_wire(options),
        )

    @classmethod
    def read(cls, job_dir: Path) -> JobSpec:
        """Return the spec of the job in ``job_dir``."""
        return cls.from_wire(json.loads((job_dir / cls.FILE).read_text(encoding="utf-8")))


_OPTION_NAMES = {f.name for f in fields(WorkerOptions)}


# -- what the worker reports -------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerEvent:
    """One line on the worker's event channel; ``kind`` is its ``event`` field."""

    kind: ClassVar[str] = ""
    # Ends the run: the job manager records the outcome from it after the worker exits.
    final: ClassVar[bool] = False

    def to_wire(self) -> dict[str, Any]:
        """Return ``{"event": kind, ...fields}`` (camelCase, NaN as null)."""
        return {"event": self.kind, **_to_wire(self)}


@dataclass(frozen=True)
class Blas(WorkerEvent):
    """Which BLAS library the worker bound MLX to (None: none found, MLX's own)."""

    kind: ClassVar[str] = "blas"
    name: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class Started(WorkerEvent):
    """The model and data are loaded; training begins at ``iteration``."""

    kind: ClassVar[str] = "started"
    iteration: int = 0
    total_iterations: int = 0
    examples: int = 0
    validation_examples: int = 0
    batch_size: int = 0
    num_layers: int = 0
    quantization_bits: int | None = None
    ranks: int = 1


@dataclass(frozen=True)
class Resumed(WorkerEvent):
    """The loop state was restored from the checkpoint at ``path``."""

    kind: ClassVar[str] = "resumed"
    iteration: int = 0
    path: str = ""


@dataclass(frozen=True)
class Progress(WorkerEvent):
    """One training report: the fields every progress notification and status carry."""

    kind: ClassVar[str] = "progress"
    iteration: int | None = None
    total_iterations: int | None = None
    epoch: float | None = None
    total_epochs: float | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    trained_tokens: int | None = None
    eta_seconds: float | None = None
    peak_memory_bytes: int | None = None
    # Preference training (DPO, ORPO) only: averages over the report window's pairs.
    reward_accuracy: float | None = None
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    margin: float | None = None
    chosen_logps: float | None = None
    rejected_logps: float | None = None
    # ... and over the held-out pairs at the latest validation.
    val_reward_accuracy: float | None = None
    val_margin: float | None = None


# The preference fields of Progress a training report and a validation fill in.
PREFERENCE_METRICS = (
    "reward_accuracy",
    "chosen_reward",
    "rejected_reward",
    "margin",
    "chosen_logps",
    "rejected_logps",
)
PREFERENCE_VALIDATION_METRICS = ("val_reward_accuracy", "val_margin")


@dataclass(frozen=True)
class Checkpoint(WorkerEvent):
    """A resumable checkpoint of ``iteration`` was written at ``path``."""

    kind: ClassVar[str] = "checkpoint"
    iteration: int = 0
    path: str = ""


@dataclass(frozen=True)
class Warning(WorkerEvent):  # noqa: A001 - the event's wire name
    """An adjustment the worker made, or a problem the user should know about."""

    kind: ClassVar[str] = "warning"
    message: str = ""


@dataclass(frozen=True)
class RunTiming:
    """What a finished run measured (seconds, bytes), for the calibration of estimates."""

    worker_seconds: float = 0.0  # the worker's main, from the BLAS preload to the saved model
    load_seconds: float = 0.0  # the base loaded (quantized), adapters added
    data_seconds: float = 0.0  # the splits rendered with the chat template
    save_seconds: float = 0.0  # the adapter and the output model written
    train_seconds: float = 0.0  # all training steps (no validation)
    steps: int = 0
    step_seconds: float = 0.0  # the mean steady step, after the first report (compilation)
    compile_seconds: float = 0.0  # what the first report window took beyond steady steps
    eval_seconds: float = 0.0
    evals: int = 0
    peak_memory_bytes: int = 0  # mx.get_peak_memory()
    tokens_per_second: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return _to_wire(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> RunTiming | None:
        """Return the timing ``done`` carried, or None (a worker of another version)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(**_from_wire(cls, data))
        except TypeError:
            return None


@dataclass(frozen=True)
class Done(WorkerEvent):
    """Training finished; with an ``output_path`` the model was saved there."""

    kind: ClassVar[str] = "done"
    final: ClassVar[bool] = True
    iteration: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    adapter_path: str | None = None
    evaluation: dict[str, Any] | None = None
    output_path: str | None = None
    adapter_bytes: int | None = None
    loss_curve_path: str | None = None
    timing: dict[str, Any] | None = None  # RunTiming's wire form
    # Why training ended: "completed" (every iteration) or "early-stopping".
    stop_reason: str = "completed"
    best_iteration: int | None = None
    best_val_loss: float | None = None
    kept_iteration: int | None = None  # the iteration whose adapter the output holds

    def message(self) -> str:
        """Return the job's completion message: how training ended and which adapter is kept."""
        text = "Completed"
        if self.stop_reason == "early-stopping":
            text += (
                f": stopped early at iteration {self.iteration}, validation loss no longer "
                "improving"
            )
        if self.kept_iteration is not None and self.kept_iteration != self.iteration:
            text += (
                f"{';' if ':' in text else ':'} the output holds the best adapter, iteration "
                f"{self.kept_iteration}"
                + (f" (validation loss {self.best_val_loss:.4f})" if self.best_val_loss else "")
            )
        return text


@dataclass(frozen=True)
class Cancelled(WorkerEvent):
    """The worker stopped on SIGTERM after saving a checkpoint."""

    kind: ClassVar[str] = "cancelled"
    final: ClassVar[bool] = True
    message: str = ""


@dataclass(frozen=True)
class Error(WorkerEvent):
    """The worker failed; ``code`` is the stable ``data.code`` clients match on."""

    kind: ClassVar[str] = "error"
    final: ClassVar[bool] = True
    code: str = "training-failed"
    message: str = ""


@dataclass(frozen=True)
class Result(WorkerEvent):
    """A one-shot worker's answer (evaluation): its fields as the worker computed them."""

    kind: ClassVar[str] = "result"
    final: ClassVar[bool] = True
    value: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage(WorkerEvent):
    """A one-shot worker began a step of its work (export: fuse, convert, verify)."""

    kind: ClassVar[str] = "stage"
    name: str = ""
    message: str = ""


EVENT_TYPES: dict[str, type[WorkerEvent]] = {
    cls.kind: cls
    for cls in (Blas, Started, Resumed, Progress, Checkpoint, Warning, Done, Cancelled, Error)
}
ONE_SHOT_EVENT_TYPES: dict[str, type[WorkerEvent]] = {
    cls.kind: cls for cls in (Blas, Warning, Stage, Result, Error)
}


# The generation worker serves requests from its stdin and answers each by id.


@dataclass(frozen=True)
class GenerationRequest:
    """One ``cortex/generate`` for the warm generation worker."""

    id: int
    model: str
    prompt: str
    adapter: str | None = None
    quantization_bits: int | None = None
    max_tokens: int = 128
    temperature: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        """Return the request line's JSON object."""
        return _to_wire(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> GenerationRequest:
        """Return the request a line holds (TypeError when a required field is missing)."""
        return cls(**_from_wire(cls, data))


@dataclass(frozen=True)
class Ready(WorkerEvent):
    """The generation worker is up and reads requests."""

    kind: ClassVar[str] = "ready"
    pid: int = 0


@dataclass(frozen=True)
class Chunk(WorkerEvent):
    """Text generated so far for request ``id``, as it streams."""

    kind: ClassVar[str] = "chunk"
    id: int | None = None
    text: str = ""


@dataclass(frozen=True)
class Generated(WorkerEvent):
    """Request ``id`` is answered."""

    kind: ClassVar[str] = "result"
    final: ClassVar[bool] = True
    id: int | None = None
    text: str = ""
    tokens: int = 0
    tokens_per_second: float = 0.0
    prompt_tokens: int = 0
    finish_reason: str | None = None


@dataclass(frozen=True)
class RequestError(WorkerEvent):
    """Request ``id`` failed; the worker keeps serving."""

    kind: ClassVar[str] = "error"
    final: ClassVar[bool] = True
    id: int | None = None
    code: str = "generation-failed"
    message: str = ""


GENERATION_EVENT_TYPES: dict[str, type[WorkerEvent]] = {
    cls.kind: cls for cls in (Ready, Chunk, Generated, RequestError)
}


def decode_event(
    data: Any, types: dict[str, type[WorkerEvent]] = EVENT_TYPES
) -> WorkerEvent | None:
    """Return the event a worker line holds, or None for anything outside the contract."""
    if not isinstance(data, dict):
        return None
    cls = types.get(data.get("event"))  # type: ignore[arg-type]
    if cls is None:
        return None
    try:
        return cls(**_from_wire(cls, data))
    except TypeError:
        return None


# -- what the job manager keeps and tells clients ----------------------------------------------

PROGRESS_FIELDS = tuple(snake_to_camel(f.name) for f in fields(Progress))
_PROGRESS_NAMES = frozenset(f.name for f in fields(Progress))


@dataclass(frozen=True)
class JobStatus:
    """A job's ``status.json``: its state, its latest progress and how it ended.

    ``pid``/``owner`` fields identify the worker and the server that own the job, so that
    another server can tell a live job from one whose processes vanished.
    """

    job_id: str
    state: JobState
    output_name: str | None = None
    output_path: str | None = None
    model: str | None = None
    message: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    # The latest report (status.json keeps its fields at the top level).
    progress: Progress = field(default_factory=Progress)
    checkpoint: str | None = None
    adapter_bytes: int | None = None
    error_code: str | None = None
    return_code: int | None = None
    storage_error: str | None = None
    pid: int | None = None
    pid_create_time: float | None = None
    owner_pid: int | None = None
    owner_create_time: float | None = None

    PRIVATE: ClassVar[frozenset[str]] = frozenset(
        {"pid", "pidCreateTime", "ownerPid", "ownerCreateTime", "storageError", "returnCode"}
    )

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobStatus:
        """Return the status stored in ``data`` (unknown keys of other versions ignored)."""
        args = _from_wire(cls, data)
        args["state"] = JobState(args.get("state", "interrupted"))
        args["progress"] = Progress(**_from_wire(Progress, data))
        return cls(**args)

    def to_wire(self) -> dict[str, Any]:
        """Return the status as stored in ``status.json``, progress fields at the top level."""
        wire = {
            snake_to_camel(f.name): json_safe(getattr(self, f.name))
            for f in fields(self)
            if f.name != "progress"
        }
        progress = self.progress.to_wire()
        del progress["event"]
        return {**wire, **progress}

    def changed(self, **changes: Any) -> JobStatus:
        """Return a copy with ``changes`` (snake_case names, progress fields too) applied."""
        if "state" in changes:
            changes["state"] = JobState(changes["state"])
        reported = {k: changes.pop(k) for k in list(changes) if k in _PROGRESS_NAMES}
        if reported:
            changes["progress"] = dataclasses.replace(self.progress, **reported)
        return dataclasses.replace(self, **changes)

    def with_progress(self, progress: Progress) -> JobStatus:
        """Return a copy carrying the fields ``progress`` reports (None fields keep theirs)."""
        values = {f.name: getattr(progress, f.name) for f in fields(Progress)}
        return self.changed(**{k: v for k, v in values.items() if v is not None})

    def entry(self) -> dict[str, Any]:
        """Return the job's ``cortex/listJobs`` entry."""
        entry = {k: v for k, v in self.to_wire().items() if k not in self.PRIVATE}
        entry["resumable"] = self.state.resumable
        return entry

    def notification(self, event: str, **extra: Any) -> dict[str, Any]:
        """Return a ``cortex/trainingProgress`` payload for ``event`` of this job.

        It carries the job's identity, state and latest progress, plus the event's own
        fields in ``extra`` (None values left out).
        """
        wire = self.to_wire()
        payload: dict[str, Any] = {
            "jobId": self.job_id,
            "state": self.state.value,
            "event": event,
            "outputName": self.output_name,
        }
        payload.update({k: wire[k] for k in PROGRESS_FIELDS if wire.get(k) is not None})
        payload.update({k: json_safe(v) for k, v in extra.items() if v is not None})
        return payload


# Events of cortex/trainingProgress: the worker's (minus blas, which is logged) and the job
# manager's own state changes.
NOTIFICATION_EVENTS = (
    "queued",
    "running",
    "started",
    "resumed",
    "progress",
    "checkpoint",
    "warning",
    "cancelling",
    "done",
    "cancelled",
    "error",
    "interrupted",
)


# A finished job's result, kept in its folder for a server that missed the done event.
JOB_RESULT = "result.json"


def write_job_result(job_dir: Path, result: dict[str, Any]) -> None:
    """Record a finished job's result in its folder (atomically), for a server that missed it.

    The worker outlives a server killed with SIGKILL; the next server finds the job's worker
    gone and reads this to report the job completed instead of interrupted.
    """
    write_atomic(job_dir / JOB_RESULT, result)


def read_job_result(job_dir: Path) -> dict[str, Any] | None:
    """Return the result a worker recorded with ``write_job_result``, or None."""
    try:
        result = json.loads((job_dir / JOB_RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None
