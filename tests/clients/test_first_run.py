"""What a new user meets first: chat from a pipe, hints that run as printed, scripted
questions that name their flag, output that is not cut when piped, and the demo's names."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cortex_client import commands
from cortex_client.cli import build_parser, demo_name
from cortex_client.client import CortexClient
from cortex_client.terminal import UNLIMITED_WIDTH, Terminal, WizardAborted
from cortex_client.wizard import PlainProgress, free_name

CLI = [sys.executable, "-m", "cortex_client.cli"]


def run_cli(args: list[str], stdin: str | None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + args,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.slow
def test_chat_answers_each_piped_line_and_exits_at_eof(tiny_model, tmp_path):
    done = run_cli(
        ["chat", str(tiny_model), "--json"], "What is Python?\n\nWhat is a list?\n", tmp_path
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    # The blank line is skipped, each other line answered, and EOF ends the chat.
    assert [e["prompt"] for e in events if e["event"] == "generation"] == [
        "What is Python?",
        "What is a list?",
    ]
    assert all(e["text"] for e in events if e["event"] == "generation")
    assert "empty line to finish" not in done.stderr

    plain = run_cli(["chat", str(tiny_model)], "What is Python?\n", tmp_path)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    loaded = next(i for i, line in enumerate(lines) if "Model loaded successfully" in line)
    assert lines[loaded + 1] == "> What is Python?" and lines[loaded + 2].strip()


@pytest.mark.slow
def test_chat_with_a_missing_model_fails_before_saying_it_loaded(tmp_path):
    done = run_cli(["chat", "no-such-model"], "Hello\n", tmp_path)
    assert done.returncode == 1
    assert "No model named or at 'no-such-model'" in done.stdout
    assert "loaded" not in done.stdout


@pytest.mark.slow
def test_scripted_wizard_names_the_flag_that_answers_the_question(tiny_model, tmp_path):
    done = run_cli(["--model", str(tiny_model)], None, tmp_path)
    assert done.returncode == 2
    assert "Select option: needs an answer" in done.stdout
    assert "pass --data FILE (JSONL, JSON, CSV or TXT) or --sample" in done.stdout


def test_choose_without_a_terminal_names_the_flag_and_keeps_defaults():
    term = Terminal(assume_yes=True)
    with pytest.raises(WizardAborted, match="pass --preset quick"):
        asyncio.run(term.choose("Select preset", ["a", "b"], flag="--preset quick"))
    assert asyncio.run(term.choose("Select preset", ["a", "b"], default=1)) == 1
    with pytest.raises(WizardAborted, match="no terminal to ask$"):
        asyncio.run(term.ask("Response"))


def test_output_that_is_not_a_terminal_is_not_cut_at_80_columns(capsys):
    from rich.table import Table

    term = Terminal()
    assert not term.console.is_terminal and term.console.width == UNLIMITED_WIDTH
    path = "/a/very/long/path/" + "x" * 150
    table = Table("Name", "Path")
    table.add_row("demo-custom", path)
    term.rich(table)
    assert path in capsys.readouterr().out


def test_plain_progress_prints_about_ten_lines_and_each_state():
    plain = PlainProgress()
    notes = [{"state": "queued", "totalIterations": 100}]
    notes += [{"state": "running", "iteration": i, "totalIterations": 100} for i in range(101)]
    notes.append({"state": "completed", "iteration": 100, "totalIterations": 100})
    printed = [note for note in notes if plain.due(note)]
    assert [n.get("iteration") for n in printed] == [None, 0, *range(10, 101, 10), 100]
    assert PlainProgress.position(printed[3]) == "20/100 (20%)"


def test_hints_name_the_entry_point_when_path_does_not_find_it(monkeypatch, tmp_path):
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", str(tmp_path))
    assert commands.python() == str(bin_dir / Path(sys.executable).name)
    assert commands.cortex_finetune().startswith(str(bin_dir))
    # The server's export hints too (an editor starts cortex-rpc by its full path).
    from cortex_rpc.models.export import _next_commands

    mlx = _next_commands("mlx", tmp_path / "out", "out", None)[0]
    assert mlx.startswith(f"{bin_dir / 'mlx_lm.generate'} --model ")
    monkeypatch.setenv("PATH", f"{bin_dir}:{tmp_path}")
    assert commands.python() == Path(sys.executable).name
    if (bin_dir / "cortex-finetune").exists():
        assert commands.cortex_finetune() == "cortex-finetune"


def test_free_name_counts_up_from_two():
    assert free_name("demo-custom", set()) == "demo-custom"
    assert free_name("demo-custom", {"demo-custom", "demo-custom-2"}) == "demo-custom-3"


def demo_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["demo", *argv])


@pytest.mark.slow
def test_demo_names_reuse_or_replace_an_earlier_run(
    cortex_home, tiny_model, tiny_model_template, sample_dataset_path, monkeypatch, capsys
):
    from cortex.fine_tuning import LoRATrainer, TrainingConfig

    # A real earlier fine-tune named demo-custom (a short run: its quality is not tested).
    config = TrainingConfig(preset="quick", iterations=2, max_seq_length=128)
    LoRATrainer(None, config).train(
        base_model_name=str(tiny_model),
        dataset_path=str(sample_dataset_path),
        output_name="demo-custom",
    )
    earlier = cortex_home / "mlx_models" / "demo-custom"
    assert earlier.is_dir()
    shutil.copytree(tiny_model_template, cortex_home / "models" / "base-tiny")
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # no terminal to ask

    async def names() -> list[str | Exception]:
        results: list[str | Exception] = []
        async with CortexClient() as client:
            term = Terminal(assume_yes=True)
            for argv in ([], ["--name", "demo-custom"], ["--name", "base-tiny"]):
                try:
                    results.append(await demo_name(client, term, demo_args(*argv)))
                except WizardAborted as error:
                    results.append(error)
            # At a terminal the question is asked for real; "n" keeps the earlier model.
            with monkeypatch.context() as tty:
                tty.setattr(sys.stdin, "isatty", lambda: True)
                tty.setattr("cortex_client.terminal.read_line", answer_no)
                results.append(await demo_name(client, term, demo_args()))
            assert asked == ["Replace it? [y/N]: "] and earlier.is_dir()
            results.append(await demo_name(client, term, demo_args("--replace")))
        return results

    asked: list[str] = []

    async def answer_no(prompt: str) -> str:
        asked.append(prompt[prompt.index("Replace") :])
        return "n"

    default, explicit, base, declined, replaced = asyncio.run(names())
    assert declined == "demo-custom-2"
    out = capsys.readouterr().out
    assert default == "demo-custom-2"
    assert "reuse the name with --name demo-custom --replace" in out
    assert isinstance(explicit, WizardAborted) and "pass --replace" in str(explicit)
    assert isinstance(base, WizardAborted) and "is a base model" in str(base)
    assert (cortex_home / "models" / "base-tiny" / "config.json").exists()
    assert replaced == "demo-custom" and not earlier.exists()
    assert "Removed the earlier demo-custom" in out

    # The delete command the demo prints goes through the same path, and never takes a base.
    from cortex_client.cli import main

    assert main(["delete", "base-tiny"]) == 1
    assert "No fine-tuned model named 'base-tiny'" in capsys.readouterr().out
    assert (cortex_home / "models" / "base-tiny" / "config.json").exists()


@pytest.mark.slow
def test_the_demo_teaches_its_model_the_sample_answers(cortex_home, tmp_path):
    """The README's main job, as `make demo` runs it: it must end with the taught answer."""
    done = subprocess.run(
        [sys.executable, "-m", "cortex_client.cli", "demo"],
        env={**os.environ, "CORTEX_HOME": str(cortex_home), "COLUMNS": "160"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "reproduces what it was taught" in done.stdout
    assert (cortex_home / "mlx_models" / "demo-custom" / "fine-tuned.marker").is_file()
