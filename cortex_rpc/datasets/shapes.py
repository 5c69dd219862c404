"""Record shapes: which shape a record has, its JSON Schema check, semantic checks, messages.

Each shape has a schema in ``schemas/dataset/<shape>.schema.json``. Records are checked with
a validator compiled from that schema (fastjsonschema, about 10x faster than jsonschema);
only a record that fails is re-checked with jsonschema, which names every failing path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..schemas import load_schema
from .positions import key_count

try:
    from orjson import dumps as _strict_dumps
    from orjson import loads as _strict_loads  # accepts only what json.loads accepts too
except ImportError:  # pragma: no cover - orjson is a dependency
    _strict_loads = json.loads

    def _strict_dumps(value: Any) -> bytes:
        return json.dumps(value, allow_nan=False).encode("utf-8")


SHAPES = ("prompt-response", "prompt-completion", "text", "chat", "alpaca", "sharegpt", "dolly")
# Preference pairs (DPO/ORPO): checked and converted in ``preference.py``.
PREFERENCE = "preference"
CHAT_SHAPES = ("chat", "sharegpt")
EXAMPLE = {
    "prompt-response": '{"prompt": "What is Python?", "response": "A programming language."}',
    "chat": '{"messages": [{"role": "user", "content": "Hi"}, '
    '{"role": "assistant", "content": "Hello!"}]}',
    "preference": '{"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."}',
    "preference-openai": '{"input": {"messages": [{"role": "user", "content": "Hi"}]}, '
    '"preferred_output": [{"role": "assistant", "content": "Hello!"}], '
    '"non_preferred_output": [{"role": "assistant", "content": "Go away."}]}',
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
# Roles people write in chat messages, and the chat role each means.
ROLE_HINTS = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "ai": "assistant",
    "chatbot": "assistant",
}
_PREFERENCE_KEYS = frozenset(("chosen", "rejected", "preferred_output", "non_preferred_output"))
_TEXT_FIELDS = {
    "prompt-response": ("prompt", "response"),
    "prompt-completion": ("prompt", "completion"),
    "text": ("text",),
    "alpaca": ("instruction", "output"),
    "dolly": ("instruction", "response"),
}


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
    if not _PREFERENCE_KEYS.isdisjoint(record):
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
            hint = ROLE_HINTS.get(error.instance) if shape == "chat" else None
            if hint is not None:
                problems.append(
                    Problem(
                        "unknown-role",
                        f'Unknown role "{error.instance}" in {_field(path)}; did you mean '
                        f'"{hint}"? (roles: {allowed})',
                        path,
                        data={"rename": {"from": error.instance, "to": hint}},
                    )
                )
                continue
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
            problems += tool_problems(record)
    elif shape == "sharegpt":
        turns_raw = record.get("conversations")
        if isinstance(turns_raw, list):
            turns = [
                (SHAREGPT_ROLES.get(t.get("from")), t.get("value"), t)
                for t in turns_raw
                if isinstance(t, dict)
            ]
            problems += _role_problems("conversations", "from", "value", turns)
            problems += sharegpt_tool_problems(record)
    return problems


def _role_problems(
    list_key: str, role_key: str, content_key: str, turns: list[tuple[Any, Any, dict]]
) -> list[Problem]:
    problems: list[Problem] = []
    previous = None
    last_index = None
    has_assistant = False
    last_from = None
    for index, (role, content, message) in enumerate(turns):
        if not isinstance(role, str):
            continue
        if (
            content_key == "content"
            and "content" not in message
            and not message.get("tool_calls")
            and not message.get("function_call")
        ):
            problems.append(_missing((list_key, index), "content", "chat", {}))
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
            previous = "tool"  # a tool result answers the call; the assistant replies next
            continue
        # ShareGPT parallel calls: function_call turns in a row (prepared as one message)
        parallel = message.get("from") == "function_call" == last_from
        last_from = message.get("from")
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
        elif role in ("user", "assistant") and role == previous and not parallel:
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


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _close(name: str, names: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, names, n=1)
    return f'; did you mean "{match[0]}"?' if match else f" (defined: {', '.join(names)})"


def _definition_problems(tools: Any, key: str) -> tuple[list[Problem], list[str] | None]:
    """Check a ``tools`` (or legacy ``functions``) list; return problems and defined names."""
    if not isinstance(tools, list):
        return [], None
    problems, names = [], []
    for i, tool in enumerate(tools):
        path: tuple = (key, i)
        function = tool
        if key == "tools":
            if not isinstance(tool, dict) or tool.get("type") != "function":
                problems.append(
                    Problem(
                        "tool-definition",
                        f'{_field(path)} must be {{"type": "function", "function": {{"name", '
                        '"description", "parameters"}}',
                        path,
                    )
                )
                continue
            function, path = tool.get("function"), (*path, "function")
        if not isinstance(function, dict):
            problems.append(
                Problem(
                    "tool-definition",
                    f"{_field(path)} must be an object with name, description and parameters",
                    path,
                )
            )
            continue
        name = function.get("name")
        if not isinstance(name, str) or not name:
            problems.append(
                Problem(
                    "tool-definition",
                    f"{_field(path)}.name must be the function's name (a string)",
                    (*path, "name") if "name" in function else path,
                )
            )
        else:
            names.append(name)
        if "parameters" in function and not isinstance(function["parameters"], dict):
            problems.append(
                Problem(
                    "tool-definition",
                    f"{_field(path)}.parameters must be a JSON Schema object, not "
                    f"{_type_name(function['parameters'])}",
                    (*path, "parameters"),
                )
            )
    return problems, names


def _arguments_problems(arguments: Any, path: tuple) -> list[Problem]:
    if isinstance(arguments, str):
        if _is_json(arguments):
            return []
        return [
            Problem(
                "tool-arguments",
                f"{_field(path)} is not valid JSON; write the arguments as a JSON object "
                'in a string, e.g. "{\\"city\\": \\"Paris\\"}"',
                path,
            )
        ]
    if isinstance(arguments, dict):
        return [
            Problem(
                "tool-arguments-object",
                f"{_field(path)} is an object; chat templates expect it as a JSON string",
                path,
                data={"serialize": json.dumps(arguments, ensure_ascii=False)},
            )
        ]
    return [
        Problem(
            "tool-arguments",
            f"{_field(path)} must be a JSON string of the arguments, not {_type_name(arguments)}",
            path,
        )
    ]


def _call_name_problems(name: Any, path: tuple, names: list[str] | None) -> list[Problem]:
    if not isinstance(name, str) or not name:
        return [
            Problem("tool-definition", f"{_field(path)} must be the called function's name", path)
        ]
    if names is not None and name not in names:
        return [
            Problem(
                "unknown-tool",
                f'{_field(path)} calls "{name}", which is not in tools{_close(name, names)}',
                path,
            )
        ]
    return []


def tool_problems(record: dict[str, Any]) -> list[Problem]:
    """Return the problems of a chat record's tool definitions, calls and results."""
    messages = record["messages"]
    if (
        "tools" not in record
        and "functions" not in record
        and not any(
            isinstance(m, dict)
            and ("tool_calls" in m or "function_call" in m or m.get("role") in ("tool", "function"))
            for m in messages
        )
    ):
        return []
    problems, names = _definition_problems(record.get("tools"), "tools")
    legacy, legacy_names = _definition_problems(record.get("functions"), "functions")
    problems += legacy
    if problems:  # a broken definition: its name is not known, so calls are not checked
        names = legacy_names = None
    if legacy_names is not None:
        names = (names or []) + legacy_names
    if "functions" in record or any(
        isinstance(m, dict) and ("function_call" in m or m.get("role") == "function")
        for m in messages
    ):
        problems.append(
            Problem(
                "legacy-functions",
                "Legacy functions/function_call form: prepareDataset converts it to "
                "tools/tool_calls",
                ("functions",) if "functions" in record else (),
                "key",
            )
        )
    ids: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for j, call in enumerate(calls):
                path = ("messages", i, "tool_calls", j)
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict):
                    problems.append(
                        Problem(
                            "tool-definition",
                            f'{_field(path)} must be {{"id", "type": "function", '
                            '"function": {"name", "arguments"}}',
                            path,
                        )
                    )
                    continue
                if isinstance(call.get("id"), str):
                    ids.add(call["id"])
                problems += _call_name_problems(
                    function.get("name"), (*path, "function", "name"), names
                )
                if "arguments" in function:
                    problems += _arguments_problems(
                        function["arguments"], (*path, "function", "arguments")
                    )
        call = message.get("function_call")
        if isinstance(call, dict):
            path = ("messages", i, "function_call")
            problems += _call_name_problems(call.get("name"), (*path, "name"), names)
            if "arguments" in call:
                problems += _arguments_problems(call["arguments"], (*path, "arguments"))
        if message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            if isinstance(call_id, str) and call_id not in ids:
                known = ", ".join(sorted(ids)) or "none"
                problems.append(
                    Problem(
                        "tool-call-id",
                        f'messages[{i}].tool_call_id "{call_id}" answers no tool call before '
                        f"it in this record (call ids: {known})",
                        ("messages", i, "tool_call_id"),
                    )
                )
    return problems


