"""`ray-jobs train` for real: the sample through pack, streamed into 2 Ray Train workers on CPU as the last pass
makes it, falling loss, resume at the data position, epochs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from conftest import REPO, SAMPLE

from ray_jobs.cli import main as cli_main
from ray_jobs.train.data import row_keys
from ray_jobs.train.loop import read_position

pytestmark = pytest.mark.slow
CONFIG = REPO / "cluster" / "configs" / "train-tiny-cpu.toml"
# smaller steps than the shipped config, so CI spends ~1 min here
FAST = ["ray.progress_bars=false", "pack.seq_len=128", "train.micro_batch_size=4", "train.grad_accum=1",
        "train.checkpoint_every=6", 'pack.exports=["bin", "webdataset", "megatron"]']


def _args(verb: str, out: Path, *extra: str) -> list[str]:
    args = [verb, str(CONFIG), "--output", str(out), "--set", f"input.paths=[\"{SAMPLE / 'parquet'}\"]"]
    for o in (*FAST, *extra):
        args += ["--set", o]
    return args


def _train(out: Path, *extra: str) -> list[dict]:
    assert cli_main(_args("train", out, *extra)) == 0
    return [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """A fresh output: the pipeline runs and its last pass feeds the workers as it packs."""
    out = tmp_path_factory.mktemp("train_tiny")
    rows = _train(out, "train.max_steps=12")
    # what the later tests change (the resumed run drops checkpoint_6): kept for the streaming test
    ckpt6_mtime = (out / "train" / "checkpoint_00000006").stat().st_mtime
    return out, rows, ckpt6_mtime


def _pieces(pack_dir: Path) -> dict[str, list]:
    """Per split, every document piece a pack holds, (doc_id, doc_offset, length), sorted: what was packed, not
    which row it went to (a pass run twice may batch the documents otherwise and group pieces into other rows)."""
    out = {}
    for part in sorted(pack_dir.glob("split=*")):
        t = pads.dataset(str(part), format="parquet").to_table(columns=["doc_ids", "doc_offsets", "seq_lens"])
        cols = [[v for row in t[c].to_pylist() for v in row] for c in ("doc_ids", "doc_offsets", "seq_lens")]
        out[part.name] = sorted(zip(*cols))
    return out


def _consumed(ckpt: Path) -> np.ndarray:
    return read_position(ckpt).consumed


def test_loss_falls_and_metrics_are_logged_per_step(trained):
    out, rows, _ = trained
    assert [r["step"] for r in rows] == list(range(1, 13))
    loss = np.array([r["loss"] for r in rows])
    assert loss[:3].mean() > np.log(49152) - 0.5  # starts near uniform over the vocabulary (10.8)
    assert loss[-3:].mean() < loss[:3].mean() - 0.5
    assert all(r["tokens_per_s"] > 0 and 0 <= r["data_stall"] <= 1 for r in rows)
    assert all(0 < r["tokens"] <= 2 * 4 * 128 for r in rows)  # 2 workers x 4 rows x 128 slots, padding excluded
    assert sorted(p.name for p in (out / "train").glob("checkpoint_0*")) == ["checkpoint_00000006",
                                                                             "checkpoint_00000012"]


def test_streamed_training_leaves_the_pack_complete_as_a_plain_run_makes_it(trained, tmp_path):
    """The workers read the rows as the pass made them (a checkpoint before RUN/pack existed) and their shards to
    the end after max_steps, so RUN/pack is complete and marked: the same document pieces per split, each once, as
    the same pass run plainly (`ray-jobs run`) on a copy of the run's earlier steps. Pieces, not rows: the two runs
    may batch the documents differently, and the pack groups a batch's pieces into rows (seen on this sample)."""
    out, _, ckpt6_mtime = trained
    assert (out / "_SUCCESS.pack").is_file() and (out / "_SUCCESS.tokenize").is_file()
    assert ckpt6_mtime < (out / "pack").stat().st_mtime  # trained on rows before the folder was written
    plain = tmp_path / "plain"
    shutil.copytree(out, plain, ignore=shutil.ignore_patterns("tokenize", "pack", "export", "train",
                                                              "_SUCCESS.tokenize", "_SUCCESS.pack", "_SUCCESS.export*"))
    assert cli_main(_args("run", plain, "pack.exports=[]")) == 0  # passes 1-2 skipped: the same decisions
    streamed, ran = _pieces(out / "pack"), _pieces(plain / "pack")
    assert sorted(streamed) == ["split=test", "split=train", "split=val"]
    assert streamed == ran and all(streamed.values())
    for split in streamed:  # no piece twice (a retried task rewrites its file, it adds none)
        assert len(set(streamed[split])) == len(streamed[split])
    packed, ran_stats = ({k: v for k, v in json.loads((d / "stats.json").read_text())["stages"]["pack"]["packing"]
                          .items() if k in ("documents", "tokens_in", "packed_tokens")} for d in (out, plain))
    assert packed == ran_stats and packed["documents"] > 0


