"""Near duplicates decided by their exact Jaccard, and repeated ids, on real text: the candidate banding, the
exact Jaccard against plain Python sets, the bucket pairs, and whole `dedup` builds in one process (the runtime's
in-process path, runtime/local.py: the same step code a small compact phase runs), no Ray started."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs import runtime
from ray_jobs.config import load_config
from ray_jobs.errors import UserError
from ray_jobs.io.readers import discover
from ray_jobs.runtime import local
from ray_jobs.steps.dedup import barrier
from ray_jobs.steps.dedup.config import NearDedupConfig
from ray_jobs.steps.dedup.lsh import HASH, IDENTICAL, NODE, PART, A, B, bucket_candidates
from ray_jobs.steps.dedup.minhash import MinHashConfig, candidate_probability, exact_jaccard
from tests.conftest import SAMPLE


def _shingles(text: str) -> set[str]:
    """The definition the threshold means (benchmarks/make_dedup_corpus.py's truth)."""
    t = re.sub(r"\s+", " ", text.lower()).strip()
    return {t[i:i + 5] for i in range(len(t) - 4)} or {t}


def _jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb)


def _edited(text: str, rate: float, seed: int) -> str:
    """Each word replaced by a word of the text itself with probability `rate` (real vocabulary, real edits)."""
    rng = random.Random(seed)
    words = text.split()
    return " ".join(rng.choice(words) if rng.random() < rate else w for w in words)


def _texts(n: int, min_len: int = 1500) -> list[str]:
    texts = pq.read_table(SAMPLE / "parquet", columns=["id", "text"]).sort_by("id")["text"].to_pylist()
    return [t for t in texts if len(t) >= min_len][:n]


def test_candidate_bands_make_a_pair_at_the_threshold_a_candidate_with_probability_0_995():
    exact = NearDedupConfig()
    bands, rows = exact.bands_rows()
    assert (bands, rows) == (14, 7) and bands * rows <= exact.num_perm
    assert candidate_probability(np.float64(0.85), bands, rows) >= 0.995
    assert candidate_probability(np.float64(0.85), *NearDedupConfig(verify="none").bands_rows()) < 0.5  # 8 x 16
    with pytest.raises(ValueError, match="candidate_recall"):
        NearDedupConfig(threshold=0.1, num_perm=4, candidate_recall=0.99)  # 4 x 1 reaches 0.34


def test_exact_jaccard_is_the_jaccard_of_the_shingle_sets():
    base = _texts(60)
    a = base + ["", "Short", "x" * 3000, "one side empty"]
    b = [_edited(t, rate, i) for i, (t, rate) in enumerate(zip(base, np.linspace(0.0, 0.2, len(base))))]
    b += ["", "SHORT", "x" * 2999, ""]
    b[3] = "  " + base[3].upper().replace(" ", "\n\t ")  # case and whitespace only: the same shingles
    got = exact_jaccard(pa.array(a), pa.array(b), MinHashConfig())
    want = [_jaccard(x, y) for x, y in zip(a, b)]
    assert np.allclose(got, want, atol=1e-12), np.abs(got - np.array(want)).max()
    assert got[3] == 1.0 and 0.6 < min(got[:60])  # the edits span the threshold
    assert ((got[:60] >= 0.85) & (got[:60] < 1.0)).any() and (got[:60] < 0.85).any()


def test_bucket_candidates_check_every_distinct_text_and_point_copies_to_the_first():
    # one bucket (band 0, key 7): texts h1 (nodes 10, 30), h2 (20), h3 (40); another bucket holds one node
    rows = pa.table({NODE: pa.array([30, 10, 20, 40, 50], pa.uint64()), "_band": pa.array([0, 0, 0, 0, 1], pa.int16()),
                     "_key": pa.array([7, 7, 7, 7, 7], pa.uint64()), HASH: pa.array([1, 1, 2, 3, 1], pa.uint64()),
                     PART: [0] * 5})
    got = bucket_candidates(64)(rows).to_pylist()
    pairs = {(r[A], r[B]): r[IDENTICAL] for r in got}
    assert pairs == {(30, 10): True, (20, 10): False, (40, 10): False, (40, 20): False}
    capped = bucket_candidates(2)(rows).to_pylist()  # above 2 distinct texts: each against the first 2 only
    assert {(r[A], r[B]) for r in capped} == {(30, 10), (20, 10), (40, 10), (40, 20)}
    four = rows.append_column("x", pa.array([0] * 5)).drop_columns(["x"])
    four = pa.concat_tables([four, pa.table({NODE: pa.array([60], pa.uint64()), "_band": pa.array([0], pa.int16()),
                                             "_key": pa.array([7], pa.uint64()), HASH: pa.array([4], pa.uint64()),
                                             PART: [0]})])
    capped = {(r[A], r[B]) for r in bucket_candidates(2)(four).to_pylist()}
    assert (60, 40) not in capped and {(60, 10), (60, 20)} <= capped  # text 4 meets the first two texts only


@pytest.fixture
def in_process():
    local.ACTIVE = True
    yield
    local.ACTIVE = False