def sharegpt_tools(record: dict[str, Any]) -> list | None:
    """Return a ShareGPT record's tools as a list (they may be a JSON string), or None."""
    tools = record.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            return None
    return tools if isinstance(tools, list) else None


def sharegpt_tool_problems(record: dict[str, Any]) -> list[Problem]:
    """Return the problems of a ShareGPT record's tools and function_call turns."""
    if "tools" not in record and not any(
        isinstance(t, dict) and t.get("from") in ("function_call", "observation")
        for t in record["conversations"]
    ):
        return []
    problems: list[Problem] = []
    names = None
    if "tools" in record:
        tools = sharegpt_tools(record)
        if tools is None:
            problems.append(
                Problem(
                    "tool-definition",
                    "tools must be a list of function definitions or a JSON string of one",
                    ("tools",),
                )
            )
        else:
            bad, names = _definition_problems([as_tool(t) for t in tools], "tools")
            where = isinstance(record["tools"], list)  # else positions inside a string
            problems += [
                Problem(p.code, p.message, p.path[:2] if where else ("tools",)) for p in bad
            ]
            if bad:
                names = None
    problems += sharegpt_tool_links(record["conversations"])[1]
    for i, turn in enumerate(record["conversations"]):
        if not isinstance(turn, dict) or turn.get("from") != "function_call":
            continue
        path = ("conversations", i, "value")
        call = parse_call(turn.get("value"))
        if call is None:
            problems.append(
                Problem(
                    "tool-arguments",
                    f'{_field(path)} must be a JSON string {{"name": ..., "arguments": ...}}',
                    path,
                )
            )
            continue
        if names is not None and isinstance(call.get("name"), str) and call["name"] not in names:
            problems.append(
                Problem(
                    "unknown-tool",
                    f'{_field(path)} calls "{call["name"]}", which is not in tools'
                    f"{_close(call['name'], names)}",
                    path,
                )
            )
    return problems


