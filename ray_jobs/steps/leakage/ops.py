"""Leakage: near-duplicate pairs across train / val / test, and against external evaluation sets.

Dedup before the split removes most cross-split near duplicates; this check finds what is left (documents
the dedup threshold let through, eval sets the corpus was never deduplicated against) with the same MinHash
settings as near dedup and the same decision: a candidate pair (sharing a band) counts when its exact Jaccard
reaches the threshold (dedup.near.verify = "exact", the default), or its signature estimate does ("signature"),
or always ("none"). With an estimate here and the exact figure in dedup, a pair at exact 0.84 / estimate 0.86 was
kept apart by dedup and then called a leak (the 4 MB sample lost one train document that way).

    rows (+ eval rows, split = "eval") --leak_docs--> band keys --explode_bands--> band rows --shuffle-->
        cross_split_pairs --> candidates --verified (texts of the candidates only)--> pairs;
    rows (read again) --mark_leaked--> status kept / leaked
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.steps.dedup.config import NearDedupConfig
from ray_jobs.steps.dedup.lsh import BAND, KEY, KEYS, SIG
from ray_jobs.steps.dedup.minhash import band_keys, exact_jaccard, jaccard_estimate, signatures

EVAL = "eval"
LEAKED = "leaked"
IS_EVAL = "_is_eval"
PAIR_COLUMNS = ("id", "split", "other_id", "other_split", "similarity")


def leak_docs(cfg: NearDedupConfig, split: str | None = None):
    """Rows (with a `split` column, or all tagged `split`) -> one row per document: id, split, band keys (~100
    bytes), and the signature (512 bytes) when verify = "signature" decides on it."""
    bands, rows = cfg.bands_rows()

    def fn(table: pa.Table) -> pa.Table:
        sig, has = signatures(table[schema.TEXT], cfg)
        table, sig = table.filter(pa.array(has)), sig[has]
        n = len(table)
        cols = {
            schema.ID: table[schema.ID],
            schema.SPLIT: table[schema.SPLIT] if split is None else pa.array([split] * n, pa.string()),
            KEYS: pa.FixedSizeListArray.from_arrays(pa.array(band_keys(sig, bands, rows).ravel()), bands),
        }
        if cfg.verify == "signature":
            cols[SIG] = pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), cfg.num_perm)
        return pa.table(cols)

    return fn


def cross_split_pairs(threshold: float):
    """One shuffle group of band rows -> (id, split, other_id, other_split, similarity) for every member of a
    bucket and the smallest-id member of each other split in it: with signatures in the rows, those whose estimate
    reaches the threshold; without, every such candidate (similarity null, decided by `verified`)."""

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
        if SIG in rows.column_names:
            sig = np.asarray(rows[SIG].combine_chunks().flatten()).reshape(len(rows), -1)
            sim = jaccard_estimate(sig[left], sig[right])
            ok = sim >= threshold
            left, right, sim = left[ok], right[ok], pa.array(sim[ok])
        else:
            sim = pa.nulls(len(left), pa.float64())
        left, right = pa.array(left), pa.array(right)
        id_col, split_col = rows[schema.ID], rows[schema.SPLIT]
        return pa.table(dict(zip(PAIR_COLUMNS, (id_col.take(left), split_col.take(left), id_col.take(right),
                                                 split_col.take(right), sim))))

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
    g = table.group_by(["id", "split", "other_id", "other_split"], use_threads=False).aggregate([("similarity", "max")])
    return g.rename_columns(list(PAIR_COLUMNS)).sort_by([("id", "ascending"), ("other_id", "ascending")])


def endpoint_ids(pairs: pa.Table) -> pa.Table:
    """Candidate pairs -> the distinct (id, is an eval row) of their two ends: what the texts are looked up by."""
    ids = pa.concat_arrays([pairs["id"].combine_chunks(), pairs["other_id"].combine_chunks()])
    splits = pa.concat_arrays([pairs["split"].combine_chunks(), pairs["other_split"].combine_chunks()])
    ends = pa.table({schema.ID: ids, IS_EVAL: pc.equal(splits, EVAL)})
    return ends.group_by([schema.ID, IS_EVAL], use_threads=False).aggregate([])


def texts_of(wanted: pa.Table, is_eval: bool):
    """Rows with id and text (of the corpus, or of an eval set) -> id, is_eval, text of the pairs' ends only."""
    ids = pc.filter(wanted[schema.ID], pc.equal(wanted[IS_EVAL], is_eval)) if len(wanted) else pa.array([], pa.string())

    def fn(table: pa.Table) -> pa.Table:
        hit = pc.is_in(table[schema.ID], ids)
        n = int(np.count_nonzero(hit.to_numpy(zero_copy_only=False)))
        return pa.table({schema.ID: table[schema.ID].filter(hit), IS_EVAL: pa.array([is_eval] * n, pa.bool_()),
                         schema.TEXT: table[schema.TEXT].filter(hit)})

    return fn


def verified(texts: pa.Table, cfg: NearDedupConfig):
    """Candidate pairs -> those whose exact Jaccard (on the texts in `texts`: id, is_eval, text) reaches the
    threshold, with it as their similarity: the figure dedup decides on."""
    at = {(k, e): i for i, (k, e) in enumerate(zip(texts[schema.ID].to_pylist(), texts[IS_EVAL].to_pylist()))}
    text = texts[schema.TEXT].combine_chunks() if len(texts) else pa.array([], pa.string())

    def fn(pairs: pa.Table) -> pa.Table:
        if not len(pairs):
            return pairs
        ends = [pa.array([at.get((k, s == EVAL)) for k, s in zip(pairs[i].to_pylist(), pairs[s].to_pylist())],
                         pa.int64()) for i, s in (("id", "split"), ("other_id", "other_split"))]
        missing = [n for n, e in zip(("id", "other_id"), ends) if e.null_count]
        if missing:
            raise RuntimeError(f"leakage: no text for {ends[0].null_count + ends[1].null_count} candidate ends "
                               f"({missing}); the text source and the band keys disagree")
        sim = exact_jaccard(text.take(ends[0]), text.take(ends[1]), cfg)
        ok = sim >= cfg.threshold
        return pairs.filter(pa.array(ok)).set_column(4, "similarity", pa.array(sim[ok]))

    return fn


def mark_leaked(table: pa.Table, leaked_ids: pa.Array) -> pa.Table:
    """Train rows listed in `leaked_ids` get status `leaked`; every other row is kept."""
    leaked = pc.and_(pc.equal(table[schema.SPLIT], "train"), pc.is_in(table[schema.ID], leaked_ids))
    return schema.set_status(table, pc.if_else(leaked, LEAKED, schema.KEPT))
