"""Shared fixtures: paths to the committed sample and ../shared/data, one local Ray for the slow tests, and one
whole pipeline run on the sample that several test modules read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "shards" / "sample"
SHARED_DATA = REPO.parent / "shared" / "data"
PARQUET = SAMPLE / "parquet"
BASE = ["ray.progress_bars=false", "split.stratify_by=label"]


def sample_config(out: Path, *extra: str):
    """The config of a run on the sample's Parquet shards, stratified by label, into `out`."""
    from ray_jobs.config import load_config

    return load_config(None, [f"input.paths=[\"{PARQUET}\"]", f"output.dir={out}", *BASE, *extra])


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


@pytest.fixture(scope="session")
def sample_run(ray_local, tmp_path_factory) -> Path:
    """The whole pipeline on the sample (with a WebDataset export), run once per session (~45 s here):
    test_pipeline.py checks its contract, test_report.py its report.html. A test that redoes stages in it must
    leave it finished again, with the same config."""
    from ray_jobs.planner import run_pipeline

    out = tmp_path_factory.mktemp("sample_run")
    run_pipeline(sample_config(out, "output.export=webdataset"))
    return out
