"""The dedup recipe: exact and MinHash-LSH near dedup in one graph, candidates decided by their exact Jaccard,
with distributed connected components.

    rows --SignatureStage--> docs (id, node, text hash, rank, band keys)                (tasks)
    docs --repeated_ids--> ids shared by two or more rows: every such row is `duplicate_id` (shuffle on node)
    docs (+ saved indexes) --explode_bands--> band rows --bucket_candidates--> pairs    (shuffle on band key)
    pairs x candidates' texts --exact_jaccard--> edges with Jaccard >= threshold         (two joins on node)
    edges --components--> (node, label = smallest node of its component)                (fast path or rounds)
    labels x docs --choose_representatives--> id, cluster, rep, size                    (join + shuffle)
    rows x clusters --mark--> status kept / exact_duplicate / near_duplicate / duplicate_id, duplicate_of,
                              cluster_id    (cluster table sent to every worker, or a hash join when it is large)

Identical texts share every band, so exact duplicates land in the clusters too; a member whose text hash equals
its representative's is an exact duplicate, any other non-representative a near duplicate. With
`dedup.method = "exact"` exact dedup is its own hash shuffle (`dedup/exact.py`).

Exact verification (`dedup.near.verify = "exact"`, the default) reads the text of candidate documents only: the
text source is filtered by the set of candidate nodes (a side table, 8 bytes a candidate), and the pairs meet
their two texts in two hash joins, so a reduce task holds its partition's pairs and their texts, never the
corpus. Text rather than shingle hashes goes through the joins: UTF-8 is ~1 byte a character, the distinct
5-shingle hashes of English text ~0.75 per character x 8 bytes (6x the bytes to shuffle), and hashing the
windows again at the join costs less than moving them (`shingle_hashes` ran at 134 MB/s on one core here;
scoring a pair of ~4,000 hashes each in one open-addressing table, ~0.1 ms).

Nothing is collected in the driver except row counts and one integer per block per round (the convergence
test), so its memory does not grow with the corpus. Worker memory is bounded by the shuffle partition size:
each shuffle gets one partition per `dedup.partition_mb` of its input (at most `dedup.num_buckets`).
"""

from __future__ import annotations

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
from ray_jobs.errors import UserError
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
from ray_jobs.steps.dedup.lines import DROP_LINES, LINES, LineRemover, line_hashes, removals
from ray_jobs.steps.dedup.lsh import (
    HASH,
    ID_COLUMNS,
    IDENTICAL,
    KEYS,
    NODE,
    OLD,
    PART,
    RANK,
    SIG,
    SIM,
    A,
    B,
    SignatureStage,
    bucket_candidates,
    bucket_edges,
    explode_bands,
    node_ids,
    partition_of,
    unique_candidates,
)
from ray_jobs.steps.dedup.minhash import exact_jaccard
from ray_jobs.steps.dedup.shuffle import grouped

log = logging.getLogger("ray_jobs")

NEAR_DUPLICATE = "near_duplicate"
DUPLICATE_ID = "duplicate_id"
CLUSTER_ID = "cluster_id"
SIMILARITY = "similarity"
INDEX, CLUSTERS, CLUSTER_SIZES, PAIRS = "_index", "_clusters", "_cluster_sizes", "_pairs"
INDEX_META = "_meta.json"
ID_A, ID_B, TEXT_A, TEXT_B = "_id_a", "_id_b", "_text_a", "_text_b"
REPEATED = "_repeated"  # side-table flag: the id is shared by two or more rows
# Signature rows are ~100 bytes: 100k per block (~10 MB) instead of one block per 4 MB of text (~1k docs), which
# made every later step over the documents a hundred 0.1 s tasks on 400 MB.
DOCS_PER_BLOCK = 100_000
# Pairs scored per call: two texts of ~4 kB each become ~64 kB of window hashes, so 1,024 pairs hold ~65 MB.
PAIRS_PER_BATCH = 1024
INDEX_FORMAT = 3  # 2: rows carry the exact text hash (`_hash`); 3: signatures permuted by rensa


