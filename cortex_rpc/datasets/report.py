"""Dataset report: the analysis plus near-duplicates, lengths, answer diversity, leaks, a score.

``dataset_report`` loads a file once (or takes a loaded dataset) and returns a ``DatasetReport``; ``report_markdown`` and
``report_html`` render it for people (the terminal, and a VS Code webview).
"""

from __future__ import annotations

import html
import math
import re
import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CortexError
from .analyze import DatasetAnalysis, analyze_loaded, token_counts
from .diagnostics import ValidationResult
from .formats import LONG_CHARS, RecordState
from .load import DatasetSource, as_loaded
from .preference import LENGTH_RATIO
from .similarity import near_duplicate_groups, normalize

SAMPLE_CHARS = 120
MAX_CLUSTERS = 20
MAX_CLUSTER_LINES = 20
MAX_LEAKS = 50
MAX_OVER_CONTEXT = 50
MAX_FIX_LINES = 10
TOP_FIXES = 3
TOP_ANSWERS = 5
LEAK_MIN_CHARS = 20
HISTOGRAM_BINS = 10
CANCEL_EVERY = 5000
# Fixes in the order they are offered when their gains tie.
FIX_ORDER = (
    "errors",
    "near-duplicates",
    "empty-fields",
    "over-context",
    "leaks",
    "dominant-answer",
    "repetitive-answers",
    "long-examples",
    "mixed-shapes",
    "few-examples",
)


@dataclass
class Cluster:
    """Examples (1-based lines) whose prompt and answer are near-identical."""

    lines: list[int]
    sample: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "size": len(self.lines),
            "lines": self.lines[:MAX_CLUSTER_LINES],
            "sample": self.sample,
        }


@dataclass
class Bin:
    """Values in ``[start, end)`` and how many there are."""

    start: int
    end: int
    count: int

    def to_wire(self) -> dict[str, int]:
        return {"from": self.start, "to": self.end, "count": self.count}


@dataclass
class Leak:
    """An example whose answer contains its prompt, or whose prompt contains its answer."""

    line: int
    kind: str  # "prompt-in-answer" | "answer-in-prompt"
    sample: str

    def to_wire(self) -> dict[str, Any]:
        return {"line": self.line, "kind": self.kind, "sample": self.sample}


@dataclass
class Diversity:
    """How varied the answers and the prompts' openings are."""

    answers: int
    distinct_answers: int
    top_answers: list[tuple[str, int]]  # answers given more than once, most frequent first
    prompts: int
    distinct_prompt_starts: int
    answer_words: int
    answer_vocabulary: int
    top_answer_key: str = ""  # the most frequent answer, normalised

    @property
    def distinct_answers_ratio(self) -> float:
        return round(self.distinct_answers / self.answers, 3) if self.answers else 1.0

    @property
    def top_answer_share(self) -> float:
        return self.top_answers[0][1] / self.answers if self.top_answers else 0.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "answers": self.answers,
            "distinctAnswers": self.distinct_answers,
            "distinctAnswersRatio": self.distinct_answers_ratio,
            "topAnswers": [
                {"text": text, "count": count, "share": round(count / self.answers, 3)}
                for text, count in self.top_answers
            ],
            "distinctPromptStarts": self.distinct_prompt_starts,
            "distinctPromptStartsRatio": (
                round(self.distinct_prompt_starts / self.prompts, 3) if self.prompts else 1.0
            ),
            "answerWords": self.answer_words,
            "answerVocabulary": self.answer_vocabulary,
            "answerTypeTokenRatio": (
                round(self.answer_vocabulary / self.answer_words, 3) if self.answer_words else 0.0
            ),
        }


@dataclass
class OverContext:
    """Examples (1-based lines) with more tokens than the model's context."""

    context_length: int
    lines: list[int]

    def to_wire(self) -> dict[str, Any]:
        return {
            "contextLength": self.context_length,
            "count": len(self.lines),
            "lines": self.lines[:MAX_OVER_CONTEXT],
        }


@dataclass
class Penalty:
    """Points taken off the score for one kind of problem."""

    code: str
    count: int
    points: int

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "count": self.count, "points": self.points}


