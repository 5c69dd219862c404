"""The dataset report: clusters, leaks, histograms, diversity, score, fixes and rendering."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from cortex_rpc.datasets.report import (
    dataset_report,
    histogram,
    line_list,
    prompt_and_answer,
    report_html,
    report_markdown,
)
from cortex_rpc.datasets.similarity import near_duplicate_groups, normalize
from cortex_rpc.errors import CortexError

# Appended to the 24 sample records, so they are lines 25-31.
PROBLEMS = [
    # 25: line 3 with other case and punctuation (not a duplicate for validate, identical here)
    {
        "prompt": "what is a LIST in python",
        "response": "A list is an ordered mutable collection, written with square brackets like "
        "[1, 2, 3]!",
    },
    # 26: line 10 with one word added (Jaccard 0.93)
    {
        "prompt": "What is MLX?",
        "response": "MLX is Apple's array framework for machine learning on Apple Silicon Macs.",
    },
    # 27: an exact duplicate of line 7; 28: line 7 with a longer prompt (Jaccard 0.88)
    {
        "prompt": "What is recursion?",
        "response": "Recursion is when a function calls itself on a smaller piece of the problem "
        "until a base case stops it.",
    },
    {
        "prompt": "What is recursion, exactly?",
        "response": "Recursion is when a function calls itself on a smaller piece of the problem "
        "until a base case stops it.",
    },
    # 29: the answer repeats the prompt; 30: the prompt holds the answer
    {
        "prompt": "Describe the water cycle briefly",
        "response": "Describe the water cycle briefly: evaporation, condensation and "
        "precipitation, over and over.",
    },
    {
        "prompt": "Repeat after me: the mitochondria is the powerhouse of the cell",
        "response": "The mitochondria is the powerhouse of the cell.",
    },
    # 31: close to line 3 (Jaccard 0.70) but under the 0.8 threshold: not a near-duplicate
    {
        "prompt": "What is a list in Python?",
        "response": "An ordered, mutable collection written with square brackets, like [1, 2, 3], "
        "plus many methods to change it.",
    },
]


@pytest.fixture
def problem_dataset(sample_dataset_path: Path, tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    extra = "".join(json.dumps(record) + "\n" for record in PROBLEMS)
    path.write_text(sample_dataset_path.read_text() + extra)
    return path


def test_clusters_are_the_planted_near_duplicates(problem_dataset):
    report = dataset_report(problem_dataset)
    wire = report.to_wire()
    assert [(c["size"], c["lines"]) for c in wire["nearDuplicateClusters"]] == [
        (3, [7, 27, 28]),
        (2, [3, 25]),
        (2, [10, 26]),
    ]
    assert wire["clusterCount"] == 3 and wire["redundantExamples"] == 4
    assert wire["nearDuplicateClusters"][0]["sample"].startswith("What is recursion? → Recursion")
    assert all(len(c["sample"]) <= 120 for c in wire["nearDuplicateClusters"])


def test_leaks_name_their_lines_and_kind(problem_dataset):
    leaks = dataset_report(problem_dataset).to_wire()["leaks"]
    assert leaks["count"] == 2
    assert [(leak["line"], leak["kind"]) for leak in leaks["items"]] == [
        (29, "prompt-in-answer"),
        (30, "answer-in-prompt"),
    ]


def test_histograms_count_every_example(problem_dataset):
    wire = dataset_report(problem_dataset).to_wire()
    assert set(wire["lengthHistograms"]) == {"promptChars", "answerChars"}
    for bins in wire["lengthHistograms"].values():
        assert sum(b["count"] for b in bins) == 31
        assert all(b["from"] < b["to"] for b in bins)
        assert all(a["to"] == b["from"] for a, b in zip(bins, bins[1:], strict=False))
    prompts = [len(json.loads(line)["prompt"]) for line in problem_dataset.read_text().splitlines()]
    first, last = (
        wire["lengthHistograms"]["promptChars"][0],
        wire["lengthHistograms"]["promptChars"][-1],
    )
    assert first["from"] <= min(prompts) < first["to"] and last["from"] <= max(prompts) < last["to"]


def test_histogram_edges():
    assert [(b.start, b.end, b.count) for b in histogram([81, 90, 121])] == [
        (80, 85, 1),
        (85, 90, 0),
        (90, 95, 1),
        (95, 100, 0),
        (100, 105, 0),
        (105, 110, 0),
        (110, 115, 0),
        (115, 120, 0),
        (120, 125, 1),
    ]
    wide = histogram([3, 40, 900, 15_000])  # a long tail gets 1-2-5 edges
    assert [b.start for b in wide] == [2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
    assert wide[-1].end == 20000 and sum(b.count for b in wide) == 4
    assert [(b.start, b.end, b.count) for b in histogram([0, 0])] == [(0, 1, 2)]
    assert histogram([]) == []


def test_score_drops_with_each_problem(sample_dataset_path, problem_dataset):
    clean = dataset_report(sample_dataset_path)
    assert clean.score == clean.analysis.quality["score"] == 90
    assert [p.to_wire() for p in clean.penalties] == [
        {"code": "few-examples", "count": 24, "points": 10}
    ]
    report = dataset_report(problem_dataset)
    penalties = {p.code: (p.count, p.points) for p in report.penalties}
    # validate sees 1 duplicate (line 27); the report 4 redundant examples: 3 more, 30 * 3 / 31
    assert penalties["duplicates"] == (1, 1)
    assert penalties["near-duplicates"] == (3, 3)
    assert penalties["leaks"] == (2, 1)  # max(1, round(20 * 2 / 31))
    assert report.score == report.analysis.quality["score"] - 3 - 1 < clean.score


def test_fixes_are_ranked_by_gain_and_name_lines(problem_dataset):
    fixes = dataset_report(problem_dataset).to_wire()["fixes"]
    assert [f["code"] for f in fixes] == ["few-examples", "near-duplicates", "leaks"]
    assert [f["gain"] for f in fixes] == [10, 4, 1]
    near = fixes[1]
    assert near["title"] == (
        "Remove the 4 near-duplicate examples in 3 clusters (lines 25, 26, 27 and 28)"
    )
    assert near["lines"] == [25, 26, 27, 28] and near["count"] == 4
    assert fixes[2]["lines"] == [29, 30] and "Lines 29 and 30" in fixes[2]["detail"]


def test_diversity_and_a_dominant_answer(tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [(f"Is review number {i} positive?", "Yes." if i % 4 else "No") for i in range(20)]
    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows))
    report = dataset_report(path)
    diversity = report.to_wire()["diversity"]
    assert diversity["distinctAnswers"] == 2 and diversity["distinctAnswersRatio"] == 0.1
    assert diversity["topAnswers"] == [
        {"text": "Yes.", "count": 15, "share": 0.75},
        {"text": "No", "count": 5, "share": 0.25},
    ]
    assert diversity["distinctPromptStarts"] == 1 and diversity["distinctPromptStartsRatio"] == 0.05
    assert diversity["answerWords"] == 20 and diversity["answerTypeTokenRatio"] == 0.1
    dominant = next(f for f in report.fixes if f.code == "dominant-answer")
    assert dominant.gain == 10  # 20 * (0.75 - 0.5) / 0.5
    assert dominant.lines[:3] == [2, 3, 4] and dominant.count == 15
    assert "75%" in dominant.title


def test_over_context_and_token_histogram(tmp_path, tiny_model_template):
    path = tmp_path / "long.jsonl"
    records = [{"prompt": f"Question {i}", "response": f"Short answer {i}."} for i in range(6)]
    records[3]["response"] = " ".join(f"word{i}" for i in range(300))
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = dataset_report(path, model_path=tiny_model_template, context_length=64)
    wire = report.to_wire()
    assert wire["overContext"] == {"contextLength": 64, "count": 1, "lines": [4]}
    assert sum(b["count"] for b in wire["lengthHistograms"]["tokens"]) == 6
    over = next(f for f in report.fixes if f.code == "over-context")
    assert over.lines == [4] and over.gain == 2  # max(1, round(15 * 1 / 6))
    assert "context (64 tokens)" in over.title
    assert dataset_report(path).to_wire()["overContext"] is None


def test_markdown_and_html_show_the_numbers(problem_dataset):
    report = dataset_report(problem_dataset)
    markdown = report_markdown(report)
    assert markdown.startswith("# Dataset report: problems.jsonl\n")
    assert f"**Score: {report.score}/100**" in markdown
    assert "1. **Add examples: 31 now, 100 or more recommended** (+10 points)" in markdown
    assert "## Near-duplicate clusters (3)" in markdown
    assert "| 3 | 7, 27 and 28 | What is recursion? → Recursion" in markdown
    assert "| 29 | prompt-in-answer |" in markdown
    assert "\\[1, 2, 3\\]" in markdown  # Markdown syntax in the data is escaped
    page = report_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert f"Score: {report.score}/100" in page and "<td>7, 27 and 28</td>" in page
    assert "var(--vscode-foreground" in page
    assert "<script" not in page and "http" not in page  # no scripts, nothing external
    assert report.to_wire("markdown")["markdown"] == markdown
    assert "html" not in report.to_wire("markdown") and "markdown" not in report.to_wire()


def test_html_escapes_the_data(tmp_path):
    path = tmp_path / "x.jsonl"
    hostile = {"prompt": "<script>alert('x')</script> & more", "response": "<b>bold</b>"}
    path.write_text(json.dumps(hostile) + "\n" + json.dumps(hostile) + "\n")
    page = report_html(dataset_report(path))
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page


def test_missing_file_and_cancel(tmp_path, sample_dataset_path):
    with pytest.raises(CortexError) as error:
        dataset_report(tmp_path / "none.jsonl")
    assert error.value.code == "dataset-not-found"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CortexError) as error:
        dataset_report(sample_dataset_path, cancel=cancel)
    assert error.value.code == "cancelled"


def test_prompt_and_answer_of_each_shape():
    assert prompt_and_answer(
        [
            ("system", "Be brief."),
            ("user", "Hi"),
            ("assistant", "Hello"),
            ("user", "Bye"),
            ("assistant", "Bye!"),
        ]
    ) == ("Hi\nHello\nBye", "Bye!")
    assert prompt_and_answer([("text", "Just text")]) == ("", "Just text")
    assert line_list([3, 17]) == "3 and 17" and line_list([5]) == "5"
    assert line_list(list(range(1, 14))) == "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 3 more"


def test_near_duplicates_among_many_random_texts():
    rng = random.Random(7)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(3000)
    ]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(12, 40))) for _ in range(3000)]
    planted = {}
    for source in rng.sample(range(3000), 50):
        changed = texts[source].split()
        changed.append(rng.choice(words))  # one more word: Jaccard about 0.9
        planted[len(texts)] = source
        texts.append(" ".join(changed))
    groups = near_duplicate_groups([normalize(t) for t in texts])
    assert sorted(groups) == sorted([source, copy] for copy, source in planted.items())
