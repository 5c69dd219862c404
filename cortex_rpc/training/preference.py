"""Preference training (DPO, ORPO): pairs as training views, their losses, batches and scores.

A prepared preference record is ``{"prompt": [...], "chosen": [...], "rejected": [...]}``
(OpenAI-style messages). Each side is rendered as one conversation, prompt + completion,
through the model's chat template with the engine SFT uses (``datasets/training_view.py``):
the prompt's tokens are masked, the completion's are scored. A batch holds the chosen sides
of its pairs, then their rejected sides, in one padded array, so one forward scores both.

DPO's reference model is the model being trained with its adapters taken out
(``adapters_disabled``): the frozen base is already in memory, so no second copy of the
weights is loaded. Its log-probs are computed in the same step, under ``stop_gradient``.

The worker's ``train_loop`` runs these through its one compiled step: the objective's loss
returns ``(loss, stats)`` where ``stats`` is a vector of sums (``STATS``) that the loop
accumulates over a report window as it accumulates the SFT token count, so the reported
reward accuracy, rewards, margin and log-probs average every pair of the window.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.training_config import TrainingConfig, method_conflict
from ..datasets.training_view import TemplateRenderer, TrainingView, ViewOptions
from ..errors import CortexError
from .worker import BatchSchedule, pad_batch, rendered_view, view_warnings

PREFERENCE_METHODS = ("dpo", "orpo")
# The sums a preference step reports, in this order (the first is the trained token count).
STATS = (
    "tokens",
    "pairs",
    "correct",
    "chosen_reward",
    "rejected_reward",
    "chosen_logps",
    "rejected_logps",
)
# Pair batches are padded to a multiple of this (SFT's 32, mlx_lm's, would be more padding on
# twice the rows; a few more distinct shapes to compile is the price).
PAIR_PAD_TO = 8
# ORPO's log(1 - p) is -inf at p = 1; mean log-probs are kept this far below 0.
_MAX_MEAN_LOGP = -1e-6


def is_preference_record(record: Any) -> bool:
    """True when a prepared record is a preference pair (prompt, chosen, rejected)."""
    return isinstance(record, dict) and "chosen" in record and "rejected" in record


# ---------------------------------------------------------------------------------------------
# Pairs as training views


def side_record(prompt: list[dict[str, Any]], completion: list[dict[str, Any]]) -> dict:
    """Return the chat record of one side: the prompt's answers at weight 0, the completion's scored.

    Weight 0 is the view engine's own "context, not trained" flag, so an assistant turn of a
    multi-turn prompt is rendered but never scored; only the completion's turns are.
    """
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in (prompt or [])]
    return {"messages": [*context, *completion]}


@dataclass
class PairDataset:
    """One split's pairs; item ``i`` is ((chosen ids, flags), (rejected ids, flags)).

    ``itemlen`` is the longer side's token count: batches group pairs of similar length, so
    the padding of ``[chosen..., rejected...]`` rows stays small.
    """

    chosen: list[TrainingView]
    rejected: list[TrainingView]

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int) -> tuple[tuple[list[int], list[bool]], ...]:
        chosen, rejected = self.chosen[index], self.rejected[index]
        return (chosen.ids, chosen.trained), (rejected.ids, rejected.trained)

    def itemlen(self, index: int) -> int:
        return max(len(self.chosen[index].ids), len(self.rejected[index].ids))

    @property
    def views(self) -> list[TrainingView]:
        """Every side's view (what SFT's warnings about cuts and untrained records read)."""
        return [*self.chosen, *self.rejected]


def load_pair_split(
    path: Path, renderer: TemplateRenderer, options: ViewOptions
) -> tuple[PairDataset, int]:
    """Return (the pairs of a prepared split file, how many were left out for an empty side).

    A side that does not render is refused with its line, as ``load_split`` refuses a record.
    A pair one of whose sides scores no token (cut by maxSeqLength) cannot be compared and is
    left out; the count goes into a warning.
    """
    dataset = PairDataset([], [])
    dropped = 0
    if not path.exists():
        return dataset, dropped
    options = ViewOptions(
        train_on="all",
        mask_prompt=True,  # a pair is always scored on its completion only
        train_template_text=options.train_template_text,
        max_seq_length=options.max_seq_length,
    )
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not is_preference_record(record):
                raise CortexError(
                    "dataset-invalid",
                    f"{path}, line {number}: a preference job needs prompt/chosen/rejected "
                    "records; prepare the dataset again, or train it with method sft.",
                    path=str(path),
                    line=number,
                )
            sides = []
            for side in ("chosen", "rejected"):
                pair_side = side_record(record.get("prompt"), record[side])
                sides.append(rendered_view(renderer, pair_side, options, path, number, side))
            if not all(view.trained_count for view in sides):
                dropped += 1
                continue
            dataset.chosen.append(sides[0])
            dataset.rejected.append(sides[1])
    return dataset, dropped


def load_pair_datasets(
    data_dir: str | Path, tokenizer: Any, options: ViewOptions | None = None
) -> tuple[PairDataset, PairDataset | None, list[str]]:
    """Return (train, valid or None, warnings) of DATA/train.jsonl and DATA/valid.jsonl."""
    options = options or ViewOptions()
    data_dir = Path(data_dir)
    renderer = TemplateRenderer(tokenizer)
    train, dropped_train = load_pair_split(data_dir / "train.jsonl", renderer, options)
    valid, dropped_valid = load_pair_split(data_dir / "valid.jsonl", renderer, options)
    warnings = view_warnings(train.views, options.max_seq_length or 0)
    if dropped_train or dropped_valid:
        warnings.append(
            f"{dropped_train + dropped_valid} pair(s) have a side with no scored token "
            f"(cut by maxSeqLength {options.max_seq_length} or empty) and are left out. "
            "Raise maxSeqLength or shorten their prompts."
        )
    if len(train) == 0:
        raise CortexError(
            "dataset-empty", f"No preference pairs to train in {data_dir / 'train.jsonl'}"
        )
    return train, (valid if len(valid) else None), warnings


class PairSchedule(BatchSchedule):
    """BatchSchedule over pairs: step k is the same pairs on resume, as for SFT.

    A batch of ``batch_size`` pairs is ``2 * batch_size`` rows: the chosen sides, then the
    rejected sides in the same order, padded and cut as SFT batches are.
    """

    def batch(self, step: int) -> tuple[Any, Any]:
        """Return (tokens, mask) of 0-based global ``step``: chosen rows, then rejected rows."""
        pairs = self.items(step)
        rows = [c for c, _ in pairs] + [r for _, r in pairs]
        return pad_batch(rows, self.max_seq_length, PAIR_PAD_TO)


# ---------------------------------------------------------------------------------------------
# Losses on sequence log-probs (TRL's formulas)


def dpo_losses(
    policy_chosen: Any,
    policy_rejected: Any,
    reference_chosen: Any,
    reference_rejected: Any,
    beta: float,
    loss_type: str = "sigmoid",
) -> Any:
    """Return DPO's per-pair loss: -logsigmoid(beta * logits) or IPO's (logits - 1/(2 beta))^2.

    ``logits = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)``.
    """
    import mlx.nn as nn

    logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    if loss_type == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    return -nn.log_sigmoid(beta * logits)


def orpo_log_odds(chosen_mean: Any, rejected_mean: Any) -> Any:
    """Return log odds(chosen) - log odds(rejected) from mean per-token log-probs (ORPO eq. 4)."""
    import mlx.core as mx

    chosen_mean = mx.minimum(chosen_mean, _MAX_MEAN_LOGP)
    rejected_mean = mx.minimum(rejected_mean, _MAX_MEAN_LOGP)
    return (chosen_mean - rejected_mean) - (
        mx.log1p(-mx.exp(chosen_mean)) - mx.log1p(-mx.exp(rejected_mean))
    )


def orpo_loss(chosen_nll: Any, chosen_mean: Any, rejected_mean: Any, orpo_lambda: float) -> Any:
    """Return ORPO's loss: the chosen side's NLL + lambda * mean(-logsigmoid(log odds ratio))."""
    import mlx.core as mx
    import mlx.nn as nn

    ratio = nn.log_sigmoid(orpo_log_odds(chosen_mean, rejected_mean))
    return chosen_nll - orpo_lambda * mx.mean(ratio)


def sequence_logps(model: Any, tokens: Any, mask: Any) -> tuple[Any, Any]:
    """Return (sum of scored tokens' log-probs, scored token count) of every row."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(tokens[:, :-1]).astype(mx.float32)
    weights = mask[:, 1:]
    logps = -nn.losses.cross_entropy(logits, tokens[:, 1:]) * weights
    return logps.sum(-1), weights.sum(-1)


def _adapter_base(module: Any) -> Any:
    """Return the base layer a LoRA/DoRA layer wraps, or None for any other module."""
    if "lora_a" not in module:
        return None
    return getattr(module, "linear", None) or getattr(module, "embedding", None)


@contextlib.contextmanager
def adapters_disabled(model: Any) -> Iterator[None]:
    """Run the model as its base: every LoRA/DoRA layer is swapped for the layer it wraps.

    Swapping (not a scale of 0) is exact for DoRA too, whose trained magnitude would still
    rescale the base's output. The base layers are the model's own frozen ones: nothing is
    copied. Raises when the model has no adapter (a full fine-tune has no base left).
    """
    swaps: list[tuple[Any, list[tuple[str, Any]]]] = []
    for layer in model.layers:
        found = [
            (name, module)
            for name, module in layer.named_modules()
            if _adapter_base(module) is not None
        ]
        if found:
            swaps.append((layer, found))
    if not swaps:
        raise CortexError(
            "invalid-config", "The model has no adapters, so it has no reference model."
        )
    from mlx.utils import tree_unflatten

    for layer, found in swaps:
        layer.update_modules(tree_unflatten([(n, _adapter_base(m)) for n, m in found]))
    try:
        yield
    finally:
        for layer, found in swaps:
            layer.update_modules(tree_unflatten(found))


# ---------------------------------------------------------------------------------------------
# The objective the training loop runs


@dataclass(frozen=True)
class PreferenceObjective:
    """DPO or ORPO with its settings: the loss the loop differentiates and the metrics it reports.

    ``length_normalized``: the sequence score is the mean log-prob per scored token (ORPO and
    IPO, as in TRL) instead of the sum (DPO's sigmoid loss).
    """

    method: str
    beta: float = 0.1
    dpo_loss: str = "sigmoid"
    orpo_lambda: float = 0.1
    # prepare's compiled reference forward, per model (id).
    _compiled: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: TrainingConfig) -> PreferenceObjective | None:
        """Return the objective a config asks for (None for SFT); refuses full + DPO."""
        if config.method not in PREFERENCE_METHODS:
            return None
        conflict = method_conflict(config)
        if conflict is not None:
            raise CortexError("invalid-config", conflict)
        return cls(config.method, config.beta, config.dpo_loss, config.orpo_lambda)

    @property
    def length_normalized(self) -> bool:
        return self.method == "orpo" or self.dpo_loss == "ipo"

    def scores(self, model: Any, tokens: Any, mask: Any) -> tuple[Any, Any, Any]:
        """Return (sequence scores, log-prob sums, scored counts) of every row of a batch."""
        import mlx.core as mx

        sums, counts = sequence_logps(model, tokens, mask)
        if self.length_normalized:
            return sums / mx.maximum(counts, 1), sums, counts
        return sums, sums, counts

    def reference_scores(self, model: Any, tokens: Any, mask: Any) -> Any:
        """Return the reference model's sequence scores: the model with its adapters off."""
        import mlx.core as mx

        with adapters_disabled(model):
            return mx.stop_gradient(self.scores(model, tokens, mask)[0])

    def prepare(self, model: Any, batch: tuple[Any, Any]) -> tuple[Any, ...]:
        """Return the batch the loss takes: DPO's gets the reference scores, computed now.

        Evaluated before the step, so the reference forward's buffers are freed before the
        policy's forward and backward allocate theirs (a lower peak than one graph of both).
        The forward is compiled (about a fifth faster on a small model than run eagerly),
        with the model's state as its input so that it follows the model.
        """
        import mlx.core as mx

        if self.method != "dpo":
            return batch
        key = id(model)
        if key not in self._compiled:
            self._compiled[key] = mx.compile(
                lambda tokens, mask: self.reference_scores(model, tokens, mask),
                inputs=[model.state],
            )
        reference = self._compiled[key](*batch)
        mx.eval(reference)
        return (*batch, reference)

    def loss(self, model: Any, tokens: Any, mask: Any, reference: Any = None) -> tuple[Any, Any]:
        """Return (mean loss over the batch's pairs, the STATS sums of the batch).

        ``reference``: DPO's reference scores of the rows (``prepare``); computed here if None.
        """
        import mlx.core as mx

        n = tokens.shape[0] // 2
        policy, sums, counts = self.scores(model, tokens, mask)
        chosen, rejected = policy[:n], policy[n:]
        if self.method == "dpo":
            if reference is None:
                reference = self.reference_scores(model, tokens, mask)
            ref_chosen, ref_rejected = reference[:n], reference[n:]
            losses = dpo_losses(
                chosen, rejected, ref_chosen, ref_rejected, self.beta, self.dpo_loss
            )
            loss = mx.mean(losses)
            chosen_reward = self.beta * (chosen - ref_chosen)
            rejected_reward = self.beta * (rejected - ref_rejected)
        else:
            # TRL's ORPO: the chosen side's cross-entropy, averaged over its tokens.
            nll = -sums[:n].sum() / mx.maximum(counts[:n].sum(), 1)
            loss = orpo_loss(nll, chosen, rejected, self.orpo_lambda)
            chosen_reward = self.beta * chosen
            rejected_reward = self.beta * rejected
        chosen_reward = mx.stop_gradient(chosen_reward)
        rejected_reward = mx.stop_gradient(rejected_reward)
        stats = mx.stack(
            [
                counts.sum().astype(mx.float32),
                mx.array(float(n)),
                (chosen_reward > rejected_reward).astype(mx.float32).sum(),
                chosen_reward.sum(),
                rejected_reward.sum(),
                mx.stop_gradient(chosen).sum(),
                mx.stop_gradient(rejected).sum(),
            ]
        )
        return loss, stats

    @staticmethod
    def metrics(stats: list[float]) -> dict[str, float]:
        """Return the report's metrics (Progress names) from a window's STATS sums."""
        sums = dict(zip(STATS, stats, strict=True))
        pairs = max(sums["pairs"], 1.0)
        return {
            "reward_accuracy": sums["correct"] / pairs,
            "chosen_reward": sums["chosen_reward"] / pairs,
            "rejected_reward": sums["rejected_reward"] / pairs,
            "margin": (sums["chosen_reward"] - sums["rejected_reward"]) / pairs,
            "chosen_logps": sums["chosen_logps"] / pairs,
            "rejected_logps": sums["rejected_logps"] / pairs,
        }

    def evaluate(
        self,
        model: Any,
        dataset: PairDataset,
        batch_size: int,
        max_seq_length: int,
        num_batches: int = -1,
    ) -> tuple[float, dict[str, float]]:
        """Return (mean loss per pair, metrics) over held-out pairs, summed across ranks.

        As mlx_lm's ``evaluate``: epoch 0's batches, at most ``num_batches`` (-1: all).
        """
        import mlx.core as mx

        model.eval()
        world = mx.distributed.init()
        schedule = PairSchedule(dataset, batch_size, max_seq_length, 0, world.rank(), world.size())
        total_loss = mx.array(0.0)
        total = mx.zeros((len(STATS),))
        steps = schedule.batches_per_epoch
        if num_batches != -1:
            steps = min(steps, num_batches)
        for step in range(steps):
            loss, stats = self.loss(model, *schedule.batch(step))
            total_loss = total_loss + loss * stats[1]
            total = total + stats
            mx.eval(total_loss, total)
        total_loss = mx.distributed.all_sum(total_loss, stream=mx.cpu)
        sums = mx.distributed.all_sum(total, stream=mx.cpu).tolist()
        metrics = self.metrics(sums)
        return total_loss.item() / max(sums[1], 1.0), metrics


