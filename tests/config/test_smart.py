import pytest

from cortex_rpc.config.smart import (
    DatasetProfile,
    MachineProfile,
    profile_from_wire,
    propose_config,
    size_class_for,
)
from cortex_rpc.config.training_config import TrainingConfig, apply_overrides, iterations_for
from cortex_rpc.errors import InvalidParams
from cortex_rpc.models.inspect import inspect_model
from cortex_rpc.models.synthetic import write_sparse_model

BIG_MAC = MachineProfile(backend="metal", usable_memory_bytes=192 * 10**9)
SMALL_MAC = MachineProfile(backend="metal", usable_memory_bytes=16 * 10**9)


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory):
    return inspect_model(write_sparse_model(tmp_path_factory.mktemp("m") / "7b", "llama-2-7b"))


@pytest.fixture(scope="module")
def llama70b(tmp_path_factory):
    return inspect_model(
        write_sparse_model(tmp_path_factory.mktemp("m") / "70b", "llama-2-70b", shards=4)
    )


def chat(examples, mean_chars=300.0):
    return DatasetProfile(
        examples=examples,
        size_class=size_class_for(examples),
        task_type="chat",
        mean_chars=mean_chars,
        max_chars=int(mean_chars * 2),
    )


def test_guide_example_medium_model_small_dataset(llama7b):
    proposal = propose_config(llama7b, chat(50), "balanced", BIG_MAC)
    config = proposal.config
    assert (
        config.epochs,
        config.learning_rate,
        config.lora_rank,
        config.batch_size,
        config.grad_accumulation_steps,
    ) == (4, 1e-4, 16, 1, 8)
    assert config.lora_scale == 2.0
    assert config.iterations == 200
    text = "\n".join(proposal.explanations)
    assert "Using optimized settings for medium model" in text
    assert (
        "epochs 4: medium-model default 3; dataset 4 (+1 for a small dataset, 50 examples)" in text
    )
    assert "prevents overfitting" in text
    # 13.5 GB of bf16 weights is over the guide's 13 GB line: 8-bit.
    assert config.quantization_bits == 8
    assert proposal.estimate.seconds > 0 and proposal.estimate.peak_memory_bytes > 7e9


def test_category_defaults_tiny(tiny_model):
    proposal = propose_config(inspect_model(tiny_model), None, "balanced", BIG_MAC)
    c = proposal.config
    assert (c.learning_rate, c.epochs, c.lora_rank, c.lora_alpha, c.batch_size) == (
        5e-4,
        5,
        8,
        16,
        4,
    )
    assert c.num_layers == 2  # clamped to the model's layer count


def test_presets_differ_in_the_documented_direction(llama7b):
    balanced = propose_config(llama7b, chat(500), "balanced", BIG_MAC).config
    quick = propose_config(llama7b, chat(500), "quick", BIG_MAC).config
    quality = propose_config(llama7b, chat(500), "quality", BIG_MAC).config
    assert quick.epochs < balanced.epochs < quality.epochs
    assert quick.learning_rate > balanced.learning_rate > quality.learning_rate
    assert quality.lora_rank > balanced.lora_rank


def test_large_dataset_fewer_epochs_and_long_examples_more_accumulation(llama7b):
    config = propose_config(llama7b, chat(6000, mean_chars=2500), "balanced", BIG_MAC).config
    assert config.epochs == 2
    assert config.grad_accumulation_steps == 16


def test_guide_quantization_rule_for_70b(llama70b):
    proposal = propose_config(llama70b, chat(50), "balanced", BIG_MAC)
    assert proposal.config.quantization_bits == 4
    assert any(e.startswith("quantizationBits 4: model 4 (") for e in proposal.explanations)


