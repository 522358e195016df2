"""Ingested assets packed as WebDataset tars and as Parquet read back identically (`ray-jobs pack --format`)."""

from __future__ import annotations

import pyarrow.dataset as pads
import pytest
from test_ingest import ingested  # noqa: F401  (the module fixture: a real ingest run)

from ray_jobs.cli import main as cli_main
from ray_jobs.ingest.shards import read_shards

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("modality", ["image", "pdf", "audio"])
def test_both_shard_forms_read_back_the_same_assets(ingested, tmp_path, modality):  # noqa: F811
    out, _ = ingested
    src = out / "ingest" / modality / "status=kept"
    got = {}
    for fmt in ("webdataset", "parquet"):
        assert cli_main(["pack", "--input", str(src), "--output", str(tmp_path / fmt), "--format", fmt,
                         "--set", "ray.progress_bars=false"]) == 0
        got[fmt] = read_shards(tmp_path / fmt / "assets" / fmt)
    rows = pads.dataset(str(src), format="parquet").to_table().to_pylist()
    assert set(got["webdataset"]) == set(got["parquet"]) == {r["id"] for r in rows}
    for rid, (asset, meta) in got["webdataset"].items():
        p_asset, p_meta = got["parquet"][rid]
        assert asset == p_asset and asset
        assert {k: v for k, v in meta.items()} == {k: v for k, v in p_meta.items() if k in meta}
    if modality == "image":  # the image bytes are the file's own
        by_id = {r["id"]: r for r in rows}
        assert all(got["parquet"][i][0] == by_id[i]["image"] for i in by_id)