@dataclass
class Fix:
    """One thing to change in the dataset, and how many points it should win back."""

    code: str
    title: str
    detail: str
    count: int
    lines: list[int]
    gain: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "count": self.count,
            "lines": self.lines[:MAX_FIX_LINES],
            "gain": self.gain,
        }


@dataclass
class DatasetReport:
    """Everything ``cortex/datasetReport`` returns, before rendering."""

    path: str
    analysis: DatasetAnalysis
    clusters: list[Cluster]
    histograms: dict[str, list[Bin]]
    diversity: Diversity
    leaks: list[Leak]
    over_context: OverContext | None
    penalties: list[Penalty]
    fixes: list[Fix]
    score: int

    @property
    def redundant(self) -> int:
        """Examples that could go: all but one of each near-duplicate cluster."""
        return sum(len(c.lines) - 1 for c in self.clusters)

    def to_wire(self, render: str = "json") -> dict[str, Any]:
        """Return the wire form, plus ``markdown`` or ``html`` when ``render`` asks for it."""
        wire = {
            "path": self.path,
            "score": self.score,
            "fixes": [f.to_wire() for f in self.fixes[:TOP_FIXES]],
            "penalties": [p.to_wire() for p in self.penalties],
            "analysis": self.analysis.to_wire(),
            "nearDuplicateClusters": [c.to_wire() for c in self.clusters[:MAX_CLUSTERS]],
            "clusterCount": len(self.clusters),
            "redundantExamples": self.redundant,
            "lengthHistograms": {
                name: [b.to_wire() for b in bins] for name, bins in self.histograms.items()
            },
            "diversity": self.diversity.to_wire(),
            "leaks": {
                "count": len(self.leaks),
                "items": [leak.to_wire() for leak in self.leaks[:MAX_LEAKS]],
            },
            "overContext": self.over_context.to_wire() if self.over_context else None,
        }
        if render == "markdown":
            wire["markdown"] = report_markdown(self)
        elif render == "html":
            wire["html"] = report_html(self)
        return wire


@dataclass
class _Example:
    line: int  # 1-based
    prompt: str
    answer: str
    prompt_norm: str = field(init=False)
    answer_norm: str = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_norm = normalize(self.prompt)
        self.answer_norm = normalize(self.answer)

    @property
    def sample(self) -> str:
        return sample_text(f"{self.prompt} → {self.answer}" if self.prompt else self.answer)