def build(cfg: RunConfig, ds: Dataset, read_input=None) -> tuple[Dataset, dict]:
    """`ray-jobs dedup` on full rows: the rows partitioned by status, and the side tables (`_clusters`, `_index`,
    ...). The rows are read again for each use (signatures, candidates' texts, marking): the text is never kept
    in the object store."""
    dc = cfg.dedup
    rows = runtime.map_tables(ds, _initial, batch_size=None)
    if dc.method == "near":
        marked, extras = near_dedup(rows, dc, texts=lambda: runtime.map_tables(rows, _kept_texts, batch_size=None))
    elif dc.method == "off":
        marked, extras = rows, {}
    else:
        rows = _with_repeated_ids(rows, runtime.map_tables(rows, _kept_ids, batch_size=None), dc)
        hashed = runtime.apply(rows, ExactHashStage(dc), batch_size=cfg.ray.batch_size)
        marked, extras = runtime.map_groups(hashed, BUCKET, keep_lowest_id, num_partitions=dc.num_buckets), {}
    if not dc.lines.enabled:
        return marked, extras
    # boilerplate lines, on the rows kept above: counted from their line hashes, removed where the rows are written
    unit = dc.lines.unit
    docs = runtime.materialize(runtime.map_tables(marked, lambda t: _kept_lines(t, unit), batch_size=None))
    return runtime.apply(_with_drop_lines(marked, docs, dc), LineRemover(dc.lines), batch_size=None), extras


def decide(cfg: RunConfig, compact: Dataset, read_input=None, text=None) -> tuple[Dataset, dict]:
    """In a plan: the same decisions over compact rows (id, the signature digest, key columns) that the text pass
    before wrote next to the text; the rows marked are these compact rows. `text(columns)` reads that pass's kept
    rows (Parquet: only the columns asked for); exact verification reads the candidates' texts through it."""
    dc = cfg.dedup
    rows = runtime.map_tables(compact, _initial, batch_size=None)
    if dc.method == "near":
        docs = runtime.map_tables(compact, _compact_docs, batch_size=None)
        marked, extras = near_dedup(rows, dc, docs, (lambda: text([schema.ID, schema.TEXT])) if text else None)
    elif dc.method == "off":
        marked, extras = rows, {}
    else:
        rows = _with_repeated_ids(rows, rows.select_columns([schema.ID]), dc)
        bucketed = runtime.map_tables(rows, lambda t: with_bucket(t, dc.num_buckets), batch_size=None)
        marked, extras = runtime.map_groups(bucketed, BUCKET, keep_lowest_id, num_partitions=dc.num_buckets), {}
    if not dc.lines.enabled:
        return marked, extras
    # boilerplate lines: the decision rows of changed documents list what goes (`_drop_lines`); the text pass
    # after the compact phase removes it (the dedup_lines row step)
    marked = runtime.materialize(marked)
    docs = runtime.map_tables(marked, lambda t: _only_kept(t).select([schema.ID, LINES]), batch_size=None)
    return _with_drop_lines(marked, runtime.materialize(docs), dc), extras


def _kept_lines(table: pa.Table, unit: str) -> pa.Table:
    kept = _only_kept(table)
    return pa.table({schema.ID: kept[schema.ID], LINES: line_hashes(kept[schema.TEXT], unit)})


def _with_drop_lines(marked: Dataset, docs: Dataset, dc: DedupConfig) -> Dataset:
    """The rows with `_drop_lines` (null where nothing goes), from the kept documents' line hashes: a side table on
    every worker up to dedup.broadcast_max_rows changed documents, else a hash join on id."""
    lost = runtime.materialize(removals(docs, dc.lines, runtime.partitions(docs, dc.partition_mb, dc.num_buckets)))
    n = runtime.count(lost)
    log.info("dedup.lines: %d documents lose boilerplate units (in >= %d documents)", n, dc.lines.min_docs)
    if n <= dc.broadcast_max_rows:
        return runtime.map_with_side_table(marked, lost, _drop_lines_of)
    return runtime.join(marked, lost, "left_outer", on=schema.ID, num_partitions=dc.num_buckets)


