"""Exact + near dedup as a Ray job on the committed sample (real 2-CPU local Ray): outputs, both connected
components paths, representatives, incremental runs against a saved index, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE

from ray_jobs.cli import main as cli_main
from ray_jobs.config import load_config
from ray_jobs.planner import run_pipeline
from ray_jobs.steps.dedup.minhash import MinHashConfig, shingle_set

pytestmark = pytest.mark.slow

PARQUET = SAMPLE / "parquet"


def _dedup(out: Path, input_path: Path = PARQUET, *extra: str) -> dict:
    cfg = load_config(None, [f"input.paths=[\"{input_path}\"]", f"output.dir={out}", "ray.progress_bars=false",
                             *extra])
    return run_pipeline(cfg, stages=("dedup",))


def _read(path: Path, columns=None) -> pa.Table:
    return pads.dataset(str(path), format="parquet", partitioning="hive").to_table(columns=columns)


def _clusters(run: Path) -> dict[str, str]:
    t = _read(run / "dedup" / "_clusters")
    return dict(zip(t["id"].to_pylist(), t["cluster_id"].to_pylist()))


@pytest.fixture(scope="module")
def fast_run(ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dedup_fast")
    _dedup(out)
    return out


def test_outputs_account_for_every_input_row(fast_run):
    rows = _read(fast_run / "dedup", ["id", "status", "duplicate_of", "cluster_id", "text"])
    inputs = pq.read_table(PARQUET, columns=["id"])["id"].to_pylist()
    assert sorted(rows["id"].to_pylist()) == sorted(inputs)
    clusters = _read(fast_run / "dedup" / "_clusters")
    assert sorted(clusters["id"].to_pylist()) == sorted(inputs)  # one row per input document
    kept = set(pc.filter(rows["id"], pc.equal(rows["status"], "kept")).to_pylist())
    assert set(pc.filter(clusters["id"], clusters["kept"]).to_pylist()) == kept
    statuses = set(rows["status"].to_pylist())
    assert statuses == {"kept", "exact_duplicate", "near_duplicate"}
    near = rows.filter(pc.equal(rows["status"], "near_duplicate"))
    assert set(near["duplicate_of"].to_pylist()) <= kept  # a near duplicate points at its cluster's kept row
    assert near["duplicate_of"].to_pylist() == near["cluster_id"].to_pylist()


def test_near_duplicates_are_similar_to_their_cluster(fast_run):
    rows = _read(fast_run / "dedup", ["id", "status", "cluster_id", "text"])
    cfg = MinHashConfig()
    sets = {i: shingle_set(t, cfg) for i, t in zip(rows["id"].to_pylist(), rows["text"].to_pylist())}
    members: dict[str, list[str]] = {}
    for i, c, s in zip(rows["id"].to_pylist(), rows["cluster_id"].to_pylist(), rows["status"].to_pylist()):
        if s != "exact_duplicate":
            members.setdefault(c, []).append(i)
    best = []
    for ids in members.values():
        for i in ids:  # the most similar other member: through chains a member may be far from the kept one
            others = [len(sets[i] & sets[j]) / len(sets[i] | sets[j]) if sets[i] | sets[j] else 1.0
                      for j in ids if j != i]
            if others:
                best.append(max(others))
    assert len(best) > 100
    assert sum(b >= 0.75 for b in best) / len(best) > 0.95, sorted(best)[:10]


def test_cluster_histogram_in_stats(fast_run):
    stats = json.loads((fast_run / "stats.json").read_text())["stages"]["dedup"]
    hist = stats["cluster_sizes"]
    sizes = _read(fast_run / "dedup" / "_cluster_sizes")["size"].to_pylist()
    assert sum(v for k, v in hist.items() if k != "1") == len(sizes)
    assert hist["1"] + sum(sizes) == stats["rows_out"] + stats["dropped"]["near_duplicate"]


def test_distributed_components_give_the_same_clusters_as_the_fast_path(fast_run, tmp_path, capsys):
    # through the CLI, on a Parquet input reduced to id and text, as a user would call it
    slim = tmp_path / "slim.parquet"
    pq.write_table(pq.read_table(PARQUET, columns=["id", "text"]), slim)
    out = tmp_path / "run"
    assert cli_main(["dedup", "--input", str(slim), "--output", str(out), "--set", "ray.progress_bars=false",
                     "--set", "dedup.near.cc_fast_path_max_edges=0"]) == 0
    assert _clusters(out) == _clusters(fast_run)
    capsys.readouterr()
    assert cli_main(["inspect", str(out / "dedup"), "--cluster", "largest"]) == 0
    shown = capsys.readouterr().out
    assert "representative" in shown and "jaccard=" in shown


def test_longest_representative(tmp_path, ray_local):
    _dedup(tmp_path, PARQUET, "dedup.near.representative=longest")
    rows = _read(tmp_path / "dedup", ["id", "status", "cluster_id", "text"])
    rows = rows.filter(pc.invert(pc.equal(rows["status"], "exact_duplicate")))
    members: dict[str, list[tuple[int, str]]] = {}
    for i, c, t in zip(rows["id"].to_pylist(), rows["cluster_id"].to_pylist(), rows["text"].to_pylist()):
        members.setdefault(c, []).append((-len(t), i))  # longest first, ties to the smallest id
    kept = pc.filter(rows["id"], pc.equal(rows["status"], "kept")).to_pylist()
    assert sorted(kept) == sorted(min(m)[1] for m in members.values())
    assert any(min(m)[1] != min(i for _, i in m) for m in members.values())  # it did change some choices


def test_incremental_run_against_a_saved_index(tmp_path, ray_local):
    table = pq.read_table(PARQUET, columns=["id", "text"]).sort_by("id")
    old, new = table.slice(0, 800), table.slice(800)
    # the new shard also re-posts ten old documents under new ids, and repeats one with a small edit
    copies = old.slice(100, 10)
    edited = old.slice(300, 1)
    extra = pa.table({"id": [f"new/{i}" for i in range(11)],
                      "text": copies["text"].to_pylist() + [edited["text"][0].as_py() + " Thanks!"]})
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    pq.write_table(old, tmp_path / "old" / "part.parquet")
    pq.write_table(pa.concat_tables([new, extra]), tmp_path / "new" / "part.parquet")
    _dedup(tmp_path / "run_old", tmp_path / "old")
    index = tmp_path / "run_old" / "dedup" / "_index"
    before = {p: p.stat().st_mtime_ns for p in index.rglob("*")}
    _dedup(tmp_path / "run_new", tmp_path / "new", f"dedup.near.index_from=[\"{index}\"]")
    assert {p: p.stat().st_mtime_ns for p in index.rglob("*")} == before  # the index is read, never rewritten
    rows = _read(tmp_path / "run_new" / "dedup", ["id", "status", "duplicate_of"])
    got = {i: (s, d) for i, s, d in zip(*(rows[c].to_pylist() for c in ("id", "status", "duplicate_of")))}
    old_text = {i: t.lower() for i, t in zip(old["id"].to_pylist(), old["text"].to_pylist())}
    for k, text in enumerate(extra["text"].to_pylist()):
        status, dup = got[f"new/{k}"]
        assert dup in old_text, k  # the indexed document stays the representative
        assert status == ("exact_duplicate" if old_text[dup] == text.lower() else "near_duplicate"), k
    assert got["new/10"][0] == "near_duplicate"
    old_ids = set(old_text)
    assert all(i not in got for i in old_ids)  # old documents are matched against, never re-emitted
    # the new run alone (no index) keeps those copies: they have no twin among the new documents
    _dedup(tmp_path / "run_alone", tmp_path / "new")
    alone = _read(tmp_path / "run_alone" / "dedup" / "status=kept", ["id"])["id"].to_pylist()
    assert {f"new/{k}" for k in range(11)} <= set(alone)


def test_index_with_other_settings_is_refused(fast_run, tmp_path, ray_local):
    index = fast_run / "dedup" / "_index"
    with pytest.raises(ValueError, match="other MinHash settings"):
        _dedup(tmp_path, PARQUET, f"dedup.near.index_from=[\"{index}\"]", "dedup.near.num_perm=64")