def _build(tmp_path: Path, rows: list[dict], *sets: str) -> tuple[pa.Table, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f'input.paths=["{path}"]', f"output.dir={tmp_path / 'run'}", *sets])
    marked, extras = barrier.build(cfg, runtime.read_corpus(discover(cfg.input), cfg.input))
    return marked.table(), {k: v.table() for k, v in extras.items() if not isinstance(v, str)}


def test_near_duplicates_are_decided_by_their_exact_jaccard(tmp_path, in_process):
    base = _texts(40)
    rows = [{"id": f"d{i:02d}", "text": t} for i, t in enumerate(base)]
    variants = {}
    for i, t in enumerate(base):  # edits from Jaccard ~0.7 to ~0.95: the threshold falls among them
        v = _edited(t, 0.02 + 0.10 * (i % 8) / 7, seed=i)
        variants[f"v{i:02d}"] = (f"d{i:02d}", _jaccard(t, v))
        rows.append({"id": f"v{i:02d}", "text": v})
    assert sum(j >= 0.85 for _, j in variants.values()) >= 10 and sum(j < 0.85 for _, j in variants.values()) >= 10
    marked, extras = _build(tmp_path, rows)
    status = dict(zip(marked["id"].to_pylist(), marked["status"].to_pylist()))
    texts = {r["id"]: r["text"] for r in rows}
    sets = {i: _shingles(t) for i, t in texts.items()}

    def jaccard(a: str, b: str) -> float:
        return len(sets[a] & sets[b]) / len(sets[a] | sets[b])

    for v, (d, j) in variants.items():  # a near duplicate exactly when its Jaccard to some document says so
        twins = [o for o in texts if o != v and jaccard(v, o) >= 0.85]
        assert (status[v] == "near_duplicate") == bool(twins), (v, j, twins)
    pairs = extras[barrier.PAIRS]
    assert len(pairs) >= len(variants)
    for a, b, s in zip(pairs["id_a"].to_pylist(), pairs["id_b"].to_pylist(), pairs["similarity"].to_pylist()):
        assert s == pytest.approx(jaccard(a, b), abs=1e-12)
    clusters = extras[barrier.CLUSTERS]
    assert sorted(clusters["id"].to_pylist()) == sorted(texts)  # one row per input document
    sim = dict(zip(clusters["id"].to_pylist(), clusters["similarity"].to_pylist()))
    assert all(sim[v] >= 0.85 for v in variants if status[v] == "near_duplicate")

    # in a plan: the same decisions from the digest columns of the text pass, the texts read back by id
    cfg = load_config(None, [])
    kept = barrier.MinHashDigest(cfg)(pa.table({"id": list(texts), "text": list(texts.values()),
                                                "status": ["kept"] * len(texts)}))
    pq.write_table(kept, tmp_path / "kept.parquet")
    compact = runtime.read_parquet(tmp_path / "kept.parquet", ["id", *barrier.digest_columns(cfg)])
    decided, plan_extras = barrier.decide(cfg, compact, None,
                                          text=lambda cols: runtime.read_parquet(tmp_path / "kept.parquet", cols))
    decided = decided.table()
    assert dict(zip(decided["id"].to_pylist(), decided["status"].to_pylist())) == status
    assert "text" not in decided.column_names
    assert plan_extras[barrier.PAIRS].table().sort_by("id_a").equals(pairs.sort_by("id_a"))


def test_repeated_ids_are_set_aside_and_do_not_defeat_dedup(tmp_path, in_process, caplog):
    a, b, c = _texts(3)
    rows = [{"id": "x1", "text": a}, {"id": "x1", "text": a}, {"id": "x2", "text": a},
            {"id": 42, "text": b}, {"id": "42", "text": c}, {"id": "y", "text": c + " More."}]
    for method in ("near", "exact"):
        marked, _ = _build(tmp_path / method, rows, f'dedup.method="{method}"')
        got = sorted(zip(marked["id"].to_pylist(), marked["status"].to_pylist()))
        assert got == [("42", "duplicate_id"), ("42", "duplicate_id"), ("x1", "duplicate_id"),
                       ("x1", "duplicate_id"), ("x2", "kept"), ("y", "kept")], method
    assert "2 ids are carried by more than one row" in caplog.text and "'42' x 2" in caplog.text


def test_the_old_switches_name_the_new_one():
    for key in ("dedup.exact=false", "dedup.near.enabled=false"):
        with pytest.raises(UserError, match=r"renamed to dedup\.method"):
            load_config(None, [key])
    with pytest.raises(ValueError, match="dedup.method must be one of near, exact, off"):
        load_config(None, ['dedup.method="both"'])


def test_a_corpus_without_duplicates_keeps_every_row(tmp_path, in_process):
    texts: list[str] = []
    for t in _texts(40):  # real texts, none similar to another
        if len(texts) < 5 and all(_jaccard(t, u) < 0.5 for u in texts):
            texts.append(t)
    marked, extras = _build(tmp_path, [{"id": f"a{i}", "text": t} for i, t in enumerate(texts)])
    assert marked["status"].to_pylist() == ["kept"] * 5
    assert extras[barrier.CLUSTERS]["similarity"].null_count == 5
