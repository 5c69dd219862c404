"""Training time and peak memory estimates: a prior model, calibrated by measured runs.

Time is wall time from the worker's start to the saved model, in three parts:

- fixed: process start and imports, loading (and quantizing) the weights, rendering the
  data, the first step's compilation, the final save and the output model;
- steps: iterations x (per-step overhead + tokens per step x FLOPs per token / throughput);
  a LoRA step costs about 4 x parameters FLOPs per token (forward, plus the backward pass
  through activations), a full fine-tune about 6. The per-step overhead (graph building,
  kernel launches) grows with the layers a step runs through and dominates small models;
- evaluations: the validation passes (forward only, 2 x parameters FLOPs per token).

The prior figures below were measured on this project's machines (2-core Linux, OpenBLAS)
and from the guide's Metal example; they are off by up to 3x on another machine or shape.
``calibration.py`` records every finished run's measured parts, and ``estimate_time`` scales
each part by the factor measured on the most similar recorded runs.

Memory is MLX's peak (what ``mx.get_peak_memory`` reports): the weights (quantized in memory
when asked), the trainable parameters with their gradient and Adam moments, the activations
the backward pass keeps (per layer trained, or one layer with gradient checkpointing), the
attention scores and the logits. Calibration scales it the same way. What a run needs from
the system is that plus the process's own baseline (Python, MLX, the tokenizer).

Token counts come from the training views (the model's chat template and tokenizer) when
the proposal has them; ``CHARS_PER_TOKEN`` is only the fallback without a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .calibration import Calibration, RunShape, contention, similarity, weighted_factor

# Peak throughput of a step's matmuls. On the CPU a BLAS reaches it only for tall matrices:
# with T tokens a step, the effective throughput is peak x T / (T + CPU_HALF_TOKENS) (mlx_lm
# LoRA on a 34M Llama, 4 x 256 tokens a step: 606 tok/s, 80 GFLOP/s effective; 110 tokens a
# step on the 42M Llama: ~20 GFLOP/s). Metal and CUDA: one effective figure.
EFFECTIVE_FLOPS = {
    "cpu": 120e9,  # OpenBLAS on 2 cores
    "cpu-reference-blas": 5.5e9,  # MLX's bundled reference BLAS (22x slower)
    "metal": 2.4e12,  # the guide's example: 7.2B model, 50 examples, 4 epochs, ~8 minutes
    "cuda": 20e12,
}
CPU_HALF_TOKENS = 512
# Seconds per layer a step runs through (forward through all, backward through the trained):
# graph building and kernel launches, from the 1.4M demo model (2 layers, 22-43 ms a step).
STEP_OVERHEAD_PER_LAYER = {"cpu": 3e-3, "cpu-reference-blas": 3e-3, "metal": 1e-3, "cuda": 1e-3}
# Quantized matmuls on the CPU are MLX's own kernels, not BLAS, so the BLAS does not matter:
# they run at about a tenth of OpenBLAS's float throughput (42M Llama, 4-bit: ~14x slower).
CPU_QUANTIZED_SLOWDOWN = 10.0
STARTUP_SECONDS = 4.5  # the request's data split, the worker's imports, the BLAS preload
# The first step's extra (compilation, first allocations): 0.1 s on 1.4M, 5 s on 42M params.
FIRST_STEP_SECONDS = 0.2
FIRST_STEP_SECONDS_PER_PARAMETER = 1.2e-7
LOAD_BYTES_PER_SECOND = 1.5e9
CHARS_PER_TOKEN = 3.8
# Python, MLX, the tokenizer and the data in the worker, beyond MLX's own buffers.
PROCESS_BASELINE_BYTES = 400 * 1024 * 1024
UNCALIBRATED = "uncalibrated FLOP model, may be off by 3x"
ACTIVATION_VALUES = 25
WEIGHT_COPIES = 1.2
LOAD_COPIES = 1.1  # the 42M Llama loaded and quantized to 4 bits: 184 MB peak, 168 MB float
MLX_BASE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class TimeParts:
    """Seconds of a run by part; ``total`` is the wall time an estimate promises."""

    fixed: float
    steps: float
    evals: float

    @property
    def total(self) -> float:
        return self.fixed + self.steps + self.evals


@dataclass(frozen=True)
class Estimate:
    """Estimated wall time and peak memory of a training run, with how they were derived."""

    seconds: float
    peak_memory_bytes: int
    tokens: int
    basis: str
    trained_tokens: int | None = None  # tokens with loss, when the model's tokenizer counted them
    calibrated_runs: int = 0  # recorded runs of this machine the estimate was scaled by
    memory_basis: str = ""
    parts: TimeParts | None = None
    step_seconds: float | None = None
    shape: RunShape | None = None

    def to_wire(self) -> dict:
        wire = {
            "seconds": round(self.seconds, 1),
            "peakMemoryBytes": self.peak_memory_bytes,
            "tokens": self.tokens,
            "basis": self.basis,
            "calibratedRuns": self.calibrated_runs,
            "memoryBasis": self.memory_basis,
        }
        if self.parts is not None:
            wire["parts"] = {
                "fixedSeconds": round(self.parts.fixed, 1),
                "stepsSeconds": round(self.parts.steps, 1),
                "evalSeconds": round(self.parts.evals, 1),
            }
        if self.step_seconds is not None:
            wire["stepSeconds"] = round(self.step_seconds, 4)
        if self.trained_tokens is not None:
            wire["trainedTokens"] = self.trained_tokens
        return wire


def weight_bytes(parameters: int, bytes_per_parameter: float, quantization_bits: int | None) -> int:
    """Return the memory the base weights take, quantized (with scales/biases) or not."""
    if quantization_bits:
        # Each group of 64 values carries a scale and bias in the weights' dtype.
        extra = 2 * 8 * bytes_per_parameter / 64
        return int(parameters * (quantization_bits + extra) / 8)
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


def _compute_key(shape: RunShape) -> str:
    return shape.backend if shape.backend in EFFECTIVE_FLOPS else "cpu"


def throughput(backend: str, tokens: float) -> float:
    """Return the effective FLOP/s of a step (or pass) through ``tokens`` tokens."""
    key = backend if backend in EFFECTIVE_FLOPS else "cpu"
    if key.startswith("cpu"):
        return EFFECTIVE_FLOPS[key] * tokens / (tokens + CPU_HALF_TOKENS)
    return EFFECTIVE_FLOPS[key]


def step_throughput(shape: RunShape, tokens: float) -> float:
    """Return the effective FLOP/s of ``shape``'s matmuls over ``tokens`` tokens at once."""
    key = _compute_key(shape)
    if shape.quantization_bits and key.startswith("cpu"):
        return throughput("cpu", tokens) / CPU_QUANTIZED_SLOWDOWN
    return throughput(key, tokens)


