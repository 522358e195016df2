"""Exact deduplication: hash the normalised text, keep the lowest id of each hash, distributed.

Shape: a stateless stage adds `_hash` (xxh3-64 of the text) and `_bucket` (= hash mod num_buckets); the engine
shuffles rows so one bucket meets in one call (Ray hash shuffle, no driver-side set); `keep_lowest_id` sorts
the bucket by (hash, id) and keeps the first row of every hash run. The lowest id wins whatever the block
layout or worker count, so the kept ids are the same on every run. 64-bit hashes: the chance of any
collision among 1e9 documents is about n^2 / 2^65 = 3 %, and a collision costs one wrongly dropped document,
so the dropped row records `duplicate_of` for audit.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ray_jobs import schema
from ray_jobs.steps.base import Stage
from ray_jobs.steps.dedup.config import DedupConfig

EXACT_DUPLICATE = "exact_duplicate"
HASH = "_hash"
BUCKET = "_bucket"
DUPLICATE_OF = "duplicate_of"


def text_hashes(text: pa.Array | pa.ChunkedArray, lowercase: bool) -> np.ndarray:
    """xxh3-64 of each text (null hashes as the empty string) as uint64."""
    if lowercase:
        text = pc.utf8_lower(text)
    h = xxhash.xxh3_64_intdigest
    raw = pc.cast(pc.fill_null(text, ""), pa.binary()).to_pylist()  # bytes: xxhash 4 refuses str
    return np.fromiter((h(b) for b in raw), dtype=np.uint64, count=len(raw))


class ExactHashStage(Stage):
    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> pa.Table:
        hashes = text_hashes(table[schema.TEXT], self.cfg.lowercase)
        return with_bucket(table.append_column(HASH, pa.array(hashes)), self.cfg.num_buckets)


def with_bucket(table: pa.Table, num_buckets: int) -> pa.Table:
    """`_bucket` = `_hash` mod num_buckets: the shuffle key that brings equal texts to one call."""
    buckets = (table[HASH].to_numpy() % np.uint64(num_buckets)).astype(np.int32)
    return table.append_column(BUCKET, pa.array(buckets))


def keep_lowest_id(table: pa.Table) -> pa.Table:
    """One bucket in, the same rows out with `status` kept/exact_duplicate and `duplicate_of`; helper columns gone.
    Rows whose status is already something else (quarantined) pass through untouched."""
    if schema.STATUS in table.column_names:
        mine = pc.equal(table[schema.STATUS], schema.KEPT)
        others = table.filter(pc.invert(mine))
        if len(others):
            others = others.drop_columns([c for c in (HASH, BUCKET, DUPLICATE_OF) if c in others.column_names])
            others = others.append_column(DUPLICATE_OF, pa.nulls(len(others), pa.string()))
            return pa.concat_tables([_keep_lowest(table.filter(mine)), others])
    return _keep_lowest(table)


def _keep_lowest(table: pa.Table) -> pa.Table:
    table = table.take(pc.sort_indices(table, sort_keys=[(HASH, "ascending"), (schema.ID, "ascending")]))
    hashes = table[HASH].to_numpy()
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = hashes[1:] != hashes[:-1]
    run_start = np.maximum.accumulate(np.where(first, np.arange(len(hashes)), 0))
    ids = table[schema.ID].combine_chunks()
    duplicate_of = pc.if_else(pa.array(first), pa.nulls(len(first), pa.string()), ids.take(pa.array(run_start)))
    status = pa.array(np.where(first, schema.KEPT, EXACT_DUPLICATE).astype(object), pa.string())
    table = table.drop_columns([HASH, BUCKET])
    if DUPLICATE_OF in table.column_names:
        table = table.drop_columns([DUPLICATE_OF])
    return schema.set_status(table.append_column(DUPLICATE_OF, duplicate_of), status)