def sharegpt_call_id(turn: dict[str, Any]) -> str | None:
    """Return a ShareGPT turn's own id: a function_call's ``id`` (on the turn or in its JSON),
    an observation's ``tool_call_id`` (or ``id``); None when it has none."""
    if turn.get("from") == "function_call":
        call = parse_call(turn.get("value")) or {}
        keys: tuple[tuple[dict[str, Any], str], ...] = ((turn, "id"), (call, "id"))
    else:
        keys = ((turn, "tool_call_id"), (turn, "id"))
    for source, key in keys:
        if isinstance(source.get(key), str) and source[key]:
            return source[key]
    return None


def sharegpt_tool_links(turns: list[Any]) -> tuple[dict[int, int], list[Problem]]:
    """Match each observation turn to the function_call it answers; return the problems.

    Returns {observation index: function_call index} and a problem for each mismatch. An
    observation with an id answers the unanswered call with that id; one without answers the
    oldest unanswered call (ShareGPT's order). Calls are answered before the next human/gpt
    turn: a call still unanswered then, or an observation with no call to answer, is a
    ``tool-result-mismatch``; an id that names no unanswered call is a ``tool-call-id``. A
    call at the very end (the model learns to call) needs no answer.
    """
    links: dict[int, int] = {}
    problems: list[Problem] = []
    pending: list[tuple[int, str | None]] = []  # unanswered calls: (turn index, id)
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            continue
        kind = turn.get("from")
        if kind == "function_call":
            pending.append((i, sharegpt_call_id(turn)))
        elif kind in ("observation", "tool"):
            wanted = sharegpt_call_id(turn)
            if wanted is not None and any(cid is not None for _, cid in pending):
                match = next((p for p in pending if p[1] == wanted), None)
                if match is None:
                    known = ", ".join(cid for _, cid in pending if cid is not None)
                    key = "tool_call_id" if "tool_call_id" in turn else "id"
                    problems.append(
                        Problem(
                            "tool-call-id",
                            f'conversations[{i}].{key} "{wanted}" answers no unanswered '
                            f"function_call before it (unanswered call ids: {known})",
                            ("conversations", i, key),
                        )
                    )
                    pending.pop(0)  # one problem: the call it meant is not reported again
                    continue
            elif pending:
                match = pending[0]
            else:
                problems.append(
                    Problem(
                        "tool-result-mismatch",
                        f"conversations[{i}] is an {kind} but no function_call before it is "
                        "left to answer: each observation answers one function_call; remove "
                        "it or add the call",
                        ("conversations", i, "from"),
                    )
                )
                continue
            pending.remove(match)
            links[i] = match[0]
        elif pending:
            for index, _ in pending:
                problems.append(
                    Problem(
                        "tool-result-mismatch",
                        f"conversations[{index}] function_call has no observation answering "
                        f"it before conversations[{i}]: add the tool's result as an "
                        "observation turn after the call",
                        ("conversations", index, "from"),
                    )
                )
            pending.clear()
    return links, problems


