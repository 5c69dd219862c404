"""Terminal input and output for the wizard: rich for people, JSON lines for scripts.

Questions are read on a daemon thread so the event loop keeps reading the server's
notifications (and a pending question never keeps the process alive at exit).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

from rich.console import Console

# The width rich lays out tables for when the output is not a terminal: wide enough that
# nothing is cut; tables and the progress line are no wider than their content.
UNLIMITED_WIDTH = 10_000


class WizardAborted(Exception):
    """The user ended input (Ctrl-D) or a required answer was missing in scripted mode."""


class Terminal:
    """What the wizard says and asks. ``json_mode`` prints events, not prose, on stdout."""

    def __init__(self, *, json_mode: bool = False, assume_yes: bool = False) -> None:
        self.json_mode = json_mode
        self.assume_yes = assume_yes
        # In JSON mode the prose goes to stderr so stdout stays machine-readable.
        self.console = Console(stderr=json_mode, highlight=False, soft_wrap=True)
        if not self.console.is_terminal:
            # Piped or logged: rich would cut every table and progress line at 80 columns.
            self.console.width = UNLIMITED_WIDTH
        self.interactive = sys.stdin.isatty() and not assume_yes

    def say(self, text: str = "", style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False)

    def rich(self, renderable: Any) -> None:
        self.console.print(renderable)

    def heading(self, text: str) -> None:
        self.console.print()
        self.console.print(f"[{text}]", style="bold cyan", markup=False)

    def event(self, kind: str, **fields: Any) -> None:
        """Print one machine-readable event line (``--json``)."""
        if self.json_mode:
            if "event" in fields:  # a job event's own kind, e.g. "checkpoint"
                fields["jobEvent"] = fields.pop("event")
            sys.stdout.write(json.dumps({"event": kind, **fields}, default=str) + "\n")
            sys.stdout.flush()

    async def ask(self, question: str, default: str | None = None, flag: str | None = None) -> str:
        """Return the answer (the default for an empty one); raise WizardAborted on EOF.

        Without a terminal a question with no default aborts, naming ``flag``: the option
        that answers it in a scripted run.
        """
        if not self.interactive:
            if default is None:
                raise WizardAborted(unanswered(question, flag))
            return default
        suffix = f" [{default}]" if default not in (None, "") else ""
        answer = await read_line(f"{question}{suffix}: ")
        if answer is None:
            raise WizardAborted("input closed")
        return answer.strip() or (default or "")

    async def confirm(self, question: str, default: bool = True) -> bool:
        if not self.interactive:
            return default if not self.assume_yes else True
        hint = "Y/n" if default else "y/N"
        while True:
            answer = await read_line(f"{question} [{hint}]: ")
            if answer is None:
                raise WizardAborted("input closed")
            answer = answer.strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
            self.say("Please answer y or n.")

    async def choose(
        self,
        question: str,
        options: list[str],
        default: int | None = None,
        flag: str | None = None,
    ) -> int:
        """Show numbered options and return the 0-based index chosen (``flag``: see ask)."""
        if not self.interactive and default is None:
            raise WizardAborted(unanswered(question, flag))
        for number, option in enumerate(options, 1):
            self.say(f"{number}. {option}")
        while True:
            answer = await self.ask(
                question, None if default is None else str(default + 1), flag=flag
            )
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                return int(answer) - 1
            self.say(f"Enter a number from 1 to {len(options)}.", style="yellow")


def unanswered(question: str, flag: str | None) -> str:
    """Return why a scripted run stopped at ``question`` and which flag answers it."""
    if flag is None:
        return f"{question.strip()}: needs an answer, and there is no terminal to ask"
    return f"{question.strip()}: needs an answer, and there is no terminal to ask; pass {flag}"


async def read_line(prompt: str) -> str | None:
    """Read one line from stdin without blocking the event loop; None at end of input."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()

    def reader() -> None:
        try:
            line: str | None = input(prompt)
        except EOFError:
            line = None
        except Exception:  # noqa: BLE001 - report as end of input
            line = None
        loop.call_soon_threadsafe(lambda: future.done() or future.set_result(line))

    threading.Thread(target=reader, daemon=True, name="wizard-input").start()
    return await future
