"""What gets trained: a prepared record rendered with the model's own template, with its loss mask.

This is the one place that turns a record into token ids and a per-token loss mask. The worker
trains on it, and the validator, the editor's hover, ``cortex/trainingPreview`` and the config
proposal read the same views, so what a user is shown is what the model is trained on.

Rendering is the tokenizer's ``apply_chat_template`` (text only) followed by one tokenization
with offsets, exactly what mlx_lm's datasets do. Trained spans are located per assistant turn:

1. the prefix rule mlx_lm uses (render the turns before it with a generation prompt, then up to
   and including it), accepted only when both renderings are prefixes of the full conversation;
2. otherwise the turn's content is replaced by a sentinel and the text around the sentinel must
   equal the full rendering's text around the content (templates that move the system prompt,
   or render earlier turns differently, such as Mistral v0.3 and Qwen3);
3. otherwise (an answer that is only tool calls), from the generation prompt, which must be a
   prefix of the full conversation, through the template's end-of-turn tokens, which must
   enclose the calls' names;
4. otherwise the record gets a ``template-unmapped`` error. No offset is ever guessed.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..paths import user_path

SENTINEL = "\ue000cortex-turn\ue001"


@dataclass(frozen=True)
class ViewOptions:
    """How a record is trained; the defaults are stated in the config explanation."""

    train_on: str = "all"  # every assistant turn, or "last" (mlx_lm's behaviour)
    mask_prompt: bool = True  # False trains every token, as mlx_lm without --mask-prompt
    train_template_text: bool = False  # train text the template adds before an answer
    max_seq_length: int | None = None  # the worker cuts sequences here

    @classmethod
    def from_config(cls, config: Any, *, mask_prompt: bool = True) -> ViewOptions:
        """The view options a training config asks for (a ``TrainingConfig``)."""
        return cls(
            train_on=config.train_on,
            mask_prompt=mask_prompt,
            train_template_text=config.train_template_text,
            max_seq_length=config.max_seq_length,
        )


@dataclass(frozen=True)
class ViewIssue:
    """A problem with how one record renders; ``turn`` is the message index when known."""

    code: str
    severity: str  # "error" | "warning" | "info"
    message: str
    turn: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingView:
    """One record as the worker trains it."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]  # character range of each token in ``text``
    trained: list[bool]  # token t is a target with loss (t = 0 never is: nothing predicts it)
    spans: list[tuple[int, int]]  # trained character ranges of ``text``
    issues: list[ViewIssue] = field(default_factory=list)
    max_seq_length: int | None = None

    @property
    def ok(self) -> bool:
        """True when the record renders and can be trained."""
        return not any(i.severity == "error" for i in self.issues)

    @property
    def token_count(self) -> int:
        return len(self.ids)

    @property
    def kept(self) -> int:
        """Tokens the worker keeps after cutting at ``max_seq_length``."""
        if self.max_seq_length is None:
            return len(self.ids)
        return min(len(self.ids), self.max_seq_length)

    @cached_property
    def trained_count(self) -> int:
        """Tokens that get loss, after truncation."""
        return sum(self.trained[: self.kept])

    @cached_property
    def lost_to_truncation(self) -> int:
        """Trained tokens cut off by ``max_seq_length``."""
        return sum(self.trained[self.kept :])

    def mask(self) -> list[bool]:
        """The loss mask of the kept tokens, as the worker batches them."""
        return self.trained[: self.kept]

    def segments(self) -> list[dict[str, Any]]:
        """The rendered text as ``[{text, trained}]`` runs, cut where the worker cuts."""
        if not self.ids:
            return [{"text": self.text, "trained": False}] if self.text else []
        runs: list[dict[str, Any]] = []
        cursor = 0
        for index, (flag, (start, end)) in enumerate(zip(self.trained, self.offsets, strict=True)):
            start = max(start, cursor)
            end = max(end, start)
            piece = self.text[cursor:end]
            cursor = end
            if index >= self.kept:
                break
            if runs and runs[-1]["trained"] == flag:
                runs[-1]["text"] += piece
            elif piece:
                runs.append({"text": piece, "trained": flag})
        if cursor < len(self.text) and self.kept == len(self.ids):
            tail = self.text[cursor:]
            if runs and not runs[-1]["trained"]:
                runs[-1]["text"] += tail
            else:
                runs.append({"text": tail, "trained": False})
        return runs

    def to_wire(self, *, with_text: bool = True) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "tokens": self.token_count,
            "trainedTokens": self.trained_count,
            "truncated": self.kept < self.token_count,
            "lostTrainedTokens": self.lost_to_truncation,
            "issues": [
                {"code": i.code, "severity": i.severity, "message": i.message}
                | ({"turn": i.turn} if i.turn is not None else {})
                for i in self.issues
            ],
        }
        if with_text:
            wire["segments"] = self.segments()
        return wire


