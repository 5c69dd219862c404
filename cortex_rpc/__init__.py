"""cortex-rpc: a language-server-style JSON-RPC backend for LoRA fine-tuning with MLX."""

__version__ = "0.1.0"