def test_memory_fitting_steps_down_and_explains(llama7b, llama70b):
    proposal = propose_config(
        llama7b, chat(50, 4000), "balanced", MachineProfile("metal", 18 * 10**9)
    )
    assert proposal.config.quantization_bits == 4
    assert proposal.fits_in_memory
    assert any(e.startswith("Memory:") for e in proposal.explanations)
    line = next(e for e in proposal.explanations if e.startswith("quantizationBits 4:"))
    assert "model 8" in line and "memory fit 4 (memory:" in line
    # Quantizing in memory still loads the 13.5 GB of bf16 weights first: 12 GB is too little.
    small = propose_config(llama7b, chat(50, 4000), "balanced", MachineProfile("metal", 12 * 10**9))
    assert not small.fits_in_memory
    assert any("mlx_lm.convert" in e for e in small.explanations)
    hopeless = propose_config(llama70b, chat(50), "balanced", MachineProfile("metal", 8 * 10**9))
    assert not hopeless.fits_in_memory
    assert (
        "only" in hopeless.explanations[-2]
        or "only" in hopeless.explanations[-1]
        or any("even with every saving" in e for e in hopeless.explanations)
    )


def test_expert_overrides_are_validated(llama7b):
    proposal = propose_config(
        llama7b, chat(50), "expert", BIG_MAC, {"loraRank": 32, "learningRate": 3e-5}
    )
    assert proposal.config.lora_rank == 32 and proposal.config.learning_rate == 3e-5
    with pytest.raises(InvalidParams) as error:
        propose_config(llama7b, chat(50), "expert", BIG_MAC, {"loraRnak": 4})
    assert error.value.data["field"] == "overrides.loraRnak"
    with pytest.raises(InvalidParams) as error:
        propose_config(llama7b, chat(50), "expert", BIG_MAC, {"learningRate": -1})
    assert "learningRate" in error.value.message
    with pytest.raises(InvalidParams):
        propose_config(llama7b, chat(50), "expert", BIG_MAC, {"numLayers": 99})


def test_cpu_without_blas_is_estimated_much_slower(llama7b):
    float_weights = {"quantizationBits": None}
    fast = propose_config(
        llama7b, chat(50), "balanced", MachineProfile("cpu", 10**12, True), float_weights
    )
    slow = propose_config(
        llama7b, chat(50), "balanced", MachineProfile("cpu", 10**12, False), float_weights
    )
    assert slow.estimate.seconds > 10 * fast.estimate.seconds * 0.9
    assert "GFLOP/s" in fast.estimate.basis
    # Quantized matmuls are MLX's own kernels on the CPU: the BLAS makes no difference.
    quick = propose_config(llama7b, chat(50), "balanced", MachineProfile("cpu", 10**12, True))
    plain = propose_config(llama7b, chat(50), "balanced", MachineProfile("cpu", 10**12, False))
    assert quick.config.quantization_bits == 8
    assert plain.estimate.seconds == pytest.approx(quick.estimate.seconds, rel=0.01)


def test_training_config_wire_roundtrip_and_iterations():
    config = TrainingConfig(learning_rate=2e-4, lora_rank=4)
    assert TrainingConfig.from_wire(config.to_wire()) == config
    assert iterations_for(4, 50, 1) == 200
    assert iterations_for(1, 10, 4) == 3
    with pytest.raises(InvalidParams):
        apply_overrides(config, {"batchSize": 0})
    with pytest.raises(InvalidParams):
        apply_overrides(config, {"gradCheckpoint": "yes"})


def test_clear_cache_threshold_on_the_wire():
    """clearCacheThreshold: camelCase on the wire, 0 by default, bytes validated like the rest."""
    assert TrainingConfig().clear_cache_threshold == 0
    assert TrainingConfig().to_wire()["clearCacheThreshold"] == 0
    config = TrainingConfig.from_wire({"clearCacheThreshold": 2 * 10**9})
    assert config.clear_cache_threshold == 2 * 10**9
    assert config.to_wire()["clearCacheThreshold"] == 2 * 10**9
    assert TrainingConfig.from_wire(config.to_wire()) == config
    assert apply_overrides(config, {"clearCacheThreshold": 0}).clear_cache_threshold == 0
    for bad in (-1, 1.5, "1G", True, None, 2**53):
        with pytest.raises(InvalidParams) as exc:
            apply_overrides(config, {"clearCacheThreshold": bad})
        assert exc.value.data["field"] == "config.clearCacheThreshold"


def test_dataset_stats_from_wire():
    profile = profile_from_wire({"examples": 6000, "meanChars": 10, "taskType": "chat"})
    assert profile.size_class == "large"
    with pytest.raises(InvalidParams):
        profile_from_wire({"examples": 0})