def _drop_lines_of(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
    """What the left join on id gives: each row's `_drop_lines` (null when it loses nothing)."""
    index = pd.Index(side[schema.ID].to_pandas()) if len(side) else pd.Index([], dtype=object)
    lists = side[DROP_LINES].combine_chunks() if len(side) else pa.array([], pa.binary())

    def fn(table: pa.Table) -> pa.Table:
        pos = index.get_indexer(table[schema.ID].to_pandas())
        return table.append_column(DROP_LINES, lists.take(pa.array(pos, mask=pos < 0)))

    return fn


def _compact_docs(table: pa.Table) -> pa.Table:
    cols = [schema.ID, NODE, HASH, RANK, KEYS] + ([SIG] if SIG in table.column_names else [])
    return table.select(cols).append_column(OLD, pa.array(np.zeros(len(table), dtype=bool)))


class MinHashDigest(Stage):
    """The text pass's part of dedup and leakage: signature columns (_node, _hash, _rank, _keys, and _sig when
    dedup.near.verify = signature decides on it) appended to the kept rows, null on the others. ~100 bytes per
    document (~600 with _sig) next to kilobytes of text; the global steps read only these columns back."""

    def __init__(self, cfg: RunConfig) -> None:
        self.stage = SignatureStage(cfg.dedup.near, cfg.dedup.lowercase)
        self.lines = cfg.dedup.lines.unit if cfg.dedup.lines.enabled else ""

    def __call__(self, table: pa.Table) -> pa.Table:
        kept = pc.equal(table[schema.STATUS], schema.KEPT) if schema.STATUS in table.column_names else None
        idx = pa.array(np.flatnonzero(kept.to_numpy(zero_copy_only=False)) if kept is not None
                       else np.arange(len(table)))
        chosen = table.take(idx)
        docs = self.stage(chosen).drop_columns([schema.ID, OLD])
        if self.lines:  # ~8 bytes a distinct line
            docs = docs.append_column(LINES, line_hashes(chosen[schema.TEXT], self.lines))
        pos = np.full(len(table), -1, np.int64)
        pos[idx.to_numpy()] = np.arange(len(idx))
        take = pa.array(pos, mask=pos < 0)
        for name in docs.column_names:
            table = table.append_column(name, docs[name].take(take))
        return table


def digest_columns(cfg: RunConfig) -> tuple[str, ...]:
    sig = cfg.dedup.near.verify == "signature"  # dedup and leakage decide on it; with exact, on the text
    return (NODE, HASH, RANK, KEYS) + ((SIG,) if sig else ()) + ((LINES,) if cfg.dedup.lines.enabled else ())


def _initial(table: pa.Table) -> pa.Table:
    """The status dedup starts from: kept, or quarantined where the reader could not parse the record; no
    duplicate_of or cluster_id yet (an input that is itself a dedup output has them)."""
    table = schema.set_status(table, schema.initial_status(table))
    table = table.drop_columns([c for c in (DUPLICATE_OF, CLUSTER_ID) if c in table.column_names])
    return table.append_column(DUPLICATE_OF, pa.nulls(len(table), pa.string()))


def _only_kept(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table[schema.STATUS], schema.KEPT))


def _kept_ids(table: pa.Table) -> pa.Table:
    return _only_kept(table).select([schema.ID])


def _kept_texts(table: pa.Table) -> pa.Table:
    return _only_kept(table).select([schema.ID, schema.TEXT])


# ------------------------------------------------------------------------------------------------ repeated ids


def repeated_ids(ids: Dataset, num_partitions: int) -> Dataset:
    """Ids that two or more rows carry (one row each, with how many), by a shuffle on the id's hash.

    Why it matters: the graph's nodes are hashes of the id, and later steps (the planner's decision tables, split,
    the training rows' provenance) address rows by id, so two rows with one id are one document to them: both
    would be kept, or a decision for one would apply to the other. Every row of such an id is set aside as
    `duplicate_id` (which of them is "the" document is not knowable). Ids are strings by then: the readers turn
    42 and "42" into "42", so they collide here too."""
    routed = runtime.map_tables(ids, lambda t: t.select([schema.ID]).append_column(
        PART, pa.array(partition_of(node_ids(t[schema.ID]), num_partitions))), batch_size=None)
    return grouped(routed, PART, _seen_twice, num_partitions)


def _seen_twice(table: pa.Table) -> pa.Table:
    counts = pc.value_counts(table[schema.ID].combine_chunks())
    twice = pc.greater_equal(counts.field("counts"), 2)
    return pa.table({schema.ID: pc.filter(counts.field("values"), twice),
                     "rows": pc.cast(pc.filter(counts.field("counts"), twice), pa.int64())})


