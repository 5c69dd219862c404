"""Training time and peak memory estimates.

Time: a LoRA step costs about 4 x parameters FLOPs per token (forward, plus the backward
pass through activations; frozen weights get no weight gradients), a full fine-tune about 6.
Divided by an effective per-backend throughput that was measured, not guessed:

- cpu: 80 GFLOP/s with OpenBLAS on 2 cores (mlx_lm LoRA on a 34M Llama ran 606 tok/s:
  4 * 34e6 * 606 = 82 GFLOP/s); 3.7 GFLOP/s with MLX's bundled reference BLAS (22x slower).
- metal: 2.4 TFLOP/s effective (the guide's example: a 7.2B model, 50 examples, 4 epochs,
  ~8 minutes).
- cuda: 20 TFLOP/s effective.

Token counts come from the training views (the model's chat template and tokenizer) when
the proposal has them: the mean tokens per example for time, the longest batch (padded as
mlx_lm pads) for activations. ``CHARS_PER_TOKEN`` is only the fallback without a tokenizer.

``benchmarks/train.py`` prints the measured tokens/s on a machine; docs/configuration.md
says how to recalibrate these figures from it.
"""

from __future__ import annotations

from dataclasses import dataclass

EFFECTIVE_FLOPS = {
    "cpu": 80e9,
    "cpu-reference-blas": 3.7e9,
    "metal": 2.4e12,
    "cuda": 20e12,
}
# Loading weights from disk, building the graph, the first compile.
LOAD_BYTES_PER_SECOND = 1.5e9
FIXED_OVERHEAD_SECONDS = 5.0
CHARS_PER_TOKEN = 3.8


@dataclass(frozen=True)
class Estimate:
    """Estimated wall time and peak memory of a training run, with how they were derived."""

    seconds: float
    peak_memory_bytes: int
    tokens: int
    basis: str
    trained_tokens: int | None = None  # tokens with loss, when the model's tokenizer counted them

    def to_wire(self) -> dict:
        wire = {
            "seconds": round(self.seconds, 1),
            "peakMemoryBytes": self.peak_memory_bytes,
            "tokens": self.tokens,
            "basis": self.basis,
        }
        if self.trained_tokens is not None:
            wire["trainedTokens"] = self.trained_tokens
        return wire


def weight_bytes(parameters: int, bytes_per_parameter: float, quantization_bits: int | None) -> int:
    """Return the memory the base weights take, quantized (with scales/biases) or not."""
    if quantization_bits:
        # Each group of 64 values carries an fp16 scale and bias: +0.5 bit per value.
        return int(parameters * (quantization_bits + 0.5) / 8)
    return int(parameters * bytes_per_parameter)


def lora_parameters(
    hidden_size: int, num_layers: int, rank: int, fine_tune_type: str, total_parameters: int
) -> int:
    """Return the trainable parameter count: 7 adapted projections per layer for LoRA."""
    if fine_tune_type == "full":
        return total_parameters
    # q, k, v, o, gate, up, down: A (in x r) + B (r x out), approximated with hidden x r each
    # side and the MLP projections being about 2.7x wider.
    per_layer = rank * hidden_size * (2 * 4 + 2 * 3 * 1.85)
    return int(per_layer * num_layers)


def estimate_peak_memory(
    *,
    parameters: int,
    bytes_per_parameter: float,
    quantization_bits: int | None,
    hidden_size: int,
    total_layers: int,
    trained_layers: int,
    rank: int,
    fine_tune_type: str,
    batch_size: int,
    seq_length: int,
    grad_checkpoint: bool,
) -> int:
    """Return peak bytes: weights + trainable params with Adam state + activations."""
    weights = weight_bytes(parameters, bytes_per_parameter, quantization_bits)
    trainable = lora_parameters(hidden_size, trained_layers, rank, fine_tune_type, parameters)
    # fp32 parameter, gradient and two Adam moments.
    optimizer = trainable * 16
    # Activations kept for backward: ~34 bytes per token per hidden unit per layer (fp16).
    activation_layers = 1 if grad_checkpoint else max(trained_layers, 1)
    activations = int(34 * batch_size * seq_length * hidden_size * activation_layers)
    overhead = int(0.1 * weights) + 256 * 1024 * 1024
    return weights + optimizer + activations + overhead


def estimate_seconds(
    *,
    parameters: int,
    tokens: int,
    backend: str,
    fast_blas: bool,
    fine_tune_type: str,
    size_bytes: int,
) -> tuple[float, str]:
    """Return (seconds, basis) for training ``tokens`` tokens through the model."""
    key = backend if backend != "cpu" or fast_blas else "cpu-reference-blas"
    flops_per_token = (6 if fine_tune_type == "full" else 4) * parameters
    throughput = EFFECTIVE_FLOPS[key]
    compute = flops_per_token * tokens / throughput
    load = size_bytes / LOAD_BYTES_PER_SECOND
    seconds = compute + load + FIXED_OVERHEAD_SECONDS
    basis = (
        f"{flops_per_token // max(parameters, 1)} x {parameters:,} params x {tokens:,} tokens "
        f"at {throughput / 1e9:,.1f} GFLOP/s effective ({key}), plus {load:.0f} s to load "
        f"{size_bytes / 1e9:.2f} GB and {FIXED_OVERHEAD_SECONDS:.0f} s setup"
    )
    return seconds, basis
