"""Preference pairs (DPO/ORPO data): every form people write, one canonical pair, its checks.

The forms, each one JSON object (JSON arrays and CSV ``prompt,chosen,rejected`` rows give
the same objects):

- TRL standard: ``{"prompt": "...", "chosen": "...", "rejected": "..."}``;
- TRL conversational: ``prompt`` a string or messages, ``chosen``/``rejected`` messages
  (normally one assistant message each);
- TRL implicit prompt: ``chosen``/``rejected`` whole conversations that share their first
  turns (the shared turns are the prompt, as TRL's ``maybe_extract_prompt`` reads them);
- OpenAI preference fine-tuning: ``{"input": {"messages": [...], "tools": [...]},
  "preferred_output": [...], "non_preferred_output": [...]}``.

All of them become one ``PreferencePair``: the prompt messages and each side's completion
messages. The job's data files hold it as ``{"prompt", "chosen", "rejected"}`` (see
``prepare.preference_record``); the worker renders prompt+chosen and prompt+rejected with
the model's chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .shapes import EXAMPLE, Problem, content_text

TRL_SIDES = ("chosen", "rejected")
OPENAI_SIDES = ("preferred_output", "non_preferred_output")
# A pair whose longer side has more than LENGTH_RATIO times the characters of the shorter
# (and at least LENGTH_RATIO_MIN_CHARS) is reported: DPO then learns "longer is better".
LENGTH_RATIO = 4
LENGTH_RATIO_MIN_CHARS = 40


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair: the shared prompt messages and each side's completion messages.

    ``shared`` counts the leading messages of the record's own chosen/rejected lists that
    belong to the prompt, so positions in the record can be found; ``implicit``: the prompt
    is those messages alone (TRL's implicit prompt; a ``prompt`` key is then not used).
    """

    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    tools: list[Any] | None = None
    shared: int = 0
    implicit: bool = False


def is_openai(record: dict[str, Any]) -> bool:
    """Return True for OpenAI's preference form (preferred_output / non_preferred_output)."""
    return "preferred_output" in record or "non_preferred_output" in record


def schema_name(record: dict[str, Any]) -> str:
    """Return the schema a preference record is checked with (``schemas/dataset/``)."""
    return "preference-openai" if is_openai(record) else "preference"


def sides(record: dict[str, Any]) -> tuple[str, str]:
    """Return the record's keys for the chosen and the rejected side."""
    return OPENAI_SIDES if is_openai(record) else TRL_SIDES


def _messages(value: Any, role: str) -> list[dict[str, Any]] | None:
    """Return a side or prompt as messages: a string is one ``role`` message."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return list(value)
    return None


def _shared_start(chosen: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> int:
    """Return how many leading messages both sides share (each keeps at least one)."""
    count = 0
    for a, b in zip(chosen[:-1], rejected[:-1], strict=False):
        if a != b:
            break
        count += 1
    return count


def preference_pair(record: dict[str, Any]) -> PreferencePair | None:
    """Return the record as a pair, or None when it has none (wrong types, no prompt)."""
    if is_openai(record):
        source = record.get("input")
        if not isinstance(source, dict):
            return None
        prompt = _messages(source.get("messages"), "user")
        chosen = _messages(record.get("preferred_output"), "assistant")
        rejected = _messages(record.get("non_preferred_output"), "assistant")
        tools = source.get("tools")
        if not prompt or chosen is None or rejected is None:
            return None
        return PreferencePair(prompt, chosen, rejected, tools if isinstance(tools, list) else None)
    chosen = _messages(record.get("chosen"), "assistant")
    rejected = _messages(record.get("rejected"), "assistant")
    if chosen is None or rejected is None:
        return None
    tools = record.get("tools") if isinstance(record.get("tools"), list) else None
    explicit = _messages(record["prompt"], "user") if "prompt" in record else None
    shared = 0
    if isinstance(record.get("chosen"), list) and isinstance(record.get("rejected"), list):
        shared = _shared_start(chosen, rejected)
    if shared and chosen[0].get("role") in ("system", "user"):
        # Whole conversations (UltraFeedback's form): their shared turns are the prompt.
        return PreferencePair(
            chosen[:shared], chosen[shared:], rejected[shared:], tools, shared, implicit=True
        )
    prompt = (explicit or []) + chosen[:shared]
    if not prompt:
        return None
    return PreferencePair(prompt, chosen[shared:], rejected[shared:], tools, shared)


def side_text(messages: list[dict[str, Any]]) -> str:
    """Return a side's text: its messages' contents (and tool calls) joined by newlines."""
    parts = []
    for message in messages:
        text = content_text(message.get("content"))
        if message.get("tool_calls"):
            text += json.dumps(message["tool_calls"], ensure_ascii=False, sort_keys=True)
        parts.append(text)
    return "\n".join(parts)


def pair_turns(record: dict[str, Any]) -> list[tuple[str, str]]:
    """Return a pair as (role, text) turns: the prompt's, the chosen side, the rejected side.

    The chosen side is one ``assistant`` turn (so "the answer" of a record is the chosen
    one everywhere) and the rejected side comes last as a ``rejected`` turn; duplicate
    checks and lengths see both. Empty when the record has no pair.
    """
    pair = preference_pair(record)
    if pair is None:
        return []
    turns = [(str(m.get("role")), content_text(m.get("content"))) for m in pair.prompt]
    return turns + [("assistant", side_text(pair.chosen)), ("rejected", side_text(pair.rejected))]


def chosen_and_rejected(turns: list[tuple[str, str]]) -> tuple[str, str] | None:
    """Return the chosen and rejected texts of a pair's turns (``pair_turns``), else None."""
    if len(turns) >= 2 and turns[-1][0] == "rejected":
        return turns[-2][1], turns[-1][1]
    return None