def prompt_and_answer(turns: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """Return a record's prompt (turns before the last assistant turn, no system) and answer.

    A plain-text record has no prompt: its text is the answer.
    """
    last = max((i for i, (role, _) in enumerate(turns) if role == "assistant"), default=None)
    if last is None:
        return "", "\n".join(text for _, text in turns)
    prompt = "\n".join(text for role, text in turns[:last] if role != "system")
    return prompt, turns[last][1]


def sample_text(text: str, limit: int = SAMPLE_CHARS) -> str:
    """Return ``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _nice_step(size: float) -> int:
    """Return the smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``size``."""
    if size <= 1:
        return 1
    power = 10 ** math.floor(math.log10(size))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= size)


def histogram(values: Sequence[int], bins: int = HISTOGRAM_BINS) -> list[Bin]:
    """Return about ``bins`` bins covering ``values``: 1-2-5 edges for a wide range, else even ones."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high >= 100 and high > 10 * max(low, 1):
        series = [0] + [m * 10**k for k in range(16) for m in (1, 2, 5)]
        start = max(e for e in series if e <= low)
        edges = [e for e in series if start <= e <= high]
        edges.append(next(e for e in series if e > high))
    else:
        step = _nice_step((high - low + 1) / bins)
        start = low // step * step
        edges = list(range(start, high + step + 1, step))
        if edges[-1] <= high:
            edges.append(edges[-1] + step)
    counts = [0] * (len(edges) - 1)
    for value in values:
        counts[bisect_right(edges, value) - 1] += 1
    return [Bin(edges[i], edges[i + 1], count) for i, count in enumerate(counts)]


def _leak(example: _Example) -> str | None:
    if len(example.prompt_norm) >= LEAK_MIN_CHARS and example.prompt_norm in example.answer_norm:
        return "prompt-in-answer"
    if len(example.answer_norm) >= LEAK_MIN_CHARS and example.answer_norm in example.prompt_norm:
        return "answer-in-prompt"
    return None


def _diversity(examples: list[_Example]) -> Diversity:
    answers: Counter[str] = Counter()
    first_answer: dict[str, str] = {}
    starts: set[str] = set()
    prompts = words = 0
    vocabulary: set[str] = set()
    for example in examples:
        if example.answer_norm:
            answers[example.answer_norm] += 1
            first_answer.setdefault(example.answer_norm, example.answer)
            split = example.answer_norm.split()
            words += len(split)
            vocabulary.update(split)
        if example.prompt_norm:
            prompts += 1
            starts.add(example.prompt_norm.split(" ", 1)[0])
    top = [(sample_text(first_answer[a]), n) for a, n in answers.most_common(TOP_ANSWERS) if n > 1]
    return Diversity(
        sum(answers.values()),
        len(answers),
        top,
        prompts,
        len(starts),
        words,
        len(vocabulary),
        answers.most_common(1)[0][0] if answers else "",
    )


def _lines_by_code(
    result: ValidationResult, codes: tuple[str, ...] = (), errors: bool = False
) -> list[int]:
    """Return the 1-based lines with a diagnostic of one of ``codes`` (or any error)."""
    return sorted(
        {
            d.start_line + 1
            for d in result.diagnostics
            if d.code in codes or (errors and d.severity == "error")
        }
    )


def line_list(lines: Sequence[int], limit: int = MAX_FIX_LINES) -> str:
    """Return "3, 17 and 40", or "3, 17, 40 and 12 more" past ``limit`` line numbers."""
    shown = [str(n) for n in lines[:limit]]
    if len(lines) > limit:
        return f"{', '.join(shown)} and {len(lines) - limit:,} more"
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def _lines(lines: Sequence[int], limit: int = MAX_FIX_LINES) -> str:
    return f"line{'' if len(lines) == 1 else 's'} {line_list(lines, limit)}"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _the(count: int, word: str) -> str:
    """Return "the example" or "the 12 examples"."""
    return f"the {word}" if count == 1 else f"the {count:,} {word}s"


def dataset_report(
    source: DatasetSource,
    *,
    model_path: str | Path | None = None,
    context_length: int | None = None,
    cancel: threading.Event | None = None,
) -> DatasetReport:
    """Return the quality report of a dataset, a path or loaded; invalid records lower the score.

    ``context_length`` is the model's context for ``overContext`` (default: read from
    ``model_path``).
    """

    def checkpoint() -> None:
        if cancel is not None and cancel.is_set():
            raise CortexError("cancelled", "The dataset report was cancelled")

    loaded = as_loaded(source, cancel=cancel)
    result = loaded.result
    records: list[RecordState] = loaded.records
    counted = context = None
    if model_path is not None:
        from .tokens import model_context_length

        context = context_length or model_context_length(model_path)
        counted = token_counts(records, model_path)
    analysis = analyze_loaded(loaded.states, result, counted, context)
    checkpoint()
    examples = []
    for number, state in enumerate(records):
        if number % CANCEL_EVERY == 0:
            checkpoint()
        examples.append(_Example(state.line + 1, *prompt_and_answer(state.turns or [])))
    # Records with no text (nothing normalised) are not near-duplicates of each other.
    texts = [e for e in examples if e.prompt_norm or e.answer_norm]
    groups = near_duplicate_groups([f"{e.prompt_norm} {e.answer_norm}" for e in texts], checkpoint)
    clusters = sorted(
        (Cluster([texts[i].line for i in group], texts[group[0]].sample) for group in groups),
        key=lambda c: (-len(c.lines), c.lines[0]),
    )
    leaks = [Leak(e.line, kind, e.sample) for e in examples if (kind := _leak(e))]
    histograms = {
        "promptChars": histogram([len(e.prompt) for e in examples]),
        "answerChars": histogram([len(e.answer) for e in examples]),
    }
    over = None
    if counted is not None:
        histograms["tokens"] = histogram(counted)
        if context:
            over = OverContext(
                context, [e.line for e, t in zip(examples, counted, strict=True) if t > context]
            )
    diversity = _diversity(examples)
    checkpoint()
    return _scored(
        "" if loaded.path is None else str(loaded.path),
        analysis,
        result,
        examples,
        clusters,
        histograms,
        diversity,
        leaks,
        over,
    )


def _scored(
    path: str,
    analysis: DatasetAnalysis,
    result: ValidationResult,
    examples: list[_Example],
    clusters: list[Cluster],
    histograms: dict[str, list[Bin]],
    diversity: Diversity,
    leaks: list[Leak],
    over: OverContext | None,
) -> DatasetReport:
    """Add the report's own deductions to the analysis' and work out the fixes."""
    n = max(1, analysis.examples)
    penalties = [Penalty(code, count, points) for code, count, points in analysis.penalties]
    extra: list[Penalty] = []

    def deduct(code: str, count: int, points: float) -> None:
        if count:
            extra.append(Penalty(code, count, max(1, round(points))))

    redundant = sum(len(c.lines) - 1 for c in clusters)
    deduct(
        "near-duplicates",
        max(0, redundant - analysis.duplicates),
        30 * (redundant - analysis.duplicates) / n,
    )
    deduct("leaks", len(leaks), 20 * len(leaks) / n)
    if over is not None:
        deduct("over-context", len(over.lines), 15 * len(over.lines) / n)
    if analysis.examples >= 10 and diversity.top_answer_share > 0.5:
        deduct(
            "dominant-answer",
            diversity.top_answers[0][1],
            20 * (diversity.top_answer_share - 0.5) / 0.5,
        )
    if diversity.distinct_answers > 20 and diversity.distinct_answers_ratio < 0.5:
        deduct(
            "repetitive-answers",
            diversity.answers - diversity.distinct_answers,
            20 * (0.5 - diversity.distinct_answers_ratio) / 0.5,
        )
    points = {p.code: p.points for p in penalties + extra}
    score = max(0, analysis.quality["score"] - sum(p.points for p in extra))

    fixes: list[Fix] = []

    def offer(code: str, gain: int, title: str, detail: str, count: int, lines: list[int]) -> None:
        if gain > 0:
            fixes.append(Fix(code, title, detail, count, lines, gain))

    error_lines = _lines_by_code(result, errors=True)
    if "errors" in points:
        codes = Counter(d.code for d in result.diagnostics if d.severity == "error")
        kinds = ", ".join(f"{code} ({count})" for code, count in codes.most_common(4))
        where = f" on {_lines(error_lines)}" if error_lines else ""
        offer(
            "errors",
            points["errors"],
            f"Fix {_the(result.errors, 'error')} that "
            f"{'blocks' if result.errors == 1 else 'block'} training",
            f"{'Error' if result.errors == 1 else 'Errors'}{where}: {kinds}. Open the file in an editor with cortex for exact "
            "positions and quick fixes.",
            result.errors,
            error_lines,
        )
    gain = points.get("duplicates", 0) + points.get("near-duplicates", 0)
    if clusters and gain:
        extra_lines = sorted(line for c in clusters for line in c.lines[1:])
        offer(
            "near-duplicates",
            gain,
            f"Remove {_the(redundant, 'near-duplicate example')} in "
            f"{_plural(len(clusters), 'cluster')} ({_lines(extra_lines, 5)})",
            "Keep one example of each cluster: repeated examples are over-weighted in "
            f"training. Remove {_lines(extra_lines)}.",
            redundant,
            extra_lines,
        )
    if "empty-fields" in points:
        lines = _lines_by_code(result, ("empty-field",))
        offer(
            "empty-fields",
            points["empty-fields"],
            f"Fill in or remove {_the(analysis.empty_fields, 'empty field')}",
            f"Empty prompts or answers on {_lines(lines)} teach the model nothing.",
            analysis.empty_fields,
            lines,
        )
    if "long-examples" in points:
        lines = _lines_by_code(result, ("long-example",))
        offer(
            "long-examples",
            points["long-examples"],
            f"Shorten or split {_the(analysis.long_examples, 'example')} over "
            f"{LONG_CHARS:,} characters",
            f"{_lines(lines).capitalize()}: long examples use a lot of memory and may be "
            "truncated.",
            analysis.long_examples,
            lines,
        )
    if "mixed-shapes" in points:
        lines = _lines_by_code(result, ("mixed-shapes",))
        offer(
            "mixed-shapes",
            points["mixed-shapes"],
            f"Convert {_the(len(lines), 'record')} in another shape",
            f"{_lines(lines).capitalize()}: not the file's main shape; mlx_lm reads one "
            "shape per file (the editor's quick fix converts to chat).",
            len(lines),
            lines,
        )
    if "few-examples" in points:
        offer(
            "few-examples",
            points["few-examples"],
            f"Add examples: {analysis.examples:,} now, 100 or more recommended",
            "More varied examples of the task usually help more than more epochs.",
            analysis.examples,
            [],
        )
    if leaks:
        lines = [leak.line for leak in leaks]
        offer(
            "leaks",
            points["leaks"],
            f"Rewrite {_the(len(leaks), 'example')} where the answer repeats the prompt "
            "(or the reverse)",
            f"{_lines(lines).capitalize()}: the model learns to copy instead of answer.",
            len(leaks),
            lines,
        )
    if over is not None and over.lines:
        offer(
            "over-context",
            points["over-context"],
            f"Shorten {_the(len(over.lines), 'example')} longer than the model's "
            f"context ({over.context_length:,} tokens)",
            f"{_lines(over.lines).capitalize()}: truncated in training.",
            len(over.lines),
            over.lines,
        )
    if "dominant-answer" in points:
        text, count = diversity.top_answers[0]
        lines = [e.line for e in examples if e.answer_norm == diversity.top_answer_key]
        offer(
            "dominant-answer",
            points["dominant-answer"],
            f'Balance the answers: "{sample_text(text, 40)}" is '
            f"{diversity.top_answer_share:.0%} of them",
            f"{count:,} of {diversity.answers:,} examples give this answer; the model will "
            "learn to give it regardless of the prompt. Add examples with other answers.",
            count,
            lines,
        )
    if "repetitive-answers" in points:
        seen: set[str] = set()
        lines = []
        for e in examples:
            if e.answer_norm in seen:
                lines.append(e.line)
            seen.add(e.answer_norm)
        offer(
            "repetitive-answers",
            points["repetitive-answers"],
            f"Vary the answers: only {diversity.distinct_answers_ratio:.0%} are distinct",
            f"{_lines(lines).capitalize()}: the same answer as an earlier example.",
            len(lines),
            lines,
        )
    fixes.sort(key=lambda f: (-f.gain, FIX_ORDER.index(f.code)))
    return DatasetReport(
        path,
        analysis,
        clusters,
        histograms,
        diversity,
        leaks,
        over,
        penalties + extra,
        fixes,
        score,
    )


# -- rendering --------------------------------------------------------------------------------

HISTOGRAM_TITLES = {
    "promptChars": "Prompt length (characters)",
    "answerChars": "Answer length (characters)",
    "tokens": "Example length (tokens)",
}
BAR_WIDTH = 30


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class _Bars:
    rows: list[tuple[str, int]]  # label, count


# ("h1" | "h2" | "h3" | "p" | "strong", text), ("ol" | "ul", items: each a text or a
# (bold text, text) pair), ("table", _Table) or ("bars", _Bars).
Block = tuple[str, Any]


def _blocks(report: DatasetReport) -> list[Block]:
    """Return the report as a list of simple blocks that both renderers write out."""
    a = report.analysis
    d = report.diversity.to_wire()
    name = Path(report.path).name
    blocks: list[Block] = [
        ("h1", f"Dataset report: {name}"),
        ("strong", f"Score: {report.score}/100"),
        ("p", f"{_plural(a.examples, 'example')} · {a.size_class} · {a.task_type} · {report.path}"),
        ("h2", "Top fixes"),
    ]
    fixes = report.fixes[:TOP_FIXES]
    if fixes:
        blocks.append(
            ("ol", [(f.title, f" (+{_plural(f.gain, 'point')}). {f.detail}") for f in fixes])
        )
    else:
        blocks.append(("p", "Nothing to fix: no problems found."))
    chars = a.chars
    rows = [
        ["Examples", f"{a.examples:,}"],
        ["Size class / task type", f"{a.size_class} / {a.task_type}"],
        [
            "Characters (min / p50 / p95 / max)",
            f"{chars['min']:,} / {chars['p50']:,} / {chars['p95']:,} / {chars['max']:,}",
        ],
    ]
    if a.preference:
        pairs = a.preference
        ratio = pairs["lengthRatio"]
        rows += [
            ["Preference pairs", f"{pairs['pairs']:,}"],
            [
                "Chosen / rejected characters (p50)",
                f"{pairs['chosenChars']['p50']:,} / {pairs['rejectedChars']['p50']:,}",
            ],
            [
                "Length ratio of the sides (mean / p95 / max)",
                f"{ratio['mean']:.2f} / {ratio['p95']:.2f} / {ratio['max']:.2f}",
            ],
            [
                f"Pairs with one side over {LENGTH_RATIO}x the other",
                f"{pairs['unbalancedPairs']:,}",
            ],
            ["Pairs whose chosen answer is the longer", f"{pairs['chosenLonger']:,}"],
        ]
    if a.tokens:
        t = a.tokens
        rows.append(
            [
                "Tokens (min / p50 / p95 / max)",
                f"{t['min']:,} / {t['p50']:,} / {t['p95']:,} / {t['max']:,}",
            ]
        )
    rows += [
        ["Exact duplicates (ignoring case and spaces)", f"{a.duplicates:,}"],
        [
            "Near-duplicate clusters",
            f"{len(report.clusters):,} ({_plural(report.redundant, 'redundant example')})",
        ],
        ["Empty fields", f"{a.empty_fields:,}"],
        [f"Examples over {LONG_CHARS:,} characters", f"{a.long_examples:,}"],
        ["Prompt/answer leaks", f"{len(report.leaks):,}"],
        [
            "Over the model's context",
            f"{len(report.over_context.lines):,} (context {report.over_context.context_length:,})"
            if report.over_context
            else "no model given",
        ],
        ["Distinct answers", f"{d['distinctAnswers']:,} ({d['distinctAnswersRatio']:.0%})"],
        [
            "Distinct first words of prompts",
            f"{d['distinctPromptStarts']:,} ({d['distinctPromptStartsRatio']:.0%})",
        ],
        [
            "Answer type-token ratio",
            f"{d['answerTypeTokenRatio']:.3f} ({d['answerVocabulary']:,} distinct of "
            f"{d['answerWords']:,} words)",
        ],
    ]
    blocks += [("h2", "Summary"), ("table", _Table(["", ""], rows))]
    if report.penalties:
        blocks += [
            ("h2", "Score"),
            (
                "table",
                _Table(
                    ["Deduction", "Count", "Points"],
                    [[p.code, f"{p.count:,}", f"-{p.points}"] for p in report.penalties],
                ),
            ),
        ]
    if d["topAnswers"]:
        blocks += [
            ("h2", "Most frequent answers"),
            (
                "table",
                _Table(
                    ["Answer", "Count", "Share"],
                    [[t["text"], f"{t['count']:,}", f"{t['share']:.0%}"] for t in d["topAnswers"]],
                ),
            ),
        ]
    blocks.append(("h2", "Lengths"))
    for key, bins in report.histograms.items():
        blocks += [
            ("h3", HISTOGRAM_TITLES[key]),
            ("bars", _Bars([(f"{b.start:,}–{b.end:,}", b.count) for b in bins])),
        ]
    blocks.append(("h2", f"Near-duplicate clusters ({len(report.clusters):,})"))
    if report.clusters:
        shown = report.clusters[:MAX_CLUSTERS]
        blocks.append(
            (
                "table",
                _Table(
                    ["Size", "Lines", "Sample"],
                    [
                        [str(len(c.lines)), line_list(c.lines, MAX_CLUSTER_LINES), c.sample]
                        for c in shown
                    ],
                ),
            )
        )
        if len(report.clusters) > len(shown):
            blocks.append(("p", f"… and {len(report.clusters) - len(shown):,} smaller clusters."))
    else:
        blocks.append(("p", "None found."))
    blocks.append(("h2", f"Prompt/answer leaks ({len(report.leaks):,})"))
    if report.leaks:
        blocks.append(
            (
                "table",
                _Table(
                    ["Line", "Kind", "Sample"],
                    [[str(leak.line), leak.kind, leak.sample] for leak in report.leaks[:MAX_LEAKS]],
                ),
            )
        )
    else:
        blocks.append(("p", "None found."))
    if report.over_context and report.over_context.lines:
        over = report.over_context
        blocks += [
            ("h2", f"Over the model's context ({len(over.lines):,})"),
            ("p", f"{_lines(over.lines, MAX_OVER_CONTEXT).capitalize()}."),
        ]
    if a.warnings:
        blocks += [("h2", "Warnings"), ("ul", list(a.warnings))]
    return blocks


def _bar(count: int, largest: int) -> str:
    return "█" * (round(BAR_WIDTH * count / largest) if largest else 0)


# Markdown's inline syntax; "_" only matters at a word's edge (snake_case stays readable).
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|]|(?<!\w)_|_(?!\w)")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(), text)