def test_resumed_run_continues_the_step_count_on_rows_not_yet_trained(trained):
    """The checkpoint records the keys of the rows its steps trained on; the resumed run reads the finished pack
    less those rows: its 6 steps x 2 workers x 4 rows are new rows, and all of them are rows of RUN/pack."""
    out, rows, _ = trained
    first = _consumed(out / "train" / "checkpoint_00000012")
    assert len(first) == len(set(first.tolist())) == 12 * 2 * 4
    again = _train(out, "train.max_steps=18")
    assert [r["step"] for r in again] == list(range(1, 19))  # 13..18 appended after the first run's 1..12
    assert again[12]["loss"] < rows[0]["loss"] - 0.5  # the resumed model is the trained one, not a fresh one
    both = _consumed(out / "train" / "checkpoint_00000018")
    second = both[len(first):]
    assert both[:len(first)].tolist() == first.tolist() and len(second) == 6 * 2 * 4
    assert not set(second.tolist()) & set(first.tolist())  # disjoint: no row trained twice
    pack = row_keys(pads.dataset(str(out / "pack" / "split=train"), format="parquet").to_table())
    assert set(both.tolist()) <= set(pack.tolist())  # the streamed rows' keys are those of the rows written


def test_token_bin_holds_every_document(trained):
    out, _, _ = trained
    meta = json.loads((out / "export" / "tokens" / "meta.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    assert sum(s["tokens"] for s in meta["splits"].values()) == stats["stages"]["tokenize"]["tokens"]
    train = np.fromfile(out / "export" / "tokens" / "train.bin", dtype=meta["splits"]["train"]["dtype"])
    idx = np.load(out / "export" / "tokens" / "train.idx.npy")
    assert idx[-1] == len(train) and len(idx) - 1 == meta["splits"]["train"]["documents"]
    assert meta["splits"]["train"]["dtype"] == "uint16"  # SmolLM2's 49,152 ids fit


def test_megatron_export_is_the_token_rows_read_by_megatron_core(trained):
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset",
                                  reason="megatron-core is a dev dependency (pip install -e .[dev])")
    out, _, _ = trained
    files = sorted((out / "tokenize" / "split=val").rglob("*.parquet"))
    want = [r for f in files for r in pads.dataset(str(f), format="parquet").to_table(columns=["input_ids"])
            .column("input_ids").to_pylist() if r]
    ds = indexed.IndexedDataset(str(out / "export" / "megatron" / "val"))
    assert [ds[i].tolist() for i in range(len(ds))] == want and want
    assert ds.document_indices.tolist() == list(range(len(want) + 1))


def test_packed_rows_as_webdataset_read_back_identically(trained):
    import webdataset as wds

    out, _, _ = trained
    shards = sorted(str(p) for p in (out / "export" / "tokens-webdataset" / "val").glob("*.tar"))
    got = sorted((s["input_ids.npy"].tolist(), s["labels.npy"].tolist(), s["cu_seqlens.npy"].tolist())
                 for s in wds.WebDataset(shards, shardshuffle=False).decode())
    rows = pads.dataset(str(out / "pack" / "split=val"), format="parquet").to_table().to_pylist()
    assert got == sorted((r["input_ids"], r["labels"], r["cu_seqlens"]) for r in rows) and got


def test_unpacked_token_rows_train_with_dynamic_padding_over_epochs(trained, tmp_path):
    """train.data = a tokenize folder: variable-length rows, length-bucketed and padded per batch. Its test split
    (44 documents on the sample: 22 per worker, 5 micro-batches of 4) ends after its full steps: the next fit is
    epoch 1."""
    out, _, _ = trained
    docs = pads.dataset(str(out / "tokenize" / "split=test"), format="parquet").count_rows()
    epoch = docs // 2 // 4  # steps of 2 workers x 4 rows; a worker's last partial micro-batch is not a step
    assert epoch >= 2
    rows = _train(tmp_path / "unpacked", f"train.max_steps={epoch + 2}", "train.split=test",
                  f"train.data={out / 'tokenize'}")
    assert [(r["step"], r["epoch"]) for r in rows] == [(s, 0) for s in range(1, epoch + 1)] + [
        (epoch + 1, 1), (epoch + 2, 1)]
    # real tokens only: far fewer than the padded slots would be when rows are long documents
    assert all(0 < r["tokens"] for r in rows) and rows[-1]["loss"] < rows[0]["loss"] + 0.5
    last = read_position(tmp_path / "unpacked" / "train" / f"checkpoint_{epoch + 2:08d}")
    assert (last.epoch, len(last.consumed), len(set(last.consumed.tolist()))) == (1, 2 * 2 * 4, 2 * 2 * 4)
