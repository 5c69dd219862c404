"""Turn a ``cortex/proposeConfig`` request into a Proposal: resolve, inspect, analyse, propose."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..accel import detect_backend, find_fast_blas, needs_fast_blas, usable_memory_bytes
from ..models.inspect import inspect_model
from ..models.registry import resolve_model
from .smart import DatasetProfile, MachineProfile, Proposal, profile_from_wire, propose_config

if TYPE_CHECKING:  # the datasets package is imported only when a dataset is given
    from ..datasets.load import DatasetSource


def current_machine() -> MachineProfile:
    """Return the backend and usable memory of this machine."""
    backend = detect_backend()
    return MachineProfile(
        backend=backend,
        usable_memory_bytes=usable_memory_bytes(backend),
        fast_blas=not needs_fast_blas() or find_fast_blas() is not None,
    )


def dataset_profile(dataset: DatasetSource, format: str | None = None) -> DatasetProfile:
    """Return the smart-config view of a dataset (a path or loaded), from its stats.

    Raises CortexError ``dataset-invalid`` when the dataset has errors.
    """
    from ..datasets import dataset_stats

    stats = dataset_stats(dataset, format)
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
    dataset: DatasetSource | None = None,
    dataset_format: str | None = None,
    dataset_stats: dict[str, Any] | None = None,
    preset: str = "balanced",
    overrides: dict[str, Any] | None = None,
    model_dirs: Iterable[str] = (),
    machine: MachineProfile | None = None,
    overrides_field: str = "overrides",
) -> Proposal:
    """Return the smart configuration for ``model`` and, if given, a dataset or its stats.

    ``dataset`` is a path (read in ``dataset_format``, detected when None) or a dataset
    already loaded, which is not read again.
    """
    inspection = inspect_model(resolve_model(model, model_dirs))
    profile = None
    if dataset is not None:
        profile = dataset_profile(dataset, dataset_format)
    elif dataset_stats is not None:
        profile = profile_from_wire(dataset_stats)
    return propose_config(
        inspection, profile, preset, machine or current_machine(), overrides, overrides_field
    )
