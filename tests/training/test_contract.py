"""The pipeline contract, and every copy of it outside Python, agree (no mlx, no worker)."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest

from cortex_rpc.config.training_config import TrainingConfig, snake_to_camel
from cortex_rpc.errors import CortexError, InvalidParams
from cortex_rpc.schemas import load_schema
from cortex_rpc.training import contract
from cortex_rpc.training.contract import (
    EVENT_TYPES,
    NOTIFICATION_EVENTS,
    TERMINAL_STATES,
    JobSpec,
    JobState,
    JobStatus,
    WorkerOptions,
    decode_event,
)
from cortex_rpc.training.jobs import TrainerSlot

ROOT = Path(__file__).resolve().parents[2]
NOTIFICATION_SCHEMA = "rpc/trainingProgress.notification.schema.json"


def _spec(**options) -> JobSpec:
    return JobSpec(
        job_id="20260101-000000-abcdef",
        model="/models/tiny",
        data_dir="/jobs/x/data",
        config=TrainingConfig(iterations=10),
        output_name="tiny-ft",
        output_dir="/home/mlx_models",
        adapter_dir="/jobs/x/final",
        options=WorkerOptions(**options),
    )


def test_a_spec_round_trips_and_options_cannot_overwrite_core_fields():
    spec = _spec(steps_per_report=2, lora_keys=("self_attn.q_proj",), resume_from="/ckpt")
    wire = json.loads(json.dumps(spec.to_wire()))
    assert JobSpec.from_wire(wire) == spec
    # Options live in their own part: a key named like a core field stays an option.
    assert {"stepsPerReport", "loraKeys", "resumeFrom"} <= set(wire["options"])
    core = {snake_to_camel(f.name) for f in fields(JobSpec)}
    assert set(wire) == core and not core & (set(wire["options"]) - {"options"})
    assert wire["outputName"] == "tiny-ft"


def test_a_client_option_named_like_a_core_field_is_refused():
    with pytest.raises(InvalidParams) as error:
        WorkerOptions.from_client({"stepsPerReport": 1, "outputName": None})
    assert error.value.data["field"] == "options"
    with pytest.raises(InvalidParams):
        WorkerOptions.from_client({"resumeFrom": "/elsewhere"})  # server-only option
    assert WorkerOptions.from_client({"maskPrompt": False}).mask_prompt is False


def test_a_spec_written_by_an_older_version_still_reads():
    """Specs once kept options at the top level: an interrupted old job must still resume."""
    legacy = {**_spec().to_wire(), "stepsPerReport": 3, "initAdapters": "/a.safetensors"}
    del legacy["options"]
    spec = JobSpec.from_wire(legacy)
    assert spec.options.steps_per_report == 3
    assert spec.options.init_adapters == "/a.safetensors"


def test_client_options_are_exactly_the_schema_options():
    schema = load_schema("rpc/startTraining.params.schema.json")
    assert set(schema["properties"]["options"]["properties"]) == set(WorkerOptions.CLIENT_FIELDS)
    names = {snake_to_camel(f.name) for f in fields(WorkerOptions)}
    assert set(WorkerOptions.CLIENT_FIELDS) <= names


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_worker_event_round_trips(kind):
    cls = EVENT_TYPES[kind]
    event = cls()
    wire = json.loads(json.dumps(event.to_wire()))
    assert wire["event"] == kind
    assert decode_event(wire) == event


def test_lines_outside_the_contract_decode_to_none():
    assert decode_event({"event": "telemetry", "x": 1}) is None
    assert decode_event(["progress"]) is None
    assert decode_event({"event": "progress", "iteration": 3, "futureField": 1}).iteration == 3
    nan = contract.Progress(train_loss=float("nan")).to_wire()
    assert nan["trainLoss"] is None  # JSON has no NaN: a diverging loss is null


def test_states_are_partitioned():
    assert {s for s in JobState if s.active} | {s for s in JobState if s.terminal} == set(JobState)
    assert not any(s.active and s.terminal for s in JobState)
    assert all(s.terminal for s in JobState if s.resumable)


def _notifications() -> list[dict]:
    status = JobStatus(job_id="j", state=JobState.RUNNING, output_name="m").with_progress(
        contract.Progress(iteration=1, total_iterations=2, train_loss=1.5)
    )
    started = contract.Started(examples=4).to_wire()
    started.pop("event")
    done = contract.Done(output_path="/m", adapter_bytes=3, evaluation={"valLoss": 1.0})
    return [
        status.notification("progress"),
        status.notification("started", **{k: v for k, v in started.items() if k != "iteration"}),
        status.notification("resumed", path="/ckpt"),
        status.notification("checkpoint", checkpointPath="/ckpt"),
        status.changed(state=JobState.COMPLETED).notification(
            "done",
            message="Completed",
            outputPath=done.output_path,
            adapterBytes=done.adapter_bytes,
            evaluation=done.evaluation,
            lossCurvePath="/m/loss-curve.svg",
            stopReason="early-stopping",
            bestIteration=4,
            bestValLoss=1.25,
            keptIteration=4,
        ),
        status.changed(state=JobState.FAILED).notification("error", message="x", code="y"),
    ]


def test_notifications_match_the_published_schema():
    schema = load_schema(NOTIFICATION_SCHEMA)
    assert schema["properties"]["state"]["enum"] == [s.value for s in JobState]
    assert schema["properties"]["event"]["enum"] == list(NOTIFICATION_EVENTS)
    progress = {snake_to_camel(f.name) for f in fields(contract.Progress)}
    assert progress <= set(schema["properties"])
    for payload in _notifications():
        jsonschema.validate(payload, schema)


def test_the_clients_copies_of_the_states_match():
    terminal = {s.value for s in TERMINAL_STATES}
    states = {s.value for s in JobState}
    types_ts = (ROOT / "clients/vscode/src/core/types.ts").read_text()
    ts_states = re.search(r"export type JobState = ([^;]+);", types_ts).group(1)
    assert set(re.findall(r'"(\w+)"', ts_states)) == states
    ts_terminal = re.search(r"TERMINAL_STATES[^=]*= \[([^\]]+)\]", types_ts).group(1)
    assert set(re.findall(r'"(\w+)"', ts_terminal)) == terminal
    lua = (ROOT / "clients/neovim/lua/cortex/init.lua").read_text()
    assert set(re.findall(r"(\w+) = true", re.search(r"TERMINAL = \{([^}]+)\}", lua).group(1))) == (
        terminal
    )
    mjs = (ROOT / "clients/scripts/train.mjs").read_text()
    assert set(re.findall(r'"(\w+)"', re.search(r"TERMINAL = \[([^\]]+)\]", mjs).group(1))) == (
        terminal
    )
    script = (ROOT / "clients/scripts/train.py").read_text()
    assert set(re.findall(r'"(\w+)"', re.search(r"TERMINAL = \(([^)]+)\)", script).group(1))) == (
        terminal
    )
    from cortex_client.client import TERMINAL_STATES as client_terminal

    assert {str(s.value if isinstance(s, JobState) else s) for s in client_terminal} == terminal


def test_the_vscode_progress_type_names_only_fields_the_server_sends():
    types_ts = (ROOT / "clients/vscode/src/core/types.ts").read_text()
    body = re.search(r"export interface TrainingProgress \{(.*?)\n\}", types_ts, re.S).group(1)
    declared = set(re.findall(r"^\s+(\w+)\??:", body, re.M))
    assert declared <= set(load_schema(NOTIFICATION_SCHEMA)["properties"])


def test_the_trainer_slot_is_first_come_first_served():
    slot, order = TrainerSlot(), []
    slot.request("a", lambda: order.append("a"))
    slot.request("b", lambda: order.append("b"))
    slot.request("c", lambda: order.append("c"))
    assert order == ["a"] and slot.holder == "a"
    assert slot.withdraw("b")
    slot.release("a")
    assert order == ["a", "c"] and slot.holder == "c"
    slot.release("c")
    assert slot.holder is None


def test_holding_the_slot_waits_for_the_job_in_training_and_can_be_cancelled():
    slot = TrainerSlot()
    slot.request("job", lambda: None)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(CortexError) as error, slot.hold("evaluation", cancel):
        pass
    assert error.value.code == "cancelled"
    entered = threading.Event()

    def evaluate() -> None:
        with slot.hold("evaluation"):
            entered.set()

    thread = threading.Thread(target=evaluate)
    thread.start()
    assert not entered.wait(0.3)  # the job still trains
    slot.release("job")
    thread.join(5)
    assert entered.is_set() and slot.holder is None
