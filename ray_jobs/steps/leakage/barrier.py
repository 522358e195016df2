"""Leakage's global part: candidate pairs across splits (and against eval sets) from the band keys, verified by
signature; leaked train ids go to the marking as a side table."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import runtime, schema
from ray_jobs.config import InputConfig, RunConfig
from ray_jobs.errors import UserError
from ray_jobs.runtime import Dataset
from ray_jobs.steps.dedup.lsh import KEYS, PART, SIG, explode_bands
from ray_jobs.steps.leakage.ops import EVAL, cross_split_pairs, leak_docs, mark_leaked, unique_pairs

log = logging.getLogger("ray_jobs")


def build(cfg: RunConfig, rows: Dataset, read_input: Callable[[InputConfig], Dataset]) -> tuple[Dataset, dict]:
    """`ray-jobs leakage` on full rows with a `split` column: like near dedup, `rows` is read twice (signatures,
    then marking fused with the write), the text never kept in the object store."""
    _need_split(rows)
    return _marked(cfg, rows, runtime.map_tables(rows, leak_docs(cfg.dedup.near), batch_size=None), read_input)


def decide(cfg: RunConfig, compact: Dataset, read_input: Callable[[InputConfig], Dataset]) -> tuple[Dataset, dict]:
    """In a plan: the compact rows after split (id, split, band keys and signature from the text pass's digest)."""
    _need_split(compact)
    docs = runtime.map_tables(compact, lambda t: t.select([schema.ID, schema.SPLIT, KEYS, SIG]), batch_size=None)
    return _marked(cfg, compact, docs, read_input)


def _need_split(rows: Dataset) -> None:
    if schema.SPLIT not in rows.columns():
        raise UserError("the leakage check needs a `split` column (train/val/test); run it on a split step's "
                        "output (RUN/split) or an input that has one")


def _marked(cfg: RunConfig, rows: Dataset, docs: Dataset,
            read_input: Callable[[InputConfig], Dataset]) -> tuple[Dataset, dict]:
    """Near-duplicate pairs across splits and against cfg.leakage.eval_paths; leaked train rows marked.

    The pairs are few (dedup ran before the split), so they are gathered into one task, and the leaked train ids
    go to the marking tasks as a side table: ~6 MB for 100k leaked documents."""
    near = cfg.dedup.near
    docs = [docs]
    for path in cfg.leakage.eval_paths:
        evals = read_input(dataclasses.replace(cfg.input, paths=(path,), format="auto"))
        docs.append(runtime.map_tables(evals, leak_docs(near, split=EVAL), batch_size=None))
    docs = runtime.materialize(runtime.union(*docs))
    parts = runtime.partitions(docs, cfg.dedup.partition_mb, cfg.dedup.num_buckets)
    bands = runtime.map_tables(docs, explode_bands(parts, carry=(schema.ID, schema.SPLIT)), batch_size=None)
    pairs = runtime.map_groups(bands, PART, cross_split_pairs(near.threshold), num_partitions=parts)
    pairs = runtime.materialize(runtime.map_tables(runtime.one_block(pairs), unique_pairs, batch_size=None))
    drop = cfg.leakage.drop_train
    leaked = runtime.materialize(runtime.map_tables(pairs, lambda t: _leaked_train(t, drop), batch_size=None))
    log.info("leakage: %d cross-split pairs, %d train rows dropped", runtime.count(pairs), runtime.count(leaked))
    marked = runtime.map_with_side_table(rows, leaked, _leaked_marker)
    return marked, {"_pairs": pairs}


def _leaked_train(pairs: pa.Table, drop: bool) -> pa.Table:
    """Distinct train ids paired with a val, test or eval row (none when only reporting)."""
    bad = pc.and_(pc.equal(pairs["split"], "train"), pc.not_equal(pairs["other_split"], "train"))
    ids = pc.unique(pc.filter(pairs["id"], bad)) if drop else pa.array([], pa.string())
    return pa.table({schema.ID: pa.array(ids, pa.string())})


def _leaked_marker(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
    ids = side[schema.ID].combine_chunks() if len(side) else pa.array([], pa.string())
    return lambda table: mark_leaked(table, ids)
