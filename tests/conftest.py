"""Shared fixtures. Tests need no network: the hub and the datasets library are offline unless a test says so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

from tests.helpers import BLIMP_DIR, build_tiny_suite  # noqa: E402 - after the offline switches


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory) -> Path:
    """Two random-init models of three steps each. Read-only: tests that damage checkpoints copy it first."""
    return build_tiny_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="session")
def blimp_dir() -> Path:
    assert BLIMP_DIR.is_dir(), f"BLiMP data expected at {BLIMP_DIR}"
    return BLIMP_DIR
