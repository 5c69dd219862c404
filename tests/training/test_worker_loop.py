"""In-process tests of the training loop: exact resume, parity with mlx_lm, DoRA/full, QLoRA."""

from __future__ import annotations

import ast
import copy
import inspect
import json
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.models.quantization import QUANT_GROUP_SIZE
from cortex_rpc.paths import write_atomic
from cortex_rpc.training import contract, worker
from cortex_rpc.training.contract import JobSpec, WorkerEvent, WorkerOptions
from cortex_rpc.training.optimizers import build_optimizer, plan_schedule
from cortex_rpc.workers import EventWriter

from .conftest import write_spec


class Recorder:
    """A TrainingCallback that keeps every reported loss."""

    def __init__(self, stop_at: int | None = None, flag: worker.StopFlag | None = None) -> None:
        self.train: list[tuple[int, float]] = []
        self.lr: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.stop_at = stop_at
        self.flag = flag

    def on_train_loss_report(self, info: dict) -> None:
        self.train.append((info["iteration"], info["train_loss"]))
        self.lr.append((info["iteration"], info["learning_rate"]))
        if self.stop_at is not None and info["iteration"] >= self.stop_at:
            self.flag.stop = True

    def on_val_loss_report(self, info: dict) -> None:
        self.val.append((info["iteration"], info["val_loss"]))


def _setup(model_dir: Path, data_dir: Path, config: TrainingConfig):
    model, tokenizer, info = worker.prepare_model(str(model_dir), config)
    train_set, valid_set = worker.load_datasets(data_dir, tokenizer)
    schedule = worker.BatchSchedule(
        train_set, config.batch_size, config.max_seq_length, config.seed
    )
    optimizer = build_optimizer(config, plan_schedule(config))  # CONFIG's: plain Adam
    optimizer.init(model.trainable_parameters())
    return model, optimizer, schedule, valid_set, info


