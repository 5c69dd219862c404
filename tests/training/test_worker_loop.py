"""In-process tests of the training loop: exact resume, parity with mlx_lm, DoRA/full, QLoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.training import worker
from cortex_rpc.training.events import EventWriter


class Recorder:
    """A TrainingCallback that keeps every reported loss."""

    def __init__(self, stop_at: int | None = None, flag: worker.StopFlag | None = None) -> None:
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.stop_at = stop_at
        self.flag = flag

    def on_train_loss_report(self, info: dict) -> None:
        self.train.append((info["iteration"], info["train_loss"]))
        if self.stop_at is not None and info["iteration"] >= self.stop_at:
            self.flag.stop = True

    def on_val_loss_report(self, info: dict) -> None:
        self.val.append((info["iteration"], info["val_loss"]))


def _setup(model_dir: Path, data_dir: Path, config: TrainingConfig):
    import mlx.optimizers as optim

    model, tokenizer, info = worker.prepare_model(str(model_dir), config)
    train_set, valid_set = worker.load_datasets(data_dir, tokenizer)
    schedule = worker.BatchSchedule(
        train_set, config.batch_size, config.max_seq_length, config.seed
    )
    optimizer = optim.Adam(learning_rate=config.learning_rate)
    optimizer.init(model.trainable_parameters())
    return model, optimizer, schedule, valid_set, info


def _options(config: TrainingConfig, total: int) -> worker.RunOptions:
    return worker.RunOptions(
        total_iterations=total,
        steps_per_report=1,
        steps_per_eval=4,
        steps_per_checkpoint=1000,
        batch_size=config.batch_size,
        max_seq_length=config.max_seq_length,
        seed=config.seed,
    )


CONFIG = TrainingConfig(
    iterations=12, batch_size=4, learning_rate=1e-3, num_layers=2, max_seq_length=256, seed=7
)


def test_resumed_run_matches_uninterrupted_run(tiny_model: Path, chat_data: Path, tmp_path: Path):
    """Stopping at step 5 and resuming from the checkpoint gives the same final loss (1e-4)."""
    total = 12
    model, opt, schedule, valid, _ = _setup(tiny_model, chat_data, CONFIG)
    straight = Recorder()
    worker.train_loop(model, opt, schedule, valid, _options(CONFIG, total), callback=straight)

    job_dir = tmp_path / "job"
    flag = worker.StopFlag()
    first = Recorder(stop_at=5, flag=flag)
    model, opt, schedule, valid, info = _setup(tiny_model, chat_data, CONFIG)
    cfg = worker.adapter_config(
        CONFIG, info, str(tiny_model), batch_size=CONFIG.batch_size, mask_prompt=True
    )

    def save(state: dict) -> None:
        worker.save_checkpoint(job_dir, model, opt, cfg, state)

    with pytest.raises(worker.Cancelled):
        worker.train_loop(
            model,
            opt,
            schedule,
            valid,
            _options(CONFIG, total),
            first,
            on_checkpoint=save,
            stop=flag,
        )
    ckpt = worker.latest_checkpoint(job_dir)
    assert ckpt is not None and json.loads((ckpt / "state.json").read_text())["iteration"] == 5

    # A fresh process would rebuild everything from scratch: so do we.
    model, opt, schedule, valid, _ = _setup(tiny_model, chat_data, CONFIG)
    state = worker.load_checkpoint(ckpt, model, opt)
    second = Recorder()
    worker.train_loop(model, opt, schedule, valid, _options(CONFIG, total), second, state)

    resumed = first.train + second.train
    assert [i for i, _ in resumed] == list(range(1, total + 1))
    assert resumed[-1][1] == pytest.approx(straight.train[-1][1], abs=1e-4)
    for (_, a), (_, b) in zip(resumed, straight.train, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_first_losses_match_mlx_lm_trainer(tiny_model: Path, chat_data: Path, tmp_path: Path):
    """Same seed and config: cortex's loop and mlx_lm.tuner.trainer.train report the same losses."""
    import numpy as np
    from mlx_lm.tuner.trainer import TrainingArgs, train

    config = TrainingConfig(
        iterations=4, batch_size=4, learning_rate=1e-3, num_layers=2, max_seq_length=256, seed=3
    )
    model, opt, schedule, _, _ = _setup(tiny_model, chat_data, config)
    ours = Recorder()
    worker.train_loop(model, opt, schedule, None, _options(config, 4), callback=ours)

    model, opt, schedule, _, _ = _setup(tiny_model, chat_data, config)
    theirs = Recorder()
    np.random.seed(config.seed)  # what mlx_lm.lora.run does before training
    train(
        model,
        opt,
        schedule.dataset,
        None,
        TrainingArgs(
            batch_size=4,
            iters=4,
            steps_per_report=1,
            max_seq_length=256,
            adapter_file=str(tmp_path / "mlx_lm_adapters.safetensors"),
        ),
        training_callback=theirs,
    )
    assert len(ours.train) == len(theirs.train) == 4
    for (i, a), (j, b) in zip(ours.train, theirs.train, strict=True):
        assert i == j
        assert a == pytest.approx(b, abs=1e-3)


@pytest.mark.parametrize("kind", ["dora", "full"])
def test_dora_and_full_fine_tune_produce_loadable_adapters(
    kind: str, tiny_model: Path, chat_data: Path, tmp_path: Path
):
    """DoRA and full fine-tunes train and their output loads with mlx_lm.load(adapter_path=)."""
    from mlx_lm.utils import load

    config = TrainingConfig(
        fine_tune_type=kind, iterations=3, batch_size=4, num_layers=1, max_seq_length=256
    )
    model, opt, schedule, valid, info = _setup(tiny_model, chat_data, config)
    rec = Recorder()
    worker.train_loop(model, opt, schedule, valid, _options(config, 3), callback=rec)
    assert len(rec.train) == 3
    out = tmp_path / "adapter"
    cfg = worker.adapter_config(config, info, str(tiny_model), batch_size=4, mask_prompt=True)
    worker.save_adapters(model, out, cfg)
    loaded, _ = load(str(tiny_model), adapter_path=str(out))
    assert json.loads((out / "adapter_config.json").read_text())["fine_tune_type"] == kind


def test_qlora_4bit_trains_and_leaves_base_untouched(
    tiny_model: Path, chat_data: Path, tmp_path: Path, file_digests
):
    """4-bit QLoRA quantizes only in memory; the saved model reloads quantized with its adapter."""
    from mlx import nn

    from cortex_rpc.training import output

    before = file_digests(tiny_model)
    config = TrainingConfig(
        iterations=4, batch_size=4, num_layers=2, max_seq_length=256, quantization_bits=4
    )
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "spec.json").write_text(
        json.dumps(
            {
                "model": str(tiny_model),
                "dataDir": str(chat_data),
                "config": config.to_wire(),
                "outputName": "tiny-qlora",
                "stepsPerReport": 1,
            }
        )
    )
    events: list[dict] = []

    class Capture(EventWriter):
        def emit(self, event: str, **fields) -> None:
            events.append({"event": event, **fields})

    result = worker.run_job(job_dir, Capture(None), worker.StopFlag())
    assert file_digests(tiny_model) == before
    started = next(e for e in events if e["event"] == "started")
    assert started["quantizationBits"] == 4
    out = Path(result["outputPath"])
    marker = output.read_marker(out)
    assert marker["quantizationBits"] == 4
    assert not (out / "model.safetensors").exists()
    model, _ = output.load_fine_tuned("tiny-qlora")
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