def prior_step_seconds(shape: RunShape) -> float:
    """Return the prior model's seconds for one steady training step of ``shape``."""
    key = _compute_key(shape)
    flops = (6 if shape.fine_tune_type == "full" else 4) * shape.parameters
    tokens = max(shape.tokens_per_step, 1.0)
    compute = tokens * flops / step_throughput(shape, tokens)
    overhead = STEP_OVERHEAD_PER_LAYER[key] * (shape.layers + shape.trained_layers)
    return compute + overhead


def prior_time(shape: RunShape) -> TimeParts:
    """Return the prior (uncalibrated) model's seconds by part."""
    key = _compute_key(shape)
    fixed = (
        STARTUP_SECONDS
        + shape.size_bytes / LOAD_BYTES_PER_SECOND
        + FIRST_STEP_SECONDS
        + FIRST_STEP_SECONDS_PER_PARAMETER * shape.parameters
    )
    batches = max(shape.val_batches_per_eval, 1)
    per_batch = shape.val_tokens_per_eval / batches
    per_eval = (
        shape.val_tokens_per_eval * 2 * shape.parameters / step_throughput(shape, max(per_batch, 1))
        + STEP_OVERHEAD_PER_LAYER[key] * shape.layers * shape.val_batches_per_eval
    )
    return TimeParts(
        fixed=fixed,
        steps=shape.iterations * prior_step_seconds(shape),
        evals=shape.evals * per_eval,
    )


def estimate_time(
    shape: RunShape, calibration: Calibration | None, load: float | None = None
) -> tuple[TimeParts, str, int]:
    """Return (seconds by part, basis, runs used): the prior scaled by this machine's runs.

    Each part is multiplied by the similarity-weighted geometric mean of measured / prior
    over the comparable recorded runs, so a shape seen before is predicted from what it
    measured, and a new one from its nearest neighbours. On the CPU, what each run measured
    is divided by the contention of its machine's load then (``load_per_core`` recorded with
    it) and the estimate multiplied by the contention of ``load`` (the load per core now, the
    new worker counted): a machine shared with other work trains slower, and says so.
    """
    now = contention(shape.backend, load)
    parts, basis, runs = _estimate_time(shape, calibration)
    if now > 1.05:
        parts = TimeParts(parts.fixed * now, parts.steps * now, parts.evals * now)
        basis += f"; x{now:.1f} for the current load ({load:.1f} runnable threads per core)"
    return parts, basis, runs