def as_tool(tool: Any) -> Any:
    """Return a ShareGPT tool (often a bare function) in the OpenAI tool shape.

    Public: the checks here and ``prepare`` (which writes the tools) must read tools alike.
    """
    if isinstance(tool, dict) and "type" not in tool and "name" in tool:
        return {"type": "function", "function": tool}
    return tool


def parse_call(value: Any) -> dict[str, Any] | None:
    """Return a ShareGPT ``function_call`` turn's value as {"name", "arguments"}, else None.

    Public: the checks here and ``prepare`` (which converts the call) must parse it alike.
    """
    if not isinstance(value, str):
        return None
    try:
        call = json.loads(value)
    except ValueError:
        return None
    return call if isinstance(call, dict) and isinstance(call.get("name"), str) else None


def content_text(content: Any) -> str:
    """Return a message's content as text: a string, or its text parts joined.

    Public: the checks here and ``prepare`` (which writes the content) must read it alike.
    """
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
    """Return the record as (role, text) turns; role "text" for plain-text records.

    A preference pair's turns are its prompt's, the chosen side as one ``assistant`` turn
    and the rejected side as a last ``rejected`` turn (``preference.pair_turns``).
    """
    if shape == "prompt-response":
        return [
            ("user", content_text(record.get("prompt"))),
            ("assistant", content_text(record.get("response"))),
        ]
    if shape == "prompt-completion":
        return [
            ("user", content_text(record.get("prompt"))),
            ("assistant", content_text(record.get("completion"))),
        ]
    if shape == "text":
        return [("text", content_text(record.get("text")))]
    if shape == "alpaca":
        prompt = content_text(record.get("instruction"))
        extra = content_text(record.get("input"))
        turns = [("system", record["system"])] if isinstance(record.get("system"), str) else []
        return turns + [
            ("user", f"{prompt}\n\n{extra}" if extra.strip() else prompt),
            ("assistant", content_text(record.get("output"))),
        ]
    if shape == "dolly":
        prompt = content_text(record.get("instruction"))
        extra = content_text(record.get("context"))
        return [
            ("user", f"{prompt}\n\n{extra}" if extra.strip() else prompt),
            ("assistant", content_text(record.get("response"))),
        ]
    if shape == "chat":
        return [
            (str(m.get("role")), content_text(m.get("content")))
            for m in record.get("messages", [])
            if isinstance(m, dict)
        ]
    if shape == PREFERENCE:
        from .preference import pair_turns

        return pair_turns(record)
    if shape == "sharegpt":
        turns = [("system", record["system"])] if isinstance(record.get("system"), str) else []
        return turns + [
            (SHAREGPT_ROLES.get(t.get("from"), str(t.get("from"))), content_text(t.get("value")))
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
                "prompt/completion, text, messages (chat), instruction/output (Alpaca), "
                "conversations (ShareGPT) or prompt/chosen/rejected (preference pairs), "
                f"e.g. {EXAMPLE['prompt-response']}",
            )
        ]
    if shape == PREFERENCE:
        from .preference import preference_problems, schema_name

        return shape, schema_problems(record, schema_name(record)) + preference_problems(record)
    problems = schema_problems(record, shape)
    return shape, problems + semantic_problems(record, shape) + loss_problems(record, shape)


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


