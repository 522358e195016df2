"""Leakage's global part: candidate pairs across splits (and against eval sets) from the band keys, decided as
dedup decides (dedup.near.verify: exact Jaccard on the candidates' texts by default); leaked train ids go to the
marking as a side table."""

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
from ray_jobs.steps.leakage.ops import (
    EVAL,
    cross_split_pairs,
    endpoint_ids,
    leak_docs,
    mark_leaked,
    texts_of,
    unique_pairs,
    verified,
)

log = logging.getLogger("ray_jobs")


def build(cfg: RunConfig, rows: Dataset, read_input: Callable[[InputConfig], Dataset]) -> tuple[Dataset, dict]:
    """`ray-jobs leakage` on full rows with a `split` column: like near dedup, `rows` is read twice (signatures,
    then marking fused with the write), the text never kept in the object store."""
    _need_split(rows)
    docs = runtime.map_tables(rows, leak_docs(cfg.dedup.near), batch_size=None)
    return _marked(cfg, rows, docs, read_input, lambda: rows.select_columns([schema.ID, schema.TEXT]))


def decide(cfg: RunConfig, compact: Dataset, read_input: Callable[[InputConfig], Dataset],
           text: Callable[[list[str]], Dataset] | None = None) -> tuple[Dataset, dict]:
    """In a plan: the compact rows after split (id, split, band keys, and the signature with verify = signature,
    from the text pass's digest); `text(columns)` reads the text pass's rows for the candidates' texts."""
    _need_split(compact)
    cols = [schema.ID, schema.SPLIT, KEYS] + ([SIG] if cfg.dedup.near.verify == "signature" else [])
    docs = runtime.map_tables(compact, lambda t: t.select(cols), batch_size=None)
    return _marked(cfg, compact, docs, read_input, (lambda: text([schema.ID, schema.TEXT])) if text else None)


def _need_split(rows: Dataset) -> None:
    if schema.SPLIT not in rows.columns():
        raise UserError("the leakage check needs a `split` column (train/val/test); run it on a split step's "
                        "output (RUN/split) or an input that has one")


def _marked(cfg: RunConfig, rows: Dataset, docs: Dataset, read_input: Callable[[InputConfig], Dataset],
            texts: Callable[[], Dataset] | None) -> tuple[Dataset, dict]:
    """Near-duplicate pairs across splits and against cfg.leakage.eval_paths; leaked train rows marked. `texts()`:
    the (id, text) rows of the corpus, read only for the candidates' texts (verify = exact).

    The pairs are few (dedup ran before the split), so they are gathered into one task, and the leaked train ids
    go to the marking tasks as a side table: ~6 MB for 100k leaked documents."""
    near = cfg.dedup.near
    if near.verify == "exact" and texts is None:
        raise UserError("leakage with dedup.near.verify = 'exact' needs the candidates' texts, and this caller gave "
                        "none; set dedup.near.verify = 'signature', or run leakage through the planner or alone")
    evals = [read_input(dataclasses.replace(cfg.input, paths=(path,), format="auto"))
             for path in cfg.leakage.eval_paths]
    docs = runtime.materialize(runtime.union(docs, *[runtime.map_tables(e, leak_docs(near, split=EVAL),
                                                                        batch_size=None) for e in evals]))
    parts = runtime.partitions(docs, cfg.dedup.partition_mb, cfg.dedup.num_buckets)
    bands = runtime.map_tables(docs, explode_bands(parts, carry=(schema.ID, schema.SPLIT)), batch_size=None)
    pairs = runtime.map_groups(bands, PART, cross_split_pairs(near.threshold), num_partitions=parts)
    pairs = runtime.materialize(runtime.map_tables(runtime.one_block(pairs), unique_pairs, batch_size=None))
    if near.verify == "exact":
        pairs = _verified(pairs, texts(), evals, near)
    drop = cfg.leakage.drop_train
    leaked = runtime.materialize(runtime.map_tables(pairs, lambda t: _leaked_train(t, drop), batch_size=None))
    log.info("leakage: %d cross-split pairs, %d train rows dropped", runtime.count(pairs), runtime.count(leaked))
    marked = runtime.map_with_side_table(rows, leaked, _leaked_marker)
    return marked, {"_pairs": pairs}


def _verified(pairs: Dataset, corpus: Dataset, evals: list[Dataset], near) -> Dataset:
    """Candidates -> those at exact Jaccard >= threshold. The texts are filtered by the candidates' ids where they
    are read (a side table of ids) and meet the pairs in the one task that holds them: ~2 x the candidates' text."""
    wanted = runtime.materialize(runtime.map_tables(pairs, endpoint_ids, batch_size=None))
    found = [runtime.map_with_side_table(corpus, wanted, lambda w: texts_of(w, False))]
    found += [runtime.map_with_side_table(e, wanted, lambda w: texts_of(w, True)) for e in evals]
    cand = runtime.materialize(runtime.union(*found))
    return runtime.materialize(runtime.map_with_side_table(pairs, cand, lambda t: verified(t, near)))


def _leaked_train(pairs: pa.Table, drop: bool) -> pa.Table:
    """Distinct train ids paired with a val, test or eval row (none when only reporting)."""
    bad = pc.and_(pc.equal(pairs["split"], "train"), pc.not_equal(pairs["other_split"], "train"))
    ids = pc.unique(pc.filter(pairs["id"], bad)) if drop else pa.array([], pa.string())
    return pa.table({schema.ID: pa.array(ids, pa.string())})


def _leaked_marker(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
    ids = side[schema.ID].combine_chunks() if len(side) else pa.array([], pa.string())
    return lambda table: mark_leaked(table, ids)
