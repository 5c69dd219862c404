"""The terminal wizard in a real pseudo-terminal (pexpect), and its scripted mode."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from cortex_client import commands
from cortex_client.wizard import EXPERT_FIELDS

pytestmark = pytest.mark.slow

WIZARD = [sys.executable, "-m", "cortex_client.cli"]
# Short runs: the wizard's behaviour is under test, not the model's quality.
FAST = ["--set", "iterations=6", "--set", "maxSeqLength=128"]


def spawn(args: list[str], env: dict[str, str], cwd: Path) -> pexpect.spawn:
    child = pexpect.spawn(
        WIZARD[0],
        WIZARD[1:] + args,
        env=env,
        cwd=str(cwd),
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 160),
    )
    child.logfile_read = open(cwd / "wizard.log", "a")  # noqa: SIM115 - closed with the child
    return child


@pytest.fixture
def wizard_env(cortex_home: Path, tiny_model: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CORTEX_HOME": str(cortex_home), "COLUMNS": "160", "TERM": "xterm"})
    models = cortex_home / "models"
    models.mkdir()
    tiny_model.rename(models / "tiny-llama")
    return env


def pick_model(child: pexpect.spawn) -> None:
    child.expect_exact("[Step 1: Select Base Model]")
    child.expect_exact("tiny-llama")
    child.expect_exact("Select model [1]: ")
    child.sendline("")
    child.expect_exact("✓ Model: tiny-llama (Tiny")


def finish(child: pexpect.spawn, name: str, chat: bool = False, source: str = "") -> None:
    child.expect_exact("[Step 4: Name Your Model]")
    child.expect_exact("Enter name for fine-tuned model [tiny-llama-custom]: ")
    child.sendline(name)
    child.expect_exact("[Training Summary]")
    child.expect_exact(f"Config source: {source}")
    child.expect_exact("Estimated time: ~")
    child.expect_exact("Start fine-tuning? [Y/n]: ")
    child.sendline("y")
    child.expect_exact("⚡ Starting fine-tuning...")
    child.expect_exact("✓ Fine-tuning completed!")
    child.expect_exact("Model saved to: ")
    child.expect_exact(name)
    child.expect_exact("LoRA adapter size:")
    child.expect_exact(f"Load '{name}' now? [Y/n]: ")
    if chat:
        child.sendline("y")
        child.expect_exact("Model loaded successfully!")
        child.expect_exact("> ")
        child.sendline("What is Python?")
        child.expect_exact("> ")
        child.sendline("")
    else:
        child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_existing_file_with_quick_preset_and_chat(
    wizard_env, cortex_home, tmp_path, sample_dataset_path
):
    data = tmp_path / "mine.jsonl"
    data.write_text(sample_dataset_path.read_text())
    child = spawn(FAST, wizard_env, tmp_path)
    pick_model(child)
    child.expect_exact("[Step 2: Prepare Training Data]")
    child.expect_exact("Select option: ")
    child.sendline("1")
    child.expect_exact("Enter path to dataset: ")
    child.sendline(str(tmp_path / "missing.jsonl"))
    # One line only: pexpect matches "." across newlines, so ".*" could eat the next prompt.
    child.expect("✗ [^\r\n]*")  # a missing file is reported and asked again
    child.expect_exact("Select option: ")
    child.sendline("1")
    child.expect_exact("Enter path to dataset: ")
    child.sendline(str(data))
    child.expect_exact("✓ Dataset validated: 24 examples")
    child.expect_exact("Smart Configuration detected:")
    child.expect_exact("Task type: Chat")
    child.expect_exact("Select preset [2]: ")
    child.sendline("1")
    child.expect_exact("⚡ Smart configuration applied:")
    child.expect_exact("Tokens trained per example: ")
    child.expect_exact("(min/median/max); 0 examples would be cut at maxSeqLength 128")
    finish(child, "quick-model", chat=True)
    assert (cortex_home / "mlx_models" / "quick-model" / "fine-tuned.marker").exists()


def test_broken_file_shows_line_numbers(wizard_env, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": }\n')
    child = spawn(FAST, wizard_env, tmp_path)
    pick_model(child)
    child.expect_exact("Select option: ")
    child.sendline("1")
    child.expect_exact("Enter path to dataset: ")
    child.sendline(str(data))
    child.expect_exact("broken.jsonl:2:")
    child.expect_exact("error(s)")
    child.expect_exact("Select option: ")
    child.sendeof()
    child.expect(pexpect.EOF)


def test_create_interactively_with_balanced_preset(wizard_env, cortex_home, tmp_path):
    child = spawn(FAST, wizard_env, tmp_path)
    pick_model(child)
    child.expect_exact("Select option: ")
    child.sendline("2")
    child.expect_exact("Save the dataset as [")
    child.sendline("")
    pairs = [("What is cortex?", "A fine-tuning server."), ("Who trains?", "The worker.")]
    for prompt, response in pairs:
        child.expect_exact("prompt (or 'done'): ")
        child.sendline(prompt)
        child.expect_exact("Response: ")
        child.sendline(response)
    child.expect_exact("prompt (or 'done'): ")
    child.sendline("done")
    child.expect_exact("Only 2 examples")
    child.expect_exact("Add more examples? [Y/n]: ")
    child.sendline("n")
    child.expect_exact("✓ Dataset validated: 2 examples")
    child.expect_exact("Select preset [2]: ")
    child.sendline("")
    finish(child, "created-model", source="Smart Balanced")
    lines = (tmp_path / "cortex-dataset.jsonl").read_text().splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == [p for p, _ in pairs]


@pytest.mark.parametrize("preset", ["quality", "expert"])
def test_sample_dataset_with_quality_and_expert(wizard_env, cortex_home, tmp_path, preset):
    # Expert sets the epochs itself, so it must not also get an iterations override.
    child = spawn(
        FAST if preset == "quality" else ["--set", "maxSeqLength=128"], wizard_env, tmp_path
    )
    pick_model(child)
    child.expect_exact("Select option: ")
    child.sendline("3")
    child.expect_exact("✓ Dataset validated: 24 examples")
    child.expect_exact("Select preset [2]: ")
    child.sendline("3" if preset == "quality" else "4")
    if preset == "expert":
        child.expect_exact("Press Enter to keep the proposed value.")
        child.expect(r"Epochs \[[0-9.]+\]: ")
        child.sendline("2")
        child.expect(r"Learning rate \[[0-9.e-]+\]: ")
        child.sendline("abc")  # not a number: the server's validation asks again
        for _ in range(len(EXPERT_FIELDS) - 2):
            child.expect(r"\]: ")
            child.sendline("")
        child.expect_exact("✗ ")
        child.expect_exact("Press Enter to keep the proposed value.")
        child.expect(r"Epochs \[[0-9.]+\]: ")
        child.sendline("")
        child.expect(r"Learning rate \[[^\]]+\]: ")
        child.sendline("5e-4")
        for _ in range(len(EXPERT_FIELDS) - 3):
            child.expect(r"\]: ")
            child.sendline("")
        child.expect_exact("Early stopping patience (evaluations, none = off) [none]: ")
        child.sendline("3")
    finish(child, f"{preset}-model")
    marker = json.loads(
        (cortex_home / "mlx_models" / f"{preset}-model" / "fine-tuned.marker").read_text()
    )
    if preset == "expert":
        assert marker["config"]["learningRate"] == 5e-4
        assert marker["config"]["epochs"] == 2
        assert marker["config"]["earlyStopping"] == {"patience": 3, "minDelta": 0.0}
        assert marker["config"]["lrSchedule"] == "cosine"  # Balanced's, proposed to Expert
        assert marker["keptAdapter"]["keepBest"] is True


def interrupt_training(env: dict[str, str], cwd: Path, name: str, iterations: int):
    """Start a sample run and press Ctrl-C once it reports a loss; return at the question."""
    child = spawn(
        [
            "--sample",
            "--preset",
            "quick",
            "--name",
            name,
            "--set",
            f"iterations={iterations}",
            "--set",
            "maxSeqLength=128",
        ],
        env,
        cwd,
    )
    pick_model(child)
    child.expect_exact("Start fine-tuning? [Y/n]: ")
    child.sendline("")
    child.expect_exact("Loss:")
    child.sendintr()
    child.expect_exact("[c]ancel training")
    return child


def test_ctrl_c_asks_then_cancels_keeping_the_checkpoint(wizard_env, cortex_home, tmp_path):
    child = interrupt_training(wizard_env, tmp_path, "stopped", iterations=3000)
    child.sendline("c")
    # The command as this installation runs it (its absolute path when PATH lacks it).
    child.expect_exact(f"Training cancelled. Resume it with: {commands.cortex_finetune()} resume")
    child.expect(pexpect.EOF)
    child.close()
    jobs = list((cortex_home / "jobs").iterdir())
    status = json.loads((jobs[0] / "status.json").read_text())
    assert status["state"] == "cancelled"
    assert not (cortex_home / "mlx_models" / "stopped").exists()


def test_scripted_json_mode(wizard_env, cortex_home, tmp_path):
    done = subprocess.run(
        WIZARD
        + [
            "--model",
            "tiny-llama",
            "--sample",
            "--preset",
            "quick",
            "--name",
            "scripted",
            "--yes",
            "--json",
            "--chat",
            "What is Python?",
            *FAST,
        ],
        env=wizard_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "model" and "validation" in kinds and "config" in kinds
    assert "progress" in kinds and "completed" in kinds and kinds[-1] == "generation"
    completed = next(e for e in events if e["event"] == "completed")
    assert completed["outputPath"] == str(cortex_home / "mlx_models" / "scripted")


def test_scripted_mode_reports_a_missing_answer(wizard_env, tmp_path):
    done = subprocess.run(
        WIZARD + ["--model", "tiny-llama", "--yes"],
        env=wizard_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "Aborted" in done.stdout + done.stderr


def test_guide_scripting_api(cortex_home, tiny_model, sample_dataset_path):
    from cortex.fine_tuning import LoRATrainer, TrainingConfig

    config = TrainingConfig(
        preset="quick", iterations=4, learning_rate=1e-4, lora_r=4, max_seq_length=128
    )
    final = LoRATrainer(None, config).train(
        base_model_name=str(tiny_model),
        dataset_path=str(sample_dataset_path),
        output_name="scripted-api",
    )
    assert final["state"] == "completed"
    marker = json.loads((Path(final["outputPath"]) / "fine-tuned.marker").read_text())
    assert marker["config"]["loraRank"] == 4


def test_ctrl_c_then_detach_lets_the_job_finish(wizard_env, cortex_home, tmp_path):
    import time

    child = interrupt_training(wizard_env, tmp_path, "detached", iterations=300)
    child.sendline("d")
    child.expect_exact("Detached: job")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    marker = cortex_home / "mlx_models" / "detached" / "fine-tuned.marker"
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the detached job did not finish"


def test_batch_trains_one_model_per_dataset(wizard_env, cortex_home, tmp_path, sample_dataset_path):
    batch = tmp_path / "domains"
    batch.mkdir()
    lines = sample_dataset_path.read_text().splitlines()
    (batch / "python.jsonl").write_text("\n".join(lines[:12]) + "\n")
    (batch / "tools.jsonl").write_text("\n".join(lines[12:]) + "\n")
    (batch / "notes.md").write_text("not a dataset")
    done = subprocess.run(
        WIZARD
        + ["batch", str(batch), "--model", "tiny-llama", "--preset", "quick", "--yes", *FAST],
        env=wizard_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Batch finished: 2 of 2 trained." in done.stdout
    for name in ("tiny-llama-python", "tiny-llama-tools"):
        assert (cortex_home / "mlx_models" / name / "fine-tuned.marker").exists()


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> list[dict]:
    done = subprocess.run(
        WIZARD + args + ["--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_evaluate_compare_and_tune_commands(wizard_env, tmp_path, sample_dataset_path):
    run_cli(
        [
            "--model",
            "tiny-llama",
            "--sample",
            "--preset",
            "quick",
            "--name",
            "after",
            "--yes",
            *FAST,
        ],
        wizard_env,
        tmp_path,
    )
    data = str(sample_dataset_path)

    listing = subprocess.run(
        WIZARD + ["models"],
        env=wizard_env,
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    ).stdout
    rows = {
        line.split("│")[1].strip(): line for line in listing.splitlines() if line.count("│") > 2
    }
    assert "yes" in rows["after"] and "yes" not in rows["tiny-llama"], listing

    evaluation = run_cli(["evaluate", "after", data, "--all"], wizard_env, tmp_path)[-1]
    assert evaluation["event"] == "evaluation" and evaluation["split"] == "all"
    assert evaluation["examples"] == 24
    assert evaluation["perplexity"] == pytest.approx(math.exp(evaluation["loss"]), rel=1e-3)

    comparison = run_cli(
        ["compare", "tiny-llama", "--prompt", "What is Git?"], wizard_env, tmp_path
    )[-1]
    assert [o["model"] for o in comparison["rows"][0]["outputs"]] == ["base", "after"]

    events = run_cli(
        ["tune", "tiny-llama", data, "--budget", "12", "--trials", "2"], wizard_env, tmp_path
    )
    trials = [e for e in events if e["event"] == "tuning" and e.get("trial")]
    tuned = events[-1]
    assert tuned["event"] == "tuned" and trials
    assert tuned["best"]["valLoss"] == min(
        t["trial"]["valLoss"] for t in trials if t["trial"].get("valLoss") is not None
    )


def test_tuning_lines_read_like_the_table():
    from cortex_client.cli import tuning_line

    note = {
        "event": "trial",
        "usedSeconds": 7.2,
        "budgetSeconds": 60,
        "trial": {
            "index": 3,
            "round": 1,
            "config": {"learningRate": 0.0015, "loraRank": 16},
            "iterations": 28,
            "seconds": 3.25,
            "valLoss": 5.77731,
        },
    }
    assert tuning_line(note) == (
        "  trial 3 (round 1): lr 0.0015, rank 16, 28 it, 3.2 s · val loss 5.7773  [7/60 s]"
    )
    assert tuning_line({"event": "plan", "candidates": 8, "firstRoundIterations": 14}) == (
        "Plan: 8 candidates, 14 iterations each in round 1"
    )
    assert tuning_line({"event": "done"}) is None


def test_tokens_line_reads_the_training_view():
    from cortex_client.wizard import tokens_line

    view = {
        "trainedTokens": {"min": 3, "median": 20, "max": 400, "total": 900},
        "cut": 2,
        "lostTrainedTokens": 1200,
    }
    proposal = {"config": {"maxSeqLength": 256}, "trainingView": view}
    assert tokens_line(proposal) == (
        "Tokens trained per example: 3/20/400 (min/median/max); 2 examples would be cut at "
        "maxSeqLength 256, losing 1,200 trained tokens"
    )
    assert tokens_line({"config": {"maxSeqLength": 256}}) == ""


def _pairs_file(path: Path) -> Path:
    rows = [
        {"prompt": f"What is {i}+1?", "chosen": f"{i + 1}.", "rejected": f"{i + 3}."}
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _to_preset(child: pexpect.spawn, data: Path) -> None:
    pick_model(child)
    child.expect_exact("[Step 2: Prepare Training Data]")
    child.expect_exact("Select option: ")
    child.sendline("1")
    child.expect_exact("Enter path to dataset: ")
    child.sendline(str(data))
    child.expect_exact("✓ Dataset validated: 12 examples")
    child.expect_exact("Smart Configuration detected:")


def test_preference_data_asks_the_training_method(wizard_env, tmp_path):
    child = spawn(FAST, wizard_env, tmp_path)
    _to_preset(child, _pairs_file(tmp_path / "pairs.jsonl"))
    child.expect_exact("The dataset holds preference pairs")
    child.expect_exact("DPO   (recommended")
    child.expect_exact("Training method [2]: ")
    child.sendline("3")
    child.expect_exact("Select preset [2]: ")
    child.sendline("")
    child.expect_exact("ORPO: SFT on the chosen answers")
    child.expect_exact("[Step 4: Name Your Model]")
    child.expect_exact("Enter name for fine-tuned model [tiny-llama-custom]: ")
    child.sendline("pref-model")
    child.expect_exact("Method:        ORPO (preference pairs)")
    child.expect_exact("ORPO lambda:   0.1")
    child.expect_exact("Start fine-tuning? [Y/n]: ")
    child.sendline("n")
    child.expect_exact("Fine-tuning not started.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_sft_data_does_not_ask_the_training_method(wizard_env, tmp_path, sample_dataset_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(sample_dataset_path.read_text().splitlines(True)[:12]))
    child = spawn(FAST, wizard_env, tmp_path)
    _to_preset(child, data)
    child.expect_exact("Select preset [2]: ")
    assert "Training method" not in child.before
    child.sendline("")
    child.expect_exact("[Step 4: Name Your Model]")
    child.sendline("sft-model")
    child.expect_exact("Method:        SFT")
    child.expect_exact("Start fine-tuning? [Y/n]: ")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_method_dpo_on_sft_data_stops_with_the_reason(wizard_env, tmp_path):
    done = subprocess.run(
        WIZARD + ["--model", "tiny-llama", "--sample", "--method", "dpo", "--name", "x", "--yes"],
        env=wizard_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert "dpo trains on preference pairs" in done.stdout + done.stderr


def test_a_hub_cache_model_is_named_by_its_repo_id(wizard_env, cortex_home, tmp_path):
    from tests.models.hub_cache import COMMIT_A, add_snapshot, model_files

    repo = "mlx-community/tiny-llama-4bit"
    hub = Path(wizard_env["HF_HOME"]) / "hub"
    add_snapshot(hub, repo, COMMIT_A, model_files(cortex_home / "models" / "tiny-llama"))
    done = subprocess.run(
        WIZARD + ["--model", repo, "--sample", "--preset", "quick", "--yes", "--json", *FAST],
        env=wizard_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    model = next(e for e in events if e["event"] == "model")
    assert model["name"] == repo
    completed = next(e for e in events if e["event"] == "completed")
    output = cortex_home / "mlx_models" / "tiny-llama-4bit-custom"
    assert completed["outputPath"] == str(output)
    marker = json.loads((output / "fine-tuned.marker").read_text())
    assert marker["baseModel"]["name"] == repo and marker["baseModel"]["snapshot"] == COMMIT_A
    assert json.loads((cortex_home / "wizard.json").read_text())["lastModel"] == repo
