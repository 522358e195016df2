"""Near-duplicate candidates: signatures per document, band rows, and star edges per LSH bucket.

Every function here takes and returns an Arrow table, so the engine can run it as a task, in a shuffle
group, or a test can call it directly.

    documents --SignatureStage--> docs: id, _node, _hash, _rank, _old, _keys[bands] (+ _sig when verifying)
    docs --explode_bands--> band rows: _node, _band, _key, _part (+ _sig)
    band rows --shuffle on _part--> bucket_edges --> edges: _a, _b (_a > _b: each bucket's members point to its
                                                    smallest node, a star)
              (verify = "exact") --> bucket_candidates --> pairs: _a, _b, _identical (no check needed)

Nodes are the xxh3-64 hash of the document id (uint64): the graph steps work on fixed-width integers instead of
ids of any length. Two ids with the same hash would count as one node; among 1e9 documents the chance that any
two collide is ~3 % and the cost is one document wrongly merged into a cluster.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.steps.base import Stage
from ray_jobs.steps.dedup.config import NearDedupConfig
from ray_jobs.steps.dedup.exact import text_hashes
from ray_jobs.steps.dedup.minhash import band_keys, jaccard_estimate, signatures

NODE, HASH, RANK, OLD, KEYS, SIG = "_node", "_hash", "_rank", "_old", "_keys", "_sig"
BAND, KEY, PART = "_band", "_key", "_part"
A, B = "_a", "_b"  # an edge, always _a > _b
IDENTICAL = "_identical"  # a candidate pair of identical (lower-cased) texts
SIM = "_sim"  # exact Jaccard of a pair
ID_COLUMNS = [schema.ID, NODE, HASH, RANK, OLD]  # what choosing a representative needs of a document


def node_ids(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return text_hashes(ids, lowercase=False)


def partition_of(keys: np.ndarray, num_partitions: int) -> np.ndarray:
    """Shuffle partition of a uint64 key (keys are already hashes, so the low bits are uniform)."""
    return (keys % np.uint64(num_partitions)).astype(np.int32)


class SignatureStage(Stage):
    """Documents in, one row per document out: id, node, exact hash, rank for the representative, band keys.

    Identical texts have identical signatures, so they always meet in every band: exact duplicates are found by
    the same graph, and `_hash` (xxh3-64 of the lower-cased text, as exact dedup) tells them apart from near
    ones. Documents with no text all get the empty signature (all values at the maximum), so they meet too."""

    def __init__(self, cfg: NearDedupConfig, lowercase: bool = True) -> None:
        self.cfg = cfg
        self.lowercase = lowercase
        self.bands, self.rows = cfg.bands_rows()

    def __call__(self, table: pa.Table) -> pa.Table:
        sig, _ = signatures(table[schema.TEXT], self.cfg)
        keys = band_keys(sig, self.bands, self.rows)
        cols = {
            schema.ID: table[schema.ID],
            NODE: pa.array(node_ids(table[schema.ID])),
            HASH: pa.array(text_hashes(table[schema.TEXT], self.lowercase)),
            RANK: self._rank(table),
            OLD: pa.array(np.zeros(len(table), dtype=bool)),
            KEYS: pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel()), self.bands),
        }
        if self.cfg.verify == "signature":
            cols[SIG] = pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), self.cfg.num_perm)
        return pa.table(cols)

    def _rank(self, table: pa.Table) -> pa.Array:
        """Higher rank wins the cluster; equal ranks fall back to the smallest id."""
        if self.cfg.representative == "longest":
            return pc.cast(pc.utf8_length(pc.fill_null(table[schema.TEXT], "")), pa.float64())
        if self.cfg.representative == "highest_score":
            col = self.cfg.score_column
            if col not in table.column_names:
                raise UserError(f"dedup.near.score_column = {col!r} is not a column of the input; columns: "
                                f"{', '.join(table.column_names)}")
            return pc.fill_null(pc.cast(table[col], pa.float64()), -np.inf)
        return pa.array(np.zeros(len(table)))


def explode_bands(num_partitions: int, carry: tuple[str, ...] = (NODE,)):
    """docs -> one row per (document, band) with the `carry` columns (and the signature when present); `_part`
    routes equal (band, key) pairs to one shuffle group."""

    def explode(docs: pa.Table) -> pa.Table:
        n = len(docs)
        keys = docs[KEYS].combine_chunks()
        bands = keys.type.list_size
        flat = keys.flatten().to_numpy()
        band = np.tile(np.arange(bands, dtype=np.int16), n)
        # the band index is mixed into the routing key so that equal keys of different bands spread out
        routed = flat ^ (band.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        take = pa.array(np.repeat(np.arange(n), bands))
        cols = {c: docs[c].combine_chunks().take(take) for c in carry}
        cols |= {BAND: pa.array(band), KEY: pa.array(flat), PART: pa.array(partition_of(routed, num_partitions))}
        if SIG in docs.column_names:
            cols[SIG] = docs[SIG].combine_chunks().take(take)
        return pa.table(cols)

    return explode


def bucket_edges(threshold: float):
    """One shuffle group of band rows -> edges from each bucket's members to its smallest node."""

    def edges(rows: pa.Table) -> pa.Table:
        rows = rows.take(pc.sort_indices(rows, [(BAND, "ascending"), (KEY, "ascending"), (NODE, "ascending")]))
        band = rows[BAND].to_numpy()
        key = rows[KEY].to_numpy()
        node = rows[NODE].to_numpy()
        new = np.ones(len(rows), dtype=bool)
        new[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
        head = np.maximum.accumulate(np.where(new, np.arange(len(rows)), 0))  # row of each bucket's smallest node
        keep = node != node[head]  # not the head itself (nor a repeat of it)
        if SIG in rows.column_names and keep.any():
            sig = np.asarray(rows[SIG].combine_chunks().flatten()).reshape(len(rows), -1)
            idx = np.flatnonzero(keep)
            keep[idx] = jaccard_estimate(sig[idx], sig[head[idx]]) >= threshold
        a, b = node[keep], node[head[keep]]
        pairs = np.unique(np.stack([a, b], axis=1), axis=0) if len(a) else np.empty((0, 2), dtype=np.uint64)
        return pa.table({A: pa.array(pairs[:, 0], pa.uint64()), B: pa.array(pairs[:, 1], pa.uint64())})

    return edges


def bucket_candidates(all_pairs_max: int):
    """verify = "exact": one shuffle group of band rows (with `_hash`) -> candidate pairs to decide. In a bucket,
    a member whose text equals an earlier member's points to the smallest node of that text (`_identical`: Jaccard 1,
    nothing to check); the distinct texts are paired all with all when there are at most `all_pairs_max` of
    them, else each with the first `all_pairs_max` (sorted by text hash). Not stars to one node, as without
    checking: a false member at the centre of a star would hide the true pairs among the others."""

    def pairs(rows: pa.Table) -> pa.Table:
        rows = rows.take(pc.sort_indices(rows, [(BAND, "ascending"), (KEY, "ascending"), (HASH, "ascending"),
                                                (NODE, "ascending")]))
        band, key, text = rows[BAND].to_numpy(), rows[KEY].to_numpy(), rows[HASH].to_numpy()
        node = rows[NODE].to_numpy()
        new_bucket = np.ones(len(rows), dtype=bool)
        new_bucket[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
        new_text = new_bucket.copy()
        new_text[1:] |= text[1:] != text[:-1]
        empty = np.empty(0, np.uint64)
        n = _bucket_pairs(new_bucket, new_text, node, all_pairs_max, empty, empty, np.empty(0, np.bool_), False)
        a, b, same = np.empty(n, np.uint64), np.empty(n, np.uint64), np.empty(n, np.bool_)
        _bucket_pairs(new_bucket, new_text, node, all_pairs_max, a, b, same, True)
        return unique_candidates(pa.table({A: a, B: b, IDENTICAL: same}))

    return pairs


def unique_candidates(table: pa.Table) -> pa.Table:
    """Each (_a, _b) once (a pair sharing several bands is found in each)."""
    if not len(table):
        return table.select([A, B, IDENTICAL])
    ab = np.stack([table[A].to_numpy(), table[B].to_numpy()], axis=1)
    ab, first = np.unique(ab, axis=0, return_index=True)
    return pa.table({A: pa.array(ab[:, 0], pa.uint64()), B: pa.array(ab[:, 1], pa.uint64()),
                     IDENTICAL: table[IDENTICAL].take(pa.array(first))})


@numba.njit(cache=True)
def _bucket_pairs(new_bucket, new_text, node, all_pairs_max, a, b, same, fill) -> int:
    """Count (fill=False) or write (fill=True) the pairs of `bucket_candidates`; rows sorted by bucket, text,
    node. Two calls: the first sizes the arrays."""
    n = len(node)
    heads = np.empty(n, np.int64)
    out = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and not new_bucket[j]:
            j += 1
        m = 0
        head = i
        for r in range(i, j):
            if new_text[r]:
                head = r
                heads[m] = r
                m += 1
            elif node[r] != node[head]:  # another document with the same text (not the same one again)
                if fill:
                    a[out], b[out], same[out] = node[r], node[head], True
                out += 1
        for x in range(1, m):
            for y in range(min(x, all_pairs_max)):
                if fill:
                    u, v = node[heads[x]], node[heads[y]]
                    a[out], b[out], same[out] = max(u, v), min(u, v), False
                out += 1
        i = j
    return out
