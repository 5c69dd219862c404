"""Datasets: formats, validation with exact positions, analysis, preparation, editor features."""

from __future__ import annotations

from .analyze import DatasetAnalysis, DatasetStats, analyze_dataset, dataset_stats
from .create import create_dataset, write_sample_dataset
from .diagnostics import Diagnostic, ValidationResult
from .load import LoadedDataset, load, load_text
from .prepare import PreparedDataset, prepare_dataset
from .validate import validate_dataset

__all__ = [
    "DatasetAnalysis",
    "DatasetStats",
    "Diagnostic",
    "LoadedDataset",
    "PreparedDataset",
    "ValidationResult",
    "analyze_dataset",
    "create_dataset",
    "dataset_stats",
    "load",
    "load_text",
    "prepare_dataset",
    "validate_dataset",
    "write_sample_dataset",
]
