"""One summary of every test suite's JUnit XML: counts, skips with reasons, the slowest tests.

scripts/run-tests.sh runs the suites (ruff, pytest, each clients/*/run-tests.sh) with
``CORTEX_TEST_RESULTS`` naming a folder; each suite leaves ``SUITE.xml`` there (pytest's
``--junitxml``, node's junit reporter, or ``record`` below for the shell suites), and this
prints the one summary at the end, so a skipped or silent suite cannot pass unnoticed.

    summarize_tests.py summarize DIR --suite NAME=EXIT... --wall SECONDS
    summarize_tests.py record FILE SUITE NAME pass|fail|skip SECONDS [MESSAGE]

Standard library only: the shell suites call it with any Python 3.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

SLOWEST = 10
STATUSES = {"pass": "passed", "fail": "failed", "skip": "skipped"}


@dataclass
class Case:
    """One test's outcome, whichever runner reported it."""

    suite: str
    name: str
    status: str  # "passed", "failed" or "skipped"
    seconds: float
    message: str = ""


@dataclass
class Suite:
    """A suite's cases and its script's exit status (None: it never ran)."""

    name: str
    exit_code: int | None
    cases: list[Case] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(case.status == status for case in self.cases)

    @property
    def failed(self) -> bool:
        """A failing case, a non-zero exit, or nothing run at all is a failure."""
        return bool(self.count("failed")) or self.exit_code != 0 or not self.cases


def read_junit(path: Path, suite: str) -> list[Case]:
    """Return every ``testcase`` of a JUnit XML file (pytest, node --test, or ``record``)."""
    cases = []
    for element in ET.parse(path).getroot().iter("testcase"):
        classname, name = element.get("classname", ""), element.get("name", "?")
        status, message = "passed", ""
        for child in element:
            if child.tag in ("failure", "error"):
                status, message = "failed", child.get("message") or (child.text or "").strip()
                break
            if child.tag == "skipped":
                status, message = "skipped", child.get("message") or (child.text or "").strip()
        cases.append(
            Case(
                suite=suite,
                # The shell suites' classname is the suite, node's always "test": no news.
                name=f"{classname}::{name}" if classname not in ("", suite, "test") else name,
                status=status,
                seconds=float(element.get("time") or 0.0),
                message=" ".join(message.split())[:200],
            )
        )
    return cases


def record(path: Path, suite: str, name: str, status: str, seconds: float, message: str) -> None:
    """Append one test case to ``path`` (created when missing), for the shell suites."""
    root = ET.parse(path).getroot() if path.exists() else ET.Element("testsuite", name=suite)
    case = ET.SubElement(root, "testcase", classname=suite, name=name, time=f"{seconds:.3f}")
    if status == "fail":
        ET.SubElement(case, "failure", message=message)
    elif status == "skip":
        ET.SubElement(case, "skipped", message=message)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def load_suites(results: Path, exits: list[tuple[str, int | None]]) -> list[Suite]:
    """Return the suites in run order with the cases of their JUnit files (if any)."""
    suites = []
    for name, code in exits:
        suite = Suite(name, code)
        # NAME.xml, and NAME.PART.xml where a suite's runners each write their own file.
        for path in sorted([*results.glob(f"{name}.xml"), *results.glob(f"{name}.*.xml")]):
            try:
                suite.cases += read_junit(path, name)
            except ET.ParseError as error:
                suite.cases.append(
                    Case(name, f"{path.name} (unreadable)", "failed", 0.0, str(error))
                )
        suites.append(suite)
    return suites


def summary(suites: list[Suite], wall_seconds: float, slowest: int = SLOWEST) -> str:
    """Return the combined summary: a table of suites, skips, failures, slowest, wall time."""
    width = max([len(s.name) for s in suites] + [5])
    lines = [
        "== Summary",
        f"{'suite':<{width}}  {'passed':>6}  {'failed':>6}  {'skipped':>7}  {'time':>8}  exit",
    ]
    for suite in suites:
        seconds = sum(case.seconds for case in suite.cases)
        code = "-" if suite.exit_code is None else str(suite.exit_code)
        note = ""
        if not suite.cases:
            note = "  no test ran"
        elif suite.exit_code and not suite.count("failed"):
            note = "  exited non-zero (see its output above)"
        lines.append(
            f"{suite.name:<{width}}  {suite.count('passed'):>6}  {suite.count('failed'):>6}  "
            f"{suite.count('skipped'):>7}  {seconds:>6.1f} s  {code}{note}"
        )
    cases = [case for suite in suites for case in suite.cases]
    for status, title in (("skipped", "Skipped"), ("failed", "Failed")):
        chosen = [case for case in cases if case.status == status]
        if chosen:
            lines.append(f"{title} ({len(chosen)}):")
            lines += [f"  [{c.suite}] {c.name}: {c.message or 'no reason given'}" for c in chosen]
    ran = [case for case in cases if case.status != "skipped"]
    ranked = sorted(ran, key=lambda case: case.seconds, reverse=True)[:slowest]
    if ranked:
        lines.append(f"Slowest {len(ranked)}:")
        lines += [f"  {c.seconds:8.2f} s  [{c.suite}] {c.name}" for c in ranked]
    failed = [suite.name for suite in suites if suite.failed]
    lines.append(f"Total wall time: {wall_seconds:.1f} s")
    lines.append(f"Result: FAILED ({', '.join(failed)})" if failed else "Result: passed")
    return "\n".join(lines)


def _exit_pair(text: str) -> tuple[str, int | None]:
    name, _, code = text.partition("=")
    return name, int(code) if code not in ("", "-") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("summarize", help="print the summary of a results folder")
    show.add_argument("results", type=Path)
    show.add_argument("--suite", dest="suites", action="append", type=_exit_pair, default=[])
    show.add_argument("--wall", type=float, required=True, metavar="SECONDS")
    add = commands.add_parser("record", help="append one test case to a JUnit XML file")
    add.add_argument("path", type=Path)
    add.add_argument("suite")
    add.add_argument("name")
    add.add_argument("status", choices=sorted(STATUSES))
    add.add_argument("seconds", type=float)
    add.add_argument("message", nargs="?", default="")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.path, args.suite, args.name, args.status, args.seconds, args.message)
        return 0
    suites = load_suites(args.results, args.suites)
    print(summary(suites, args.wall))
    return 1 if any(suite.failed for suite in suites) else 0


if __name__ == "__main__":
    sys.exit(main())