class TemplateRenderer:
    """A model's tokenizer and chat template, turning prepared records into training views.

    ``tokenizer`` is a Hugging Face tokenizer, or mlx_lm's ``TokenizerWrapper`` around one (the
    worker's; its custom chat templates are honoured because rendering goes through it).
    """

    def __init__(self, tokenizer: Any, *, family: str | None = None) -> None:
        self.tokenizer = tokenizer
        # The HF tokenizer itself: a TokenizerWrapper's, or this one (a fast HF tokenizer has a
        # ``_tokenizer`` too, the Rust one, which cannot encode with offsets as called here).
        self._encoder = tokenizer if callable(tokenizer) else tokenizer._tokenizer
        self.family = family
        self.has_chat_template = getattr(tokenizer, "chat_template", None) is not None or bool(
            getattr(tokenizer, "has_chat_template", False)
        )
        eos = getattr(self._encoder, "eos_token_id", None)
        self.eos_token_id: int | None = eos if isinstance(eos, int) else None
        self._closing: str | None = None
        self._header: str | None = None
        self._closing_pieces_cache: list[str] | None = None

    # -- rendering -----------------------------------------------------------------------

    def render(
        self, messages: list[dict[str, Any]], tools: Any = None, *, generation: bool = False
    ) -> str:
        """Return the template's text for ``messages``; raises the template's own error."""
        return self.tokenizer.apply_chat_template(
            messages,
            tools=tools,
            add_generation_prompt=generation,
            tokenize=False,
        )

    def encode(self, text: str, *, special: bool = False) -> tuple[list[int], list[tuple]]:
        """Token ids and character offsets, as mlx_lm tokenizes (no special tokens for chats)."""
        backend = self._backend()
        if backend is not None:
            encoding = backend.encode(text, add_special_tokens=special)
            return encoding.ids, encoding.offsets
        encoding = self._encoder(text, add_special_tokens=special, return_offsets_mapping=True)
        return list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]

    def _backend(self) -> Any:
        """The Rust tokenizer, when calling it gives what the HF call gives, else None.

        The HF call is a wrapper that first resets truncation, padding and special-token
        splitting on the backend; skipping it is a third of the encoding time. The backend is
        used only while it is in the state the HF call would leave it in.
        """
        backend = getattr(self._encoder, "_tokenizer", None)
        if backend is None or not hasattr(backend, "encode_special_tokens"):
            return None
        if backend.truncation is not None or backend.padding is not None:
            return None
        if backend.encode_special_tokens != bool(
            getattr(self._encoder, "split_special_tokens", False)
        ):
            return None
        return backend

    def _probe(self) -> None:
        """Learn the template's assistant header and closing from a two-turn rendering."""
        if self._closing is not None:
            return
        self._closing, self._header = "", ""
        user = [{"role": "user", "content": "x"}]
        try:
            prompt = self.render(user)
            with_header = self.render(user, generation=True)
            full = self.render(user + [{"role": "assistant", "content": SENTINEL}])
        except Exception:  # noqa: BLE001 - templates raise anything; records report it
            return
        if with_header.startswith(prompt):
            self._header = with_header[len(prompt) :]
        if SENTINEL in full:
            self._closing = full[full.index(SENTINEL) + len(SENTINEL) :]

    # -- views ---------------------------------------------------------------------------

    def view(self, record: dict[str, Any], options: ViewOptions = ViewOptions()) -> TrainingView:
        """Return what the worker trains for one prepared record (mlx_lm's record shapes)."""
        if "text" in record and "messages" not in record:
            return self._text_view(str(record["text"]), options)
        if "messages" in record:
            messages, tools = record["messages"], record.get("tools")
        else:  # prompt/completion, as mlx_lm's CompletionsDataset renders it
            messages = [
                {"role": "user", "content": record.get("prompt", "")},
                {"role": "assistant", "content": record.get("completion", "")},
            ]
            tools = record.get("tools")
        return self._chat_view(messages, tools, options)

    def _text_view(self, text: str, options: ViewOptions) -> TrainingView:
        ids, offsets = self.encode(text, special=True)
        if self.eos_token_id is not None and (not ids or ids[-1] != self.eos_token_id):
            ids.append(self.eos_token_id)  # as mlx_lm's TextDataset
            offsets.append((len(text), len(text)))
        trained = [index > 0 for index in range(len(ids))]
        return TrainingView(
            text, ids, offsets, trained, [(0, len(text))], [], options.max_seq_length
        )

    def _chat_view(
        self, messages: list[dict[str, Any]], tools: Any, options: ViewOptions
    ) -> TrainingView:
        issues: list[ViewIssue] = []
        if not self.has_chat_template:
            issues.append(
                ViewIssue(
                    "no-chat-template",
                    "error",
                    "The model has no chat template, so chat records cannot be rendered. "
                    "Use an instruct model, add a chat_template to its tokenizer_config.json, "
                    "or convert the dataset to plain text records.",
                )
            )
            return TrainingView("", [], [], [], [], issues, options.max_seq_length)
        plain = [_without_weight(m) for m in messages]
        try:
            text = self.render(plain, tools)
        except Exception as error:  # noqa: BLE001 - jinja's TemplateError and friends
            issues.append(template_error(error, messages))
            return TrainingView("", [], [], [], [], issues, options.max_seq_length)
        ids, offsets = self.encode(text)
        assistant = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        if options.train_on == "last":
            assistant = assistant[-1:]
        spans: list[tuple[int, int]] = []
        if not options.mask_prompt:
            spans = [(0, len(text))]
        else:
            for index in assistant:
                weight = messages[index].get("weight", 1)
                if weight == 0:
                    continue
                span = self._turn_span(plain, tools, index, text, options, issues)
                if span is not None:
                    spans.append(span)
        _check_dropped_text(messages, text, issues)
        trained = _mark_tokens(offsets, spans)
        return TrainingView(text, ids, offsets, trained, spans, issues, options.max_seq_length)

    def _turn_span(
        self,
        messages: list[dict[str, Any]],
        tools: Any,
        index: int,
        full: str,
        options: ViewOptions,
        issues: list[ViewIssue],
    ) -> tuple[int, int] | None:
        """Return the trained character range of assistant turn ``index`` in ``full``."""
        span = (
            self._prefix_span(messages, tools, index, full)
            or self._sentinel_span(messages, tools, index, full)
            or self._header_span(messages, tools, index, full)
        )
        if span is None:
            issues.append(
                ViewIssue(
                    "template-unmapped",
                    "error",
                    f"Message {index + 1} (assistant): the chat template renders this "
                    "conversation so that the answer cannot be located in the text; it would "
                    "be trained at the wrong place, so the record is refused.",
                    turn=index,
                )
            )
            return None
        start, end = span
        return self._without_added_text(messages[index], full, start, end, index, options, issues)

    def _prefix_span(
        self, messages: list[dict[str, Any]], tools: Any, index: int, full: str
    ) -> tuple[int, int] | None:
        try:
            before = self.render(messages[:index], tools, generation=True) if index else ""
            through = (
                full if index == len(messages) - 1 else self.render(messages[: index + 1], tools)
            )
        except Exception:  # noqa: BLE001
            return None
        if not (
            full.startswith(before) and full.startswith(through) and len(through) > len(before)
        ):
            return None
        return len(before), len(through)

    def _sentinel_span(
        self, messages: list[dict[str, Any]], tools: Any, index: int, full: str
    ) -> tuple[int, int] | None:
        content = messages[index].get("content")
        if not isinstance(content, str) or not content:
            return None
        probe = [dict(m) for m in messages]
        probe[index]["content"] = SENTINEL
        try:
            marked = self.render(probe, tools)
        except Exception:  # noqa: BLE001
            return None
        if marked.count(SENTINEL) != 1:
            return None
        left, right = marked.split(SENTINEL)
        if not (full.startswith(left) and full.endswith(right)) or len(left) + len(right) > len(
            full
        ):
            return None
        start, content_end = len(left), len(full) - len(right)
        return start, content_end + self._closing_length(right)

    def _header_span(
        self, messages: list[dict[str, Any]], tools: Any, index: int, full: str
    ) -> tuple[int, int] | None:
        """From the generation prompt to the turn's closing: tool calls with empty content."""
        message = messages[index]
        try:
            before = self.render(messages[:index], tools, generation=True) if index else ""
        except Exception:  # noqa: BLE001
            return None
        if not full.startswith(before):
            return None
        rest = full[len(before) :]
        length = self._closing_length(rest)
        if not length:
            return None
        turn = rest[:length]
        names = [
            (call.get("function") or {}).get("name")
            for call in message.get("tool_calls") or []
            if isinstance(call, dict)
        ]
        content = message.get("content")
        expected = [n for n in names if isinstance(n, str)]
        if isinstance(content, str) and content.strip():
            expected.append(content.strip())
        if not expected or not all(e in turn for e in expected):
            return None
        return len(before), len(before) + length

    def _closing_pieces(self) -> list[str]:
        """The template's end of an assistant turn, cut into its tokens (``<|end|>``, ``\\n``)."""
        self._probe()
        if self._closing_pieces_cache is None:
            closing = self._closing or ""
            _, offsets = self.encode(closing) if closing else ([], [])
            self._closing_pieces_cache = [closing[a:b] for a, b in offsets if b > a]
        return self._closing_pieces_cache

    def _closing_length(self, rest: str) -> int:
        """Length of ``rest`` up to and including the turn's closing tokens (0 when none).

        The closing is found at its first token that is not whitespace, and runs on for as
        many of the following closing tokens as ``rest`` repeats: a turn in the middle of a
        conversation ends ``<|end|>\\n``, the last one ``<|end|>\\n<|endoftext|>`` (Phi-3).
        """
        pieces = self._closing_pieces()
        anchor = next((i for i, piece in enumerate(pieces) if piece.strip()), None)
        if anchor is None:
            return 0
        at = rest.find(pieces[anchor])
        if at == -1:
            return 0
        end = at
        for piece in pieces[anchor:]:
            if not rest.startswith(piece, end):
                break
            end += len(piece)
        return end

    def _without_added_text(
        self,
        message: dict[str, Any],
        full: str,
        start: int,
        end: int,
        index: int,
        options: ViewOptions,
        issues: list[ViewIssue],
    ) -> tuple[int, int]:
        """Leave out text the template puts before the answer (Qwen3's empty think block)."""
        self._probe()
        header = self._header or ""
        # Text between the assistant header and the span start, or at the span start itself.
        lead_start = start
        if header:
            found = full.rfind(header, 0, start + 1)
            if found != -1:
                lead_start = found + len(header)
        content = message.get("content")
        added = ""
        content_at = start
        if isinstance(content, str) and content.strip():
            found = full.find(content.strip(), lead_start, end)
            if found != -1:
                content_at = found
                added = full[lead_start:found]
        if added.strip():
            issues.append(
                ViewIssue(
                    "template-added-text",
                    "info",
                    f"The chat template adds {added.strip()!r} before this answer (message "
                    f"{index + 1}); it is "
                    + (
                        "trained, as trainTemplateText asks."
                        if options.train_template_text
                        else "not trained (set trainTemplateText to train it)."
                    ),
                    turn=index,
                    data={"text": added},
                )
            )
            return (lead_start, end) if options.train_template_text else (content_at, end)
        return start, end

    def views(
        self, records: list[dict[str, Any]], options: ViewOptions = ViewOptions()
    ) -> list[TrainingView]:
        return [self.view(r, options) for r in records]


