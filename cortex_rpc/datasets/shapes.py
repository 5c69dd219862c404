"""Record shapes: which shape a record has, its JSON Schema check, semantic checks, messages.

Each shape has a schema in ``schemas/dataset/<shape>.schema.json``. Records are checked with
a validator compiled from that schema (fastjsonschema, about 10x faster than jsonschema);
only a record that fails is re-checked with jsonschema, which names every failing path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from ..schemas import load_schema

SHAPES = ("prompt-response", "prompt-completion", "text", "chat", "alpaca", "sharegpt", "dolly")
# Recognised but not trainable yet: one error per record says so (and how to convert it).
PREFERENCE = "preference"
CHAT_SHAPES = ("chat", "sharegpt")
EXAMPLE = {
    "prompt-response": '{"prompt": "What is Python?", "response": "A programming language."}',
    "chat": '{"messages": [{"role": "user", "content": "Hi"}, '
    '{"role": "assistant", "content": "Hello!"}]}',
}
# Keys people write for the guide's prompt/response record, and what they should be.
NEAR_MISS = {
    "question": "prompt",
    "query": "prompt",
    "input": "prompt",
    "instruction": "prompt",
    "answer": "response",
    "output": "response",
    "reply": "response",
    "completion": "response",
    "target": "response",
}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "tool": "tool",
    "function_call": "assistant",
    "observation": "tool",
}
_TEXT_FIELDS = {
    "prompt-response": ("prompt", "response"),
    "prompt-completion": ("prompt", "completion"),
    "text": ("text",),
    "alpaca": ("instruction", "output"),
    "dolly": ("instruction", "response"),
}
PREFERENCE_MESSAGE = (
    "preference data (prompt/chosen/rejected): cortex trains supervised fine-tuning only; "
    "preference training (DPO/ORPO) is coming — convert to prompt/response by keeping the "
    "chosen answer"
)


@dataclass(frozen=True)
class Problem:
    """A problem inside one record, located by a JSON path (resolved to a range later)."""

    code: str
    message: str
    path: tuple = ()
    target: str = "value"  # "value" or "key" of ``path``; the whole record when path is ()
    data: dict[str, Any] | None = None


def detect_shape(record: dict[str, Any]) -> str | None:
    """Return the shape a record is meant to have, from its keys (None if unrecognisable)."""
    if ("chosen" in record and "rejected" in record) or "preferred_output" in record:
        return PREFERENCE
    if "messages" in record:
        return "chat"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and ("output" in record or "input" in record):
        return "alpaca"
    if "instruction" in record and "response" in record:
        return "dolly"
    if "completion" in record and "prompt" in record:
        return "prompt-completion"
    if "prompt" in record or "response" in record:
        return "prompt-response"
    if "text" in record:
        return "text"
    if any(key in NEAR_MISS for key in record):
        return "prompt-response"
    return None


@cache
def compiled_validator(shape: str) -> Any:
    import fastjsonschema

    return fastjsonschema.compile(load_schema(f"dataset/{shape}.schema.json"))


@cache
def full_validator(shape: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(f"dataset/{shape}.schema.json"))


def _type_name(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _field(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "record"


def schema_problems(record: dict[str, Any], shape: str) -> list[Problem]:
    """Return the schema problems of ``record`` for ``shape`` (fast when there are none)."""
    try:
        compiled_validator(shape)(record)
        return []
    except Exception:  # noqa: BLE001 - any failure: ask jsonschema for the full story
        pass
    problems = []
    renames = _renames(record) if shape == "prompt-response" else {}
    for error in full_validator(shape).iter_errors(record):
        path = tuple(error.absolute_path)
        kind = error.validator
        if kind == "required":
            missing = error.message.split("'")[1]
            problems.append(_missing(path, missing, shape, renames))
        elif kind == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for key in error.instance:
                if key in allowed or renames.get(key):
                    continue
                problems.append(
                    Problem(
                        "unknown-key",
                        f'Unknown key "{key}" in {_field(path)} is ignored by training; remove it '
                        f"(known keys: {', '.join(allowed)})",
                        (*path, key),
                        "key",
                        {"key": key},
                    )
                )
        elif kind == "enum" and path and path[-1] in ("role", "from"):
            allowed = ", ".join(error.validator_value)
            problems.append(
                Problem(
                    "unknown-role",
                    f'Unknown role "{error.instance}" in {_field(path)}; use one of: {allowed}',
                    path,
                )
            )
        elif kind == "minItems":
            problems.append(
                Problem(
                    "empty-field",
                    f"{_field(path)} is empty; add a user message and the assistant reply to learn",
                    path,
                )
            )
        elif kind == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            if not path:
                continue  # a non-object record is reported before shapes are considered
            problems.append(
                Problem(
                    "wrong-type",
                    f"{_field(path)} must be a {expected}, not {_type_name(error.instance)}",
                    path,
                )
            )
        else:
            problems.append(Problem("wrong-type", f"{_field(path)}: {error.message}", path))
    return problems


def _renames(record: dict[str, Any]) -> dict[str, str]:
    """Return near-miss keys of a prompt/response record and the key each should be."""
    out = {}
    for key, target in NEAR_MISS.items():
        if key in record and target not in record and target not in out.values():
            out[key] = target
    return out


def _missing(path: tuple, missing: str, shape: str, renames: dict[str, str]) -> Problem:
    where = f"in {_field(path)}" if path else "in this record"
    for key, target in renames.items():
        if target == missing:
            return Problem(
                "missing-field",
                f'Missing "{missing}" {where}: rename "{key}" to "{missing}"',
                (key,),
                "key",
                {"rename": {"from": key, "to": missing}},
            )
    hint = f"; e.g. {EXAMPLE[shape]}" if shape in EXAMPLE and not path else ""
    if path and path[0] == "messages" and missing == "content":
        hint = "; give every message its text in content"
    return Problem(
        "missing-field", f'Missing "{missing}" {where}{hint}', path, "value", {"field": missing}
    )


def semantic_problems(record: dict[str, Any], shape: str) -> list[Problem]:
    """Return empty fields and chat role-order problems (what the schema cannot say)."""
    problems = []
    for key in _TEXT_FIELDS.get(shape, ()):
        value = record.get(key)
        if isinstance(value, str) and not value.strip():
            problems.append(
                Problem(
                    "empty-field",
                    f'"{key}" is empty; write the '
                    f"{'text to learn' if key != 'prompt' else 'prompt'} or "
                    "remove this record",
                    (key,),
                )
            )
    if shape == "chat":
        messages = record.get("messages")
        if isinstance(messages, list):
            turns = [(m.get("role"), m.get("content"), m) for m in messages if isinstance(m, dict)]
            problems += _role_problems("messages", "role", "content", turns)
    elif shape == "sharegpt":
        turns_raw = record.get("conversations")
        if isinstance(turns_raw, list):
            turns = [
                (SHAREGPT_ROLES.get(t.get("from")), t.get("value"), t)
                for t in turns_raw
                if isinstance(t, dict)
            ]
            problems += _role_problems("conversations", "from", "value", turns)
    return problems


def _role_problems(
    list_key: str, role_key: str, content_key: str, turns: list[tuple[Any, Any, dict]]
) -> list[Problem]:
    problems: list[Problem] = []
    previous = None
    last_index = None
    has_assistant = False
    for index, (role, content, message) in enumerate(turns):
        if not isinstance(role, str):
            continue
        if (
            role in ("user", "assistant", "system")
            and isinstance(content, str)
            and not content.strip()
            and not message.get("tool_calls")
        ):
            problems.append(
                Problem(
                    "empty-field",
                    f"{list_key}[{index}] has empty {content_key}; write the "
                    f"{role}'s text or remove the message",
                    (list_key, index, content_key),
                )
            )
        if role in ("tool", "function"):
            continue
        path = (list_key, index, role_key)
        if role == "system" and index != 0:
            problems.append(
                Problem(
                    "role-order",
                    f"A system message may only come first "
                    f"({list_key}[{index}]); move it to the start",
                    path,
                )
            )
        elif role == "assistant" and previous in (None, "system"):
            problems.append(
                Problem(
                    "role-order",
                    f"{list_key}[{index}]: the conversation "
                    "must start with a user message before the assistant",
                    path,
                )
            )
        elif role in ("user", "assistant") and role == previous:
            problems.append(
                Problem(
                    "role-order",
                    f"{list_key}[{index}]: two {role} messages "
                    "in a row; user and assistant must alternate (chat "
                    "templates refuse otherwise)",
                    path,
                )
            )
        has_assistant |= role == "assistant"
        previous = role
        last_index = index
    if turns and not has_assistant:
        problems.append(
            Problem(
                "no-assistant",
                f"No assistant message in {list_key}: add the "
                "assistant's reply, which is what the model learns",
                (list_key,),
            )
        )
    elif previous is not None and previous != "assistant" and last_index is not None:
        problems.append(
            Problem(
                "role-order",
                f"The last message ({list_key}[{last_index}]) "
                "is not from the assistant; end with the reply to learn",
                (list_key, last_index, role_key),
            )
        )
    return problems


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def conversation(record: dict[str, Any], shape: str) -> list[tuple[str, str]]:
    """Return the record as (role, text) turns; role "text" for plain-text records."""
    if shape == "prompt-response":
        return [
            ("user", _content_text(record.get("prompt"))),
            ("assistant", _content_text(record.get("response"))),
        ]
    if shape == "prompt-completion":
        return [
            ("user", _content_text(record.get("prompt"))),
            ("assistant", _content_text(record.get("completion"))),
        ]
    if shape == "text":
        return [("text", _content_text(record.get("text")))]
    if shape == "alpaca":
        prompt = _content_text(record.get("instruction"))
        extra = _content_text(record.get("input"))
        turns = [("system", record["system"])] if isinstance(record.get("system"), str) else []
        return turns + [
            ("user", f"{prompt}\n\n{extra}" if extra.strip() else prompt),
            ("assistant", _content_text(record.get("output"))),
        ]
    if shape == "dolly":
        prompt = _content_text(record.get("instruction"))
        extra = _content_text(record.get("context"))
        return [
            ("user", f"{prompt}\n\n{extra}" if extra.strip() else prompt),
            ("assistant", _content_text(record.get("response"))),
        ]
    if shape == "chat":
        return [
            (str(m.get("role")), _content_text(m.get("content")))
            for m in record.get("messages", [])
            if isinstance(m, dict)
        ]
    if shape == "sharegpt":
        turns = [("system", record["system"])] if isinstance(record.get("system"), str) else []
        return turns + [
            (SHAREGPT_ROLES.get(t.get("from"), str(t.get("from"))), _content_text(t.get("value")))
            for t in record.get("conversations", [])
            if isinstance(t, dict)
        ]
    return []


def check_record(record: Any) -> tuple[str | None, list[Problem]]:
    """Return the record's shape and every schema and semantic problem in it."""
    if not isinstance(record, dict):
        return None, [
            Problem(
                "wrong-type",
                f"Each record must be a JSON object such as {EXAMPLE['prompt-response']}"
                f", not {_type_name(record)}",
            )
        ]
    shape = detect_shape(record)
    if shape is None:
        keys = ", ".join(f'"{k}"' for k in list(record)[:5]) or "no keys"
        return None, [
            Problem(
                "unknown-shape",
                f"Unrecognised record ({keys}); use prompt/response, "
                "prompt/completion, text, messages (chat), instruction/output (Alpaca) or "
                f"conversations (ShareGPT), e.g. {EXAMPLE['prompt-response']}",
            )
        ]
    if shape == PREFERENCE:
        return shape, [Problem("preference-data", PREFERENCE_MESSAGE, (), "value", _chosen(record))]
    problems = schema_problems(record, shape)
    return shape, problems + semantic_problems(record, shape) + loss_problems(record, shape)