def length_ratio(chosen: str, rejected: str) -> float:
    """Return how many times longer the longer side is (characters; 1.0 for equal)."""
    shorter, longer = sorted((len(chosen.strip()), len(rejected.strip())))
    return longer / max(shorter, 1)


def _side_key(messages: list[dict[str, Any]]) -> tuple:
    return tuple(
        (m.get("role"), content_text(m.get("content")).strip(), repr(m.get("tool_calls")))
        for m in messages
    )


def _empty_side(value: Any, key: str, what: str) -> list[Problem]:
    """Return the empty-field problems of one side (a blank string, no messages, blanks)."""
    if isinstance(value, str):
        if value.strip():
            return []
        return [Problem("empty-field", f'"{key}" is empty; write the {what} answer', (key,))]
    if not isinstance(value, list):
        return []  # the schema reports the type
    if not value:
        return [
            Problem(
                "empty-field",
                f'"{key}" has no messages; give the {what} answer as an assistant message',
                (key,),
            )
        ]
    out = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or message.get("tool_calls"):
            continue
        content = message.get("content")
        if isinstance(content, (str, list)) and not content_text(content).strip():
            out.append(
                Problem(
                    "empty-field",
                    f"{key}[{index}] has empty content; write the {what} answer's text",
                    (key, index, "content"),
                )
            )
    return out


def preference_problems(record: dict[str, Any]) -> list[Problem]:
    """Return what makes a pair untrainable or weak: a missing prompt, empty or identical
    sides, sides in the wrong role, and sides of very different lengths (a warning).

    Wrong types are the schema's to report; these checks read only well-typed values.
    """
    openai = is_openai(record)
    chosen_key, rejected_key = sides(record)
    problems = _empty_side(record.get(chosen_key), chosen_key, "preferred")
    problems += _empty_side(record.get(rejected_key), rejected_key, "worse")
    prompt_path: tuple = ("input", "messages") if openai else ("prompt",)
    source = record.get("input") if openai else record
    prompt_value = source.get(prompt_path[-1]) if isinstance(source, dict) else None
    if isinstance(prompt_value, (str, list)) and not prompt_value:
        problems.append(
            Problem(
                "empty-field",
                f'"{prompt_path[-1]}" is empty; write the prompt both answers reply to',
                prompt_path,
            )
        )
    elif isinstance(prompt_value, str) and not prompt_value.strip():
        problems.append(
            Problem(
                "empty-field",
                '"prompt" is blank; write the prompt both answers reply to',
                prompt_path,
            )
        )
    if problems:
        return problems
    pair = preference_pair(record)
    if pair is None:
        if (
            not openai
            and "prompt" not in record
            and _messages(record.get(chosen_key), "assistant") is not None
            and _messages(record.get(rejected_key), "assistant") is not None
        ):
            problems.append(_no_prompt(record))
        return problems
    problems += _role_problems(record, pair, prompt_path)
    if _side_key(pair.chosen) == _side_key(pair.rejected):
        problems.append(
            Problem(
                "preference-identical",
                f'"{chosen_key}" and "{rejected_key}" are identical, so the pair teaches '
                f"nothing; write a worse answer in {rejected_key} or remove the record",
                (rejected_key,),
            )
        )
        return problems
    chosen, rejected = side_text(pair.chosen), side_text(pair.rejected)
    ratio = length_ratio(chosen, rejected)
    longer = chosen_key if len(chosen.strip()) >= len(rejected.strip()) else rejected_key
    shorter = rejected_key if longer == chosen_key else chosen_key
    if ratio > LENGTH_RATIO and max(len(chosen.strip()), len(rejected.strip())) >= (
        LENGTH_RATIO_MIN_CHARS
    ):
        problems.append(
            Problem(
                "preference-length-ratio",
                f'"{longer}" is {ratio:.1f}x as long as "{shorter}" '
                f"({len(chosen.strip()):,} vs {len(rejected.strip()):,} characters): "
                "preference training may learn to prefer length rather than quality; pair "
                "answers of similar length",
                (longer,),
                data={"ratio": round(ratio, 2)},
            )
        )
    if not openai and "prompt" in record and pair.implicit:
        explicit = record["prompt"]
        users = [content_text(m.get("content")).strip() for m in pair.prompt]
        same = explicit == pair.prompt or (isinstance(explicit, str) and explicit.strip() in users)
        if not same:
            problems.append(
                Problem(
                    "preference-prompt-ignored",
                    f'"prompt" is ignored: "{chosen_key}" and "{rejected_key}" are whole '
                    f"conversations whose first {pair.shared} message(s) are the prompt, and "
                    "they differ from it; remove prompt or the shared messages",
                    ("prompt",),
                )
            )
    return problems


