"""Exports read back by the users' own libraries: HF `datasets` (a DatasetDict with named splits, image rows as a
lazily decoded Image() column) and megatron-core's IndexedDataset (Megatron-LM's .bin/.idx). No Ray."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ray_jobs.exports import export, export_megatron


def _png(color: tuple[int, int, int], size=(7, 5)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _split_folder(root, rows: dict[str, list[dict]]):
    for split, part in rows.items():
        (root / f"split={split}").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(part), root / f"split={split}" / "part-0.parquet")
    return root


def test_hf_export_is_a_datasetdict_with_named_splits_and_lazy_images(tmp_path):
    import datasets

    rows = {"train": [{"id": "a.png", "text": "a red square", "image": _png((255, 0, 0)), "status": "kept"},
                      {"id": "b.png", "text": "a blue square", "image": _png((0, 0, 255)), "status": "kept"}],
            "val": [{"id": "c.png", "text": "a green square", "image": _png((0, 255, 0), (3, 4)), "status": "kept"}]}
    src = _split_folder(tmp_path / "split", rows)
    export(src, tmp_path / "hf", "hf", batch_size=64)
    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    assert isinstance(dd, datasets.DatasetDict) and sorted(dd) == ["train", "val"]
    assert dd["train"]["id"] == ["a.png", "b.png"] and "status" not in dd["train"].column_names
    assert dd["val"].features["image"] == datasets.Image()  # stored as bytes, decoded when a row is read
    assert dd["val"].data.column("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    img = dd["val"][0]["image"]
    assert isinstance(img, Image.Image) and img.size == (3, 4) and img.getpixel((0, 0)) == (0, 255, 0)
    # the Parquet stage folders, as the README tells `load_dataset` to read them: one split per partition
    files = {s: str(src / f"split={s}" / "*.parquet") for s in rows}
    pq_dd = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert {s: pq_dd[s]["id"] for s in pq_dd} == {s: [r["id"] for r in part] for s, part in rows.items()}


@pytest.mark.parametrize("top, dtype", [(49_151, np.uint16), (65_500, np.int32)])
def test_megatron_export_reads_back_in_megatron_core(tmp_path, top, dtype):
    """Each non-empty document is one sequence, in file order, with document boundaries 0..n: what
    Megatron-LM's preprocess_data.py writes; uint16 below 65,500 ids, else int32 (its DType.optimal_dtype)."""
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset",
                                  reason="megatron-core is a dev dependency (pip install -e .[dev])")
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, top + 1, n).tolist() for n in (5, 1, 0, 300, 17)] + [[top]]
    tok = tmp_path / "tokenize"
    (tok / "split=train").mkdir(parents=True)
    for i, chunk in enumerate((docs[:3], docs[3:])):  # two files: the documents continue across them
        pq.write_table(pa.table({"input_ids": pa.array(chunk, pa.list_(pa.int32()))}),
                       tok / "split=train" / f"part-{i}.parquet")
    export_megatron(tok, tmp_path / "megatron", force=False)
    ds = indexed.IndexedDataset(str(tmp_path / "megatron" / "train"))
    want = [d for d in docs if d]
    assert len(ds) == len(want) and ds.index.dtype == dtype
    assert [ds[i].tolist() for i in range(len(ds))] == want
    assert ds.document_indices.tolist() == list(range(len(want) + 1))
    assert ds.sequence_lengths.tolist() == [len(d) for d in want]