def _plain_tool_names(tools: Any) -> list[str] | None:
    """Return the names of well-formed OpenAI tool definitions, None if any is not."""
    if type(tools) is not list:
        return None
    names = []
    for tool in tools:
        if type(tool) is not dict or tool.get("type") != "function":
            return None
        function = tool.get("function")
        if type(function) is not dict:
            return None
        name = function.get("name")
        if type(name) is not str or not name:
            return None
        if "parameters" in function and type(function["parameters"]) is not dict:
            return None
        names.append(name)
    return names


# A file's records usually share their tools: their names and key count, by their JSON.
_TOOLS: dict[bytes, tuple[tuple[str, ...] | None, int]] = {}
_TOOLS_KEPT = 64
_TOOLS_LONGEST = 1 << 16


def _tool_summary(tools: Any) -> tuple[tuple[str, ...] | None, int]:
    """Return the names of well-formed tool definitions (None if any is not) and their keys."""
    try:
        text = _strict_dumps(tools)
    except TypeError:  # not from orjson (e.g. NaN, lone surrogates): no cache
        text = None
    if text is not None:
        known = _TOOLS.get(text)
        if known is not None:
            return known
    names = _plain_tool_names(tools)
    summary = (None if names is None else tuple(names), key_count(tools))
    if text is not None and len(text) <= _TOOLS_LONGEST:
        if len(_TOOLS) >= _TOOLS_KEPT:
            _TOOLS.clear()
        _TOOLS[text] = summary
    return summary


