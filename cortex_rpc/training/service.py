"""``cortex/startTraining`` as a plain function: resolve, propose, prepare the data, start a job.

The server wires this to the protocol; scripts and tests call it directly. No mlx here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config.smart import MachineProfile, Proposal
from ..config.training_config import method_conflict
from ..errors import CortexError, InvalidParams
from ..models.base_identity import check_base
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
    method: str | None = None,
    submit: bool = True,
    machine: MachineProfile | None = None,
) -> dict[str, Any]:
    """Start a job training ``model`` on ``dataset``; return at once with its id and config.

    Everything that can be checked before the worker starts is checked here, so a bad name,
    an existing model, a broken dataset or an invalid config field is an error reply and not
    a failed job. With ``continue_from`` (a fine-tuned model) the job trains a new version of
    it: from its adapter, with its layout and a replay of its data (see ``continual.py``).
    ``method`` (sft, dpo, orpo): ``config.method`` wins over it; without either, dpo for
    preference data and sft otherwise.
    A run whose estimated memory exceeds what ``machine`` (this one when None) has usable is
    refused with ``insufficient-memory`` before anything starts.
    """
    from ..config.proposal import propose_for_model
    from ..datasets import load, prepare_dataset

    requested_at = time.monotonic()
    from .continual import DEFAULT_REPLAY_FRACTION, continuation, mix_replay

    # Name first: a bad or taken name is the cheapest mistake to report (jobs.start checks
    # it again under its own rules, for callers that come to it directly).
    output_path(output_name, jobs.home.models)
    model_dir = resolve_model(model, model_dirs, jobs.home)
    marker = read_marker(model_dir)
    previous = None
    if continue_from is not None:
        previous = continuation(resolve_model(continue_from, model_dirs, jobs.home), config)
        base = previous["base"]
        if model_dir.resolve() == previous["adapterDir"].resolve():
            model_dir = base
        elif model_dir.resolve() != base.resolve():
            # Another folder with the same weights (a newer snapshot of the same hub repo)
            # is that base; other weights are refused, saying what differs.
            try:
                model_dir = check_base(previous["marker"], model_dir, previous["adapterDir"].name)
            except CortexError as error:
                raise InvalidParams(error.message, field="model") from error
        marker, config = None, previous["overrides"]
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
        method=method,
        home=jobs.home,
        machine=machine,
        steps_per_eval=(options or WorkerOptions()).steps_per_eval,
    )
    if not proposal.fits_in_memory:
        raise insufficient_memory(proposal)
    chosen = proposal.config
    conflict = method_conflict(chosen)
    if conflict is not None:
        raise InvalidParams(f"config.method: {conflict}", field="config.method")
    replayed: dict[str, Any] = {}

    def prepare(data_dir: Path) -> dict[str, Any]:
        prepared = prepare_dataset(loaded, data_dir, seed=chosen.seed, method=chosen.method)
        info = prepared.to_wire()
        if previous is not None:
            fraction = DEFAULT_REPLAY_FRACTION if replay_fraction is None else replay_fraction
            replay = mix_replay(Path(info["trainPath"]), previous["marker"], fraction, chosen.seed)
            info["replay"] = replay  # the worker records it under continuedFrom too
            replayed.update(replay)
        return info

    estimate = proposal.estimate
    started = jobs.start(
        model_dir,
        None,
        output_name,
        chosen,
        options=options,
        prepare=prepare,
        submit=submit,
        estimate={**estimate.to_wire(), "shape": estimate.shape.to_wire()}
        if estimate is not None and estimate.shape is not None
        else None,
        requested_at=requested_at,
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
        "memory": proposal.memory,
    }


def insufficient_memory(proposal: Proposal) -> CortexError:
    """Return the refusal of a run that would not fit, saying what to change."""
    memory = proposal.memory
    gb = 1e9
    return CortexError(
        "insufficient-memory",
        f"This run needs about {memory['neededBytes'] / gb:.2f} GB but only "
        f"{memory['budgetBytes'] / gb:.2f} GB is usable ({memory['source']}), even with "
        "every saving the smart config may apply. Close other applications, pick a smaller "
        "model, or lower batchSize or maxSeqLength (or set quantizationBits: 4 and "
        "gradCheckpoint: true if you overrode them)."
        + (
            " Quantizing in memory still loads the full-precision weights first: convert "
            "the model to 4 bits once (mlx_lm.convert --quantize) and train on that."
            if proposal.config.quantization_bits and not proposal.model.quantization_bits
            else ""
        ),
        neededBytes=memory["neededBytes"],
        budgetBytes=memory["budgetBytes"],
        usableBytes=memory["usableBytes"],
        config=proposal.config.to_wire(),
    )


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
    if payload.get("rewardAccuracy") is not None:  # preference training (DPO/ORPO)
        parts.append(f"acc {payload['rewardAccuracy']:.0%}")
    if payload.get("margin") is not None:
        parts.append(f"margin {payload['margin']:.2f}")
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