def _reported(repeated: Dataset) -> int:
    """How many ids repeat; logged with a few of them and the fix."""
    n = runtime.count(repeated)
    if n:
        some = next(runtime.iter_tables(repeated, batch_size=5)).slice(0, 5)
        log.warning("dedup: %d ids are carried by more than one row (e.g. %s); every row of them is set aside as "
                    "%s (RUN/dedup/status=%s): later steps address rows by id. Fix: give each row an id of its "
                    "own (input.id_field), or leave it unset for file:offset ids", n,
                    ", ".join(f"{i!r} x {r}" for i, r in zip(some[schema.ID].to_pylist(), some["rows"].to_pylist())),
                    DUPLICATE_ID, DUPLICATE_ID)
    return n


def _with_repeated_ids(rows: Dataset, ids: Dataset, dc: DedupConfig) -> Dataset:
    """rows with status duplicate_id where their id repeats (method = "exact")."""
    ids = runtime.materialize(ids)
    repeated = runtime.materialize(repeated_ids(ids, runtime.partitions(ids, dc.partition_mb, dc.num_buckets)))
    if not _reported(repeated):
        return rows
    return runtime.map_with_side_table(rows, repeated, _marked_repeated)


def _marked_repeated(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
    ids = side[schema.ID].combine_chunks()

    def fn(table: pa.Table) -> pa.Table:
        hit = pc.and_(pc.is_in(table[schema.ID], value_set=ids), pc.equal(table[schema.STATUS], schema.KEPT))
        return schema.set_status(table, pc.if_else(hit, DUPLICATE_ID, table[schema.STATUS]))

    return fn


def _without_listed(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
    ids = side[schema.ID].combine_chunks()
    return lambda table: table.filter(pc.invert(pc.is_in(table[schema.ID], value_set=ids)))


# ------------------------------------------------------------------------------------------------ near dedup


def near_dedup(rows: Dataset, dedup_cfg: DedupConfig, docs: Dataset | None = None,
               texts: Callable[[], Dataset] | None = None) -> tuple[Dataset, dict]:
    """`rows` is lazy and runs again for each use: into signatures (unless `docs` gives them), into the marked
    rows that are written; `texts()` gives (id, text) of the kept rows for exact verification, read only for the
    candidates. Reading the input again is cheaper than keeping the text in the object store between the passes
    (400 MB: 77 s with the rows materialised, the text put in and read out of the store three times)."""
    cfg = dedup_cfg.near

    def parts(ds: Dataset) -> int:
        return runtime.partitions(ds, dedup_cfg.partition_mb, dedup_cfg.num_buckets)

    if cfg.verify == "exact" and texts is None:
        raise UserError("dedup.near.verify = 'exact' needs the candidates' texts, and this caller gave none; set "
                        "dedup.near.verify = 'signature' (or 'none'), or run dedup through the planner or alone")
    if docs is None:
        kept = runtime.map_tables(rows, _only_kept, batch_size=None)
        # whole blocks (batch_size None): Ray fuses the stage into the read task, so only signatures leave it
        docs = runtime.apply(kept, SignatureStage(cfg, dedup_cfg.lowercase), batch_size=None)
    docs = runtime.materialize(runtime.rebatch(docs, DOCS_PER_BLOCK))
    doc_ids = runtime.map_tables(docs.select_columns([schema.ID]), _initial, batch_size=None)
    repeated = runtime.materialize(repeated_ids(docs.select_columns([schema.ID]), parts(docs)))
    sides = []  # the tables the rows are marked from
    if _reported(repeated):
        docs = runtime.materialize(runtime.map_with_side_table(docs, repeated, _without_listed))
        sides.append(runtime.map_tables(repeated, _repeated_side, batch_size=None))
    extras: dict = {INDEX: docs.drop_columns([RANK, OLD]), f"{INDEX}/{INDEX_META}": json.dumps(index_meta(cfg))}
    graph_docs = runtime.union(docs, *[read_index(p, cfg) for p in cfg.index_from])
    doc_parts = parts(docs) * (1 + len(cfg.index_from))
    if cfg.verify == "exact":
        bands = runtime.map_tables(graph_docs, explode_bands(doc_parts, carry=(NODE, HASH)), batch_size=None)
        pairs = runtime.materialize(grouped(bands, PART, bucket_candidates(cfg.bucket_all_pairs_max), doc_parts))
        edges, extras[PAIRS] = decided_pairs(pairs, texts(), cfg, parts)
    else:
        bands = runtime.map_tables(graph_docs, explode_bands(doc_parts), batch_size=None)
        edges = runtime.materialize(grouped(bands, PART, bucket_edges(cfg.threshold), doc_parts))
    n_edges = runtime.count(edges)
    if n_edges == 0:
        log.info("near dedup: no near-duplicate pairs")
    else:
        edge_parts = parts(edges)
        labels = components(edges, n_edges, cfg, edge_parts)
        members = runtime.join(labels, graph_docs.select_columns(ID_COLUMNS), "inner", on=NODE,
                               num_partitions=doc_parts)
        clusters = runtime.materialize(runtime.map_groups(members, PART, choose_representatives,
                                                          num_partitions=edge_parts))
        extras[CLUSTER_SIZES] = runtime.map_tables(clusters, _cluster_sizes, batch_size=None)
        sides.append(runtime.map_tables(clusters, _side_rows, batch_size=None))
    side = runtime.materialize(runtime.union(*sides)) if sides else runtime.from_table(SIDE_SCHEMA.empty_table(), 1)
    if runtime.count(side) <= dedup_cfg.broadcast_max_rows:  # every worker gets the cluster table: no row shuffle
        marked = runtime.map_with_side_table(rows, side, lambda t: _then(_looked_up(t), _marked_rows))
        extras[CLUSTERS] = runtime.map_with_side_table(doc_ids, side, lambda t: _then(_looked_up(t), clusters_table))
    else:  # a hash join: rows and cluster members shuffled by id
        def joined(ds: Dataset, then: Callable[[pa.Table], pa.Table]) -> Dataset:
            return runtime.map_tables(runtime.join(ds, side, "left_outer", on=schema.ID,
                                                   num_partitions=dedup_cfg.num_buckets), then, batch_size=None)

        marked = joined(rows, _marked_rows)
        extras[CLUSTERS] = joined(doc_ids, clusters_table)
    return marked, extras


def decided_pairs(pairs: Dataset, texts: Dataset, cfg: NearDedupConfig,
                  parts: Callable[[Dataset], int]) -> tuple[Dataset, Dataset]:
    """Candidate pairs (_a, _b, _identical) -> (edges: _a, _b, _sim with exact Jaccard >= threshold; `_pairs`: id_a,
    id_b, similarity of every pair checked against the text).

    Identical texts (`_identical`) are edges at 1.0 without a look at the text. The others: the set of their nodes goes
    to every worker (8 bytes a candidate), the text source is filtered by it, and each pair meets its two texts:
    when those texts fit in one shuffle partition (dedup.partition_mb) they go to every worker as a side table,
    else in two hash joins (on _a, then on _b) of one partition per partition_mb. On 100 MB (4,404 pairs, ~20 MB
    of text) the joins took 41 s of Ray Data set-up for well under a second of work. A pair with an indexed
    document of an earlier run has no text here (indexes keep signatures, not text): it stays an edge unchecked,
    with no similarity."""
    routed = runtime.map_tables(pairs, lambda t: t.append_column(
        PART, pa.array(partition_of(t[A].to_numpy(), parts(pairs)))), batch_size=None)
    pairs = runtime.materialize(grouped(routed, PART, unique_candidates, parts(pairs)))
    check = runtime.materialize(runtime.map_tables(pairs, _to_check, batch_size=None))
    log.info("near dedup: %d candidate pairs, %d of them to check against the text", runtime.count(pairs),
             runtime.count(check))
    nodes = runtime.materialize(runtime.map_tables(check, _endpoints, batch_size=None))
    cand = runtime.materialize(runtime.map_with_side_table(texts, nodes, _texts_of))
    text_parts = parts(cand)
    if text_parts == 1:  # the candidates' texts fit in one partition: each worker gets them all, no joins
        scored = runtime.map_with_side_table(check, cand, _scored_with_texts(cfg))
    else:
        joined = runtime.join(check, runtime.map_tables(cand, _renamed(A, ID_A, TEXT_A), batch_size=None),
                              "left_outer", on=A, num_partitions=text_parts)
        joined = runtime.join(joined, runtime.map_tables(cand, _renamed(B, ID_B, TEXT_B), batch_size=None),
                              "left_outer", on=B, num_partitions=text_parts)
        scored = runtime.map_tables(joined, _scored(cfg), batch_size=PAIRS_PER_BATCH)
    scored = runtime.materialize(scored)
    same = runtime.map_tables(pairs, _same_edges, batch_size=None)
    kept = runtime.map_tables(scored, _accepted(cfg.threshold), batch_size=None)
    out = runtime.map_tables(scored, _pair_rows, batch_size=None)
    return runtime.materialize(runtime.union(same, kept)), out


def _to_check(table: pa.Table) -> pa.Table:
    return table.filter(pc.invert(table[IDENTICAL])).select([A, B])


def _endpoints(table: pa.Table) -> pa.Table:
    return pa.table({NODE: pa.array(np.unique(np.concatenate([table[A].to_numpy(), table[B].to_numpy()])),
                                    pa.uint64())})


def _texts_of(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
    """Rows (id, text) -> node, id, text of the candidate documents only."""
    wanted = np.unique(side[NODE].to_numpy()) if len(side) else np.empty(0, np.uint64)

    def fn(table: pa.Table) -> pa.Table:
        node = node_ids(table[schema.ID])
        hit = np.isin(node, wanted)
        return pa.table({NODE: pa.array(node[hit], pa.uint64()), schema.ID: table[schema.ID].filter(hit),
                         schema.TEXT: table[schema.TEXT].filter(hit)})

    return fn


def _with_texts(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
    """What the two joins give, from a hash index of the candidates' texts built once per worker."""
    index = pd.Index(side[NODE].to_numpy()) if len(side) else pd.Index([], dtype=np.uint64)
    ids, texts = side[schema.ID].combine_chunks(), side[schema.TEXT].combine_chunks()

    def fn(table: pa.Table) -> pa.Table:
        for node, id_col, text_col in ((A, ID_A, TEXT_A), (B, ID_B, TEXT_B)):
            pos = index.get_indexer(table[node].to_numpy())
            take = pa.array(pos, mask=pos < 0)
            table = table.append_column(id_col, ids.take(take)).append_column(text_col, texts.take(take))
        return table

    return fn


def _scored_with_texts(cfg: NearDedupConfig) -> Callable[[pa.Table], Callable[[pa.Table], pa.Table]]:
    """_with_texts then _scored, PAIRS_PER_BATCH pairs at a time: a worker holds the candidates' texts once plus one
    batch's two copies. Attaching every pair's texts first held two copies per pair: 322k pairs at 4.4 GB of text
    in the one-process compact phase peaked at ~14 GB."""
    def make(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
        attach, score = _with_texts(side), _scored(cfg)

        def fn(table: pa.Table) -> pa.Table:
            return pa.concat_tables([score(attach(table.slice(start, PAIRS_PER_BATCH)))
                                     for start in range(0, max(len(table), 1), PAIRS_PER_BATCH)])

        return fn

    return make


def _renamed(node: str, id_col: str, text_col: str) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.select([NODE, schema.ID, schema.TEXT]).rename_columns([node, id_col, text_col])


def _scored(cfg: NearDedupConfig) -> Callable[[pa.Table], pa.Table]:
    def fn(table: pa.Table) -> pa.Table:
        missing = pc.or_(pc.is_null(table[TEXT_A]), pc.is_null(table[TEXT_B])).to_numpy(zero_copy_only=False)
        sim = exact_jaccard(pc.fill_null(table[TEXT_A], ""), pc.fill_null(table[TEXT_B], ""), cfg)
        return pa.table({A: table[A], B: table[B], ID_A: table[ID_A], ID_B: table[ID_B],
                         SIM: pa.array(sim, mask=missing)})

    return fn


def _accepted(threshold: float) -> Callable[[pa.Table], pa.Table]:
    def fn(table: pa.Table) -> pa.Table:
        ok = pc.fill_null(pc.greater_equal(table[SIM], threshold), True)  # no text: an indexed document
        return table.filter(ok).select([A, B, SIM])

    return fn


def _same_edges(table: pa.Table) -> pa.Table:
    same = table.filter(table[IDENTICAL])
    return pa.table({A: same[A], B: same[B], SIM: pa.array(np.ones(len(same)))})


def _pair_rows(table: pa.Table) -> pa.Table:
    return pa.table({"id_a": table[ID_A], "id_b": table[ID_B], SIMILARITY: table[SIM]})


def best_similarity(edges: Dataset, num_partitions: int) -> Dataset:
    """(node, _sim): each endpoint's highest exact Jaccard over its edges."""
    def ends(table: pa.Table) -> pa.Table:
        node = np.concatenate([table[A].to_numpy(), table[B].to_numpy()])
        sim = pa.concat_arrays([table[SIM].combine_chunks()] * 2) if len(table) else pa.array([], pa.float64())
        return pa.table({NODE: pa.array(node, pa.uint64()), SIM: sim,
                         PART: pa.array(partition_of(node, num_partitions))})

    def best(table: pa.Table) -> pa.Table:
        return table.group_by(NODE, use_threads=False).aggregate([(SIM, "max")]).rename_columns([NODE, SIM])

    return runtime.map_groups(runtime.map_tables(edges, ends, batch_size=None), PART, best,
                              num_partitions=num_partitions)


def _then(first: Callable[[pa.Table], pa.Table], second: Callable[[pa.Table], pa.Table]):
    return lambda table: second(first(table))


def _repeated_side(table: pa.Table) -> pa.Table:
    """Repeated ids as rows of the side table the rows are marked from."""
    n = len(table)
    return pa.table({schema.ID: table[schema.ID], CLUSTER: pa.nulls(n, pa.string()), REP: pa.nulls(n, pa.bool_()),
                     SAME: pa.nulls(n, pa.bool_()), SIM: pa.nulls(n, pa.float64()),
                     REPEATED: pa.array(np.ones(n, dtype=bool))}).cast(SIDE_SCHEMA)


def _side_rows(table: pa.Table) -> pa.Table:
    """Cluster members of this run (indexed ones from earlier runs are matched against, never re-marked)."""
    table = table.filter(pc.invert(table[OLD]))
    sim = table[SIM] if SIM in table.column_names else pa.nulls(len(table), pa.float64())
    return pa.table({schema.ID: table[schema.ID], CLUSTER: table[CLUSTER], REP: table[REP], SAME: table[SAME],
                     SIM: pc.cast(sim, pa.float64()), REPEATED: pa.array(np.zeros(len(table), dtype=bool))}
                    ).cast(SIDE_SCHEMA)


# one schema for both kinds of side rows (Ray hands string columns back as large_string after a shuffle)
SIDE_SCHEMA = pa.schema([(schema.ID, pa.large_string()), (CLUSTER, pa.large_string()), (REP, pa.bool_()),
                         (SAME, pa.bool_()), (SIM, pa.float64()), (REPEATED, pa.bool_())])
SIDE_COLUMNS = (CLUSTER, REP, SAME, SIM, REPEATED)


def _looked_up(side: pa.Table) -> Callable[[pa.Table], pa.Table]:
    """What the left join gives, from a hash index of the side table built once per worker (pandas Index)."""
    index = pd.Index(side[schema.ID].to_pandas()) if len(side) else pd.Index([], dtype=object)

    def fn(table: pa.Table) -> pa.Table:
        pos = index.get_indexer(table[schema.ID].to_pandas())
        take = pa.array(pos, mask=pos < 0)
        for col in SIDE_COLUMNS:
            table = table.append_column(col, side[col].take(take) if len(side) else pa.nulls(
                len(table), SIDE_SCHEMA.field(col).type))
        return table

    return fn


def components(edges: Dataset, n_edges: int, cfg: NearDedupConfig, parts: int) -> Dataset:
    """(node, label, _part of the label, and _sim when the edges carry it) for every node of the graph."""
    if n_edges <= cfg.cc_fast_path_max_edges:
        log.info("near dedup: %d edges, connected components on one worker", n_edges)
        return runtime.map_tables(runtime.one_block(edges), union_find_labels(parts), batch_size=None)
    if SIM in edges.columns():  # each document's highest exact Jaccard to another (the fast path adds it itself)
        best = best_similarity(edges, parts)
        return runtime.join(_distributed_labels(edges, cfg, parts), best, "left_outer", on=NODE,
                            num_partitions=parts)
    return _distributed_labels(edges, cfg, parts)


def _distributed_labels(edges: Dataset, cfg: NearDedupConfig, parts: int) -> Dataset:
    for round_ in range(1, cfg.cc_max_rounds + 1):
        directed = runtime.map_tables(edges, both_directions(parts), batch_size=None)
        large = runtime.materialize(runtime.map_groups(directed, PART, large_star(parts), num_partitions=parts))
        markers = sum(t["markers"][0].as_py() for t in runtime.iter_tables(
            runtime.map_tables(large, count_markers, batch_size=None), batch_size=None))
        log.info("near dedup: connected components round %d: %d nodes not yet in a star", round_, markers)
        if markers == 0:
            return runtime.map_tables(large, star_labels(parts), batch_size=None)
        edges = runtime.materialize(runtime.map_groups(large, PART, small_star(parts), num_partitions=parts))
    raise UserError(f"connected components did not converge in dedup.near.cc_max_rounds = {cfg.cc_max_rounds} "
                    "rounds; raise it (large-star/small-star needs O(log^2 n) rounds)")


def _cluster_sizes(table: pa.Table) -> pa.Table:
    reps = table.filter(table[REP])
    return pa.table({CLUSTER_ID: reps[CLUSTER], "size": reps[SIZE]})


def mark(table: pa.Table) -> pa.Table:
    """Rows with the side table's columns (null when in none) -> status, duplicate_id, duplicate_of, cluster_id
    (the similarity column stays for `_clusters`). A kept row whose id repeats is a duplicate_id; a cluster member
    that is not its representative is an exact_duplicate when its text hash is the representative's, else a
    near_duplicate; duplicate_of is the representative; cluster_id is the representative for every member and the
    row's own id outside clusters."""
    n = len(table)
    cols = table.column_names
    cluster = table[CLUSTER] if CLUSTER in cols else pa.nulls(n, pa.string())
    dropped = pc.equal(pc.fill_null(table[REP] if REP in cols else pa.nulls(n, pa.bool_()), True), False)
    same = pc.fill_null(table[SAME] if SAME in cols else pa.nulls(n, pa.bool_()), False)
    repeated = pc.and_(pc.fill_null(table[REPEATED] if REPEATED in cols else pa.nulls(n, pa.bool_()), False),
                       pc.equal(table[schema.STATUS], schema.KEPT))
    status = pc.if_else(repeated, DUPLICATE_ID, pc.if_else(pc.and_(dropped, same), EXACT_DUPLICATE, pc.if_else(
        dropped, NEAR_DUPLICATE, table[schema.STATUS])))
    duplicate_of = pc.if_else(dropped, cluster, pa.nulls(n, pa.string()))
    cluster_id = pc.coalesce(cluster, table[schema.ID])
    table = table.drop_columns([c for c in (CLUSTER, REP, SAME, REPEATED, CLUSTER_ID, DUPLICATE_OF) if c in cols])
    table = schema.set_status(table, status)
    return table.append_column(DUPLICATE_OF, duplicate_of).append_column(CLUSTER_ID, cluster_id)


def _marked_rows(table: pa.Table) -> pa.Table:
    table = mark(table)
    return table.drop_columns([SIM]) if SIM in table.column_names else table


def clusters_table(table: pa.Table) -> pa.Table:
    """`_clusters`: one row per document dedup compared (every input row but the quarantined ones), with its
    highest exact Jaccard to another member of its cluster (null alone, or when candidates were not checked
    against the text)."""
    table = mark(table)
    sim = table[SIM] if SIM in table.column_names else pa.nulls(len(table), pa.float64())
    return pa.table({schema.ID: table[schema.ID], CLUSTER_ID: table[CLUSTER_ID],
                     "kept": pc.equal(table[schema.STATUS], schema.KEPT), SIMILARITY: sim})


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
        raise UserError(f"dedup.near.index_from: {path} is not a saved index (no {INDEX_META}); give the "
                        f"`dedup/{INDEX}` folder of an earlier run")
    have, want = json.loads(meta_path.read_text()), index_meta(cfg)
    if cfg.verify != "signature":
        have.pop("signatures"), want.pop("signatures")
    if have != want:
        diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
        raise UserError(f"dedup.near.index_from: {path} was built with other MinHash settings "
                        f"(index vs this run: {diff}); run with the index's settings or rebuild it")
    return runtime.map_tables(runtime.read_parquet(p), _as_old, batch_size=None)


def _as_old(table: pa.Table) -> pa.Table:
    return table.append_column(RANK, pa.array(np.zeros(len(table)))).append_column(
        OLD, pa.array(np.ones(len(table), dtype=bool)))