def _no_prompt(record: dict[str, Any]) -> Problem:
    conversational = isinstance(record.get("chosen"), list)
    how = (
        'add "prompt" (the user message both answers reply to), or start chosen and '
        "rejected with the same user message (TRL's implicit prompt)"
        if conversational
        else 'add "prompt": the question both answers reply to'
    )
    return Problem(
        "missing-field",
        f'Missing "prompt" in this record: {how}; e.g. {EXAMPLE["preference"]}',
        (),
        data={"field": "prompt"},
    )


def _role_problems(
    record: dict[str, Any], pair: PreferencePair, prompt_path: tuple
) -> list[Problem]:
    """Return role problems: each side must start with the assistant, the prompt end with
    the user (or a tool result) the answers reply to."""
    problems = []
    for key in sides(record):
        side = pair.chosen if key == sides(record)[0] else pair.rejected
        if isinstance(record.get(key), list) and side and side[0].get("role") != "assistant":
            problems.append(
                Problem(
                    "role-order",
                    f"{key}[{pair.shared}] is a {side[0].get('role')} message: each answer "
                    "must start with the assistant's message (the prompt holds the rest)",
                    (key, pair.shared, "role"),
                )
            )
    last = pair.prompt[-1].get("role")
    if last not in ("user", "tool") and not problems:
        if pair.shared:
            path: tuple = (sides(record)[0], pair.shared - 1, "role")
        elif isinstance(record.get("prompt"), list) or prompt_path[0] == "input":
            path = (*prompt_path, len(pair.prompt) - 1, "role")
        else:
            path = prompt_path
        problems.append(
            Problem(
                "role-order",
                f"The prompt ends with a {last} message: it must end with the user's "
                "message (or a tool result) that both answers reply to",
                path,
            )
        )
    return problems


def clean_pair_turns(record: dict[str, Any]) -> list[tuple[str, str]] | None:
    """Return the turns of a pair with no problem at all, else None (then check it fully)."""
    from .shapes import compiled_validator

    try:
        compiled_validator(schema_name(record))(record)
    except Exception:  # noqa: BLE001 - any failure: the full check names it
        return None
    if preference_problems(record):
        return None
    return pair_turns(record)


def sft_conversion(record: dict[str, Any]) -> dict[str, Any] | None:
    """Return the record as prompt/response keeping the chosen answer (the SFT quick fix)."""
    pair = preference_pair(record)
    if pair is None:
        return None
    prompt = "\n\n".join(
        text
        for m in pair.prompt
        if m.get("role") in ("user", "system") and (text := content_text(m.get("content")))
    )
    answer = "\n\n".join(
        text
        for m in pair.chosen
        if m.get("role") == "assistant" and (text := content_text(m.get("content")))
    )
    if not prompt or not answer:
        return None
    return {"prompt": prompt, "response": answer}