def _item_md(item: str | tuple[str, str]) -> str:
    return f"**{_md(item[0])}**{_md(item[1])}" if isinstance(item, tuple) else _md(item)


def _item_html(item: str | tuple[str, str]) -> str:
    if isinstance(item, tuple):
        return f"<strong>{html.escape(item[0])}</strong>{html.escape(item[1])}"
    return html.escape(item)


def report_markdown(report: DatasetReport) -> str:
    """Return the report as a Markdown document."""
    out: list[str] = []
    for kind, value in _blocks(report):
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + _md(value), ""]
        elif kind == "strong":
            out += [f"**{_md(value)}**", ""]
        elif kind == "p":
            out += [_md(value), ""]
        elif kind in ("ol", "ul"):
            out += [
                f"{f'{i}.' if kind == 'ol' else '-'} {_item_md(item)}"
                for i, item in enumerate(value, 1)
            ] + [""]
        elif kind == "table":
            out.append("| " + " | ".join(_md(h) for h in value.headers) + " |")
            out.append("|" + "---|" * len(value.headers))
            out += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in value.rows]
            out.append("")
        elif kind == "bars":
            width = max((len(label) for label, _ in value.rows), default=0)
            largest = max((count for _, count in value.rows), default=0)
            out.append("```text")
            out += [
                f"{label:>{width}} {_bar(count, largest):<{BAR_WIDTH}} {count:,}"
                for label, count in value.rows
            ]
            out += ["```", ""]
    return "\n".join(out)


