"""Connected components of the candidate graph, and one representative per component.

Distributed: the large-star / small-star rounds of Kiveris et al. (2014, "Connected components in MapReduce
and beyond"). Each step is one shuffle of the edge list grouped by a node, computed vectorised per shuffle
partition; no process ever holds the whole graph. After O(log^2 n) rounds every component is a star whose
centre is its smallest node. Convergence is detected inside large-star: a node that has a smaller neighbour
and more than one neighbour is not yet a star leaf, and it emits a self-loop marker; a round whose large-star
emits no marker has converged.

Fast path: below `cc_fast_path_max_edges` the edges go to one task and scipy's `connected_components` labels
them. Both paths label every node with the smallest node of its component, so their outputs are identical
(tests/test_dedup_near.py checks that on a real graph).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ray_jobs import schema
from ray_jobs.steps.dedup.lsh import HASH, NODE, OLD, PART, RANK, SIM, A, B, partition_of

LABEL = "_label"
CLUSTER, REP, SIZE, SAME = "_cluster", "_rep", "_size", "_same"


def _edges(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return table[A].to_numpy(), table[B].to_numpy()


def _segments(keys: np.ndarray) -> np.ndarray:
    """Start index of every run of equal values in a sorted array."""
    return np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.empty(0, np.int64)


def _unique_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (u, v) pairs sorted by u, then v."""
    if not len(u):
        return u, v
    pairs = np.unique(np.stack([u, v], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _edge_table(a: np.ndarray, b: np.ndarray, num_partitions: int) -> pa.Table:
    """Edges keyed for the next step: `_part` is the shuffle partition of `_a`."""
    return pa.table({A: pa.array(a, pa.uint64()), B: pa.array(b, pa.uint64()),
                     PART: pa.array(partition_of(a, num_partitions))})


def both_directions(num_partitions: int):
    """Each undirected edge as (u, v) and (v, u), routed by u: large-star groups every node's neighbours."""

    def fn(table: pa.Table) -> pa.Table:
        a, b = _edges(table)
        keep = a != b  # self-loop markers of the previous round carry no edge
        a, b = a[keep], b[keep]
        return _edge_table(np.concatenate([a, b]), np.concatenate([b, a]), num_partitions)

    return fn


def large_star(num_partitions: int):
    """Per node u with neighbours N(u): m = min(N(u) + u); link every larger neighbour v > u to m.

    Emits (u, u) as a marker when u has a smaller neighbour and degree > 1 (the graph is not yet stars)."""

    def fn(table: pa.Table) -> pa.Table:
        u, v = _unique_pairs(*_edges(table))
        starts = _segments(u)
        if not len(starts):
            return _edge_table(u, v, num_partitions)
        seg_min = np.minimum.reduceat(v, starts)  # v sorted within u: the first is the smallest
        degree = np.diff(np.append(starts, len(u)))
        nodes = u[starts]
        m = np.minimum(nodes, seg_min)
        m_row = np.repeat(m, degree)
        out = v > u
        bad = nodes[(seg_min < nodes) & (degree > 1)]
        return _edge_table(np.concatenate([v[out], bad]), np.concatenate([m_row[out], bad]), num_partitions)

    return fn


def small_star(num_partitions: int):
    """Per node a with smaller neighbours N(a) (edges arrive as (a, b), a > b): m = min N(a); link every b and a
    itself to m."""

    def fn(table: pa.Table) -> pa.Table:
        a, b = _edges(table)
        keep = a != b
        a, b = _unique_pairs(a[keep], b[keep])
        starts = _segments(a)
        if not len(starts):
            return _edge_table(a, b, num_partitions)
        m = np.repeat(b[starts], np.diff(np.append(starts, len(a))))  # b sorted within a: the first is min
        others = b != m
        return _edge_table(np.concatenate([b[others], a[starts]]), np.concatenate([m[others], b[starts]]),
                           num_partitions)

    return fn


def count_markers(table: pa.Table) -> pa.Table:
    a, b = _edges(table)
    return pa.table({"markers": [int(np.count_nonzero(a == b))]})


def star_labels(num_partitions: int):
    """Converged stars (leaf, centre) -> (node, label) for leaves and centres; routed by label."""

    def fn(table: pa.Table) -> pa.Table:
        a, b = _edges(table)
        keep = a != b
        a, b = a[keep], b[keep]
        centres = np.unique(b)
        return _label_table(np.concatenate([a, centres]), np.concatenate([b, centres]), num_partitions)

    return fn


def _label_table(node: np.ndarray, label: np.ndarray, num_partitions: int) -> pa.Table:
    return pa.table({NODE: pa.array(node, pa.uint64()), LABEL: pa.array(label, pa.uint64()),
                     PART: pa.array(partition_of(label, num_partitions))})


def union_find_labels(num_partitions: int):
    """Fast path: all edges in one table -> (node, smallest node of its component), by scipy; with `_sim` on the
    edges, also each node's highest similarity."""

    def fn(table: pa.Table) -> pa.Table:
        a, b = _edges(table)
        nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
        n = len(nodes)
        graph = coo_matrix((np.ones(len(a), dtype=np.int8), (inverse[:len(a)], inverse[len(a):])), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        smallest = np.full(comp.max() + 1 if n else 0, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(smallest, comp, np.arange(n))  # nodes are sorted: the smallest index is the smallest node
        labels = _label_table(nodes, nodes[smallest[comp]], num_partitions)
        if SIM not in table.column_names:
            return labels
        best = np.full(n, -np.inf)  # each node's highest similarity over its edges (unchecked edges: NaN, skipped)
        np.fmax.at(best, inverse, np.tile(table[SIM].to_numpy(zero_copy_only=False), 2))
        return labels.append_column(SIM, pa.array(np.where(np.isinf(best), np.nan, best), from_pandas=True))

    return fn


def choose_representatives(rows: pa.Table) -> pa.Table:
    """Members of whole components (node, label, id, hash, rank, old, and _sim when the pairs were checked) -> id,
    cluster (the representative's id), rep (is it the representative), same (is its text hash the
    representative's: an exact duplicate), size, old (and _sim: its highest exact Jaccard to another member).
    Indexed (old) documents win, then the highest rank, then the smallest id, so the choice does not depend on
    block layout or worker count."""
    rows = rows.take(pc.sort_indices(rows, [(LABEL, "ascending"), (OLD, "descending"), (RANK, "descending"),
                                            (schema.ID, "ascending")]))
    label = rows[LABEL].to_numpy()
    node = rows[NODE].to_numpy()
    # a document can arrive twice (a star centre is listed once per block): equal rows sort next to each other
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (label[1:] != label[:-1]) | (node[1:] != node[:-1])
    rows, label = rows.filter(pa.array(first)), label[first]
    starts = _segments(label)
    sizes = np.diff(np.append(starts, len(label)))
    head = np.repeat(starts, sizes)
    ids = rows[schema.ID].combine_chunks()
    hashes = rows[HASH].to_numpy()
    is_rep = np.zeros(len(rows), dtype=bool)
    is_rep[starts] = True
    out = pa.table({
        schema.ID: ids,
        CLUSTER: ids.take(pa.array(head)),
        REP: pa.array(is_rep),
        SAME: pa.array(hashes == hashes[head]),
        SIZE: pa.array(np.repeat(sizes, sizes).astype(np.int64)),
        OLD: rows[OLD],
    })
    return out.append_column(SIM, rows[SIM]) if SIM in rows.column_names else out