def _plain_calls(calls: Any, names: tuple[str, ...] | None, ids: set[str]) -> int:
    """Return the key count of a non-empty list of well-formed tool calls (their ids added to
    ids), or -1 when it is not one (or holds objects or lists beyond ``function``)."""
    if type(calls) is not list or not calls:
        return -1
    keys = 0
    for call in calls:
        if type(call) is not dict:
            return -1
        function = call.get("function")
        if type(function) is not dict:
            return -1
        for value in call.values():
            if value is not function and isinstance(value, (dict, list)):
                return -1
        for value in function.values():
            if isinstance(value, (dict, list)):
                return -1
        keys += len(call) + len(function)
        call_id = call.get("id")
        if type(call_id) is str:
            ids.add(call_id)
        name = function.get("name")
        if type(name) is not str or not name or (names is not None and name not in names):
            return -1
        if "arguments" in function:
            arguments = function["arguments"]
            if type(arguments) is not str:
                return -1
            try:  # what orjson parses, json parses too
                _strict_loads(arguments)
            except ValueError:
                return -1
    return keys


def plain_chat_turns(record: dict[str, Any]) -> list[tuple[str, str]] | None:
    """Return the turns of a plain chat record (``plain_chat``), or None."""
    plain = plain_chat(record)
    return None if plain is None else plain[0]


def plain_chat(record: dict[str, Any]) -> tuple[list[tuple[str, str]], int] | None:
    """Return the turns and the key count of a plain chat record, or None when it is not.

    Plain: ``messages`` (and maybe well-formed ``tools``); an optional system message first,
    then user and assistant in turn, ending with the assistant; each message exactly
    ``role`` and a non-blank string ``content``, or an assistant's well-formed
    ``tool_calls`` (and maybe ``content``), or a ``tool`` result with ``content`` and the
    ``tool_call_id`` of a call before it. Such a record is valid under the chat schema
    (every key and type it has is one the schema allows, nothing it requires is missing)
    and has no semantic, tool or loss problem, so neither the compiled schema nor those
    rules need to look at it; anything else is checked by them.
    """
    messages = record.get("messages")
    if type(messages) is not list:
        return None
    names = None
    keys = len(record)  # every key of every object, for the repeated-keys check
    if keys != 1:
        if keys != 2 or "tools" not in record:
            return None
        names, tool_keys = _tool_summary(record["tools"])
        if names is None:
            return None
        keys += tool_keys
    turns = []
    previous = None
    ids: set[str] = set()
    for index, message in enumerate(messages):
        if type(message) is not dict:
            return None
        role = message.get("role")
        content = message.get("content")
        size = len(message)
        if size == 2 and type(content) is str and content and not content.isspace():
            if role == "user":
                if previous == "user":
                    return None
            elif role == "assistant":
                if previous in (None, "system", "assistant"):
                    return None
            elif role != "system" or index:
                return None
            previous = role
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if size != 3 or type(content) is not str or type(call_id) is not str:
                return None
            if call_id not in ids:
                return None
            previous = "tool"
        elif role == "assistant" and "tool_calls" in message:
            if size == 3 and (
                "content" not in message or (content is not None and type(content) is not str)
            ):
                return None
            if size not in (2, 3) or previous in (None, "system", "assistant"):
                return None
            call_keys = _plain_calls(message["tool_calls"], names, ids)
            if call_keys < 0:
                return None
            previous = "assistant"
            content = content or ""
            keys += call_keys
        else:
            return None
        keys += size
        turns.append((role, content))
    return (turns, keys) if previous == "assistant" else None


def clean_turns(record: dict[str, Any], shape: str) -> list[tuple[str, str]] | None:
    """Return the turns of a record with no problem at all, else None (then check it fully).

    ``shape`` is ``detect_shape(record)`` (not None). The fast path of validation: the
    compiled schema and the semantic and loss rules on the plain objects, with a shortcut
    for plain chat records; never a position or a message string.
    """
    if shape == PREFERENCE:
        from .preference import clean_pair_turns

        return clean_pair_turns(record)
    if shape == "chat":
        turns = plain_chat_turns(record)
        if turns is not None:
            return turns
    try:
        compiled_validator(shape)(record)
    except Exception:  # noqa: BLE001 - any failure: the full check names it
        return None
    if semantic_problems(record, shape) or loss_problems(record, shape):
        return None
    return conversation(record, shape)