_CSS = """
body { font-family: var(--vscode-font-family, system-ui, sans-serif);
  font-size: var(--vscode-font-size, 14px); color: var(--vscode-foreground, #1f2328);
  background: var(--vscode-editor-background, #ffffff); margin: 1.5em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.4em;
  border-bottom: 1px solid var(--vscode-panel-border, #d0d7de); }
h3 { font-size: 1em; }
.score { font-size: 2em; font-weight: 600; margin: .2em 0; }
.good { color: var(--vscode-testing-iconPassed, #1a7f37); }
.fair { color: var(--vscode-editorWarning-foreground, #9a6700); }
.poor { color: var(--vscode-errorForeground, #cf222e); }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid var(--vscode-panel-border, #d0d7de); padding: .25em .6em;
  text-align: left; vertical-align: top; }
th { background: var(--vscode-editorWidget-background, #f6f8fa); }
.bars td { border: none; padding: 0 .6em 0 0; font-family: var(--vscode-editor-font-family,
  ui-monospace, monospace); white-space: pre; }
.bar { color: var(--vscode-textLink-foreground, #0969da); }
.muted { color: var(--vscode-descriptionForeground, #59636e); }
""".strip()


def report_html(report: DatasetReport) -> str:
    """Return the report as a standalone HTML page (no scripts, no external resources)."""
    e = html.escape
    grade = "good" if report.score >= 80 else "fair" if report.score >= 50 else "poor"
    body: list[str] = []
    for kind, value in _blocks(report):
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{e(value)}</{kind}>")
        elif kind == "strong":
            body.append(f'<p class="score {grade}">{e(value)}</p>')
        elif kind == "p":
            body.append(f'<p class="muted">{e(value)}</p>')
        elif kind in ("ol", "ul"):
            items = "".join(f"<li>{_item_html(item)}</li>" for item in value)
            body.append(f"<{kind}>{items}</{kind}>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in value.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>"
                for row in value.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "bars":
            largest = max((count for _, count in value.rows), default=0)
            rows = "".join(
                f'<tr><td>{e(label)}</td><td class="bar">{_bar(count, largest)}</td>'
                f"<td>{count:,}</td></tr>"
                for label, count in value.rows
            )
            body.append(f'<table class="bars"><tbody>{rows}</tbody></table>')
    title = e(f"Dataset report: {Path(report.path).name}")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
