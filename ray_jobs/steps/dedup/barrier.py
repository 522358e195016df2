"""The dedup recipe: exact and MinHash-LSH near dedup in one graph, with distributed connected components.

    rows --SignatureStage--> docs (id, node, text hash, rank, band keys)                (tasks)
    docs (+ saved indexes) --explode_bands--> band rows --bucket_edges--> star edges    (shuffle on band key)
    edges --components--> (node, label = smallest node of its component)                (fast path or rounds)
    labels x docs --choose_representatives--> id, cluster, rep, size                    (join + shuffle)
    rows x clusters --mark--> status kept / exact_duplicate / near_duplicate, duplicate_of, cluster_id
                                  (cluster table sent to every worker, or a hash join when it is large)

Identical texts share every band, so exact duplicates land in the clusters too; a member whose text hash equals
its representative's is an exact duplicate, any other non-representative a near duplicate. One shuffle of the
rows (the final join) serves both; with near dedup off, exact dedup is its own hash shuffle (`dedup/exact.py`).

Nothing is collected in the driver except row counts and one integer per block per round (the convergence
test), so its memory does not grow with the corpus. Worker memory is bounded by the shuffle partition size:
each shuffle gets one partition per `dedup.partition_mb` of its input (at most `dedup.num_buckets`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rensa import RMinHash

from ray_jobs import runtime, schema
from ray_jobs.config import RunConfig
from ray_jobs.runtime import Dataset
from ray_jobs.steps.base import Stage
from ray_jobs.steps.dedup.components import (
    CLUSTER,
    REP,
    SAME,
    SIZE,
    both_directions,
    choose_representatives,
    count_markers,
    large_star,
    small_star,
    star_labels,
    union_find_labels,
)
from ray_jobs.steps.dedup.config import DedupConfig, NearDedupConfig
from ray_jobs.steps.dedup.exact import (
    BUCKET,
    DUPLICATE_OF,
    EXACT_DUPLICATE,
    ExactHashStage,
    keep_lowest_id,
    with_bucket,
)
from ray_jobs.steps.dedup.lsh import (
    HASH,
    ID_COLUMNS,
    KEYS,
    NODE,
    OLD,
    PART,
    RANK,
    SIG,
    SignatureStage,
    bucket_edges,
    explode_bands,
)

log = logging.getLogger("ray_jobs")

NEAR_DUPLICATE = "near_duplicate"
CLUSTER_ID = "cluster_id"
INDEX, CLUSTERS, CLUSTER_SIZES = "_index", "_clusters", "_cluster_sizes"
INDEX_META = "_meta.json"
# Signature rows are ~100 bytes: 100k per block (~10 MB) instead of one block per 4 MB of text (~1k docs), which
# made every later step over the documents a hundred 0.1 s tasks on 400 MB.
DOCS_PER_BLOCK = 100_000
INDEX_FORMAT = 3  # 2: rows carry the exact text hash (`_hash`); 3: signatures permuted by rensa


def build(cfg: RunConfig, ds: Dataset, read_input=None) -> tuple[Dataset, dict]:
    """`ray-jobs dedup` on full rows: the rows partitioned by status, and the side tables (`_clusters`, `_index`,
    ...). The rows are read twice: into signatures, then marked (text never kept in the object store)."""
    dc = cfg.dedup
    if dc.near.enabled:
        return near_dedup(runtime.map_tables(ds, _initial, batch_size=None), dc)
    if not dc.exact:
        return runtime.map_tables(ds, _initial, batch_size=None), {}
    hashed = runtime.apply(runtime.map_tables(ds, _initial, batch_size=None), ExactHashStage(dc),
                           batch_size=cfg.ray.batch_size)
    return runtime.map_groups(hashed, BUCKET, keep_lowest_id, num_partitions=dc.num_buckets), {}


def decide(cfg: RunConfig, compact: Dataset, read_input=None) -> tuple[Dataset, dict]:
    """In a plan: the same decisions over compact rows (id, the signature digest, key columns) that the text pass
    before wrote next to the text; the rows marked are these compact rows, never the text."""
    dc = cfg.dedup
    rows = runtime.map_tables(compact, _initial, batch_size=None)
    if dc.near.enabled:
        keep_sig = dc.near.verify == "signature"  # the digest carries _sig for leakage too: not for our edges
        docs = runtime.map_tables(compact, lambda t: _compact_docs(t, keep_sig), batch_size=None)
        return near_dedup(rows, dc, docs)
    if not dc.exact:
        return rows, {}
    bucketed = runtime.map_tables(rows, lambda t: with_bucket(t, dc.num_buckets), batch_size=None)
    return runtime.map_groups(bucketed, BUCKET, keep_lowest_id, num_partitions=dc.num_buckets), {}


def _compact_docs(table: pa.Table, keep_sig: bool) -> pa.Table:
    cols = [schema.ID, NODE, HASH, RANK, KEYS] + ([SIG] if keep_sig else [])
    return table.select(cols).append_column(OLD, pa.array(np.zeros(len(table), dtype=bool)))


class MinHashDigest(Stage):
    """The text pass's part of dedup and leakage: signature columns (_node, _hash, _rank, _keys, and _sig when
    leakage or signature verification needs it) appended to the kept rows, null on the others. ~100 bytes per
    document (~600 with _sig) next to kilobytes of text; the global steps read only these columns back."""

    def __init__(self, cfg: RunConfig) -> None:
        sig = cfg.leakage.enabled or cfg.dedup.near.verify == "signature"
        self.stage = SignatureStage(dataclasses.replace(cfg.dedup.near, verify="signature" if sig else "none"),
                                    cfg.dedup.lowercase)

    def __call__(self, table: pa.Table) -> pa.Table:
        kept = pc.equal(table[schema.STATUS], schema.KEPT) if schema.STATUS in table.column_names else None
        idx = pa.array(np.flatnonzero(kept.to_numpy(zero_copy_only=False)) if kept is not None
                       else np.arange(len(table)))
        docs = self.stage(table.take(idx)).drop_columns([schema.ID, OLD])
        pos = np.full(len(table), -1, np.int64)
        pos[idx.to_numpy()] = np.arange(len(idx))
        take = pa.array(pos, mask=pos < 0)
        for name in docs.column_names:
            table = table.append_column(name, docs[name].take(take))
        return table


def digest_columns(cfg: RunConfig) -> tuple[str, ...]:
    sig = cfg.leakage.enabled or cfg.dedup.near.verify == "signature"
    return (NODE, HASH, RANK, KEYS) + ((SIG,) if sig else ())


def _initial(table: pa.Table) -> pa.Table:
    """The status dedup starts from: kept, or quarantined where the reader could not parse the record; no
    duplicate_of or cluster_id yet (an input that is itself a dedup output has them)."""
    table = schema.set_status(table, schema.initial_status(table))
    table = table.drop_columns([c for c in (DUPLICATE_OF, CLUSTER_ID) if c in table.column_names])
    return table.append_column(DUPLICATE_OF, pa.nulls(len(table), pa.string()))


def _only_kept(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table[schema.STATUS], schema.KEPT))


def near_dedup(rows: Dataset, dedup_cfg: DedupConfig, docs: Dataset | None = None) -> tuple[Dataset, dict]:
    """`rows` is lazy and runs twice: once into signatures (unless `docs` gives them), once into the marked rows
    that are written. Reading the input twice is cheaper than keeping the text in the object store between the
    passes (400 MB: 77 s with the rows materialised, the text put in and read out of the store three times)."""
    cfg = dedup_cfg.near

    def parts(ds: Dataset) -> int:
        return runtime.partitions(ds, dedup_cfg.partition_mb, dedup_cfg.num_buckets)

    if docs is None:
        kept = runtime.map_tables(rows, _only_kept, batch_size=None)
        # whole blocks (batch_size None): Ray fuses the stage into the read task, so only signatures leave it
        docs = runtime.apply(kept, SignatureStage(cfg, dedup_cfg.lowercase), batch_size=None)
    docs = runtime.materialize(runtime.rebatch(docs, DOCS_PER_BLOCK))
    mark = _marker(dedup_cfg.exact)
    extras: dict = {INDEX: docs.drop_columns([RANK, OLD]), f"{INDEX}/{INDEX_META}": json.dumps(index_meta(cfg))}
    graph_docs = runtime.union(docs, *[read_index(p, cfg) for p in cfg.index_from])
    doc_parts = parts(docs) * (1 + len(cfg.index_from))
    bands = runtime.map_tables(graph_docs, explode_bands(doc_parts), batch_size=None)
    edges = runtime.materialize(runtime.map_groups(bands, PART, bucket_edges(cfg.threshold),
                                                 num_partitions=doc_parts))
    n_edges = runtime.count(edges)
    # `_clusters` from the documents (id only) and the cluster table, so the marked rows are computed once
    doc_ids = runtime.map_tables(docs.select_columns([schema.ID]), _initial, batch_size=None)
    if n_edges == 0:
        log.info("near dedup: no candidate pairs")
        extras[CLUSTERS] = runtime.map_tables(doc_ids, lambda t: clusters_table(mark(t)), batch_size=None)
        return runtime.map_tables(rows, mark, batch_size=None), extras
    edge_parts = parts(edges)
    labels = components(edges, n_edges, cfg, edge_parts)
    members = runtime.join(labels, graph_docs.select_columns(ID_COLUMNS), "inner", on=NODE,
                          num_partitions=doc_parts)
    clusters = runtime.materialize(runtime.map_groups(members, PART, choose_representatives,
                                                    num_partitions=edge_parts))
    new = runtime.materialize(runtime.map_tables(clusters, _only_new, batch_size=None)
                             .select_columns([schema.ID, CLUSTER, REP, SAME]))
    if runtime.count(new) <= dedup_cfg.broadcast_max_rows:  # every worker gets the cluster table: no row shuffle
        marked = runtime.map_with_side_table(rows, new, lambda side: _looked_up(side, mark))
        extras[CLUSTERS] = runtime.map_with_side_table(
            doc_ids, new, lambda side: (lambda t: clusters_table(_looked_up(side, mark)(t))))
    else:  # a hash join: rows and cluster members shuffled by id
        def joined(ds: Dataset) -> Dataset:
            return runtime.map_tables(runtime.join(ds, new, "left_outer", on=schema.ID,
                                                 num_partitions=dedup_cfg.num_buckets), mark, batch_size=None)

        marked = joined(rows)
        extras[CLUSTERS] = runtime.map_tables(joined(doc_ids), clusters_table, batch_size=None)
    extras[CLUSTER_SIZES] = runtime.map_tables(clusters, _cluster_sizes, batch_size=None)
    return marked, extras


def _looked_up(side: pa.Table, mark: Callable[[pa.Table], pa.Table]) -> Callable[[pa.Table], pa.Table]:
    """What the left join gives, from a hash index of the cluster table built once per worker (pandas Index)."""
    index = pd.Index(side[schema.ID].to_pandas()) if len(side) else pd.Index([], dtype=object)

    def fn(table: pa.Table) -> pa.Table:
        pos = index.get_indexer(table[schema.ID].to_pandas())
        take = pa.array(pos, mask=pos < 0)
        for col in (CLUSTER, REP, SAME):
            table = table.append_column(col, side[col].take(take) if len(side) else pa.nulls(len(table)))
        return mark(table)

    return fn




def components(edges: Dataset, n_edges: int, cfg: NearDedupConfig, parts: int) -> Dataset:
    """(node, label, _part of the label) for every node of the candidate graph."""
    if n_edges <= cfg.cc_fast_path_max_edges:
        log.info("near dedup: %d candidate edges, connected components on one worker", n_edges)
        return runtime.map_tables(runtime.one_block(edges), union_find_labels(parts), batch_size=None)
    for round_ in range(1, cfg.cc_max_rounds + 1):
        directed = runtime.map_tables(edges, both_directions(parts), batch_size=None)
        large = runtime.materialize(runtime.map_groups(directed, PART, large_star(parts), num_partitions=parts))
        markers = sum(t["markers"][0].as_py() for t in runtime.iter_tables(
            runtime.map_tables(large, count_markers, batch_size=None), batch_size=None))
        log.info("near dedup: connected components round %d: %d nodes not yet in a star", round_, markers)
        if markers == 0:
            return runtime.map_tables(large, star_labels(parts), batch_size=None)
        edges = runtime.materialize(runtime.map_groups(large, PART, small_star(parts), num_partitions=parts))
    raise RuntimeError(f"connected components did not converge in dedup.near.cc_max_rounds = {cfg.cc_max_rounds} "
                       "rounds; raise it (large-star/small-star needs O(log^2 n) rounds)")


def _only_new(table: pa.Table) -> pa.Table:
    """Documents of this run (indexed ones from earlier runs are matched against, never re-marked)."""
    return table.filter(pc.invert(table[OLD]))


def _cluster_sizes(table: pa.Table) -> pa.Table:
    reps = table.filter(table[REP])
    return pa.table({CLUSTER_ID: reps[CLUSTER], "size": reps[SIZE]})


def _marker(exact: bool):
    """Rows with their cluster's columns (null when in none) -> status, duplicate_of, cluster_id. A member that is
    not its cluster's representative is an exact_duplicate when its text hash is the representative's (and exact
    dedup is on), else a near_duplicate; duplicate_of is the representative; cluster_id is the representative
    for every member and the row's own id outside clusters."""

    def mark(table: pa.Table) -> pa.Table:
        n = len(table)
        cols = table.column_names
        cluster = table[CLUSTER] if CLUSTER in cols else pa.nulls(n, pa.string())
        dropped = pc.equal(pc.fill_null(table[REP] if REP in cols else pa.nulls(n, pa.bool_()), True), False)
        same = pc.fill_null(table[SAME] if SAME in cols else pa.nulls(n, pa.bool_()), False)
        exact_dup = pc.and_(dropped, same) if exact else pa.array(np.zeros(n, dtype=bool))
        status = pc.if_else(exact_dup, EXACT_DUPLICATE, pc.if_else(dropped, NEAR_DUPLICATE, table[schema.STATUS]))
        duplicate_of = pc.if_else(dropped, cluster, pa.nulls(n, pa.string()))
        cluster_id = pc.coalesce(cluster, table[schema.ID])
        table = table.drop_columns([c for c in (CLUSTER, REP, SAME, CLUSTER_ID, DUPLICATE_OF) if c in cols])
        table = schema.set_status(table, status)
        return table.append_column(DUPLICATE_OF, duplicate_of).append_column(CLUSTER_ID, cluster_id)

    return mark


