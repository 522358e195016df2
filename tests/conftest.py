"""Shared fixtures: paths to the committed sample and ../shared/data, and one local Ray for the slow tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "shards" / "sample"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA}: this test needs the shared third-party corpora")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One 2-CPU local Ray for the whole session (starting Ray takes 5-7 s here); shut down at the end.

    `engine.ray_session` sees Ray already initialised and neither starts nor stops it.
    """
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
