"""The training worker: ``python -m cortex_rpc.training.worker JOB_DIR``.

Reads ``JOB_DIR/spec.json``, trains with mlx_lm's tuner pieces and reports JSON-line events
(see ``events.py``). The server never imports this module: it imports mlx, and only after
``preload_fast_blas()`` has bound MLX to a fast BLAS.

Why a loop of our own instead of ``mlx_lm.tuner.trainer.train``: ``train`` always starts at
iteration 1, builds its own data iterator and cannot restore optimizer state, so a resumed run
would restart Adam's moments and the data order. ``train_loop`` below is ``train`` with the
same compiled step, gradient accumulation, gradient averaging and callback calls, plus a
deterministic batch schedule and checkpoints holding everything needed to continue exactly.

What is trained is the records' training views (``datasets/training_view.py``), the same ones
validation and the editor show: batches carry their loss masks and ``masked_loss`` weighs
every target by it, instead of mlx_lm's one prompt offset per record (which trains only the
last answer of a conversation).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..accel import preload_fast_blas
from ..config.training_config import EarlyStopping, TrainingConfig
from ..datasets.training_view import TemplateRenderer, TrainingView, ViewOptions, summarize
from ..errors import CortexError
from ..models.quantization import QUANT_GROUP_SIZE, quantize_base
from ..paths import write_atomic
from ..workers import EventWriter, open_event_writer
from . import contract
from .contract import JobSpec
from .history import CURVE_FILE, HISTORY_FILE, LossHistory, evaluation_summary, loss_curve_svg
from .metrics import TENSORBOARD_DIR, MetricsWriter, open_wandb
from .optimizers import build_optimizer, plan_schedule
from .timing import StepTimer

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
KEEP_CHECKPOINTS = 2


@dataclass
class RunOptions:
    """Loop settings that are not part of TrainingConfig (reporting and checkpoint cadence)."""

    total_iterations: int
    steps_per_report: int = 1
    steps_per_eval: int = 50
    steps_per_checkpoint: int = 50
    val_batches: int = -1
    max_seq_length: int = 2048
    batch_size: int = 4
    grad_accumulation_steps: int = 1
    grad_checkpoint: bool = False
    seed: int = 0
    clear_cache_threshold: int = 0  # bytes; 0 never clears the buffer cache (see train_loop)
    early_stopping: EarlyStopping | None = None


class Cancelled(Exception):
    """Raised inside the loop after SIGTERM, once a checkpoint has been saved."""


class StopFlag:
    """Set by SIGTERM; the loop checks it between steps."""

    def __init__(self) -> None:
        self.stop = False

    def install(self) -> None:
        """Route SIGTERM and SIGINT to this flag."""

        def handler(signum: int, frame: Any) -> None:
            self.stop = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


# ---------------------------------------------------------------------------------------------
# Model and data


def prepare_model(
    model_path: str, config: TrainingConfig, lora_keys: list[str] | None = None
) -> tuple[Any, Any, dict]:
    """Load the base, quantize it in memory if asked, and add adapters (or unfreeze layers).

    Returns (model, tokenizer, info) where info records clamps and quantization done.
    """
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    info: dict[str, Any] = {"warnings": []}
    model, tokenizer, model_config = load(
        model_path,
        tokenizer_config={"trust_remote_code": False},
        return_config=True,
        trust_remote_code=False,
    )
    already_quantized = "quantization" in model_config
    info["baseQuantized"] = already_quantized
    info["quantizationBits"] = None
    if config.quantization_bits and not already_quantized:
        # QLoRA: only the in-memory copy is quantized; the base files stay untouched.
        quantize_base(model, config.quantization_bits)
        info["quantizationBits"] = config.quantization_bits
    elif config.quantization_bits and already_quantized:
        info["warnings"].append("The base model is already quantized; it was used as it is.")

    mx.random.seed(config.seed)
    model.freeze()
    layers = len(model.layers)
    num_layers = config.num_layers
    if num_layers > layers or num_layers < 0:
        info["warnings"].append(
            f"numLayers {num_layers} exceeds the model's {layers} layers; using {layers}."
        )
        num_layers = layers
    info["numLayers"] = num_layers
    if config.fine_tune_type == "full":
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
        info["loraParameters"] = None
    else:
        lora_parameters: dict[str, Any] = {
            "rank": config.lora_rank,
            "scale": config.lora_scale,
            "dropout": config.lora_dropout,
        }
        if lora_keys:
            lora_parameters["keys"] = list(lora_keys)
        linear_to_lora_layers(
            model, num_layers, lora_parameters, use_dora=config.fine_tune_type == "dora"
        )
        info["loraParameters"] = lora_parameters
    return model, tokenizer, info


@dataclass
class ViewDataset:
    """One split's training views; item ``i`` is (ids, loss flags) of record ``i``.

    ``sizes`` is what mlx_lm's ``CacheDataset.itemlen`` returns, the record's key count (not
    its token count): batches are sorted by it, so they hold the records mlx_lm's would.
    """

    views: list[TrainingView]
    sizes: list[int]

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> tuple[list[int], list[bool]]:
        view = self.views[index]
        return view.ids, view.trained

    def itemlen(self, index: int) -> int:
        return self.sizes[index]


def rendered_view(
    renderer: TemplateRenderer,
    record: dict,
    options: ViewOptions,
    path: Path,
    number: int,
    part: str = "",
) -> TrainingView:
    """Return a prepared record's training view; a record the template cannot render is a
    ``dataset-invalid`` error naming its file and line (``part``: which side of a pair)."""
    view = renderer.view(record, options)
    if not view.ok:
        issue = next(i for i in view.issues if i.severity == "error")
        raise CortexError(
            "dataset-invalid",
            f"{path}, line {number}{f' ({part})' if part else ''}: {issue.message}",
            path=str(path),
            line=number,
            issue=issue.code,
        )
    return view


def load_split(path: Path, renderer: TemplateRenderer, options: ViewOptions) -> ViewDataset:
    """Return the views of a prepared split file (none when it is missing or empty).

    A record whose view is not ok is refused: it would be trained at the wrong place or not at
    all. Validation refuses such records before a job starts; this is the last line.
    """
    views: list[TrainingView] = []
    sizes: list[int] = []
    if not path.exists():
        return ViewDataset(views, sizes)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            views.append(rendered_view(renderer, record, options, path, number))
            sizes.append(len(record))
    return ViewDataset(views, sizes)


def load_datasets(
    data_dir: str | Path, tokenizer: Any, options: ViewOptions | None = None
) -> tuple[ViewDataset, ViewDataset | None]:
    """Return (train, valid) views of DATA/train.jsonl and DATA/valid.jsonl (valid may be None).

    ``tokenizer`` is the one the model was loaded with, so its chat template renders them.
    """
    options = options or ViewOptions()
    data_dir = Path(data_dir)
    renderer = TemplateRenderer(tokenizer)
    train = load_split(data_dir / "train.jsonl", renderer, options)
    valid = load_split(data_dir / "valid.jsonl", renderer, options)
    if len(train) == 0:
        raise CortexError("dataset-empty", f"No training examples in {data_dir / 'train.jsonl'}")
    return train, (valid if len(valid) else None)


def view_warnings(views: list[TrainingView], max_seq_length: int) -> list[str]:
    """Return what the user should know about the training views: cuts and untrained records."""
    summary = summarize(views)
    warnings = []
    if summary.cut:
        warnings.append(
            f"{summary.cut} training record(s) are longer than maxSeqLength {max_seq_length} "
            f"tokens and are cut there; {summary.lost_trained_tokens} trained token(s) are lost. "
            "Raise maxSeqLength or split long records."
        )
    if summary.untrained:
        warnings.append(
            f"{summary.untrained} training record(s) train 0 tokens (every answer has weight 0 "
            "or is cut off by maxSeqLength); they only cost time."
        )
    return warnings


def _is_text_data(data_dir: Path) -> bool:
    """True when the training records are plain ``{"text": ...}`` (mlx_lm reads the first)."""
    with open(data_dir / "train.jsonl", encoding="utf-8") as handle:
        first = handle.readline()
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "text" in record and "messages" not in record


class BatchSchedule:
    """The batches of every step, fixed by the seed, so step k is the same batch on resume.

    Batches are built as mlx_lm's ``iterate_batches`` builds them (sorted by length, chunked,
    strided across ranks); epoch e visits them in ``RandomState(seed + e).permutation`` order.
    Epoch 0's order equals mlx_lm's after ``np.random.seed(seed)``, which makes loss parity
    with ``mlx_lm.tuner.trainer.train`` checkable.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        max_seq_length: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(dataset) < batch_size:
            raise CortexError(
                "dataset-too-small",
                f"The training set has {len(dataset)} examples, fewer than the batch size "
                f"{batch_size}.",
            )
        if batch_size % world_size != 0:
            raise CortexError(
                "invalid-config", "The batch size must be divisible by the number of ranks."
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.seed = seed
        self.world_size = world_size
        idx = sorted(range(len(dataset)), key=dataset.itemlen)
        self.batch_idx = [
            idx[i + rank : i + rank + batch_size : world_size]
            for i in range(0, len(idx) - batch_size + 1, batch_size)
        ]
        self._perms: dict[int, Any] = {}

    @property
    def batches_per_epoch(self) -> int:
        """Return how many batches one pass over the data makes."""
        return len(self.batch_idx)

    def _perm(self, epoch: int) -> Any:
        import numpy as np

        if epoch not in self._perms:
            self._perms = {
                epoch: np.random.RandomState(self.seed + epoch).permutation(len(self.batch_idx))
            }
        return self._perms[epoch]

    def items(self, step: int) -> list[Any]:
        """Return the dataset items of 0-based global ``step`` (this rank's share)."""
        epoch, position = divmod(step, len(self.batch_idx))
        return [self.dataset[j] for j in self.batch_idx[self._perm(epoch)[position]]]

    def batch(self, step: int) -> tuple[Any, Any]:
        """Return (tokens, mask) of 0-based global ``step``, padded and cut as mlx_lm pads."""
        return pad_batch(self.items(step), self.max_seq_length)


def pad_batch(
    items: list[tuple[list[int], list[bool]]], max_seq_length: int, pad_to: int = 32
) -> tuple[Any, Any]:
    """Return (tokens, mask) of (ids, loss flags) rows, padded and cut as mlx_lm pads."""
    import mlx.core as mx
    import numpy as np

    lengths = [len(ids) for ids, _ in items]
    width = min(1 + pad_to * ((max(lengths) + pad_to - 1) // pad_to), max_seq_length)
    tokens = np.zeros((len(items), width), np.int32)
    mask = np.zeros((len(items), width), np.bool_)
    for j, (ids, trained) in enumerate(items):
        n = min(lengths[j], max_seq_length)
        tokens[j, :n] = ids[:n]
        mask[j, :n] = trained[:n]
    return mx.array(tokens), mx.array(mask)


def masked_loss(model: Any, tokens: Any, mask: Any) -> tuple[Any, Any]:
    """Return (mean cross-entropy over the trained targets, their count).

    mlx_lm's ``default_loss`` with the views' mask in place of its offset/length range, op for
    op, so the two agree exactly where the range is right. (mlx_lm 0.32.2's range also takes
    the padding after each row's last token as a target; the views never do.) A batch with no
    trained token has loss 0 and no gradient, where 0 / 0 would put NaN into the weights.
    """
    import mlx.core as mx
    import mlx.nn as nn

    inputs = tokens[:, :-1]
    targets = tokens[:, 1:]

    logits = model(inputs)

    weights = mask[:, 1:]
    ce = nn.losses.cross_entropy(logits, targets) * weights
    ntoks = weights.sum()
    ce = ce.astype(mx.float32).sum() / mx.maximum(ntoks, 1)

    return ce, ntoks


def iterate_view_batches(
    dataset: ViewDataset, batch_size: int, max_seq_length: int, comm_group: Any = None, **_: Any
) -> Any:
    """Yield one pass of BatchSchedule batches; mlx_lm's ``iterate_batches`` signature."""
    rank, size = (comm_group.rank(), comm_group.size()) if comm_group is not None else (0, 1)
    schedule = BatchSchedule(dataset, batch_size, max_seq_length, 0, rank, size)
    for step in range(schedule.batches_per_epoch):
        yield schedule.batch(step)


def evaluate_views(
    model: Any, dataset: ViewDataset, batch_size: int, max_seq_length: int, num_batches: int = -1
) -> float:
    """Return the mean masked loss per trained token over ``dataset`` (mlx_lm's ``evaluate``)."""
    from mlx_lm.tuner.trainer import evaluate

    return evaluate(
        model=model,
        dataset=dataset,
        batch_size=batch_size,
        num_batches=num_batches,
        max_seq_length=max_seq_length,
        loss=masked_loss,
        iterate_batches=iterate_view_batches,
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints


def adapter_config(
    config: TrainingConfig, info: dict, model_path: str, *, batch_size: int, mask_prompt: bool
) -> dict:
    """Return the adapter_config.json that mlx_lm's load_adapters and fuse read.

    It records what the run really used: ``info``'s layer count and LoRA parameters (from
    ``prepare_model``), the batch size after the worker's clamps, whether prompts were masked
    (never for plain-text data) and which answer tokens were trained (``train_on``,
    ``train_template_text``) and the training method with its settings.
    """
    from .preference import adapter_settings

    result: dict[str, Any] = {
        "fine_tune_type": config.fine_tune_type,
        "num_layers": info["numLayers"],
        "model": str(model_path),
        "batch_size": batch_size,
        "iters": config.iterations,
        "learning_rate": config.learning_rate,
        "max_seq_length": config.max_seq_length,
        "grad_checkpoint": config.grad_checkpoint,
        "grad_accumulation_steps": config.grad_accumulation_steps,
        "seed": config.seed,
        "mask_prompt": mask_prompt,
        "train_on": config.train_on,
        "train_template_text": config.train_template_text,
        **adapter_settings(config),
    }
    if info.get("loraParameters") is not None:
        result["lora_parameters"] = info["loraParameters"]
    if info.get("quantizationBits"):
        result["quantization"] = {"group_size": QUANT_GROUP_SIZE, "bits": info["quantizationBits"]}
    return result


def save_adapters(model: Any, directory: Path, adapter_cfg: dict) -> Path:
    """Write adapters.safetensors + adapter_config.json (loadable with mlx_lm.load)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    directory.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.trainable_parameters()))
    path = directory / "adapters.safetensors"
    mx.save_safetensors(str(path), weights)
    (directory / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
    return path


class BestWeights:
    """The trainable weights at the lowest validation loss so far (keepBest).

    Held in memory as references to the arrays the model had then (an update makes new
    arrays, it does not change these), and saved with every checkpoint, so a resumed run
    still knows them.
    """

    FILE = "best-adapters.safetensors"

    def __init__(self) -> None:
        self.iteration: int | None = None
        self.weights: dict[str, Any] | None = None

    def capture(self, iteration: int, model: Any) -> None:
        """Remember ``model``'s trainable weights as those of ``iteration``."""
        from mlx.utils import tree_flatten

        self.iteration = iteration
        self.weights = dict(tree_flatten(model.trainable_parameters()))

    def restore_into(self, model: Any) -> None:
        """Put the remembered weights back into ``model``."""
        from mlx.utils import tree_unflatten

        model.update(tree_unflatten(list((self.weights or {}).items())))


def save_checkpoint(
    job_dir: Path,
    model: Any,
    optimizer: Any,
    adapter_cfg: dict,
    state: dict,
    best: BestWeights | None = None,
) -> Path:
    """Write a full checkpoint (adapters, optimizer, loop state) and point latest.json at it.

    The optimizer state holds its ``step``, which drives the learning-rate schedule; the best
    weights so far go along when keepBest tracks them. Written to a temp dir and renamed, so a
    kill mid-save leaves the previous one intact.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten

    root = job_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['iteration']:07d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapters(model, tmp, adapter_cfg)
    opt_state = dict(tree_flatten(optimizer.state))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt_state)
    if best is not None and best.weights:
        mx.save_safetensors(str(tmp / BestWeights.FILE), best.weights)
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_atomic(root / LATEST, {"path": name, "iteration": state["iteration"]})
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(job_dir: Path) -> Path | None:
    """Return the newest complete checkpoint directory of a job, or None."""
    pointer = job_dir / CHECKPOINTS / LATEST
    try:
        name = json.loads(pointer.read_text())["path"]
    except (OSError, ValueError, KeyError):
        return None
    path = job_dir / CHECKPOINTS / name
    return path if (path / "state.json").exists() else None


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, best: BestWeights | None = None
) -> dict:
    """Restore adapters, optimizer state (and best weights) from ``path``; return its loop state."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    model.load_weights(str(path / "adapters.safetensors"), strict=False)
    opt = mx.load(str(path / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(opt.items()))
    mx.eval(model.parameters(), optimizer.state)
    state = json.loads((path / "state.json").read_text())
    if best is not None and (path / BestWeights.FILE).exists():
        best.weights = mx.load(str(path / BestWeights.FILE))
        best.iteration = state.get("bestIteration")
    return state


# ---------------------------------------------------------------------------------------------
# The loop


def set_recommended_wired_limit() -> None:
    """Wire the device's recommended working set, as ``mlx_lm.tuner.trainer.train`` does first.

    mlx_lm 0.32.2's ``maybe_set_recommended_wired_limit``: on Metal, ``mx.device_info()``
    reports ``max_recommended_working_set_size`` and the limit is set to it, so the weights are
    not paged out between steps; where it reports none (CPU) nothing is done. Like mlx_lm, the
    previous limit is not restored: the worker process ends with the job.
    """
    import mlx.core as mx

    size = mx.device_info().get("max_recommended_working_set_size")
    if size is not None:
        mx.set_wired_limit(size)


def train_loop(
    model: Any,
    optimizer: Any,
    schedule: BatchSchedule,
    val_dataset: Any,
    options: RunOptions,
    callback: Any = None,
    start_state: dict | None = None,
    on_checkpoint: Any = None,
    stop: StopFlag | None = None,
    best: BestWeights | None = None,
    objective: Any = None,
) -> dict:
    """Train from ``start_state`` (or step 0) to ``options.total_iterations``; return the state.

    Mirrors ``mlx_lm.tuner.trainer.train`` (the wired limit, compiled step, callback dicts of
    the same shape). Validation runs before the first update (iteration 0, the starting
    point), after every ``steps_per_eval``-th iteration and after the last one, so the final
    model is always measured (mlx_lm evaluates before a step, which leaves the last update
    unmeasured). Each evaluation after iteration 0 may become the best (lowest validation
    loss; ``best`` then keeps its weights) and counts for ``options.early_stopping``, which
    ends the run with ``stopReason`` "early-stopping". ``on_checkpoint(state)`` is called
    every ``steps_per_checkpoint`` steps and, after SIGTERM, before ``Cancelled``.
    ``objective`` (a ``preference.PreferenceObjective``) replaces the SFT loss; its loss's
    second output, a vector of sums, is accumulated where SFT's token count is, and its
    metrics ride on the reports.
    """
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    from mlx.nn.utils import average_gradients
    from mlx.utils import tree_map
    from mlx_lm.tuner.trainer import grad_checkpoint

    set_recommended_wired_limit()
    world = mx.distributed.init()
    world_size = world.size()
    if options.grad_checkpoint:
        grad_checkpoint(model.layers[0])
    loss_value_and_grad = nn.value_and_grad(
        model, masked_loss if objective is None else objective.loss
    )
    grad_accum_steps = max(1, options.grad_accumulation_steps)
    # The state list and the compiled step are mlx_lm's, statement for statement (a test
    # compares them with mlx_lm.tuner.trainer.train's source).
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch: Any, prev_grad: Any, do_update: bool) -> Any:
        (lvalue, toks), grad = loss_value_and_grad(model, *batch)
        if prev_grad is not None:
            grad = tree_map(lambda x, y: x + y, grad, prev_grad)
        if do_update:
            grad = average_gradients(grad)
            if grad_accum_steps > 1:
                grad = tree_map(lambda x: x / grad_accum_steps, grad)
            optimizer.update(model, grad)
            grad = None
        return lvalue, toks, grad

    loop = dict(start_state or {})
    start = int(loop.get("iteration", 0))
    # The report window in progress when a checkpoint was taken, so reports stay identical.
    losses = mx.array(loop.get("windowLoss", 0.0))
    n_tokens = mx.array(loop.get("windowTokens", 0))
    steps = int(loop.get("windowSteps", 0))
    trained_tokens = int(loop.get("trainedTokens", 0))
    last_train_loss = loop.get("trainLoss")
    last_val_loss = loop.get("valLoss")
    best_val_loss = loop.get("bestValLoss")
    best_iteration = loop.get("bestIteration")
    stale_evaluations = int(loop.get("staleEvaluations", 0))
    early = options.early_stopping
    train_time = 0.0
    grad_accum = None
    total = options.total_iterations

    def snapshot(it: int) -> dict:
        return {
            "iteration": it,
            "totalIterations": total,
            "seed": options.seed,
            "windowLoss": float(losses.item()) if isinstance(losses, mx.array) else float(losses),
            "windowTokens": n_tokens.tolist() if isinstance(n_tokens, mx.array) else n_tokens,
            "windowSteps": steps,
            "trainedTokens": trained_tokens,
            "trainLoss": last_train_loss,
            "valLoss": last_val_loss,
            "batchesPerEpoch": schedule.batches_per_epoch,
            "bestIteration": best_iteration,
            "bestValLoss": best_val_loss,
            "staleEvaluations": stale_evaluations,
            "stopReason": "completed",
        }

    def run_eval(it: int) -> tuple[float, dict]:
        eval_batch = min(options.batch_size, len(val_dataset))
        eval_batch -= eval_batch % world_size
        if objective is None:
            loss = evaluate_views(
                model, val_dataset, eval_batch, options.max_seq_length, options.val_batches
            )
            metrics: dict = {}
        else:
            loss, pair_metrics = objective.evaluate(
                model, val_dataset, eval_batch, options.max_seq_length, options.val_batches
            )
            metrics = {f"val_{k}": pair_metrics[k] for k in ("reward_accuracy", "margin")}
        model.train()
        return loss, metrics

    def evaluate_at(it: int) -> bool:
        """Measure the model after ``it`` iterations; return True when early stopping fires."""
        nonlocal last_val_loss, best_val_loss, best_iteration, stale_evaluations
        vtic = time.perf_counter()
        last_val_loss, val_metrics = run_eval(it)
        if callback is not None:
            callback.on_val_loss_report(
                {
                    "iteration": it,
                    "val_loss": last_val_loss,
                    "val_time": time.perf_counter() - vtic,
                    **val_metrics,
                }
            )
        if it == 0:
            return False  # the starting point: no candidate, the output is a trained adapter
        min_delta = early.min_delta if early is not None else 0.0
        improved = best_val_loss is None or last_val_loss < best_val_loss - min_delta
        if best_val_loss is None or last_val_loss < best_val_loss:
            best_val_loss, best_iteration = last_val_loss, it
            if best is not None:
                best.capture(it, model)
        stale_evaluations = 0 if improved else stale_evaluations + 1
        return early is not None and stale_evaluations >= early.patience

    validating = val_dataset is not None and len(val_dataset) >= world_size
    model.train()
    if start == 0 and validating:
        evaluate_at(0)
    for it in range(start + 1, total + 1):
        stopping = stop is not None and stop.stop
        if world_size > 1:
            # Ranks must stop at the same step, or the others would wait in all_sum forever.
            flag = mx.array(1 if stopping else 0)
            stopping = mx.distributed.all_sum(flag, stream=mx.cpu).item() > 0
        if stopping:
            if on_checkpoint is not None and it - 1 > start:
                on_checkpoint(snapshot(it - 1))
            raise Cancelled()
        batch = schedule.batch(it - 1)
        tic = time.perf_counter()  # after batching, as in mlx_lm (its zip fetches first)
        if objective is not None:
            batch = objective.prepare(model, batch)  # DPO: the reference's scores, timed
        # Dropout draws from mx.random; seeding per step makes a resumed step draw the same.
        mx.random.seed((options.seed * 1_000_003 + it) % 2**32)
        lvalue, toks, grad_accum = step(batch, grad_accum, it % grad_accum_steps == 0)
        losses = losses + lvalue
        n_tokens = n_tokens + toks
        steps += 1
        mx.eval(state, losses, n_tokens, grad_accum)
        # mlx_lm's _clear_cache(threshold), except that 0 keeps the cache: mlx_lm 0.32.2 frees
        # it after every step by default (its default threshold is 0 and `mlx_lm.lora` does not
        # pass --clear-cache-threshold on), so that every step allocates its buffers anew.
        threshold = options.clear_cache_threshold
        if threshold > 0 and mx.get_cache_memory() > threshold:
            mx.clear_cache()
        train_time += time.perf_counter() - tic

        # Early stopping that fires at the last evaluation stops nothing: the run is complete.
        evaluating = validating and (it % options.steps_per_eval == 0 or it == total)
        stopped_early = evaluating and evaluate_at(it) and it < total
        if it % options.steps_per_report == 0 or it == total or stopped_early:
            train_loss = mx.distributed.all_sum(losses, stream=mx.cpu).item()
            train_loss /= steps * world_size
            window = mx.distributed.all_sum(n_tokens, stream=mx.cpu).tolist()
            window_tokens = window[0] if isinstance(window, list) else window
            trained_tokens += int(window_tokens)
            last_train_loss = train_loss
            if callback is not None:
                callback.on_train_loss_report(
                    {
                        "iteration": it,
                        "train_loss": train_loss,
                        "learning_rate": optimizer.learning_rate.item(),
                        "iterations_per_second": steps / max(train_time, 1e-9),
                        "tokens_per_second": float(window_tokens) / max(train_time, 1e-9),
                        "trained_tokens": trained_tokens,
                        "peak_memory": mx.get_peak_memory() / 1e9,
                        **(objective.metrics(window) if objective is not None else {}),
                    }
                )
            losses = mx.array(0.0)
            n_tokens = mx.array(0)
            steps = 0
            train_time = 0.0

        if stopped_early:
            return {**snapshot(it), "stopReason": "early-stopping"}
        if on_checkpoint is not None and it % options.steps_per_checkpoint == 0 and it < total:
            on_checkpoint(snapshot(it))
    return snapshot(total)


# ---------------------------------------------------------------------------------------------
# The process


class EventCallback:
    """mlx_lm's TrainingCallback interface, turned into ``progress`` events."""

    def __init__(
        self,
        events: EventWriter,
        total: int,
        batch_size: int,
        examples: int,
        epochs: float,
        history: LossHistory | None = None,
        metrics: MetricsWriter | None = None,
        timer: StepTimer | None = None,
    ) -> None:
        self.events = events
        self.metrics = metrics
        self.timer = timer
        self.history = history
        self.total = total
        self.batch_size = batch_size
        self.examples = max(1, examples)
        self.epochs = epochs
        # Epochs as configured (what the user chose and the summary showed); without a
        # configured count, passes over the training split.
        self.total_epochs = round(
            epochs if epochs and epochs > 0 else total * batch_size / self.examples, 4
        )
        self.val_loss: float | None = None
        self.val_metrics: dict[str, float] = {}
        self.train_loss: float | None = None
        self.tokens_per_second: float | None = None
        self.started = time.monotonic()
        self.first_iteration: int | None = None

    def on_val_loss_report(self, info: dict) -> None:
        """Remember the validation loss; it rides on the next progress event."""
        if self.metrics is not None:
            self.metrics.on_val_loss_report(info)
        self.val_loss = float(info["val_loss"])
        if self.timer is not None:
            self.timer.evaluation(info["val_time"])
        self.val_metrics = {
            k: float(info[k]) for k in contract.PREFERENCE_VALIDATION_METRICS if k in info
        }
        if self.history is not None:
            self.history.append(iteration=int(info["iteration"]), valLoss=self.val_loss)

    def on_train_loss_report(self, info: dict) -> None:
        """Emit one progress event (epoch = iteration / total x configured epochs)."""
        if self.metrics is not None:
            self.metrics.on_train_loss_report(info)
        it = int(info["iteration"])
        if self.first_iteration is None:
            self.first_iteration = it - 1
            self.started = time.monotonic() - 1.0 / max(info["iterations_per_second"], 1e-9)
        done = it - self.first_iteration
        per_it = (time.monotonic() - self.started) / max(done, 1)
        eta = per_it * (self.total - it)
        if self.timer is not None:  # measured steady steps and validation passes
            self.timer.window(it, info["iterations_per_second"])
            eta = self.timer.eta(it) or eta
        self.train_loss = float(info["train_loss"])
        self.tokens_per_second = float(info["tokens_per_second"])
        if self.history is not None:
            self.history.append(iteration=it, trainLoss=self.train_loss)
        self.events.emit(
            contract.Progress(
                iteration=it,
                total_iterations=self.total,
                epoch=round(it / self.total * self.total_epochs, 4),
                total_epochs=self.total_epochs,
                train_loss=self.train_loss,
                val_loss=self.val_loss,
                learning_rate=float(info["learning_rate"]),
                tokens_per_second=float(info["tokens_per_second"]),
                trained_tokens=int(info["trained_tokens"]),
                eta_seconds=round(eta, 2),
                peak_memory_bytes=int(info["peak_memory"] * 1e9),
                **{k: float(info[k]) for k in contract.PREFERENCE_METRICS if k in info},
                **self.val_metrics,
            )
        )


def options_from_spec(spec: JobSpec, batch_size: int) -> RunOptions:
    """Return loop options: spec overrides, else a report every ~2% and a checkpoint every ~10%."""
    config, options = spec.config, spec.options
    total = config.iterations
    return RunOptions(
        total_iterations=total,
        steps_per_report=int(options.steps_per_report or max(1, total // 50)),
        steps_per_eval=int(options.steps_per_eval or max(1, total // 10)),
        steps_per_checkpoint=int(options.steps_per_checkpoint or max(1, total // 10)),
        val_batches=int(options.val_batches),
        max_seq_length=config.max_seq_length,
        batch_size=batch_size,
        grad_accumulation_steps=config.grad_accumulation_steps,
        grad_checkpoint=config.grad_checkpoint,
        seed=config.seed,
        clear_cache_threshold=config.clear_cache_threshold,
        early_stopping=config.early_stopping,
    )


def run_job(
    job_dir: Path, events: EventWriter, stop: StopFlag, timer: StepTimer | None = None
) -> contract.Done | None:
    """Train the job in ``job_dir`` to completion; return the ``done`` event (None on rank > 0).

    ``timer`` (started by ``main``) measures the phases, steps and validation passes; the
    ``done`` event carries what it measured.
    """
    import mlx.core as mx

    from ..models import fine_tuned

    spec = JobSpec.read(job_dir)
    config, options = spec.config, spec.options
    if config.iterations <= 0:
        raise CortexError("invalid-config", "config.iterations must be computed before training")
    world = mx.distributed.init()
    rank, world_size = world.rank(), world.size()
    from . import preference

    objective = preference.PreferenceObjective.from_config(config)  # None: SFT

    timer = timer or StepTimer(config.iterations, 1)
    model, tokenizer, info = prepare_model(spec.model, config, options.lora_keys)
    for warning in info["warnings"]:
        events.emit(contract.Warning(message=warning))
    if options.init_adapters:
        # Continual learning: start from the previous version's adapter (same layout).
        model.load_weights(options.init_adapters, strict=False)
        mx.eval(model.parameters())
    replay = spec.dataset_info.get("replay") or {}
    if replay.get("warning"):
        events.emit(contract.Warning(message=replay["warning"]))
    mask_prompt = options.mask_prompt
    if mask_prompt and _is_text_data(Path(spec.data_dir)):
        # Plain {"text"} records have no prompt to mask; mlx_lm refuses masking for them.
        mask_prompt = False
    view_options = ViewOptions.from_config(config, mask_prompt=mask_prompt)
    timer.phase("load")
    if objective is None:
        train_set, valid_set = load_datasets(spec.data_dir, tokenizer, view_options)
        data_warnings = view_warnings(train_set.views, config.max_seq_length)
    else:
        train_set, valid_set, data_warnings = preference.load_pair_datasets(
            spec.data_dir, tokenizer, view_options
        )
    timer.phase("data")
    for warning in data_warnings:
        events.emit(contract.Warning(message=warning))
    if valid_set is None:
        events.emit(
            contract.Warning(
                message=f"No validation examples (the dataset has {len(train_set)}, all used "
                "for training): validation loss is skipped; add examples for a validation split."
            )
        )
    batch_size = config.batch_size
    if batch_size > len(train_set):
        events.emit(
            contract.Warning(
                message=f"batchSize {batch_size} exceeds the {len(train_set)} training "
                f"examples; using {len(train_set)}."
            )
        )
        batch_size = len(train_set)
    if batch_size % world_size:
        batch_size = max(world_size, batch_size - batch_size % world_size)
        events.emit(
            contract.Warning(message=f"batchSize rounded to {batch_size} for {world_size} ranks.")
        )
    run_options = options_from_spec(spec, batch_size)
    schedule = (BatchSchedule if objective is None else preference.PairSchedule)(
        train_set, batch_size, config.max_seq_length, config.seed, rank, world_size
    )
    plan = plan_schedule(config)
    if plan.warning:
        events.emit(contract.Warning(message=plan.warning))
    optimizer = build_optimizer(config, plan)
    optimizer.init(model.trainable_parameters())
    best = BestWeights() if config.keep_best and valid_set is not None else None
    if config.early_stopping is not None and valid_set is None:
        events.emit(
            contract.Warning(
                message="earlyStopping needs validation examples to watch; it is off for "
                "this run (every iteration is trained)."
            )
        )
    adapter_cfg = adapter_config(
        config, info, spec.model, batch_size=batch_size, mask_prompt=mask_prompt
    )

    start_state = None
    ckpt = latest_checkpoint(job_dir) if spec.resume else None
    if ckpt is None and options.resume_from:
        # Another job's checkpoint: the tuner continues a promoted trial in a new job.
        ckpt = Path(options.resume_from)
    if ckpt is not None:
        start_state = load_checkpoint(ckpt, model, optimizer, best)
        events.emit(contract.Resumed(iteration=start_state["iteration"], path=str(ckpt)))

    def on_checkpoint(state: dict) -> None:
        if rank == 0:
            path = save_checkpoint(job_dir, model, optimizer, adapter_cfg, state, best)
            events.emit(contract.Checkpoint(iteration=state["iteration"], path=str(path)))

    timer.total_iterations = run_options.total_iterations
    timer.steps_per_eval = run_options.steps_per_eval
    timer.start_iteration = (start_state or {}).get("iteration", 0)
    timer.has_validation = valid_set is not None
    history = LossHistory(job_dir / HISTORY_FILE) if rank == 0 else None
    if history is not None:
        history.truncate((start_state or {}).get("iteration", -1))
    metrics = open_metrics(job_dir, spec, start_state, events) if rank == 0 else None
    callback = EventCallback(
        events,
        run_options.total_iterations,
        batch_size,
        len(train_set),
        config.epochs,
        history,
        metrics,
        timer,
    )
    events.emit(
        contract.Started(
            iteration=(start_state or {}).get("iteration", 0),
            total_iterations=run_options.total_iterations,
            examples=len(train_set),
            validation_examples=len(valid_set) if valid_set is not None else 0,
            batch_size=batch_size,
            num_layers=info["numLayers"],
            quantization_bits=info["quantizationBits"],
            ranks=world_size,
        )
    )
    try:
        final = train_loop(
            model,
            optimizer,
            schedule,
            valid_set,
            run_options,
            callback=callback,
            start_state=start_state,
            on_checkpoint=on_checkpoint,
            stop=stop,
            best=best,
            objective=objective,
        )
        timer.phase("train")
    finally:
        if metrics is not None:
            metrics.close()
    if options.checkpoint_at_end:
        on_checkpoint(final)  # so that another job can continue from the last step (resumeFrom)
    if rank != 0:
        return None
    kept = kept_adapter(final, best)
    if kept["from"] == "best":
        best.restore_into(model)  # type: ignore[union-attr] - "best" only when tracked
    final_dir = Path(spec.adapter_dir)
    shutil.rmtree(final_dir, ignore_errors=True)
    save_adapters(model, final_dir, adapter_cfg)
    entries = history.entries() if history is not None else []
    evaluation = evaluation_summary(entries, kept["iteration"] if best is not None else None)
    done = contract.Done(
        iteration=final["iteration"],
        train_loss=final["trainLoss"],
        val_loss=final["valLoss"],
        adapter_path=str(final_dir),
        evaluation=evaluation,
        stop_reason=final.get("stopReason", "completed"),
        best_iteration=final.get("bestIteration"),
        best_val_loss=final.get("bestValLoss"),
        kept_iteration=kept["iteration"],
    )
    if spec.output_name:
        out = fine_tuned.assemble_model(
            name=spec.output_name,
            adapter_dir=final_dir,
            base_model=Path(spec.model),
            config=config,
            dataset_info=spec.dataset_info,
            quantization_bits=info["quantizationBits"],
            final_losses={"trainLoss": final["trainLoss"], "valLoss": final["valLoss"]},
            models_dir=Path(spec.output_dir),
            evaluation=evaluation,
            extra_files={CURVE_FILE: loss_curve_svg(entries, f"{spec.output_name}: loss")},
            marker_extra={
                "keptAdapter": kept,
                **(
                    {"continuedFrom": {**options.continued_from, "replay": replay}}
                    if options.continued_from
                    else {}
                ),
            },
        )
        done = replace(
            done,
            loss_curve_path=str(out / CURVE_FILE),
            output_path=str(out),
            adapter_path=str(out),
            adapter_bytes=(out / "adapters.safetensors").stat().st_size,
        )
    timer.phase("save")
    measured = timer.summary(mx.get_peak_memory(), callback.tokens_per_second)
    return replace(done, timing=measured.to_wire())


def kept_adapter(final: dict, best: BestWeights | None) -> dict[str, Any]:
    """Return which adapter the output holds and why: the marker's ``keptAdapter``.

    ``from`` is "best" when keepBest tracked a lower validation loss than the final model's,
    else "final"; both losses are recorded either way, with the reason the run stopped.
    """
    use_best = (
        best is not None
        and best.weights is not None
        and best.iteration is not None
        and best.iteration != final["iteration"]
    )
    return {
        "from": "best" if use_best else "final",
        "iteration": best.iteration if use_best else final["iteration"],  # type: ignore[union-attr]
        "keepBest": best is not None,
        "bestIteration": final.get("bestIteration"),
        "bestValLoss": final.get("bestValLoss"),
        "finalIteration": final["iteration"],
        "finalValLoss": final.get("valLoss"),
        "stopReason": final.get("stopReason", "completed"),
    }


def open_metrics(
    job_dir: Path, spec: JobSpec, start_state: dict | None, events: EventWriter
) -> MetricsWriter | None:
    """Return the job's TensorBoard writer (with a W&B run when the job opted in and can).

    None, with a warning, in an install that predates the tensorboardX dependency: the
    curves are a view of the run, not a reason to refuse it.
    """
    try:
        import tensorboardX  # noqa: F401 - only whether it is there
    except ImportError:
        events.emit(
            contract.Warning(
                message="tensorboardX is not installed (pip install tensorboardX): no "
                "TensorBoard files for this job."
            )
        )
        return None
    wandb_run = None
    if spec.options.wandb:
        wandb_run, why_not = open_wandb(job_dir, spec.job_id, spec.config.to_wire())
        if why_not:
            events.emit(contract.Warning(message=why_not))
    resumed_at = (start_state or {}).get("iteration")
    return MetricsWriter(
        job_dir / TENSORBOARD_DIR,
        purge_step=resumed_at + 1 if resumed_at is not None else None,
        wandb_run=wandb_run,
    )


_OOM_PATTERN = re.compile(
    r"out of memory|insufficient memory|failed to allocate|\[metal::malloc\]|std::bad_alloc",
    re.IGNORECASE,
)
OOM_ADVICE = (
    "Training ran out of memory. Try the Quick preset, 4-bit quantization "
    "(quantizationBits: 4), a smaller batchSize or maxSeqLength, or gradCheckpoint: true; "
    "close other applications."
)


DISK_FULL_ADVICE = (
    "The disk holding CORTEX_HOME is full. Free some space (or point CORTEX_HOME at a larger "
    "disk) and resume the job: it continues from its last checkpoint."
)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """Return the (data.code, message) a client shows for an unexpected training error."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or _OOM_PATTERN.search(str(exc)):
        return "out-of-memory", f"{OOM_ADVICE} ({text})"
    # mlx reports a failed save as "[write] Unable to write N bytes to file."
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "Unable to write" in str(exc):
        return "disk-full", f"{DISK_FULL_ADVICE} ({text})"
    return "training-failed", text


def main(argv: list[str] | None = None) -> int:
    """Run one job; exit 0 on done or cancelled, 1 on error (after an ``error`` event)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m cortex_rpc.training.worker JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    stop = StopFlag()
    stop.install()
    timer = StepTimer(0, 1)  # sized once the spec is read
    # Rank is known only after mlx's distributed init; mlx.launch exports it first.
    rank = int(os.environ.get("MLX_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    events = open_event_writer(enabled=rank == 0)
    blas = preload_fast_blas()
    events.emit(contract.Blas(name=blas.name if blas else None, path=blas.path if blas else None))
    try:
        done = run_job(job_dir, events, stop, timer)
    except Cancelled:
        events.emit(contract.Cancelled(message="Training cancelled; the last checkpoint is kept."))
        return 0
    except CortexError as exc:
        events.emit(contract.Error(code=exc.code, message=exc.message))
        return 1
    except Exception as exc:  # noqa: BLE001 - every failure must reach the client as an event
        code, message = describe_failure(exc)
        events.emit(contract.Error(code=code, message=message))  # first: the log may be unwritable
        with contextlib.suppress(OSError):
            traceback.print_exc()
        return 1
    if done is not None:
        with contextlib.suppress(OSError):  # a full disk: the event still tells the server
            contract.write_job_result(job_dir, done.to_wire())
        events.emit(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
