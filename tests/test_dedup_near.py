"""Near dedup pieces without Ray: band buckets to edges, both connected-components paths, representatives,
cross-split leakage pairs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ray_jobs.steps.dedup.components import (
    CLUSTER,
    LABEL,
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
from ray_jobs.steps.dedup.config import NearDedupConfig
from ray_jobs.steps.dedup.lsh import (
    HASH,
    NODE,
    OLD,
    PART,
    RANK,
    A,
    B,
    SignatureStage,
    bucket_edges,
    explode_bands,
)
from ray_jobs.steps.leakage.ops import (
    cross_split_pairs,
    endpoint_ids,
    leak_docs,
    mark_leaked,
    texts_of,
    unique_pairs,
    verified,
)
from tests.conftest import SAMPLE

PARTS = 4


def _shuffle(table: pa.Table, fn) -> pa.Table:
    """What the engine's map_groups does: every `_part` value to one call of fn."""
    out = [fn(table.filter(pc.equal(table[PART], p))) for p in pc.unique(table[PART]).to_pylist()]
    return pa.concat_tables(out) if out else fn(table.slice(0, 0))


def _distributed_labels(edges: pa.Table) -> tuple[dict[int, int], int]:
    """The large-star/small-star loop of jobs/dedup.py `components`, with in-process shuffles."""
    for round_ in range(1, 100):
        large = _shuffle(both_directions(PARTS)(edges), large_star(PARTS))
        if count_markers(large)["markers"][0].as_py() == 0:
            labels = star_labels(PARTS)(large)
            return dict(zip(labels[NODE].to_pylist(), labels[LABEL].to_pylist())), round_
        edges = _shuffle(large, small_star(PARTS))
    raise AssertionError("no convergence")


def _fast_labels(edges: pa.Table) -> dict[int, int]:
    labels = union_find_labels(PARTS)(edges)
    return dict(zip(labels[NODE].to_pylist(), labels[LABEL].to_pylist()))


def _edge_table(pairs) -> pa.Table:
    pairs = np.asarray(pairs, dtype=np.uint64).reshape(-1, 2)
    return pa.table({A: pa.array(pairs.max(axis=1)), B: pa.array(pairs.min(axis=1))})


def _sample_docs(**cfg) -> pa.Table:
    table = pq.read_table(SAMPLE / "parquet", columns=["id", "text"])
    return SignatureStage(NearDedupConfig(**cfg))(table)


def _sample_edges(**cfg) -> pa.Table:
    return _shuffle(explode_bands(PARTS)(_sample_docs(**cfg)), bucket_edges(NearDedupConfig(**cfg).threshold))


def test_both_component_paths_agree_on_the_sample_candidate_graph():
    edges = _sample_edges()
    assert len(edges) > 50  # the sample's spam campaigns and re-sent mails form real clusters
    distributed, _ = _distributed_labels(edges)
    assert distributed == _fast_labels(edges)


def test_both_paths_agree_on_chains_and_many_components():
    rng = np.random.default_rng(3)
    path = [(i, i + 1) for i in range(1000, 1300)]  # one long chain: the worst case for label propagation
    nodes = rng.permutation(np.arange(5000, 9000))  # random small components
    rand = [(nodes[i], nodes[i + 1 + rng.integers(0, 3)]) for i in range(0, 3900, 4)]
    edges = _edge_table(path + rand)
    distributed, rounds = _distributed_labels(edges)
    assert distributed == _fast_labels(edges)
    assert all(distributed[n] == 1000 for n in range(1000, 1301))
    assert rounds < 30


def test_labels_are_the_smallest_node_of_each_component():
    labels = _fast_labels(_edge_table([(5, 9), (9, 2), (7, 8)]))
    assert labels == {2: 2, 5: 2, 9: 2, 7: 7, 8: 7}


def test_bucket_edges_form_stars_to_the_smallest_node():
    rows = pa.table({NODE: pa.array([30, 10, 20, 40, 50], pa.uint64()), "_band": pa.array([0, 0, 0, 1, 1], pa.int16()),
                     "_key": pa.array([7, 7, 7, 7, 8], pa.uint64()), PART: [0] * 5})
    edges = bucket_edges(0.85)(rows)
    assert sorted(zip(edges[A].to_pylist(), edges[B].to_pylist())) == [(20, 10), (30, 10)]