def _estimate_time(shape: RunShape, calibration: Calibration | None) -> tuple[TimeParts, str, int]:
    prior = prior_time(shape)
    runs = calibration.matching(shape) if calibration is not None else []
    if not runs:
        key = _compute_key(shape)
        tokens = max(shape.tokens_per_step, 1.0)
        rate = step_throughput(shape, tokens) / 1e9
        k = 6 if shape.fine_tune_type == "full" else 4
        detail = (
            f"{k} x {shape.parameters:,} params x {tokens:,.0f} tokens a step at "
            f"{rate:,.1f} GFLOP/s effective ({key}), "
            f"{prior_step_seconds(shape) * 1000:,.0f} ms a step, {prior.fixed:.0f} s fixed"
        )
        return prior, f"{UNCALIBRATED}; {detail}", 0
    fixed, steps, evals = [], [], []
    for run in runs:
        weight = similarity(shape, run.shape)
        was = prior_time(run.shape)
        then = contention(run.shape.backend, run.measured.load_per_core)
        fixed.append((run.measured.fixed_seconds / then / max(was.fixed, 1e-9), weight))
        step = prior_step_seconds(run.shape)
        steps.append((run.measured.step_seconds / then / max(step, 1e-12), weight))
        if run.shape.evals and was.evals > 0 and run.measured.eval_seconds > 0:
            evals.append((run.measured.eval_seconds / then / was.evals, weight))
    k_fixed = weighted_factor(fixed) or 1.0
    k_steps = weighted_factor(steps) or 1.0
    k_evals = weighted_factor(evals) or k_steps
    parts = TimeParts(prior.fixed * k_fixed, prior.steps * k_steps, prior.evals * k_evals)
    nearest = max(similarity(shape, run.shape) for run in runs)
    like = "one of the same shape" if nearest > 0.9 else "none of the same shape"
    basis = f"calibrated from {len(runs)} run(s) on this machine ({like})"
    return parts, basis, len(runs)


def prior_peak_memory(shape: RunShape) -> int:
    """Return the prior model's MLX peak bytes: weights + trainable state + activations.

    Fitted to measured peaks of the 0.14M, 1.4M, 3.5M and 42M generated Llamas (float32,
    batch 4, ~65-token batches) within 5 %: 25 values per token per hidden unit per trained
    layer are kept for the backward pass, the weights count 1.2x (copies made while the
    adapters are attached), plus 2 MiB of MLX's own. A base quantized in memory is loaded in
    its own dtype first, so its peak is at least that.
    """
    weights = weight_bytes(shape.parameters, shape.bytes_per_parameter, shape.quantization_bits)
    trainable = lora_parameters(
        shape.hidden_size,
        shape.trained_layers,
        shape.lora_rank,
        shape.fine_tune_type,
        shape.parameters,
    )
    # The trainable parameters, their gradient and two Adam moments, in float32.
    optimizer = trainable * 16
    act_bytes = 4 if shape.bytes_per_parameter >= 4 else 2
    tokens = shape.batch_size * shape.seq_length
    layers = 1 if shape.grad_checkpoint else max(shape.trained_layers, 1)
    activations = ACTIVATION_VALUES * act_bytes * tokens * shape.hidden_size * layers
    # Attention scores (and their softmax) per head, heads ~ hidden / 64.
    heads = max(1, shape.hidden_size // 64)
    attention = 2 * act_bytes * shape.batch_size * heads * shape.seq_length**2 * layers
    # Logits, their log-softmax and gradient in float32.
    logits = 3 * 4 * tokens * max(shape.vocab_size, 1)
    training = WEIGHT_COPIES * weights + optimizer + activations + attention + logits
    loaded = 0.0
    if shape.quantization_bits:  # quantized after loading, in the file's dtype
        loaded = LOAD_COPIES * shape.parameters * shape.bytes_per_parameter
    return int(max(training, loaded) + MLX_BASE_BYTES)


def estimate_memory(shape: RunShape, calibration: Calibration | None) -> tuple[int, str]:
    """Return (MLX peak bytes, basis): the prior scaled by this machine's measured peaks."""
    prior = prior_peak_memory(shape)
    runs = calibration.matching(shape) if calibration is not None else []
    pairs = [
        (run.measured.peak_memory_bytes / max(prior_peak_memory(run.shape), 1),
         similarity(shape, run.shape))
        for run in runs
        if run.measured.peak_memory_bytes > 0
    ]  # fmt: skip
    factor = weighted_factor(pairs)
    if factor is None:
        return prior, "uncalibrated memory model"
    return int(prior * factor), f"calibrated from {len(pairs)} measured peak(s) on this machine"


def eval_count(iterations: int, steps_per_eval: int) -> int:
    """Return how many validation passes the worker runs: step 1, every N steps, the last."""
    every = max(1, steps_per_eval)
    return len({1, iterations} | set(range(every, iterations + 1, every)))


def default_steps_per_eval(iterations: int) -> int:
    """The worker's default (``options_from_spec``): a validation pass every ~10%."""
    return max(1, iterations // 10)
