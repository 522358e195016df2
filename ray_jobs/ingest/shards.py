"""Ingested rows <-> asset shards: WebDataset tars (the asset as its own member, metadata as JSON) or Parquet with
the asset in a binary column. Either way a corpus of 100k+ images is a few hundred files, not 100k, and
`read_shards` gives back the same rows from both.

WebDataset sample `<key>` (xxh3 of the id: keys must not contain dots) holds `<key>.<ext>` (the image bytes with
their format's extension, the rendered PDF page as .png, the audio file's own bytes) and `<key>.json` (every
other scalar column, the id among them). Feature matrices (log-mel, Whisper) are not written into the tars:
they are recomputed from the audio in a few milliseconds a clip, and the Parquet form keeps them.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import xxhash

from ray_jobs import schema

ASSET = "asset"  # the asset bytes in the Parquet form, whatever the modality
ASSET_EXT = "asset_ext"
_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif", "BMP": "bmp"}


def asset_rows(table: pa.Table) -> pa.Table:
    """Ingested rows -> one `asset` binary column + `asset_ext`, scalar metadata, no bookkeeping or matrices."""
    rows = table.to_pylist()
    assets, exts = [], []
    for r in rows:
        if r.get("modality") == "audio":
            data = Path(r["file"]).read_bytes()
            ext = Path(r["file"]).suffix.lstrip(".").lower() or "bin"
        elif r.get("modality") == "pdf":
            data, ext = r.get("image"), "png"
        else:
            data, ext = r.get("image"), _EXT.get(r.get("format") or "", "bin")
        assets.append(data)
        exts.append(ext)
    keep = [c for c in table.column_names if c not in schema.BOOKKEEPING and c != "image"
            and not pa.types.is_list(table.schema.field(c).type)]
    return table.select(keep).append_column(ASSET, pa.array(assets, pa.binary())).append_column(
        ASSET_EXT, pa.array(exts, pa.string()))


def webdataset_samples(table: pa.Table) -> pa.Table:
    """Asset rows -> WebDataset columns: `__key__`, `<ext>` per asset kind, `json`."""
    meta_cols = [c for c in table.column_names if c not in (ASSET, ASSET_EXT)]
    metas = table.select(meta_cols).to_pylist()
    exts = table[ASSET_EXT].to_pylist()
    assets = table[ASSET].to_pylist()
    out: dict[str, list] = {"__key__": [xxhash.xxh3_64_hexdigest(m[schema.ID].encode()) for m in metas],
                            "json": [json.dumps(m, ensure_ascii=False, default=str).encode() for m in metas]}
    for i, ext in enumerate(exts):
        out.setdefault(ext, [None] * len(metas))[i] = assets[i]
    return pa.table({k: v if k == "__key__" else pa.array(v, pa.binary()) for k, v in out.items()})


def read_shards(path: str | Path) -> dict[str, tuple[bytes, dict]]:
    """id -> (asset bytes, metadata) from a folder of WebDataset tars or of Parquet files."""
    path = Path(path)
    out: dict[str, tuple[bytes, dict]] = {}
    tars = sorted(path.rglob("*.tar"))
    if tars:
        for t in tars:
            samples: dict[str, dict[str, bytes]] = {}
            with tarfile.open(t) as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        key, _, ext = m.name.rpartition("/")[2].partition(".")
                        samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
            for members in samples.values():
                meta = json.loads(members.pop("json"))
                (asset,) = members.values() if members else (None,)
                out[meta[schema.ID]] = (asset, meta)
        return out
    import pyarrow.parquet as pq

    for f in sorted(path.rglob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            asset = r.pop(ASSET)
            r.pop(ASSET_EXT)
            out[r[schema.ID]] = (asset, r)
    return out