def _mlx_lm_setup(model_dir: Path, data_dir: Path, config: TrainingConfig):
    """As _setup, with train.jsonl read by mlx_lm's own datasets (--mask-prompt), for its train."""
    import types

    import mlx.optimizers as optim
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset

    model, tokenizer, _ = worker.prepare_model(str(model_dir), config)
    lines = (data_dir / "train.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    options = types.SimpleNamespace(mask_prompt=True)
    optimizer = optim.Adam(learning_rate=config.learning_rate)
    optimizer.init(model.trainable_parameters())
    return model, optimizer, CacheDataset(create_dataset(records, tokenizer, options))


def _mlx_lm_loss_without_pad_target(model, batch, lengths):
    """mlx_lm 0.32.2's default_loss without the target after each row's last token.

    Its range ``steps <= length`` also takes the padding after a row as a target
    (ml-explore/mlx-lm PR #1697); one less on the length leaves it out. Valid here because
    no row of these batches reaches max_seq_length (then there is no padding to leave out).
    """
    import mlx.core as mx
    from mlx_lm.tuner.trainer import default_loss

    return default_loss(model, batch, lengths - mx.array([0, 1]))


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
# Warmup over updates 0-3, cosine after: a stop at step 3 resumes across the boundary.
SCHEDULED = replace(
    CONFIG, lr_schedule="cosine", warmup_steps=4, lr_floor_ratio=0.1, optimizer="adamw"
)


@pytest.mark.parametrize(
    ("config", "stop_at"), [(CONFIG, 5), (SCHEDULED, 3)], ids=["constant-adam", "warmup-cosine"]
)
def test_resumed_run_matches_uninterrupted_run(
    config: TrainingConfig, stop_at: int, tiny_model: Path, chat_data: Path, tmp_path: Path
):
    """Stopping at ``stop_at`` and resuming from the checkpoint gives the same losses and
    learning rates (1e-4): the optimizer's step, and so the schedule, is restored."""
    total = 12
    model, opt, schedule, valid, _ = _setup(tiny_model, chat_data, config)
    straight = Recorder()
    worker.train_loop(model, opt, schedule, valid, _options(config, total), callback=straight)

    job_dir = tmp_path / "job"
    flag = worker.StopFlag()
    first = Recorder(stop_at=stop_at, flag=flag)
    model, opt, schedule, valid, info = _setup(tiny_model, chat_data, config)
    cfg = worker.adapter_config(
        config, info, str(tiny_model), batch_size=config.batch_size, mask_prompt=True
    )

    def save(state: dict) -> None:
        worker.save_checkpoint(job_dir, model, opt, cfg, state)

    with pytest.raises(worker.Cancelled):
        worker.train_loop(
            model,
            opt,
            schedule,
            valid,
            _options(config, total),
            first,
            on_checkpoint=save,
            stop=flag,
        )
    ckpt = worker.latest_checkpoint(job_dir)
    state = json.loads((ckpt / "state.json").read_text()) if ckpt is not None else {}
    assert state.get("iteration") == stop_at

    # A fresh process would rebuild everything from scratch: so do we.
    model, opt, schedule, valid, _ = _setup(tiny_model, chat_data, config)
    state = worker.load_checkpoint(ckpt, model, opt)
    assert int(opt.step.item()) == stop_at  # the schedule's position came back
    second = Recorder()
    worker.train_loop(model, opt, schedule, valid, _options(config, total), second, state)

    resumed = first.train + second.train
    assert [i for i, _ in resumed] == list(range(1, total + 1))
    assert resumed[-1][1] == pytest.approx(straight.train[-1][1], abs=1e-4)
    for (_, a), (_, b) in zip(resumed, straight.train, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    for (_, a), (_, b) in zip(first.lr + second.lr, straight.lr, strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    if config.lr_schedule == "cosine":  # the warmup really rose and the cosine really fell
        rates = [lr for _, lr in straight.lr]
        assert rates[0] == 0.0 and rates[4] == pytest.approx(config.learning_rate)
        assert rates[-1] < rates[4]


def test_first_losses_match_mlx_lm_trainer(tiny_model: Path, chat_data: Path, tmp_path: Path):
    """Same seed and config: cortex's loop on the training views and mlx_lm.tuner.trainer.train
    on mlx_lm's own datasets report the same losses (single-turn chats, where mlx_lm's prompt
    offset is right), once mlx_lm's padding target is left out of its loss."""
    import numpy as np
    from mlx_lm.tuner.trainer import TrainingArgs, train

    config = TrainingConfig(
        iterations=4, batch_size=4, learning_rate=1e-3, num_layers=2, max_seq_length=256, seed=3
    )
    model, opt, schedule, _, _ = _setup(tiny_model, chat_data, config)
    ours = Recorder()
    worker.train_loop(model, opt, schedule, None, _options(config, 4), callback=ours)

    model, opt, dataset = _mlx_lm_setup(tiny_model, chat_data, config)
    theirs = Recorder()
    np.random.seed(config.seed)  # what mlx_lm.lora.run does before training
    train(
        model,
        opt,
        dataset,
        None,
        TrainingArgs(
            batch_size=4,
            iters=4,
            steps_per_report=1,
            max_seq_length=256,
            adapter_file=str(tmp_path / "mlx_lm_adapters.safetensors"),
        ),
        loss=_mlx_lm_loss_without_pad_target,
        training_callback=theirs,
    )
    assert len(ours.train) == len(theirs.train) == 4
    for (i, a), (j, b) in zip(ours.train, theirs.train, strict=True):
        assert i == j
        assert a == pytest.approx(b, abs=1e-6)


def test_masked_loss_is_mlx_lms_loss_on_the_same_batch(tiny_model: Path, chat_data: Path):
    """The first batch: the schedule's tokens are mlx_lm's iterate_batches' tokens, and
    masked_loss over the views' masks equals mlx_lm's default_loss over its offsets, bit for
    bit (its padding target left out); with the padding target, mlx_lm counts one more target
    per row."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.tuner.trainer import default_loss, iterate_batches

    model, _, schedule, _, _ = _setup(tiny_model, chat_data, CONFIG)
    dataset = _mlx_lm_setup(tiny_model, chat_data, CONFIG)[2]
    np.random.seed(CONFIG.seed)
    batch, lengths = next(iterate_batches(dataset, 4, 256))
    tokens, mask = schedule.batch(0)
    assert mx.array_equal(tokens, batch).item()
    ours, ntoks = worker.masked_loss(model, tokens, mask)
    theirs, their_ntoks = _mlx_lm_loss_without_pad_target(model, batch, lengths)
    assert ntoks.item() == their_ntoks.item() > 0
    assert ours.item() == theirs.item()
    assert default_loss(model, batch, lengths)[1].item() == ntoks.item() + 4


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

    from cortex_rpc.models import fine_tuned

    before = file_digests(tiny_model)
    config = TrainingConfig(
        iterations=4, batch_size=4, num_layers=2, max_seq_length=256, quantization_bits=4
    )
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    write_spec(
        job_dir, tiny_model, chat_data, config, "tiny-qlora", WorkerOptions(steps_per_report=1)
    )
    events: list[dict] = []

    class Capture(EventWriter):
        def emit(self, event: WorkerEvent) -> None:
            events.append(event.to_wire())

    result = worker.run_job(job_dir, Capture(None), worker.StopFlag())
    assert file_digests(tiny_model) == before
    started = next(e for e in events if e["event"] == "started")
    assert started["quantizationBits"] == 4
    out = Path(result.output_path)
    marker = fine_tuned.read_marker(out)
    assert marker["quantizationBits"] == 4
    assert not (out / "model.safetensors").exists()
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["quantization"] == {"group_size": QUANT_GROUP_SIZE, "bits": 4}
    model, _ = fine_tuned.load_fine_tuned("tiny-qlora")
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())


def _run_job(job_dir: Path, spec: JobSpec) -> tuple[contract.Done, list[dict]]:
    job_dir.mkdir()
    write_atomic(job_dir / JobSpec.FILE, spec.to_wire())
    events: list[dict] = []

    class Capture(EventWriter):
        def emit(self, event: WorkerEvent) -> None:
            events.append(event.to_wire())

    return worker.run_job(job_dir, Capture(None), worker.StopFlag()), events


@pytest.mark.parametrize("mask", [None, True, False])
def test_adapter_config_records_the_settings_used(
    mask: bool | None, tiny_model: Path, chat_data: Path, tmp_path: Path
):
    """adapter_config.json says whether prompts were masked (chat: yes unless maskPrompt is
    false) and gives the batch size after the clamp, not the one asked for."""
    config = TrainingConfig(iterations=1, batch_size=64, num_layers=2, max_seq_length=256)
    options = WorkerOptions() if mask is None else WorkerOptions(mask_prompt=mask)
    job_dir = tmp_path / "job"
    spec = JobSpec(
        job_id="job", model=str(tiny_model), data_dir=str(chat_data), config=config,
        output_name=None, output_dir=str(tmp_path / "models"),
        adapter_dir=str(job_dir / "final"), options=options,
    )  # fmt: skip
    result, events = _run_job(job_dir, spec)
    written = json.loads((Path(result.adapter_path) / "adapter_config.json").read_text())
    assert written["mask_prompt"] is (mask is not False)
    started = next(e for e in events if e["event"] == "started")
    assert started["batchSize"] == written["batch_size"] == 20  # the 20 training records
    assert written["num_layers"] == started["numLayers"] == 2


def test_clear_cache_threshold_reaches_the_loop(
    tiny_model: Path, chat_data: Path, monkeypatch: pytest.MonkeyPatch
):
    """config.clearCacheThreshold goes through options_from_spec into the loop, which frees
    MLX's buffer cache after a step when it holds more than that; 0 (the default) never does."""
    import mlx.core as mx

    config = TrainingConfig.from_wire(
        {**CONFIG.to_wire(), "iterations": 2, "clearCacheThreshold": 10**6}
    )

    def spec_of(config: TrainingConfig) -> JobSpec:
        return JobSpec("j", str(tiny_model), str(chat_data), config, None, "", "")

    options = worker.options_from_spec(spec_of(config), config.batch_size)
    assert options.clear_cache_threshold == 10**6
    assert worker.options_from_spec(spec_of(CONFIG), 4).clear_cache_threshold == 0

    cleared: list[int] = []
    monkeypatch.setattr(mx, "get_cache_memory", lambda: 5 * 10**6)
    monkeypatch.setattr(mx, "clear_cache", lambda: cleared.append(1))
    for threshold, expected in ((10**6, 2), (0, 0), (10**7, 0)):
        cleared.clear()
        model, opt, schedule, _, _ = _setup(tiny_model, chat_data, config)
        run = _options(config, 2)
        run.clear_cache_threshold = threshold
        worker.train_loop(model, opt, schedule, None, run)
        assert len(cleared) == expected, threshold


# --- Drift checks against mlx_lm's trainer --------------------------------------------------


def _function(source: str, name: str | None = None) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(source))
    if name is None:
        return next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def _normalized(node: ast.AST) -> str:
    """ast.dump without type annotations (mlx_lm has none) and without positions."""
    node = copy.deepcopy(node)
    for sub in ast.walk(node):
        if isinstance(sub, ast.arg):
            sub.annotation = None
        if isinstance(sub, ast.FunctionDef):
            sub.returns = None
    return ast.dump(node)


def _statements(function: ast.FunctionDef) -> list[str]:
    return [ast.unparse(n) for n in function.body]


def test_compiled_step_is_mlx_lms():
    """train_loop's state list, compiled step and step call are mlx_lm's train's, statement
    for statement: if mlx_lm changes them, this fails and train_loop must follow (or say why not)."""
    from mlx_lm.tuner import trainer

    theirs = _function(inspect.getsource(trainer.train))
    ours = _function(inspect.getsource(worker.train_loop))
    state = "state = [model.state, optimizer.state, mx.random.state]"
    assert state in _statements(theirs)
    assert state in _statements(ours)
    step_theirs = _function(inspect.getsource(trainer.train), "step")
    step_ours = _function(inspect.getsource(worker.train_loop), "step")
    assert [ast.unparse(d) for d in step_theirs.decorator_list] == [
        "partial(mx.compile, inputs=state, outputs=state)"
    ]
    assert [a.arg for a in step_theirs.args.args] == ["batch", "prev_grad", "do_update"]
    assert _normalized(step_ours) == _normalized(step_theirs)
    call = "step(batch, grad_accum, it % grad_accum_steps == 0)"
    after = "mx.eval(state, losses, n_tokens, grad_accum)"
    for source in (inspect.getsource(trainer.train), inspect.getsource(worker.train_loop)):
        text = " ".join(ast.unparse(ast.parse(textwrap.dedent(source))).split())
        assert call in text and after in text


def test_wired_limit_and_cache_clearing_are_mlx_lms():
    """mlx_lm's train starts by wiring the recommended working set when the device reports one
    (mlx_lm 0.32.2: maybe_set_recommended_wired_limit) and clears the cache after mx.eval with
    _clear_cache(threshold); set_recommended_wired_limit and train_loop mirror both."""
    from mlx_lm import utils
    from mlx_lm.tuner import trainer

    theirs = _function(inspect.getsource(trainer.train))
    assert _statements(theirs)[0] == "_ = maybe_set_recommended_wired_limit()"
    assert trainer.maybe_set_recommended_wired_limit is utils.maybe_set_recommended_wired_limit
    helper = " ".join(inspect.getsource(utils.maybe_set_recommended_wired_limit).split())
    assert 'max_rec_size = mx.device_info().get("max_recommended_working_set_size")' in helper
    assert "if max_rec_size is None: return None return mx.set_wired_limit(max_rec_size)" in helper
    ours = _function(inspect.getsource(worker.train_loop))
    first = next(
        n
        for n in ours.body
        if not isinstance(n, (ast.Import, ast.ImportFrom))
        and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # docstring
    )
    assert ast.unparse(first) == "set_recommended_wired_limit()"

    clear = _statements(_function(inspect.getsource(trainer._clear_cache)))
    assert clear == ["if mx.get_cache_memory() > threshold:\n    mx.clear_cache()"]
    text = ast.unparse(theirs)
    assert (
        "mx.eval(state, losses, n_tokens, grad_accum)\n            _clear_cache(args.clear_cache_threshold)"
        in text
    )


SCENARIOS = {
    # name: (mx.metal.is_available(), recommended working set size reported by device_info)
    "metal": (True, 48 * 2**30),
    "cpu": (None, None),  # this machine as it is
    "metal without a recommended size": (True, None),
    "a recommended size without metal": (False, 8 * 2**30),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_train_loop_sets_the_wired_limit_when_mlx_lm_does(
    scenario: str,
    tiny_model: Path,
    chat_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """One step of mlx_lm's train and one of train_loop, on a device made to look like each
    scenario: both call mx.set_wired_limit with the same sizes (on Metal, the recommended
    working set; on this CPU, never)."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.tuner.trainer import TrainingArgs, train

    metal, size = SCENARIOS[scenario]
    real_info = mx.device_info()
    if metal is not None:
        info = {k: v for k, v in real_info.items() if k != "max_recommended_working_set_size"}
        if size is not None:
            info["max_recommended_working_set_size"] = size
        monkeypatch.setattr(mx, "device_info", lambda: dict(info))
        monkeypatch.setattr(mx.metal, "is_available", lambda: metal)
    calls: list[int] = []

    def record(limit: int) -> int:
        calls.append(limit)
        return 0

    monkeypatch.setattr(mx, "set_wired_limit", record)
    config = TrainingConfig(iterations=1, batch_size=4, num_layers=1, max_seq_length=256)

    model, opt, dataset = _mlx_lm_setup(tiny_model, chat_data, config)
    np.random.seed(config.seed)
    args = TrainingArgs(
        batch_size=4,
        iters=1,
        max_seq_length=256,
        adapter_file=str(tmp_path / "mlx_lm_adapters.safetensors"),
    )
    train(model, opt, dataset, None, args)
    theirs = list(calls)

    calls.clear()
    model, opt, schedule, _, _ = _setup(tiny_model, chat_data, config)
    worker.train_loop(model, opt, schedule, None, _options(config, 1))
    assert calls == theirs
    if scenario == "metal":
        assert calls == [48 * 2**30]
    if scenario == "cpu":
        assert "max_recommended_working_set_size" not in real_info
        assert calls == []
