"""``cortex/startTraining`` as a plain function: resolve, propose, prepare the data, start a job.

The server wires this to the protocol; scripts and tests call it directly. No mlx here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config.training_config import method_conflict
from ..errors import InvalidParams
from ..models.fine_tuned import marker_base_path, output_path, read_marker
from ..models.registry import resolve_model
from ..units import human_duration
from .contract import TERMINAL_STATES, WorkerOptions
from .jobs import TrainingJobs


def start_training(
    jobs: TrainingJobs,
    *,
    model: str,
    dataset: str,
    output_name: str,
    preset: str = "balanced",
    config: dict[str, Any] | None = None,
    dataset_format: str | None = None,
    model_dirs: Iterable[str] = (),
    options: WorkerOptions | None = None,
    continue_from: str | None = None,
    replay_fraction: float | None = None,
    submit: bool = True,
) -> dict[str, Any]:
    """Start a job training ``model`` on ``dataset``; return at once with its id and config.

    Everything that can be checked before the worker starts is checked here, so a bad name,
    an existing model, a broken dataset or an invalid config field is an error reply and not
    a failed job. With ``continue_from`` (a fine-tuned model) the job trains a new version of
    it: from its adapter, with its layout and a replay of its data (see ``continual.py``).
    """
    from ..config.proposal import propose_for_model
    from ..datasets import load, prepare_dataset
    from .continual import DEFAULT_REPLAY_FRACTION, continuation, mix_replay

    # Name first: a bad or taken name is the cheapest mistake to report (jobs.start checks
    # it again under its own rules, for callers that come to it directly).
    output_path(output_name, jobs.home.models)
    model_dir = resolve_model(model, model_dirs, jobs.home)
    marker = read_marker(model_dir)
    previous = None
    if continue_from is not None:
        previous = continuation(resolve_model(continue_from, model_dirs, jobs.home), config)
        if model_dir.resolve() not in (
            previous["base"].resolve(),
            previous["adapterDir"].resolve(),
        ):
            raise InvalidParams(
                f"{continue_from} was trained on {previous['base']}, not {model_dir}",
                field="model",
            )
        model_dir, marker, config = previous["base"], None, previous["overrides"]
        continued = {"name": previous["adapterDir"].name, "path": str(previous["adapterDir"])}
        options = replace(
            options or WorkerOptions(), **previous["options"], continued_from=continued
        )
    if marker is not None:
        raise InvalidParams(
            f"{model_dir.name} is a fine-tuned adapter, not a base model; train on its base "
            f"{marker_base_path(marker)} instead",
            field="model",
        )
    # The one read and parse of the user's file: the proposal and the job's data come from it.
    loaded = load(dataset, dataset_format).check()
    proposal = propose_for_model(
        str(model_dir),
        dataset=loaded,
        preset=preset,
        overrides=config,
        model_dirs=model_dirs,
        overrides_field="config",
    )
    chosen = proposal.config
    conflict = method_conflict(chosen)
    if conflict is not None:
        raise InvalidParams(f"config.method: {conflict}", field="config.method")
    replayed: dict[str, Any] = {}

    def prepare(data_dir: Path) -> dict[str, Any]:
        prepared = prepare_dataset(loaded, data_dir, seed=chosen.seed)
        info = prepared.to_wire()
        if previous is not None:
            fraction = DEFAULT_REPLAY_FRACTION if replay_fraction is None else replay_fraction
            replay = mix_replay(Path(info["trainPath"]), previous["marker"], fraction, chosen.seed)
            info["replay"] = replay  # the worker records it under continuedFrom too
            replayed.update(replay)
        return info

    started = jobs.start(
        model_dir, None, output_name, chosen, options=options, prepare=prepare, submit=submit
    )
    if previous is not None:
        started["continuedFrom"] = {**continued, "replay": replayed}
    return {
        **started,
        "preset": preset,
        "explanations": proposal.explanations,
        "estimate": proposal.estimate.to_wire() if proposal.estimate else None,
        "fitsInMemory": proposal.fits_in_memory,
        "trainingView": proposal.training_view.to_wire() if proposal.training_view else None,
    }


@dataclass(frozen=True)
class WorkDoneUpdate:
    """One ``$/progress`` step derived from a trainingProgress payload."""

    kind: str  # "report" or "end"
    message: str
    percentage: int | None = None


def progress_message(payload: dict[str, Any]) -> str:
    """Return the short status line editors show, e.g. ``Epoch 2/4 · loss 0.85``."""
    state = payload.get("state")
    if state in TERMINAL_STATES or state == "queued":
        return payload.get("message") or str(state).capitalize()
    parts = []
    if payload.get("totalEpochs"):
        total = math.ceil(payload["totalEpochs"])
        current = min(total, max(1, math.ceil(payload.get("epoch") or 0)))
        parts.append(f"Epoch {current}/{total}")
    if payload.get("totalIterations"):
        parts.append(f"step {payload.get('iteration') or 0}/{payload['totalIterations']}")
    if payload.get("trainLoss") is not None:
        parts.append(f"loss {payload['trainLoss']:.3f}")
    if payload.get("etaSeconds") is not None:
        parts.append(f"ETA {human_duration(payload['etaSeconds'])}")
    return " · ".join(parts) or payload.get("message") or "Training"


def work_done_update(payload: dict[str, Any]) -> WorkDoneUpdate:
    """Map a trainingProgress payload to the ``$/progress`` report or end it implies."""
    message = progress_message(payload)
    if payload.get("state") in TERMINAL_STATES:
        return WorkDoneUpdate("end", message)
    total = payload.get("totalIterations") or 0
    percentage = int(100 * (payload.get("iteration") or 0) / total) if total else None
    return WorkDoneUpdate("report", message, percentage)
