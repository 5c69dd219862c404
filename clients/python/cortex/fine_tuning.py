"""``from cortex.fine_tuning import LoRATrainer, TrainingConfig``, as in the fine-tuning guide."""

from cortex_client.trainer import LoRATrainer, TrainingConfig

__all__ = ["LoRATrainer", "TrainingConfig"]