def adapter_settings(config: TrainingConfig) -> dict[str, Any]:
    """Return the method's settings recorded in adapter_config.json (only what it used)."""
    if config.method == "dpo":
        return {"method": "dpo", "beta": config.beta, "dpo_loss": config.dpo_loss}
    if config.method == "orpo":
        return {"method": "orpo", "beta": config.beta, "orpo_lambda": config.orpo_lambda}
    return {"method": "sft"}


# ---------------------------------------------------------------------------------------------
# Evaluation: a fine-tune against its base on held-out pairs


@dataclass
class PairScores:
    """Per-pair sequence scores of one model (the method's score: sum, or mean per token)."""

    chosen: list[float]
    rejected: list[float]
    chosen_nll: float  # the chosen completions' summed cross-entropy
    chosen_tokens: int

    @property
    def preference_accuracy(self) -> float:
        """Fraction of pairs the model itself prefers chosen: score(chosen) > score(rejected)."""
        wins = sum(c > r for c, r in zip(self.chosen, self.rejected, strict=True))
        return wins / max(len(self.chosen), 1)

    @property
    def chosen_loss(self) -> float:
        """Mean cross-entropy per chosen completion token (the SFT loss of the chosen answers)."""
        return self.chosen_nll / max(self.chosen_tokens, 1)


