"""The import path the fine-tuning guide shows: ``from cortex.fine_tuning import LoRATrainer``."""
