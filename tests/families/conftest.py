"""Fixtures: the seven family replicas, each built once per test session (do not modify them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.families import FAMILIES, build_family


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory):
    """``family_models(name, quantized=False)``: the built replica, built on first use."""
    root = tmp_path_factory.mktemp("families")
    built: dict[tuple[str, bool], Path] = {}

    def get(family: str, quantized: bool = False) -> Path:
        key = (family, quantized)
        if key not in built:
            name = f"{family}-4bit" if quantized else family
            built[key] = build_family(family, root / name, quantized=quantized)
        return built[key]

    return get


@pytest.fixture(scope="session", params=FAMILIES)
def family_model(request: pytest.FixtureRequest, family_models) -> Path:
    """One replica per family name (the test is parametrized over FAMILIES)."""
    return family_models(request.param)