def test_signature_verification_drops_false_candidates():
    cfg = dict(bands=32, rows=1, verify="signature")  # one-row bands: nearly every pair is a candidate
    unverified = _sample_edges(bands=32, rows=1)
    verified = _sample_edges(**cfg)
    assert len(verified) < len(unverified) / 10
    docs = _sample_docs(**cfg)
    sig = {n: np.asarray(s) for n, s in zip(docs[NODE].to_pylist(), docs["_sig"].to_pylist())}
    est = [np.mean(sig[a] == sig[b]) for a, b in zip(verified[A].to_pylist(), verified[B].to_pylist())]
    assert min(est) >= 0.85


def _members(ids, ranks, old=None, hashes=None) -> pa.Table:
    n = len(ids)
    return pa.table({NODE: pa.array(range(n), pa.uint64()), LABEL: pa.array([1] * n, pa.uint64()),
                     PART: [0] * n, "id": ids, HASH: pa.array(hashes or range(n), pa.uint64()),
                     RANK: pa.array(ranks, pa.float64()), OLD: pa.array(old or [False] * n)})


@pytest.mark.parametrize("ranks,old,rep", [
    ([0, 0, 0], None, "a"),  # lowest id
    ([5, 9, 9], None, "b"),  # highest rank, ties to the lowest id
    ([5, 9, 9], [False, False, True], "c"),  # an indexed document always stays the representative
])
def test_choose_representatives(ranks, old, rep):
    out = choose_representatives(_members(["a", "b", "c"], ranks, old))
    got = {r["id"]: (r[CLUSTER], r[REP], r[SIZE]) for r in out.to_pylist()}
    assert got == {i: (rep, i == rep, 3) for i in "abc"}


def test_members_with_the_representatives_text_are_exact_duplicates():
    out = choose_representatives(_members(["a", "b", "c"], [0, 0, 0], hashes=[7, 7, 8]))
    assert out[SAME].to_pylist() == [True, True, False]


def test_a_document_listed_twice_counts_once():
    members = _members(["a", "b"], [0, 0])
    out = choose_representatives(pa.concat_tables([members, members.slice(0, 1)]))
    assert out["id"].to_pylist() == ["a", "b"] and out[SIZE].to_pylist() == [2, 2]


def test_highest_score_needs_the_column():
    with pytest.raises(ValueError, match="score_column"):
        NearDedupConfig(representative="highest_score")
    stage = SignatureStage(NearDedupConfig(representative="highest_score", score_column="quality"))
    with pytest.raises(ValueError, match="'quality' is not a column"):
        stage(pa.table({"id": ["a"], "text": ["some text here"]}))


@pytest.mark.parametrize("verify", ["exact", "signature"])
def test_cross_split_pairs_find_planted_leaks_only(verify):
    cfg = NearDedupConfig(verify=verify)

    def pairs_of(rows: pa.Table) -> pa.Table:
        bands = explode_bands(PARTS, carry=("id", "split"))(leak_docs(cfg)(rows))
        pairs = unique_pairs(_shuffle(bands, cross_split_pairs(cfg.threshold)))
        if verify == "signature":
            return pairs
        texts = texts_of(endpoint_ids(pairs), False)(rows)
        return verified(texts, cfg)(pairs)

    sample = pq.read_table(SAMPLE / "parquet", columns=["id", "text"]).sort_by("id")
    texts = [t for t in sample["text"].to_pylist() if len(t) > 300]
    # real documents with no near duplicate among them: every one in a split of its own finds no pair
    alone = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts,
                      "split": [str(i) for i in range(len(texts))]})
    twins = set(map(int, pairs_of(alone)["id"].to_pylist()))
    texts = [t for i, t in enumerate(texts) if i not in twins][:200]
    splits = ["train"] * 150 + ["val"] * 25 + ["test"] * 25
    ids = [f"d{i:03d}" for i in range(200)]
    planted = {}  # five train documents re-appear in test with one sentence appended
    for k, i in enumerate((3, 40, 77, 101, 149)):
        ids.append(f"leak{k}")
        texts.append(texts[i] + " Posted again.")
        splits.append("test")
        planted[ids[i]] = f"leak{k}"
    rows = pa.table({"id": ids, "text": texts, "split": splits})
    pairs = pairs_of(rows)
    found = {(a, b) for a, b, s in zip(pairs["id"].to_pylist(), pairs["other_id"].to_pylist(),
                                       pairs["split"].to_pylist()) if s == "train"}
    assert found == set(planted.items())
    assert min(pairs["similarity"].to_pylist()) >= cfg.threshold
    marked = mark_leaked(rows, pa.array(list(planted)))
    assert sorted(pc.filter(marked["id"], pc.equal(marked["status"], "leaked")).to_pylist()) == sorted(planted)
