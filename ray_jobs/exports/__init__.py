"""Export writers: the final rows of a run as Parquet, JSONL, WebDataset tar shards or an HF `save_to_disk` folder.

Stage folders are always Parquet (the run-directory contract); these writers produce copies for other tools.
Each split goes to `RUN/export/<format>/<split>/`, written to a temporary folder and renamed when complete.
Everything written here reads back through `ray_jobs.io` with the same ids and texts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import xxhash

from ray_jobs import runtime, schema
from ray_jobs.rundir import atomic_dir

BOOKKEEPING = {schema.OFFSET, schema.ERROR, schema.STATUS}


def webdataset_rows(table: pa.Table) -> pa.Table:
    """Rows -> WebDataset samples: `<key>.txt` (the text) and `<key>.json` (id, source and every other column).

    Keys must not contain dots (WebDataset splits member names at the first dot), so the key is the xxh3 hex
    of the id; the real id travels in the JSON.
    """
    meta_cols = [c for c in table.column_names if c not in BOOKKEEPING and c != schema.TEXT]
    metas = table.select(meta_cols).to_pylist()
    keys = [xxhash.xxh3_64_hexdigest(m[schema.ID].encode()) for m in metas]
    texts = [(t or "").encode("utf-8") for t in table[schema.TEXT].to_pylist()]
    blobs = [json.dumps(m, ensure_ascii=False, default=str).encode("utf-8") for m in metas]
    return pa.table({"__key__": keys, "txt": pa.array(texts, pa.binary()), "json": pa.array(blobs, pa.binary())})


def packed_webdataset_rows(table: pa.Table) -> pa.Table:
    """Packed token rows -> WebDataset samples, one `.npy` member per column (`<key>.input_ids.npy`, ...: readers
    decode them by the last extension). The key is the xxh3 of the row's ids and its place in the batch."""
    import io

    import numpy as np

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
    return table.drop_columns([c for c in table.column_names if c in BOOKKEEPING])


def export(src_dir: Path, out_dir: Path, fmt: str, batch_size: int) -> None:
    """Write every `split=<s>` partition of `src_dir` to `out_dir/<s>/` in `fmt`."""
    parts = sorted(p for p in src_dir.iterdir() if p.is_dir() and "=" in p.name)
    with atomic_dir(out_dir) as tmp:
        for part in parts:
            split = part.name.split("=", 1)[1]
            target = tmp / split
            if fmt == "hf":
                _save_hf(part, target)
                continue
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


def _save_hf(part: Path, target: Path) -> None:
    """HF `save_to_disk`: Arrow files memory-mapped by `datasets`; built from the Parquet files, not in RAM."""
    import datasets

    files = sorted(str(f) for f in part.rglob("*.parquet"))
    ds = datasets.Dataset.from_parquet(files, cache_dir=str(target.parent / ".hf_cache"))
    ds = ds.remove_columns([c for c in ds.column_names if c in BOOKKEEPING])
    ds.save_to_disk(str(target))
    shutil.rmtree(target.parent / ".hf_cache", ignore_errors=True)


def export_token_bin(tokenize_dir: Path, out_dir: Path, force: bool) -> None:
    """nanoGPT-style token files from the tokenize stage: per split `<split>.bin` (every document's input ids back
    to back; uint16 when every id is below 65,536, as nanoGPT's loaders expect, else uint32), `<split>.idx.npy`
    (int64 start offset of each document, and the end) and `meta.json`. One file per split is the format, so it
    is written by one process, streaming file by file (two passes: the largest id decides the dtype)."""
    if out_dir.is_dir() and not force:
        return
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with atomic_dir(out_dir) as tmp:
        tmp.mkdir(parents=True)
        meta: dict = {"splits": {}}
        for part in sorted(p for p in tokenize_dir.iterdir() if p.is_dir() and p.name.startswith(f"{schema.SPLIT}=")):
            split = part.name.split("=", 1)[1]
            files = sorted(part.rglob("*.parquet"))
            top = max((pc.max(pc.list_flatten(pq.read_table(f, columns=["input_ids"])["input_ids"])).as_py() or 0
                       for f in files), default=0)
            dtype = np.uint16 if top < 1 << 16 else np.uint32
            starts, pos = [0], 0
            with open(tmp / f"{split}.bin", "wb") as fh:
                for f in files:
                    ids = pq.read_table(f, columns=["input_ids"])["input_ids"].combine_chunks()
                    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False)
                    pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(dtype).tofile(fh)
                    ends = pos + np.cumsum(lengths[lengths > 0])
                    starts.extend(ends.tolist())
                    pos = int(ends[-1]) if len(ends) else pos
            np.save(tmp / f"{split}.idx.npy", np.asarray(starts, dtype=np.int64))
            meta["splits"][split] = {"dtype": np.dtype(dtype).name, "documents": len(starts) - 1, "tokens": pos}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
