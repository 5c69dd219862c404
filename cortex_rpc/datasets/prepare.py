"""Convert a validated dataset into the train.jsonl / valid.jsonl files mlx_lm trains on."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.smart import PREFERENCE_METHODS, SFT_ON_PAIRS, method_for
from ..errors import InvalidParams
from ..paths import CortexHome, write_atomic
from .formats import RecordState
from .load import DatasetSource, LoadedDataset, as_loaded
from .preference import preference_pair
from .shapes import (
    PREFERENCE,
    as_tool,
    content_text,
    parse_call,
    sharegpt_call_id,
    sharegpt_tool_links,
    sharegpt_tools,
)


@dataclass
class PreparedDataset:
    """The training files written for a job, and where they came from."""

    source: str
    sha256: str
    format: str
    shape: str
    train_examples: int
    valid_examples: int
    train_path: str
    valid_path: str
    kind: str = "sft"  # "preference" when the files hold preference pairs
    method: str = "sft"
    warnings: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "warnings": self.warnings,
            "source": self.source,
            "sha256": self.sha256,
            "format": self.format,
            "shape": self.shape,
            "trainExamples": self.train_examples,
            "validExamples": self.valid_examples,
            "trainPath": self.train_path,
            "validPath": self.valid_path,
        }


def dataset_kind(states: list[RecordState]) -> str:
    """Return "preference" when most records are preference pairs, else "sft".

    Clients ask for the training method (SFT, DPO, ORPO) only for preference data.
    """
    pairs = sum(1 for s in states if s.shape == PREFERENCE)
    return "preference" if states and pairs * 2 > len(states) else "sft"


def check_method(loaded: LoadedDataset, method: str, field_name: str = "config.method") -> None:
    """Raise InvalidParams (code ``method-needs-preference-data``) when ``method`` is dpo or
    orpo and a record is not a preference pair, naming the first one and what to do."""
    if method not in PREFERENCE_METHODS:
        return
    other = next((s for s in loaded.records if s.shape != PREFERENCE), None)
    if other is None:
        return
    name = loaded.path.name if loaded.path is not None else "The text"
    count = sum(1 for s in loaded.records if s.shape != PREFERENCE)
    raise InvalidParams(
        f"{field_name}: {method} trains on preference pairs, but {name} has {count} record(s) "
        f"that are not (first at line {other.line + 1}: {other.shape}); give each record "
        'a "prompt", a "chosen" and a "rejected" answer, or train with method sft',
        field=field_name,
        code="method-needs-preference-data",
        line=other.line,
        shape=other.shape,
    )


def preference_record(state: RecordState) -> dict[str, Any]:
    """Return a pair as the job's files hold it: {"prompt", "chosen", "rejected"} messages.

    Messages are OpenAI-style (content parts joined to text, legacy calls as tool_calls);
    "tools" is kept when the record defines tools.
    """
    pair = preference_pair(state.data)
    if pair is None:  # a checked pair always has one
        raise ValueError(f"record on line {state.line + 1} is not a preference pair")
    record: dict[str, Any] = {
        "prompt": [_openai_message(m) for m in pair.prompt],
        "chosen": [_openai_message(m) for m in pair.chosen],
        "rejected": [_openai_message(m) for m in pair.rejected],
    }
    if pair.tools:
        record["tools"] = [as_tool(t) for t in pair.tools]
    return record


def side_record(state: RecordState, side: str) -> dict[str, Any]:
    """Return one side of a pair ("chosen" or "rejected") as a chat record: prompt + answer.

    What SFT learns from a pair (the chosen side), and how each side is counted in tokens.
    """
    record = preference_record(state)
    chat: dict[str, Any] = {"messages": record["prompt"] + record[side]}
    if "tools" in record:
        chat["tools"] = record["tools"]
    return chat


def mlx_record(state: RecordState) -> dict[str, Any]:
    """Return one record in mlx_lm's chat form, or its text form for plain-text records.

    A preference pair becomes its prompt and chosen answer (what SFT on it learns).
    """
    if state.shape == PREFERENCE:
        return side_record(state, "chosen")
    if state.shape == "text":
        return {"text": state.turns[0][1]}
    if state.shape == "chat":
        # Content parts become their text (non-text parts were reported as dropped).
        messages = [_openai_message(m) for m in state.data["messages"]]
        record: dict[str, Any] = {"messages": messages}
        tools = list(state.data.get("tools") or [])
        tools += [{"type": "function", "function": f} for f in state.data.get("functions") or []]
        if tools:
            record["tools"] = tools
        _link_legacy(messages)  # converted legacy calls get ids; OpenAI ones have theirs
        return record
    if state.shape == "sharegpt" and (
        "tools" in state.data
        or any(
            t.get("from") in ("function_call", "observation") for t in state.data["conversations"]
        )
    ):
        return _sharegpt_tools_record(state.data)
    return {"messages": [{"role": role, "content": text} for role, text in state.turns]}


def is_chat_file(states: list[RecordState]) -> bool:
    """Return True when training reads the records as chats (any record is not plain text)."""
    return not all(s.shape == "text" for s in states)


def prepared_record(state: RecordState, chat_file: bool) -> dict[str, Any]:
    """Return one record as training reads it; ``chat_file`` says the file is read as chats.

    A text record in a chat file becomes a one-turn assistant message.
    """
    if chat_file and state.shape == "text":
        return {"messages": [{"role": "assistant", "content": state.turns[0][1]}]}
    return mlx_record(state)


def prepared_records(states: list[RecordState]) -> list[dict[str, Any]]:
    """Return the records as training reads them: one mlx_lm shape for the whole file.

    A text record in a chat file becomes a one-turn assistant message, so every record of a
    file that is not all plain text is a chat.
    """
    chat_file = is_chat_file(states)
    return [prepared_record(s, chat_file) for s in states]


def _openai_message(message: dict[str, Any]) -> dict[str, Any]:
    """Return a chat message with legacy function_call as tool_calls, arguments as strings."""
    message = dict(message)
    if isinstance(message.get("content"), list):
        message["content"] = content_text(message["content"])
    call = message.pop("function_call", None)
    if isinstance(call, dict):
        message["tool_calls"] = [{"type": "function", "function": call}]
    if message.get("role") == "function":
        message["role"] = "tool"
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        message["tool_calls"] = [_string_arguments(c) for c in calls]
        if message.get("content") is None:
            message["content"] = ""
    return message


def _string_arguments(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if isinstance(function, dict) and not isinstance(function.get("arguments"), str):
        function = {**function, "arguments": json.dumps(function.get("arguments") or {})}
        call = {**call, "function": function}
    return call


def _link_legacy(messages: list[dict[str, Any]]) -> None:
    """Give converted legacy calls ids, and each converted function result its call's id."""
    pending: list[str] = []
    for number, message in enumerate(messages):
        for call in message.get("tool_calls") or []:
            if "id" not in call:
                call["id"] = f"call_{number}_{len(pending)}"
            pending.append(call["id"])
        if message.get("role") == "tool" and "tool_call_id" not in message and pending:
            message["tool_call_id"] = pending.pop(0)