def score_pairs(
    model: Any, dataset: PairDataset, max_seq_length: int, length_normalized: bool
) -> PairScores:
    """Return every pair's scores under ``model``, one pair per batch (nothing padded or dropped)."""
    import mlx.core as mx

    model.eval()
    scores = PairScores([], [], 0.0, 0)
    for index in range(len(dataset)):
        tokens, mask = pad_batch(list(dataset[index]), max_seq_length)
        sums, counts = sequence_logps(model, tokens, mask)
        mx.eval(sums, counts)
        sums_list, counts_list = sums.tolist(), counts.tolist()
        values = [s / max(c, 1) for s, c in zip(sums_list, counts_list, strict=True)]
        if not length_normalized:
            values = sums_list
        scores.chosen.append(values[0])
        scores.rejected.append(values[1])
        scores.chosen_nll -= sums_list[0]
        scores.chosen_tokens += int(counts_list[0])
    return scores


def compare_to_base(base: PairScores, tuned: PairScores, beta: float) -> dict[str, float]:
    """Return the fine-tune's preference metrics with its base as the reference model.

    reward = beta * (score under the fine-tune - score under the base), per side, as DPO's
    implicit reward; rewardAccuracy is the fraction of pairs whose chosen reward is the
    larger, margin the mean difference. The base against itself has rewards 0 everywhere,
    so its preferenceAccuracy (score(chosen) > score(rejected)) is reported instead.
    """
    rewards = [
        (beta * (tc - bc), beta * (tr - br))
        for tc, tr, bc, br in zip(
            tuned.chosen, tuned.rejected, base.chosen, base.rejected, strict=True
        )
    ]
    pairs = max(len(rewards), 1)
    return {
        "rewardAccuracy": sum(c > r for c, r in rewards) / pairs,
        "margin": sum(c - r for c, r in rewards) / pairs,
        "chosenReward": sum(c for c, _ in rewards) / pairs,
        "rejectedReward": sum(r for _, r in rewards) / pairs,
        "preferenceAccuracy": tuned.preference_accuracy,
        "basePreferenceAccuracy": base.preference_accuracy,
    }