def _without_weight(message: dict[str, Any]) -> dict[str, Any]:
    if "weight" not in message:
        return message
    return {k: v for k, v in message.items() if k != "weight"}


def _mark_tokens(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """A token is trained when it starts inside a trained span (token 0 never is)."""
    trained = [False] * len(offsets)
    starts = [start for start, _ in offsets]
    for begin, end in spans:
        first = bisect.bisect_left(starts, begin)
        last = bisect.bisect_left(starts, end)
        for index in range(max(first, 1), last):
            trained[index] = True
    # Tokens with an empty offset range after the text (an appended eos) follow their span.
    return trained


def _check_dropped_text(messages: list[dict[str, Any]], text: str, issues: list[ViewIssue]) -> None:
    """Report messages whose text the template leaves out (Mistral v0.3's system prompt)."""
    for index, message in enumerate(messages):
        content = message.get("content")
        # Tool results and calls are often re-serialised by templates; prompts never are.
        if message.get("role") not in ("system", "user") or not isinstance(content, str):
            continue
        probe = content.strip()
        if probe and probe not in text:
            role = message.get("role", "?")
            issues.append(
                ViewIssue(
                    "template-dropped-text",
                    "warning",
                    f"The chat template leaves message {index + 1} ({role}) out of this "
                    "conversation, so the model never sees it in training"
                    + (
                        ". Merge the system message into the first user message to keep it."
                        if role == "system"
                        else "."
                    ),
                    turn=index,
                )
            )


def template_error(error: BaseException, messages: list[dict[str, Any]]) -> ViewIssue:
    """Turn a template's exception into a record issue, with the fix for refused roles."""
    message = str(error) or type(error).__name__
    roles = [m.get("role") for m in messages]
    if "system" in message.lower() and "system" in roles:
        return ViewIssue(
            "template-role",
            "error",
            f"The model's chat template refuses this record: {message}. Merge the system "
            "message into the first user message (the quick fix does it).",
            turn=roles.index("system"),
        )
    return ViewIssue("template-error", "error", f"The model's chat template fails: {message}")


def merge_system_message(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return messages with the system prompt put before the first user message's text."""
    system = [m for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system:
        return rest
    prompt = "\n\n".join(str(m.get("content") or "") for m in system)
    for message in rest:
        if message.get("role") == "user":
            message["content"] = f"{prompt}\n\n{message.get('content') or ''}"
            return rest
    return [{"role": "user", "content": prompt}, *rest]


@cache
def load_renderer(model_path: str | Path) -> TemplateRenderer:
    """Return the renderer of a local model (its tokenizer as mlx_lm loads it; offline)."""
    path = user_path(model_path)
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise CortexError(
            "tokenizer-not-found",
            f"No tokenizer in {path}; what gets trained needs the model's own tokenizer",
            path=str(path),
        )
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    try:
        tokenizer = load_tokenizer(path)
    except Exception as error:  # noqa: BLE001 - transformers raises many kinds
        raise CortexError(
            "tokenizer-invalid",
            f"The tokenizer in {path} cannot be loaded: {error}",
            path=str(path),
        ) from error
    return TemplateRenderer(tokenizer)


ViewFunction = Callable[[dict[str, Any]], TrainingView]


@dataclass(frozen=True)
class ViewSummary:
    """Token counts over a dataset's views: what proposals, previews and summaries report."""

    records: int
    tokens: dict[str, int]  # min / median / p95 / max tokens per record
    trained: dict[str, int]  # min / median / max / total trained tokens per record
    cut: int  # records cut by max_seq_length
    lost_trained_tokens: int  # trained tokens those cuts lose
    untrained: int  # records that train 0 tokens
    errors: int  # records that cannot be rendered

    def to_wire(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "tokens": self.tokens,
            "trainedTokens": self.trained,
            "cut": self.cut,
            "lostTrainedTokens": self.lost_trained_tokens,
            "untrained": self.untrained,
            "errors": self.errors,
        }


def _quantiles(counts: Counter[int]) -> tuple[list[int], list[int]]:
    values = sorted(v for v, n in counts.items() if n > 0)
    cumulative, total = [], 0
    for value in values:
        total += counts[value]
        cumulative.append(total)
    return values, cumulative


def _percentile(values: list[int], cumulative: list[int], fraction: float) -> int:
    """The value at ``fraction`` of the sorted multiset (``values[int(fraction * n)]``)."""
    if not values:
        return 0
    rank = min(cumulative[-1] - 1, int(fraction * cumulative[-1]))
    return values[bisect.bisect_right(cumulative, rank)]


class ViewTotals:
    """Running token statistics of a changing set of views: the editor adds and removes them.

    Distributions are kept as counts per value, so adding, removing and summarizing cost the
    same on a 100,000-record file as on a small one.
    """

    def __init__(self) -> None:
        self.records = self.errors = self.cut = self.lost = self.untrained = 0
        self.tokens: Counter[int] = Counter()
        self.trained: Counter[int] = Counter()
        self.trained_total = 0

    def add(self, view: TrainingView) -> None:
        self._count(view, 1)

    def remove(self, view: TrainingView) -> None:
        self._count(view, -1)

    def _count(self, view: TrainingView, sign: int) -> None:
        self.records += sign
        if not view.ok:
            self.errors += sign
        if not view.ids:
            return
        trained = view.trained_count
        self.tokens[view.token_count] += sign
        self.trained[trained] += sign
        self.trained_total += sign * trained
        if view.kept < view.token_count:
            self.cut += sign
            self.lost += sign * view.lost_to_truncation
        if view.ok and trained == 0:
            self.untrained += sign

    def summary(self) -> ViewSummary:
        tokens, tokens_at = _quantiles(self.tokens)
        trained, trained_at = _quantiles(self.trained)
        return ViewSummary(
            records=self.records,
            tokens={
                "min": tokens[0] if tokens else 0,
                "median": _percentile(tokens, tokens_at, 0.5),
                "p95": _percentile(tokens, tokens_at, 0.95),
                "max": tokens[-1] if tokens else 0,
            },
            trained={
                "min": trained[0] if trained else 0,
                "median": _percentile(trained, trained_at, 0.5),
                "max": trained[-1] if trained else 0,
                "total": self.trained_total,
            },
            cut=self.cut,
            lost_trained_tokens=self.lost,
            untrained=self.untrained,
            errors=self.errors,
        )


def summarize(views: Iterable[TrainingView]) -> ViewSummary:
    """Return the token statistics of ``views`` (rendered records only in the distributions)."""
    totals = ViewTotals()
    for view in views:
        totals.add(view)
    return totals.summary()
