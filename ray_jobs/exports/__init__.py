"""Export writers: the final rows of a run as Parquet, JSONL, WebDataset tar shards or an HF `save_to_disk` folder;
the token rows as nanoGPT .bin, Megatron-LM indexed datasets or WebDataset shards.

Stage folders are always Parquet (the run-directory contract); these writers produce copies for other tools.
Each split goes to `RUN/export/<format>/<split>/`, written to a temporary folder and renamed when complete (the
HF export is one DatasetDict: `datasets.load_from_disk("RUN/export/hf")` gives its splits by name).
Everything written here reads back through `ray_jobs.io` with the same ids and texts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash

from ray_jobs import runtime, schema
from ray_jobs.ingest.images import IMAGE
from ray_jobs.rundir import atomic_dir


def webdataset_rows(table: pa.Table) -> pa.Table:
    """Rows -> WebDataset samples: `<key>.txt` (the text) and `<key>.json` (id, source and every other column).

    Keys must not contain dots (WebDataset splits member names at the first dot), so the key is the xxh3 hex
    of the id; the real id travels in the JSON.
    """
    meta_cols = [c for c in table.column_names if c not in schema.BOOKKEEPING and c != schema.TEXT]
    metas = table.select(meta_cols).to_pylist()
    keys = [xxhash.xxh3_64_hexdigest(m[schema.ID].encode()) for m in metas]
    texts = [(t or "").encode("utf-8") for t in table[schema.TEXT].to_pylist()]
    blobs = [json.dumps(m, ensure_ascii=False, default=str).encode("utf-8") for m in metas]
    return pa.table({"__key__": keys, "txt": pa.array(texts, pa.binary()), "json": pa.array(blobs, pa.binary())})


def packed_webdataset_rows(table: pa.Table) -> pa.Table:
    """Packed token rows -> WebDataset samples, one `.npy` member per column (`<key>.input_ids.npy`, ...: readers
    decode them by the last extension). The key is the xxh3 of the row's ids and its place in the batch."""
    import io

    cols = [c for c in table.column_names if c != schema.SPLIT]
    out: dict[str, list] = {"__key__": [], **{f"{c}.npy": [] for c in cols}}
    for i, row in enumerate(table.select(cols).to_pylist()):
        out["__key__"].append(f"{xxhash.xxh3_64_hexdigest(np.asarray(row[cols[0]], np.int32).tobytes())}{i:06d}")
        for c in cols:
            buf = io.BytesIO()
            np.save(buf, np.asarray(row[c], dtype=None if c == "doc_ids" else np.int32))  # ids: a str array
            out[f"{c}.npy"].append(buf.getvalue())
    return pa.table({k: v if k == "__key__" else pa.array(v, pa.binary()) for k, v in out.items()})


def export_packed_webdataset(pack_dir: Path, out_dir: Path, force: bool) -> None:
    """The pack stage's rows as WebDataset tar shards per split, written by Ray tasks, renamed into place."""
    if out_dir.is_dir() and not force:
        return
    with atomic_dir(out_dir) as tmp:
        for part in sorted(p for p in pack_dir.iterdir() if p.is_dir() and p.name.startswith(f"{schema.SPLIT}=")):
            rows = runtime.map_tables(runtime.read_parquet(part), packed_webdataset_rows, batch_size=1024)
            rows.write_webdataset(str(tmp / part.name.split("=", 1)[1]), encoder=None)  # values are bytes already


def _drop_bookkeeping(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in table.column_names if c in schema.BOOKKEEPING])


def export(src_dir: Path, out_dir: Path, fmt: str, batch_size: int) -> None:
    """Write every `split=<s>` partition of `src_dir` to `out_dir/<s>/` in `fmt`."""
    parts = sorted(p for p in src_dir.iterdir() if p.is_dir() and "=" in p.name)
    with atomic_dir(out_dir) as tmp:
        if fmt == "hf":
            _save_hf({p.name.split("=", 1)[1]: p for p in parts}, tmp)
            return
        for part in parts:
            target = tmp / part.name.split("=", 1)[1]
            ds = runtime.map_tables(runtime.read_parquet(part), _drop_bookkeeping, batch_size=batch_size)
            if fmt == "parquet":
                ds.write_parquet(str(target), compression="zstd")
            elif fmt == "jsonl":
                ds.write_json(str(target), force_ascii=False)
            elif fmt == "webdataset":
                rows = runtime.map_tables(ds, webdataset_rows, batch_size=batch_size)
                rows.write_webdataset(str(target), encoder=None)  # values are bytes already
            else:
                raise ValueError(f"export format must be parquet, jsonl, webdataset or hf; got {fmt!r}")


