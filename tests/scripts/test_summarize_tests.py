"""scripts/summarize_tests.py: one summary from pytest's, node's and the shell suites' JUnit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "summarize_tests.py"
spec = importlib.util.spec_from_file_location("summarize_tests", SCRIPT)
summarize = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = summarize  # dataclasses look their module up there
spec.loader.exec_module(summarize)

# What pytest --junitxml writes (one pass, one skip, one failure).
PYTEST_XML = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.clients.test_wizard" name="test_a" time="12.5"/>
<testcase classname="tests.e2e.test_export" name="test_gguf" time="0.01">
  <skipped type="pytest.skip" message="llama.cpp's converter is not installed">skip</skipped>
</testcase>
<testcase classname="tests.models.test_inspect" name="test_b[x]" time="3.0">
  <failure message="assert 1 == 2">trace</failure>
</testcase></testsuite></testsuites>"""
# What node --test --test-reporter=junit writes: cases nested in a describe's testsuite.
NODE_XML = """<?xml version="1.0" encoding="utf-8"?><testsuites>
<testsuite name="api"><testcase name="lists models" time="0.250" classname="test"/>
<testcase name="needs a model" time="0.001" classname="test">
<skipped type="skipped" message="no model"/></testcase></testsuite>
<testcase name="top level" time="1.5" classname="test"/></testsuites>"""


def write(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")


def test_counts_skips_failures_slowest_and_wall_time(tmp_path):
    write(tmp_path, "pytest.xml", PYTEST_XML)
    write(tmp_path, "vscode.node.xml", NODE_XML)
    summarize.record(tmp_path / "vscode.xml", "vscode", "package", "pass", 9.25, "")
    summarize.record(tmp_path / "ruff.xml", "ruff", "ruff check .", "pass", 0.5, "")
    suites = summarize.load_suites(
        tmp_path, [("ruff", 0), ("pytest", 1), ("vscode", 0), ("neovim", None)]
    )
    text = summarize.summary(suites, wall_seconds=61.23, slowest=3)
    lines = text.splitlines()
    row = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert row["ruff"][:3] == ["1", "0", "0"]
    assert row["pytest"][:3] == ["1", "1", "1"]
    assert row["vscode"][:3] == ["3", "0", "1"]
    assert "no test ran" in lines[5]
    assert (
        "  [pytest] tests.e2e.test_export::test_gguf: llama.cpp's converter is not installed"
        in lines
    )
    assert "  [vscode] needs a model: no model" in lines
    assert "  [pytest] tests.models.test_inspect::test_b[x]: assert 1 == 2" in lines
    slowest = lines[lines.index("Slowest 3:") + 1 :][:3]
    assert [line.split()[-1] for line in slowest] == [
        "tests.clients.test_wizard::test_a",
        "package",
        "tests.models.test_inspect::test_b[x]",
    ]
    assert "Total wall time: 61.2 s" in lines
    assert lines[-1] == "Result: FAILED (pytest, neovim)"


@pytest.mark.parametrize(
    ("exit_code", "result"), [(0, "Result: passed"), (5, "Result: FAILED (pytest)")]
)
def test_a_suite_fails_on_its_exit_status_even_without_failing_cases(tmp_path, exit_code, result):
    summarize.record(tmp_path / "pytest.xml", "pytest", "t", "pass", 0.1, "")
    suites = summarize.load_suites(tmp_path, [("pytest", exit_code)])
    assert summarize.summary(suites, 1.0).splitlines()[-1] == result


def test_main_exits_1_when_a_suite_failed_and_records_a_skip(tmp_path, capsys):
    summarize.main(
        ["record", str(tmp_path / "scripts.xml"), "scripts", "node", "skip", "0", "no node"]
    )
    assert summarize.main(["summarize", str(tmp_path), "--suite", "scripts=0", "--wall", "2"]) == 0
    assert "  [scripts] node: no node" in capsys.readouterr().out
    assert summarize.main(["summarize", str(tmp_path), "--suite", "scripts=1", "--wall", "2"]) == 1