def clusters_table(table: pa.Table) -> pa.Table:
    """`_clusters`: one row per document dedup compared (every input row but the quarantined ones)."""
    return pa.table({schema.ID: table[schema.ID], CLUSTER_ID: table[CLUSTER_ID],
                     "kept": pc.equal(table[schema.STATUS], schema.KEPT)})


def index_meta(cfg: NearDedupConfig) -> dict:
    """What makes two indexes' band keys comparable."""
    bands, rows = cfg.bands_rows()
    return {"format": INDEX_FORMAT, "shingle": cfg.shingle, "ngram": cfg.ngram, "num_perm": cfg.num_perm,
            "seed": cfg.seed, "bands": bands, "rows": rows, "signatures": cfg.verify == "signature",
            "rensa_algorithm": RMinHash.ALGORITHM_VERSION}


def read_index(path: str, cfg: NearDedupConfig) -> Dataset:
    """A saved index, its documents marked old (they win their clusters and are never re-marked)."""
    p = Path(path)
    if (p / INDEX).is_dir():  # the run's dedup folder was given
        p = p / INDEX
    meta_path = p / INDEX_META
    if not meta_path.is_file():
        raise ValueError(f"dedup.near.index_from: {path} is not a saved index (no {INDEX_META}); give the "
                         f"`dedup/{INDEX}` folder of an earlier run")
    have, want = json.loads(meta_path.read_text()), index_meta(cfg)
    if cfg.verify != "signature":
        have.pop("signatures"), want.pop("signatures")
    if have != want:
        diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
        raise ValueError(f"dedup.near.index_from: {path} was built with other MinHash settings "
                         f"(index vs this run: {diff}); run with the index's settings or rebuild it")
    return runtime.map_tables(runtime.read_parquet(p), _as_old, batch_size=None)


def _as_old(table: pa.Table) -> pa.Table:
    return table.append_column(RANK, pa.array(np.zeros(len(table)))).append_column(
        OLD, pa.array(np.ones(len(table), dtype=bool)))