def _sharegpt_tools_record(data: dict[str, Any]) -> dict[str, Any]:
    """Return a ShareGPT record with function_call/observation turns in the OpenAI form."""
    roles = {"human": "user", "gpt": "assistant"}
    messages: list[dict[str, Any]] = []
    if isinstance(data.get("system"), str):
        messages.append({"role": "system", "content": data["system"]})
    links = sharegpt_tool_links(data["conversations"])[0]  # by id, else by order
    ids: dict[int, str] = {}
    for number, turn in enumerate(data["conversations"]):
        kind, value = turn["from"], turn["value"]
        if kind == "function_call":
            call = parse_call(value) or {}
            arguments = call.get("arguments", {})
            call_id = ids[number] = sharegpt_call_id(turn) or f"call_{number}"
            tool_call = {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": call.get("name"),
                    "arguments": arguments
                    if isinstance(arguments, str)
                    else json.dumps(arguments, ensure_ascii=False),
                },
            }
            if number - 1 in ids:  # function_call turns in a row: parallel calls, one message
                messages[-1]["tool_calls"].append(tool_call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [tool_call]})
        elif kind in ("observation", "tool"):
            message = {"role": "tool", "content": value}
            if number in links:
                message["tool_call_id"] = ids[links[number]]
            messages.append(message)
        else:
            messages.append({"role": roles.get(kind, kind), "content": value})
    record: dict[str, Any] = {"messages": messages}
    tools = sharegpt_tools(data)
    if tools:
        record["tools"] = [as_tool(t) for t in tools]
    return record


