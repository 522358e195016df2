"""`ray-jobs train` for real: the sample through pack, 2 Ray Train workers on CPU, falling loss, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SAMPLE
from ray_jobs.cli import main as cli_main

pytestmark = pytest.mark.slow
CONFIG = REPO / "cluster" / "configs" / "train-tiny-cpu.toml"
# smaller steps than the shipped config, so CI spends ~1 min here
FAST = ["ray.progress_bars=false", "pack.seq_len=128", "train.micro_batch_size=4", "train.grad_accum=1",
        "train.checkpoint_every=6", 'pack.exports=["bin", "webdataset"]']


def _train(out: Path, *extra: str) -> list[dict]:
    args = ["train", str(CONFIG), "--output", str(out), "--set", f"input.paths=[\"{SAMPLE / 'parquet'}\"]"]
    for o in (*FAST, *extra):
        args += ["--set", o]
    assert cli_main(args) == 0
    return [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_tiny")
    return out, _train(out, "train.max_steps=12")


def test_loss_falls_and_metrics_are_logged_per_step(trained):
    out, rows = trained
    assert [r["step"] for r in rows] == list(range(1, 13))
    loss = np.array([r["loss"] for r in rows])
    assert loss[:3].mean() > np.log(49152) - 0.5  # starts near uniform over the vocabulary (10.8)
    assert loss[-3:].mean() < loss[:3].mean() - 0.5
    assert all(r["tokens_per_s"] > 0 and 0 <= r["data_stall"] <= 1 for r in rows)
    assert all(0 < r["tokens"] <= 2 * 4 * 128 for r in rows)  # 2 workers x 4 rows x 128 slots, padding excluded
    assert sorted(p.name for p in (out / "train").glob("checkpoint_0*")) == ["checkpoint_00000006",
                                                                             "checkpoint_00000012"]


def test_resumed_run_continues_the_step_count(trained):
    out, rows = trained
    again = _train(out, "train.max_steps=18")
    assert [r["step"] for r in again] == list(range(1, 19))  # 13..18 appended after the first run's 1..12
    assert again[12]["loss"] < rows[0]["loss"] - 0.5  # the resumed model is the trained one, not a fresh one
    assert (out / "train" / "checkpoint_00000018").is_dir()


def test_token_bin_holds_every_document(trained):
    out, _ = trained
    meta = json.loads((out / "export" / "tokens" / "meta.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    assert sum(s["tokens"] for s in meta["splits"].values()) == stats["stages"]["tokenize"]["tokens"]
    train = np.fromfile(out / "export" / "tokens" / "train.bin", dtype=meta["splits"]["train"]["dtype"])
    idx = np.load(out / "export" / "tokens" / "train.idx.npy")
    assert idx[-1] == len(train) and len(idx) - 1 == meta["splits"]["train"]["documents"]
    assert meta["splits"]["train"]["dtype"] == "uint16"  # SmolLM2's 49,152 ids fit


def test_packed_rows_as_webdataset_read_back_identically(trained):
    import pyarrow.dataset as pads
    import webdataset as wds

    out, _ = trained
    shards = sorted(str(p) for p in (out / "export" / "tokens-webdataset" / "val").glob("*.tar"))
    got = sorted((s["input_ids.npy"].tolist(), s["labels.npy"].tolist(), s["cu_seqlens.npy"].tolist())
                 for s in wds.WebDataset(shards, shardshuffle=False).decode())
    rows = pads.dataset(str(out / "pack" / "split=val"), format="parquet").to_table().to_pylist()
    assert got == sorted((r["input_ids"], r["labels"], r["cu_seqlens"]) for r in rows) and got


def test_unpacked_token_rows_train_with_dynamic_padding(trained, tmp_path):
    """train.data = a tokenize folder: variable-length rows, length-bucketed and padded per batch."""
    out, _ = trained
    rows = _train(tmp_path / "unpacked", "train.max_steps=3", f"train.data={out / 'tokenize'}")
    assert [r["step"] for r in rows] == [1, 2, 3]
    # real tokens only: far fewer than the padded slots would be when rows are long documents
    assert all(0 < r["tokens"] for r in rows) and rows[-1]["loss"] < rows[0]["loss"] + 0.5
