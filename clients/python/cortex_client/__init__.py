"""Python client for cortex-rpc: an asyncio protocol client, the guide's LoRATrainer, the wizard."""

from .client import CortexClient, CortexRpcError
from .trainer import LoRATrainer, TrainingConfig

__all__ = ["CortexClient", "CortexRpcError", "LoRATrainer", "TrainingConfig"]