def _save_hf(parts: dict[str, Path], target: Path) -> None:
    """One HF DatasetDict, a split per partition (`save_to_disk`: dataset_dict.json + a folder of memory-mapped
    Arrow files per split), built from the Parquet files, not in RAM. Image rows (`ray-jobs ingest` output) get
    their bytes as an `Image()` column: `datasets` decodes a row's image only when it is read."""
    import datasets

    cache = target.parent / f".{target.name}.hf_cache"
    out = {}
    for split, part in parts.items():
        ds = datasets.Dataset.from_parquet(sorted(str(f) for f in part.rglob("*.parquet")), cache_dir=str(cache),
                                           split=split)
        ds = ds.remove_columns([c for c in ds.column_names if c in schema.BOOKKEEPING])
        if IMAGE in ds.column_names and ds.features[IMAGE] == datasets.Value("binary"):
            ds = ds.cast_column(IMAGE, datasets.Image())
        out[split] = ds
    datasets.DatasetDict(out).save_to_disk(str(target))
    shutil.rmtree(cache, ignore_errors=True)


def _split_documents(tokenize_dir: Path, limit: int, small, large) -> Iterator[tuple[str, np.dtype, Iterator]]:
    """Per split of a tokenize folder: (split, dtype, an iterator of (flat ids, lengths of its non-empty documents)
    per file). The dtype is `small` when every id is below `limit`, else `large` (two passes: the largest id
    decides)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for part in sorted(p for p in tokenize_dir.iterdir() if p.is_dir() and p.name.startswith(f"{schema.SPLIT}=")):
        files = sorted(part.rglob("*.parquet"))
        top = max((pc.max(pc.list_flatten(pq.read_table(f, columns=["input_ids"])["input_ids"])).as_py() or 0
                   for f in files), default=0)
        dtype = np.dtype(small if top < limit else large)

        def chunks(files=files, dtype=dtype):
            for f in files:
                ids = pq.read_table(f, columns=["input_ids"])["input_ids"].combine_chunks()
                lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False)
                yield pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(dtype), lengths[lengths > 0]

        yield part.name.split("=", 1)[1], dtype, chunks()


def _write_documents(chunks: Iterator, path: Path) -> np.ndarray:
    """The documents' ids back to back into `path`; their lengths (int64)."""
    lengths = [np.zeros(0, np.int64)]
    with open(path, "wb") as fh:
        for flat, lens in chunks:
            flat.tofile(fh)
            lengths.append(lens)
    return np.concatenate(lengths).astype(np.int64)


def export_token_bin(tokenize_dir: Path, out_dir: Path, force: bool) -> None:
    """nanoGPT-style token files from the tokenize stage: per split `<split>.bin` (every document's input ids back
    to back; uint16 when every id is below 65,536, as nanoGPT's loaders expect, else uint32), `<split>.idx.npy`
    (int64 start offset of each document, and the end) and `meta.json`. One file per split is the format, so it
    is written by one process, streaming file by file."""
    if out_dir.is_dir() and not force:
        return
    with atomic_dir(out_dir) as tmp:
        tmp.mkdir(parents=True)
        meta: dict = {"splits": {}}
        for split, dtype, chunks in _split_documents(tokenize_dir, 1 << 16, np.uint16, np.uint32):
            lens = _write_documents(chunks, tmp / f"{split}.bin")
            starts = np.concatenate([[0], np.cumsum(lens)])
            np.save(tmp / f"{split}.idx.npy", starts)
            meta["splits"][split] = {"dtype": dtype.name, "documents": len(lens), "tokens": int(starts[-1])}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


# Megatron-LM's indexed dataset (megatron/core/datasets/indexed_dataset.py, "MMIDIDX" version 1): its dtype codes,
# and the vocabulary size under which its own preprocess_data.py writes uint16 (DType.optimal_dtype).
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7,
                   "uint16": 8}
MEGATRON_UINT16_BELOW = 65_500


def export_megatron(tokenize_dir: Path, out_dir: Path, force: bool) -> None:
    """Megatron-LM indexed datasets from the tokenize stage: per split `<split>.bin` (the documents' ids back to
    back, uint16 when every id is below 65,500, else int32, as preprocess_data.py writes them) and `<split>.idx`,
    the memory-mapped index: each document one sequence (its length and byte offset), document boundaries
    `0, 1, ..., n` (one sequence per document, as preprocess_data.py without --split-sentences). Megatron's
    GPTDataset then packs the documents into seq_length samples itself; give it the path prefix
    `RUN/export/megatron/<split>` (--data-path). Written by one process, streaming file by file."""
    import struct

    if out_dir.is_dir() and not force:
        return
    with atomic_dir(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for split, dtype, chunks in _split_documents(tokenize_dir, MEGATRON_UINT16_BELOW, np.uint16, np.int32):
            lens = _write_documents(chunks, tmp / f"{split}.bin")
            pointers = (np.cumsum(lens) - lens) * dtype.itemsize  # byte offset of each sequence
            docs = np.arange(len(lens) + 1, dtype=np.int64)
            with open(tmp / f"{split}.idx", "wb") as fh:
                fh.write(MEGATRON_HEADER + struct.pack("<QB", 1, MEGATRON_DTYPES[dtype.name]))
                fh.write(struct.pack("<QQ", len(lens), len(docs)))
                fh.write(lens.astype(np.int32).tobytes() + pointers.tobytes() + docs.tobytes())