def _chosen(record: dict[str, Any]) -> dict[str, Any] | None:
    """Return the quick fix's data: the record as prompt/response keeping the chosen answer."""
    if "preferred_output" in record:  # OpenAI: input{messages}, preferred_output[messages]
        source = record.get("input")
        prompt_turns = source.get("messages") if isinstance(source, dict) else None
        chosen: Any = record.get("preferred_output")
    else:  # TRL: prompt (string or messages), chosen/rejected (string or messages)
        prompt_turns = record.get("prompt")
        chosen = record.get("chosen")

    def text(value: Any, roles: tuple[str, ...]) -> str | None:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            parts = [
                _content_text(m.get("content"))
                for m in value
                if isinstance(m, dict) and m.get("role") in roles
            ]
            return "\n\n".join(p for p in parts if p)
        return None

    prompt = text(prompt_turns, ("user", "system")) if prompt_turns is not None else ""
    answer = text(chosen, ("assistant",))
    if prompt is None or not answer:
        return None
    return {"convert": {"prompt": prompt, "response": answer}}


def loss_problems(record: dict[str, Any], shape: str) -> list[Problem]:
    """Return what training would lose or ignore silently: non-text parts, weights, context."""
    problems: list[Problem] = []
    if shape == "dolly" and isinstance(record.get("context"), str) and record["context"].strip():
        problems.append(
            Problem(
                "dolly-context",
                'Dolly record: "context" is appended to the instruction (after a blank '
                "line) as the prompt; the model learns the response",
                ("context",),
                "key",
            )
        )
    if shape != "chat" or not isinstance(record.get("messages"), list):
        return problems
    for index, message in enumerate(record["messages"]):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            for part_index, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    continue
                problems.append(
                    Problem(
                        "content-part-dropped",
                        f"messages[{index}].content[{part_index}] is a "
                        f"{kind or _type_name(part)!s} part: cortex trains text only, so "
                        "it is dropped (the text parts are joined); describe it in a text "
                        "part to keep it",
                        ("messages", index, "content", part_index),
                    )
                )
        if "weight" in message:
            problems.append(
                Problem(
                    "weight-ignored",
                    f"messages[{index}].weight is not honoured yet: training ignores it and "
                    "learns the last assistant message of the record (earlier turns are "
                    "masked as prompt; every token when prompt masking is off); split the "
                    "conversation to learn other turns",
                    ("messages", index, "weight"),
                    "key",
                )
            )
    return problems
