"""``cortex-finetune report``: the dataset report as Markdown, HTML or JSON events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cortex_client.cli import build_parser

CLI = [sys.executable, "-m", "cortex_client.cli"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + args, cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_report_arguments():
    args = build_parser().parse_args(["report", "d.jsonl", "--model", "m", "--html", "r.html"])
    assert (args.command, args.dataset, args.model, args.html) == (
        "report",
        "d.jsonl",
        "m",
        Path("r.html"),
    )


def test_report_prints_markdown_writes_html_and_emits_json(tmp_path, sample_dataset_path):
    data = tmp_path / "mine.jsonl"
    lines = sample_dataset_path.read_text().splitlines()
    data.write_text("\n".join(lines + [lines[0]]) + "\n")

    done = run(["report", str(data)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Dataset report: mine.jsonl\n")
    assert "**Score: 89/100**" in done.stdout  # 100 - 10 (25 examples) - round(30 / 25)
    assert "| 2 | 1 and 25 | What is Python? → Python is" in done.stdout

    done = run(["report", str(data), "--html", "report.html"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Report written to report.html (score 89/100)" in done.stdout
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "Score: 89/100" in page

    done = run(["report", str(data), "--json"], tmp_path)
    event = json.loads(done.stdout)
    assert event["event"] == "report" and event["score"] == 89
    assert "markdown" not in event and event["nearDuplicateClusters"][0]["lines"] == [1, 25]

    done = run(["report", str(tmp_path / "none.jsonl")], tmp_path)
    assert done.returncode == 1 and "does not exist" in done.stdout
