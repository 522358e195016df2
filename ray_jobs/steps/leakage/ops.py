"""Leakage: near-duplicate pairs across train / val / test, and against external evaluation sets.

Dedup before the split removes most cross-split near duplicates; this check finds what is left (documents
the dedup threshold let through, eval sets the corpus was never deduplicated against) with the same MinHash
settings as near dedup. Each document's band rows carry its id, split and signature; one shuffle on the band
key meets candidates, and a candidate pair counts when the signature estimate of its Jaccard similarity
reaches the threshold.

    rows (+ eval rows, split = "eval") --leak_docs--> signatures --explode_bands--> band rows --shuffle-->
        cross_split_pairs --> pairs;   rows (read again) --mark_leaked--> status kept / leaked
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.steps.dedup.lsh import BAND, KEY, KEYS, SIG
from ray_jobs.steps.dedup.minhash import MinHashConfig, band_keys, jaccard_estimate, signatures

EVAL = "eval"
LEAKED = "leaked"
PAIR_COLUMNS = ("id", "split", "other_id", "other_split", "similarity")


def leak_docs(cfg: MinHashConfig, split: str | None = None):
    """Rows (with a `split` column, or all tagged `split`) -> one row per document: id, split, band keys, signature
    (~600 bytes, against kilobytes of text: what is kept between the passes)."""
    bands, rows = cfg.bands_rows()

    def fn(table: pa.Table) -> pa.Table:
        sig, has = signatures(table[schema.TEXT], cfg)
        table, sig = table.filter(pa.array(has)), sig[has]
        n = len(table)
        return pa.table({
            schema.ID: table[schema.ID],
            schema.SPLIT: table[schema.SPLIT] if split is None else pa.array([split] * n, pa.string()),
            KEYS: pa.FixedSizeListArray.from_arrays(pa.array(band_keys(sig, bands, rows).ravel()), bands),
            SIG: pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), cfg.num_perm),
        })

    return fn


def cross_split_pairs(threshold: float):
    """One shuffle group of band rows -> (id, split, other_id, other_split, similarity) for every member of a
    bucket and the smallest-id member of each other split in it, when their estimate reaches the threshold."""

    def fn(rows: pa.Table) -> pa.Table:
        rows = rows.take(pc.sort_indices(rows, [(BAND, "ascending"), (KEY, "ascending"),
                                                (schema.SPLIT, "ascending"), (schema.ID, "ascending")]))
        band, key = rows[BAND].to_numpy(), rows[KEY].to_numpy()
        new = np.ones(len(rows), dtype=bool)
        new[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
        starts = np.flatnonzero(new)
        splits = rows[schema.SPLIT].to_pylist()
        out: list[tuple[int, int]] = []
        for lo, hi in zip(starts, np.append(starts[1:], len(rows))):
            if hi - lo < 2 or splits[lo] == splits[hi - 1]:
                continue  # one member, or all of one split (sorted by split within the bucket)
            heads = {}
            for i in range(lo, hi):
                heads.setdefault(splits[i], i)  # smallest id of each split in this bucket
            out += [(i, h) for i in range(lo, hi) for s, h in heads.items() if s != splits[i]]
        if not out:
            return pa.table({c: pa.array([], t) for c, t in zip(PAIR_COLUMNS, _PAIR_TYPES)})
        left, right = np.array(out).T
        sig = np.asarray(rows[SIG].combine_chunks().flatten()).reshape(len(rows), -1)
        sim = jaccard_estimate(sig[left], sig[right])
        ok = sim >= threshold
        left, right = pa.array(left[ok]), pa.array(right[ok])
        id_col, split_col = rows[schema.ID], rows[schema.SPLIT]
        return pa.table(dict(zip(PAIR_COLUMNS, (id_col.take(left), split_col.take(left), id_col.take(right),
                                                 split_col.take(right), pa.array(sim[ok])))))

    return fn


_PAIR_TYPES = (pa.string(), pa.string(), pa.string(), pa.string(), pa.float64())


SPLIT_ORDER = {"train": 0, "val": 1, "test": 2, EVAL: 3}


def unique_pairs(table: pa.Table) -> pa.Table:
    """All pairs in one table -> each unordered pair once, with its highest similarity, oriented so that `id`
    is on the side listed first in train, val, test, eval (the side a fix would drop)."""
    if not len(table):
        return table
    rank = [SPLIT_ORDER.get(s, len(SPLIT_ORDER)) for s in table["split"].to_pylist()]
    other = [SPLIT_ORDER.get(s, len(SPLIT_ORDER)) for s in table["other_split"].to_pylist()]
    swap = pa.array([(r, i) > (o, j) for r, o, i, j in zip(rank, other, table["id"].to_pylist(),
                                                             table["other_id"].to_pylist())])
    cols = {"id": ("id", "other_id"), "split": ("split", "other_split"),
            "other_id": ("other_id", "id"), "other_split": ("other_split", "split")}
    table = pa.table({k: pc.if_else(swap, table[b], table[a]) for k, (a, b) in cols.items()}
                     | {"similarity": table["similarity"]})
    g = table.group_by(["id", "split", "other_id", "other_split"]).aggregate([("similarity", "max")])
    return g.rename_columns(list(PAIR_COLUMNS)).sort_by([("id", "ascending"), ("other_id", "ascending")])


def mark_leaked(table: pa.Table, leaked_ids: pa.Array) -> pa.Table:
    """Train rows listed in `leaked_ids` get status `leaked`; every other row is kept."""
    leaked = pc.and_(pc.equal(table[schema.SPLIT], "train"), pc.is_in(table[schema.ID], leaked_ids))
    return schema.set_status(table, pc.if_else(leaked, LEAKED, schema.KEPT))
