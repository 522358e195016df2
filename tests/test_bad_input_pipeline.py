"""Integration: one folder holding every kind of unreadable input next to good rows, through the clean stage on
a real local Ray (2 CPUs). The job must finish, every bad record must land in `status=quarantined` with its file,
offset and reason, every good record in another status folder, and stats.json must balance."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from ray_jobs.config import load_config
from ray_jobs.planner import run_pipeline
from ray_jobs.rundir import RunDir
from ray_jobs.rundir.stats import run_stats
from ray_jobs.schema import RECORDS

# Long enough (> 50 words) and plain enough to pass the default quality rules.
LONG = [
    "The river ran slowly past the old mill, and the children who lived in the village below would often walk "
    "along its banks in the late afternoon, looking for smooth stones and listening to the water as it turned "
    "the great wooden wheel. Their parents had done the same when they were young, and they told stories about "
    "the miller who had worked there for more than forty years before the mill was finally closed.",
    "When the library opened its new reading room, the town council invited everyone to come and see the tall "
    "windows, the long oak tables and the shelves that reached almost to the ceiling. Many people said it was "
    "the most beautiful room they had ever seen, and within a few weeks it was full every evening with students, "
    "retired teachers and families who wanted a quiet place to read together after dinner.",
    "A good recipe for bread needs only flour, water, salt and yeast, but the baker must still pay attention to "
    "the temperature of the kitchen and the time the dough is left to rise. On a cold morning it can take twice "
    "as long as usual, and a patient baker learns to watch the dough rather than the clock, pressing it gently "
    "with a finger to see whether it is ready to be shaped and placed in the oven.",
]


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))


def _jsonl(*records: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def build_inputs(root: Path) -> tuple[set[str], dict[str, tuple[int, str]]]:
    """Write the folder; return the good ids and, per bad file, (offset, expected _error substring)."""
    root.mkdir()
    (root / "good.jsonl").write_bytes(_jsonl({"text": LONG[0]}, {"text": LONG[1], "topic": "town"}))
    (root / "malformed.jsonl").write_bytes(
        _jsonl({"text": "alpha beta"}) + b'{"text": "cut off\n' + _jsonl({"text": LONG[2]}))
    (root / "badutf8.jsonl").write_bytes(_jsonl({"text": "gamma delta"}) + b'{"text": "caf\xe9"}\n')
    (root / "lines.txt").write_bytes(b"first good line\nbad \xc3\x28 line\nthird good line\n")
    (root / "empty.jsonl").write_bytes(b"")
    (root / "rows.csv").write_text(f'text,topic\n"{LONG[0]}",mill\nonly one field\nsecond csv row,misc\n')
    _tar(root / "truncated.tar", [("a.txt", LONG[1].encode()), ("b.txt", b"short b"), ("c.txt", b"c" * 1000)])
    with tarfile.open(root / "truncated.tar") as tar:
        last = tar.getmembers()[-1]
    data = (root / "truncated.tar").read_bytes()
    (root / "truncated.tar").write_bytes(data[:last.offset_data + 300])  # cut inside c.txt
    _tar(root / "badjson.tar", [("a.txt", b"tar sample a"), ("a.json", b'{"url": "http://a"}'),
                                ("b.txt", b"tar sample b"), ("b.json", b'{"url": nope}'),
                                ("c.txt", LONG[2].encode())])
    pq.write_table(pa.table({"text": [LONG[1], "parquet short"]}), root / "good.parquet")
    pq.write_table(pa.table({"body": ["no text column here"]}), root / "notext.parquet")
    (root / "corrupt.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)
    # issue 14: a BOM before the first record; a field over csv's 131,072-character limit; a list as the text; a
    # .zst cut inside its third frame (10 records a frame: the first 20 are whole); a .gz expanding past
    # input.max_decompressed_mb = 1 (set below), ten 100 kB records fit in the first MB
    (root / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + _jsonl({"text": LONG[2]}, {"text": "after the bom"}))
    (root / "bigfield.csv").write_text(f'text,n\n"{" ".join([LONG[0]] * 500)}",1\nnext row,2\n')
    (root / "types.jsonl").write_bytes(_jsonl({"text": LONG[1]}, {"text": ["a", "list"]}, {"text": "third"}))
    frames = [zstandard.ZstdCompressor().compress(_jsonl(*({"text": f"zst doc {i}"} for i in range(k, k + 10))))
              for k in range(0, 50, 10)]
    (root / "cut.jsonl.zst").write_bytes(b"".join(frames[:2]) + frames[2][:len(frames[2]) // 2])
    line = _jsonl({"text": " ".join([LONG[1]] * 250)})
    (root / "bomb.jsonl.gz").write_bytes(gzip.compress(line * 40, mtime=0))
    bomb_kept = (1024 * 1024) // len(line)

    good = {"in/good.jsonl:1", "in/good.jsonl:2", "in/malformed.jsonl:1", "in/malformed.jsonl:3",
            "in/badutf8.jsonl:1", "in/lines.txt:1", "in/lines.txt:3", "in/rows.csv:2", "in/rows.csv:4",
            "in/truncated.tar:a", "in/truncated.tar:b", "in/badjson.tar:a", "in/badjson.tar:c",
            "in/good.parquet:0", "in/good.parquet:1", "in/bom.jsonl:1", "in/bom.jsonl:2", "in/bigfield.csv:2",
            "in/bigfield.csv:3", "in/types.jsonl:1", "in/types.jsonl:3"}
    good |= {f"in/cut.jsonl.zst:{i}" for i in range(1, 21)} | {f"in/bomb.jsonl.gz:{i}" for i in range(1, bomb_kept + 1)}
    bad = {
        "in/malformed.jsonl": (2, "malformed JSON"),
        "in/badutf8.jsonl": (2, "invalid UTF-8 at byte 13 of the line"),
        "in/lines.txt": (2, "invalid UTF-8 at byte 4 of the line"),
        "in/empty.jsonl": (0, "file is empty (0 bytes)"),
        "in/rows.csv": (3, "expected 2 fields (text, topic), found 1"),
        "in/truncated.tar": (2, "tar shard unreadable from sample 'c'"),
        "in/badjson.tar": (1, "b.json is not valid JSON"),
        "in/notext.parquet": (0, "Parquet file has no 'text' column"),
        "in/corrupt.parquet": (-1, "unreadable as parquet"),
        "in/types.jsonl": (2, "'text' is list ([\"a\", \"list\"]), expected a string"),
        "in/cut.jsonl.zst": (21, "zstd stream ends early after line 20"),
        "in/bomb.jsonl.gz": (bomb_kept + 1, "input.max_decompressed_mb = 1"),
    }
    return good, bad


def read_folder(folder: Path) -> pa.Table:
    files = sorted(folder.rglob("*.parquet"))
    assert files, f"no Parquet files in {folder}"
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bad_input_is_quarantined_and_the_job_finishes(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray, never a cluster this machine happens to know
    # Alone, run_pipeline starts a 2-CPU Ray and must shut it down; after a test that used conftest's session
    # `ray_local`, it joins that one and leaves it to the fixture.
    was_running = ray.is_initialized()
    good_ids, bad_files = build_inputs(tmp_path / "in")
    run = tmp_path / "run"
    cfg = load_config(None, [f"input.paths=['{tmp_path / 'in'}']", f"output.dir='{run}'", "ray.num_cpus=2",
                             "ray.progress_bars=false", "clean.allowed_langs=[]", "input.max_decompressed_mb=1"])
    try:
        stats = run_pipeline(cfg, stages=("clean",))
        assert ray.is_initialized() == was_running, "run_pipeline must shut down the Ray it started, and only it"
    finally:
        if ray.is_initialized() and not was_running:
            ray.shutdown()

    stage = run / "clean"
    folders = sorted(p.name for p in stage.iterdir() if p.is_dir())
    assert "status=quarantined" in folders and len(folders) >= 2, folders

    q = read_folder(stage / "status=quarantined").to_pylist()
    assert len(q) == len(bad_files) == 12
    assert sorted(r["source"] for r in q) == sorted(bad_files)
    for r in q:
        offset, reason = bad_files[r["source"]]
        path = str(tmp_path / r["source"])
        # tar samples are keyed by their member key ('c', 'b'), every other record by its offset
        locator = {"in/truncated.tar": "c", "in/badjson.tar": "b"}.get(r["source"], offset)
        assert r["_offset"] == offset and r["id"] == f"{r['source']}:{locator}", r
        assert r["_error"].startswith(f"{path} @ {offset}: ") and reason in r["_error"], r["_error"]

    others = [read_folder(stage / f) for f in folders if f != "status=quarantined"]
    rows = [r for t in others for r in t.to_pylist()]
    assert sorted(r["id"] for r in rows) == sorted(good_ids)
    assert all(r["_error"] is None for r in rows)
    assert {r["text"] for r in rows} >= set(LONG)  # the good rows' text arrived whole
    kept = read_folder(stage / "status=kept")["id"].to_pylist()
    assert {"in/good.jsonl:1", "in/good.jsonl:2", "in/malformed.jsonl:3", "in/badjson.tar:c"} <= set(kept)

    on_disk = json.loads((run / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    s = on_disk["stages"]["clean"]
    assert s["quarantined"] == 12 and s["rows_in"] == len(good_ids) + 12
    assert s["rows_in"] == s["rows_out"] + sum(s["dropped"].values()) + s["quarantined"]
    assert s["rows_out"] == len(kept) and on_disk["invariant_ok"] is True
    assert (run / "_SUCCESS.clean").is_file()

    # rows_in is the readers' own count (`_records`), not the folders' total: a kept row lost after the reader
    # (deleted here from its file) breaks the invariant instead of lowering rows_in with it
    victim = next(f for f in sorted((stage / "status=kept").glob("*.parquet"))
                  if pq.read_table(f)[RECORDS].null_count > 0)
    t = pq.read_table(victim)
    lost = t[RECORDS].to_pylist().index(None)
    pq.write_table(pa.concat_tables([t.slice(0, lost), t.slice(lost + 1)]), victim)
    after = run_stats(RunDir(run))
    assert after["stages"]["clean"]["rows_in"] == s["rows_in"]
    assert after["stages"]["clean"]["rows_out"] == s["rows_out"] - 1
    assert after["stages"]["clean"]["invariant_ok"] is False and after["invariant_ok"] is False
