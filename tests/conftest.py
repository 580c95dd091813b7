"""Shared fixtures: tiny offline models and tokenizers, and the real data in ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_root() -> Path:
    """``$QA_SHARED_DIR`` or ``../shared`` beside the project root."""
    return Path(os.environ.get("QA_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The provided real data folder; tests using it skip cleanly when it is absent."""
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"real data not found at {root} (set QA_SHARED_DIR)")
    return root
