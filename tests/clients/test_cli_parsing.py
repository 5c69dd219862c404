"""cortex-finetune's flag parsing: overrides, values, and flags after a subcommand."""

from __future__ import annotations

import pytest

from cortex_client.cli import answers_from, build_parser, parse_overrides, tensorboard_command
from cortex_client.wizard import parse_value, schedule_line


def test_values_become_json_types():
    assert parse_value("5e-5") == 5e-5
    assert parse_value("16") == 16
    assert parse_value("true") is True
    assert parse_value("none") is None
    assert parse_value("dora") == "dora"


def test_overrides_accept_snake_and_camel_case():
    assert parse_overrides(["learning_rate=1e-4", "loraRank=16"]) == {
        "learningRate": 1e-4,
        "loraRank": 16,
    }
    with pytest.raises(SystemExit):
        parse_overrides(["learningRate"])


def test_flags_work_before_and_after_a_subcommand():
    parser = build_parser()
    before = parser.parse_args(["--json", "--model-dir", "/m", "models"])
    after = parser.parse_args(["models", "--json", "--model-dir", "/m"])
    assert before.json and after.json
    assert before.model_dirs == after.model_dirs == ["/m"]
    assert before.command == after.command == "models"


def test_yes_means_balanced_and_no_chat_unless_asked():
    args = build_parser().parse_args(["--model", "m", "--sample", "--yes"])
    answers = answers_from(args)
    assert answers.preset == "balanced" and answers.chat is False
    assert answers.data_option == "sample"
    args = build_parser().parse_args(["--chat", "hi", "--yes"])
    assert answers_from(args).chat is True and answers_from(args).prompts == ["hi"]


def test_export_takes_a_model_a_target_and_gguf_options():
    args = build_parser().parse_args(
        ["export", "my-ft", "gguf", "--quantization", "q8_0", "--json"]
    )
    assert (args.command, args.model_name, args.target) == ("export", "my-ft", "gguf")
    assert args.quantization == "q8_0" and args.verify is True and args.json
    args = build_parser().parse_args(["export", "my-ft", "lmstudio", "--no-verify"])
    assert args.verify is False and args.quantization is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "my-ft", "onnx"])


def test_jobs_logdir_prints_the_tensorboard_command_for_every_job():
    args = build_parser().parse_args(["jobs", "--logdir"])
    assert args.command == "jobs" and args.logdir is True
    assert build_parser().parse_args(["jobs"]).logdir is False
    jobs = [
        {"jobId": "a", "logDir": "/home/u/.cortex/jobs/a/tensorboard"},
        {"jobId": "b", "logDir": "/home/u/.cortex/jobs/b/tensorboard"},
    ]
    assert tensorboard_command(jobs) == "tensorboard --logdir /home/u/.cortex/jobs"
    assert tensorboard_command([{"logDir": "/my home/jobs/a/tensorboard"}]) == (
        "tensorboard --logdir '/my home/jobs'"
    )
    assert tensorboard_command([]) is None


def test_the_summary_states_optimizer_schedule_and_early_stopping():
    config = {
        "optimizer": "adamw", "lrSchedule": "cosine", "warmupRatio": 0.05, "lrFloorRatio": 0.1,
        "earlyStopping": {"patience": 3, "minDelta": 0.0},
    }  # fmt: skip
    assert schedule_line(config) == (
        "adamw, cosine, 5% warmup, to 10% of the peak, early stopping after 3 evaluations"
    )
    assert schedule_line({"optimizer": "adam", "lrSchedule": "constant"}) == "adam, constant"


def test_method_flag_reaches_the_wizard_and_the_scripting_api():
    from cortex_client.trainer import TrainingConfig

    assert answers_from(build_parser().parse_args(["--method", "dpo"])).method == "dpo"
    assert answers_from(build_parser().parse_args([])).method is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--method", "ppo"])
    config = TrainingConfig(method="orpo", orpo_lambda=0.2, beta=0.05, dpo_loss="ipo")
    assert config.overrides() == {
        "method": "orpo",
        "orpoLambda": 0.2,
        "beta": 0.05,
        "dpoLoss": "ipo",
    }


def test_progress_shows_reward_accuracy_and_margin_when_present():
    from cortex_client.wizard import preference_parts
    from cortex_rpc.training.service import progress_message

    note = {"state": "running", "trainLoss": 0.6931, "rewardAccuracy": 0.75, "margin": 0.1234}
    assert preference_parts(note) == ["Acc: 75%", "Margin: 0.123"]
    assert preference_parts({"trainLoss": 1.0}) == []
    assert progress_message(note) == "loss 0.693 · acc 75% · margin 0.12"