def split_counts(total: int, valid_fraction: float) -> int:
    """Return how many examples go to validation: >= 1 when total >= 2, never all of them."""
    if total < 2:
        return 0
    return min(total - 1, max(1, round(total * valid_fraction)))


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def prepare_dataset(
    source: DatasetSource,
    out_dir: str | Path,
    *,
    format: str | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    method: str | None = None,
) -> PreparedDataset:
    """Write ``out_dir/train.jsonl`` and ``valid.jsonl`` from any accepted dataset.

    ``source`` is a dataset path or a dataset loaded from a file (then it is not read again).
    Every record is converted to one shape (mlx_lm picks the format from the first record):
    chat messages, or ``{"text"}`` when the whole file is plain text; for ``method`` dpo or
    orpo, preference pairs ``{"prompt", "chosen", "rejected"}`` (every record must be one:
    InvalidParams ``method-needs-preference-data`` otherwise). ``method`` None: by the data
    (dpo for preference data, else sft); sft on preference pairs keeps the chosen answers,
    with a warning. The split is a shuffle by ``seed``, so the same seed gives the same
    split. The source is only read. Raises CortexError ``dataset-invalid`` when the dataset
    has errors.
    """
    loaded = as_loaded(source, format)
    if loaded.path is None or loaded.sha256 is None:
        raise ValueError("prepare_dataset needs a dataset loaded from a file, not from text")
    states = loaded.check().records
    kind = dataset_kind(states)
    method = method_for(kind, method, None)
    check_method(loaded, method, "method")
    all_text = all(s.shape == "text" for s in states)
    warnings = []
    if method in PREFERENCE_METHODS:
        records = [preference_record(s) for s in states]
    else:
        records = prepared_records(states)
        if any(s.shape == PREFERENCE for s in states):
            warnings.append(SFT_ON_PAIRS)
    if any(s.split == "validation" for s in states):  # the file's own split (JSON train/validation)
        train = [r for r, s in zip(records, states, strict=True) if s.split is None]
        valid = [r for r, s in zip(records, states, strict=True) if s.split == "validation"]
    else:
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        n_valid = split_counts(len(records), valid_fraction)
        valid = [records[i] for i in order[:n_valid]]
        train = [records[i] for i in order[n_valid:]]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "train.jsonl", train)
    _write_jsonl(out_dir / "valid.jsonl", valid)
    return PreparedDataset(
        source=str(loaded.path),
        sha256=loaded.sha256,
        format=loaded.format,
        shape=PREFERENCE if method in PREFERENCE_METHODS else "text" if all_text else "chat",
        train_examples=len(train),
        valid_examples=len(valid),
        train_path=str(out_dir / "train.jsonl"),
        valid_path=str(out_dir / "valid.jsonl"),
        kind=kind,
        method=method,
        warnings=warnings,
    )


def default_out_dir(home: CortexHome) -> Path:
    """Return a new folder under ``HOME/datasets/prepared`` for prepared files."""
    import tempfile

    base = home.datasets / "prepared"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base))
