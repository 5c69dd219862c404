"""The guide's scripting API: ``LoRATrainer(model_manager, TrainingConfig(...)).train(...)``.

A thin synchronous layer over CortexClient, so a script gets the same validation, smart
config, worker process and output handling as the editor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from .client import CortexClient, CortexRpcError

# Guide field name -> protocol config field.
_WIRE_NAMES = {
    "epochs": "epochs",
    "learning_rate": "learningRate",
    "lora_r": "loraRank",
    "lora_alpha": "loraAlpha",
    "lora_dropout": "loraDropout",
    "batch_size": "batchSize",
    "num_layers": "numLayers",
    "iterations": "iterations",
    "grad_accumulation_steps": "gradAccumulationSteps",
    "max_seq_length": "maxSeqLength",
    "quantization_bits": "quantizationBits",
    "grad_checkpoint": "gradCheckpoint",
    "fine_tune_type": "fineTuneType",
    "seed": "seed",
    "method": "method",
    "beta": "beta",
    "dpo_loss": "dpoLoss",
    "orpo_lambda": "orpoLambda",
}


@dataclass
class TrainingConfig:
    """Settings to override on top of the smart config of ``preset``; None keeps the proposal."""

    preset: str = "balanced"
    epochs: float | None = None
    learning_rate: float | None = None
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    batch_size: int | None = None
    num_layers: int | None = None
    iterations: int | None = None
    grad_accumulation_steps: int | None = None
    max_seq_length: int | None = None
    quantization_bits: int | None = None
    grad_checkpoint: bool | None = None
    fine_tune_type: str | None = None
    seed: int | None = None
    # Preference training: "sft", "dpo" or "orpo" (None: by the data, dpo for pairs).
    method: str | None = None
    beta: float | None = None
    dpo_loss: str | None = None
    orpo_lambda: float | None = None

    def overrides(self) -> dict[str, Any]:
        """Return the fields that were set, with their protocol names."""
        return {
            _WIRE_NAMES[f.name]: getattr(self, f.name)
            for f in fields(self)
            if f.name in _WIRE_NAMES and getattr(self, f.name) is not None
        }


class LoRATrainer:
    """Fine-tune a model with LoRA through a cortex-rpc server, synchronously.

    ``TrainingConfig(method="dpo")`` trains on preference pairs (DPO; "orpo" for ORPO); the
    progress notifications then carry ``rewardAccuracy`` and ``margin`` too.
    """

    def __init__(
        self,
        model_manager: Any = None,
        config: TrainingConfig | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        # model_manager is accepted for the guide's signature; models are resolved by the
        # server (paths or names from cortex/listModels).
        self.model_manager = model_manager
        self.config = config or TrainingConfig()
        self.on_progress = on_progress

    def train(self, base_model_name: str, dataset_path: str, output_name: str) -> dict[str, Any]:
        """Train and return the final progress notification (with ``outputPath``).

        Raises CortexRpcError when the server refuses the job or the job does not complete.
        """
        return asyncio.run(self._train(base_model_name, dataset_path, output_name))

    async def _train(self, model: str, dataset: str, output_name: str) -> dict[str, Any]:
        async with CortexClient() as client:
            queue = client.subscribe("cortex/trainingProgress")
            job = await client.start_training(
                model,
                dataset,
                output_name,
                preset=self.config.preset,
                config=self.config.overrides(),
            )
            last: dict[str, Any] = {}
            async for note in client.training_progress(job["jobId"], queue):
                last = note
                if self.on_progress:
                    self.on_progress(note)
            if last.get("state") != "completed":
                raise CortexRpcError(
                    -32000,
                    f"Training {last.get('state')}: {last.get('message', '')}",
                    {"code": "training-failed"},
                )
            return last
