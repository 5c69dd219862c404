"""Turn a ``cortex/proposeConfig`` request into a Proposal: resolve, inspect, analyse, propose."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..accel import detect_backend, find_fast_blas, needs_fast_blas, usable_memory_bytes
from ..models.inspect import inspect_model
from ..models.registry import resolve_model
from .smart import DatasetProfile, MachineProfile, Proposal, profile_from_wire, propose_config


def current_machine() -> MachineProfile:
    """Return the backend and usable memory of this machine."""
    backend = detect_backend()
    return MachineProfile(
        backend=backend,
        usable_memory_bytes=usable_memory_bytes(backend),
        fast_blas=not needs_fast_blas() or find_fast_blas() is not None,
    )


def dataset_profile(path: str) -> DatasetProfile:
    """Return the smart-config view of a dataset file, from the dataset analysis."""
    from ..datasets import dataset_stats

    stats = dataset_stats(path)
    return DatasetProfile(
        examples=stats.examples,
        size_class=stats.size_class,
        task_type=stats.task_type,
        mean_chars=stats.mean_chars,
        max_chars=stats.max_chars,
    )


def propose_for_model(
    model: str,
    *,
    dataset: str | None = None,
    dataset_stats: dict[str, Any] | None = None,
    preset: str = "balanced",
    overrides: dict[str, Any] | None = None,
    model_dirs: Iterable[str] = (),
    machine: MachineProfile | None = None,
    overrides_field: str = "overrides",
) -> Proposal:
    """Return the smart configuration for ``model`` and, if given, a dataset path or its stats."""
    inspection = inspect_model(resolve_model(model, model_dirs))
    profile = None
    if dataset is not None:
        profile = dataset_profile(dataset)
    elif dataset_stats is not None:
        profile = profile_from_wire(dataset_stats)
    return propose_config(
        inspection, profile, preset, machine or current_machine(), overrides, overrides_field
    )
