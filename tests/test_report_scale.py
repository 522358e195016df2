"""report.html and `inspect` on the planner's layout, at a bounded cost.

A hand-made run directory as the default plan writes it (pure pyarrow, no Ray): RUN/clean/status=kept holds the
only text (with the MinHash digest columns), dedup, split and leakage hold decisions (ids, no text), tokenize ran
fused into pack (no RUN/tokenize) and the packed rows carry doc_ids, doc_offsets and doc_lens.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_report import CONFIG, T0, _mark, _rows, _write

from ray_jobs.cli import main as cli_main
from ray_jobs.config import load_config
from ray_jobs.report.checks import PASS, Check, run_checks
from ray_jobs.report.html import write_report
from ray_jobs.report.scan import MB, gather
from ray_jobs.report.summary import cluster_members, sample_rows
from ray_jobs.rundir import RunDir
from ray_jobs.rundir.manifest import write_manifest
from ray_jobs.rundir.stats import write_stats
from ray_jobs.steps import registry
from ray_jobs.steps.pack.ops import pack_split_rows
from ray_jobs.steps.registry import ROW, Step

SEQ_LEN = 64
LEAKED = 4  # train rows the leakage step drops: in clean and split, not in the final rows


def _tokens(text: str) -> int:
    return len(text.split())  # one token per word: the packed rows' doc_lens are checkable by hand


def make_default_run(root, final: pa.Table | None = None, *, config: str = CONFIG, row_group_rows: int | None = None):
    """clean (kept with digest columns, too_short) -> dedup, split, leakage (decisions) -> tokenize (fused: no
    folder) -> pack, with markers, stats.json and manifest.json. Three exact duplicates of doc/0001 (one cluster
    of 4) are dropped by dedup, LEAKED rows by leakage."""
    final = _rows(120) if final is None else final
    rep_text = final["text"][1].as_py()
    dups = pa.table({"id": [f"dup/{i}" for i in range(3)], "text": [rep_text] * 3, "label": ["spam"] * 3,
                     "lang": ["en"] * 3})
    leaks = _rows(LEAKED, prefix="leak").drop_columns(["split"])
    text_rows = pa.concat_tables([final.drop_columns(["split"]), dups, leaks])
    text_rows = text_rows.append_column("_sig", pa.array([[i, i + 1] for i in range(len(text_rows))],
                                                         pa.list_(pa.uint32())))
    root.mkdir(parents=True)
    (root / "config.toml").write_text(config)
    _write(root / "clean" / "status=kept", text_rows, files=2, row_group_rows=row_group_rows)
    _write(root / "clean" / "status=too_short", _rows(2, prefix="short").drop_columns(["split"]))

    ids = lambda t: t["id"].to_pylist()  # noqa: E731
    kept_ids = ids(final) + ids(leaks)
    nulls = lambda n: pa.nulls(n, pa.string())  # noqa: E731
    _write(root / "dedup" / "status=kept", pa.table({"id": kept_ids, "duplicate_of": nulls(len(kept_ids)),
                                                     "cluster_id": kept_ids}))
    _write(root / "dedup" / "status=exact_duplicate", pa.table({"id": ids(dups), "duplicate_of": ["doc/0001"] * 3,
                                                                "cluster_id": ["doc/0001"] * 3}))
    members = ["doc/0001", *ids(dups)]
    _write(root / "dedup" / "_clusters", pa.table({"id": members, "cluster_id": ["doc/0001"] * 4,
                                                   "kept": [True, False, False, False]}))
    _write(root / "dedup" / "_cluster_sizes", pa.table({"cluster_id": ["doc/0001"], "size": [4]}))
    split = final["split"].to_pylist() + ["train"] * LEAKED
    for s in ("train", "val", "test"):
        these = [i for i, x in zip(kept_ids, split) if x == s]
        _write(root / "split" / f"split={s}", pa.table({"id": these, "status": ["kept"] * len(these),
                                                         "cluster_id": these}))
    _write(root / "leakage" / "status=kept", pa.table({"id": ids(final), "cluster_id": ids(final),
                                                       "split": final["split"]}))
    _write(root / "leakage" / "status=leaked", pa.table({"id": ids(leaks), "cluster_id": ids(leaks),
                                                         "split": ["train"] * LEAKED}))
    n = [_tokens(t) for t in final["text"].to_pylist()]
    ids_of = [list(range(1, k + 1)) for k in n]
    token_rows = pa.table({"id": final["id"], "split": final["split"], "num_tokens": n, "input_ids": ids_of,
                           "labels": ids_of})
    packed = pack_split_rows(SEQ_LEN, 0, "split")(token_rows)
    for s in ("train", "val", "test"):
        _write(root / "pack" / f"split={s}", packed.filter(pc.equal(packed["split"], s)).drop_columns(["split"]))
    for step, t, output, pass_no in (("clean", T0, "rows", 1), ("dedup", T0 + 10, "decisions", 2),
                                     ("split", T0 + 11, "decisions", 2), ("leakage", T0 + 12, "decisions", 2),
                                     ("tokenize", T0 + 20, "drops", 3), ("pack", T0 + 20, "rows", 3)):
        _mark(root, step, t, output, pass_no)
    run = RunDir(root)
    write_stats(run)
    write_manifest(run)
    return root


def _checks(root) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in run_checks(root)}


def test_report_of_a_default_run_without_tokenize_rows(tmp_path):
    root = make_default_run(tmp_path / "run")
    assert not (root / "tokenize").exists()
    checks = _checks(root)
    assert {name: status for name, (status, _) in checks.items() if status != PASS} == {}
    where = "clean/status=kept with an id in leakage/status=kept"
    assert f"texts of 120 rows in {where}" in checks["no null or empty text / label"][1]  # not the 127 clean kept
    assert "3 exact and 0 near duplicates dropped of 127 rows" in checks["exact and near dedup done"][1]
    assert "split finished 1.0 s after dedup" in checks["split after dedup"][1]
    length = checks["output length distribution checked"][1]
    assert "over all 120 documents (packed rows" in length and "0 documents cut" in length  # max_length = 0

    data = gather(root)
    assert data.rows.rows == 120 and data.text.rows == 120 and data.text.coverage.complete
    per_split = {s: sum(n for (sp, _), n in data.rows.label_split.items() if sp == s) for s in ("train", "val", "test")}
    assert per_split == {"train": 96, "val": 12, "test": 12}  # the decisions' split, attached to the text rows
    assert data.tokens.rows == 120 and data.tokens.truncated == 0
    assert data.tokens.tokens.overall.total == sum(_tokens(t) for t in _rows(120)["text"].to_pylist())
    assert {r["id"] for r in data.rows.sample} <= set(_rows(120)["id"].to_pylist())  # never a dropped row
    assert all(r["text"].startswith("Document ") and r["split"] in ("train", "val", "test") for r in data.rows.sample)

    page = write_report(root).read_text()
    assert 'id="plot-tokens"' in page and "packed rows, `doc_lens`" in page and "all 0.0 MB of text scanned" in page


def test_truncation_is_not_recorded_without_token_rows(tmp_path):
    root = make_default_run(tmp_path / "run", config=CONFIG + "\n[tokenize]\nmax_length = 512\n")
    status, detail = _checks(root)["output length distribution checked"]
    assert status == PASS and "documents cut at tokenize.max_length: not recorded" in detail


def _long_rows(n: int) -> pa.Table:
    """n rows of ~1 kB of text each (so a few thousand make MBs), ids in a shuffled order."""
    rows = _rows(n)
    text = [t + " filler" * 140 for t in rows["text"].to_pylist()]
    order = sorted(range(n), key=lambda i: (i * 7919) % n)
    return rows.set_column(1, "text", pa.array(text)).take(pa.array(order))


def test_a_small_scan_cap_scans_a_sample_and_says_so(tmp_path):
    rows = _long_rows(3000)  # 3.5 MB of text in 26 row groups of up to 125 rows
    config = CONFIG + "\n[output]\nreport_scan_mb = 1\n"
    assert load_config(None, ["output.report_scan_mb=1"]).output.report_scan_mb == 1
    root = make_default_run(tmp_path / "run", rows, config=config, row_group_rows=125)
    data = gather(root)
    cov = data.text.coverage
    assert not cov.complete and cov.scanned_bytes <= 1 * MB and cov.total_bytes > 3 * MB
    said = f"a sample: scanned {cov.scanned_bytes / MB:.1f} MB of {cov.total_bytes / MB:.1f} MB of text"
    assert cov.describe().startswith(said)
    assert 0 < data.text.rows < 3000 and data.rows.rows == 3000  # the labels are still counted over every row
    assert sum(data.rows.label_split.values()) == 3000
    checks = _checks(root)
    for name in ("no null or empty text / label", "whitespace and Unicode normalised",
                 "output length distribution checked"):
        assert checks[name][0] == PASS and cov.describe() in checks[name][1], name
    assert "of the 3,000 rows in" in checks["no null or empty text / label"][1]
    assert "64 of 3,000 rows" in checks["random spot-check sample"][1]  # the spot check is over every row
    page = write_report(root).read_text()
    assert said in page[:page.index("</header>")]
    again = gather(root).text
    assert again.coverage == cov and again.rows == data.text.rows  # seeded: the same row groups every time
    (root / "config.toml").write_text(CONFIG + "\n[output]\nreport_scan_mb = 0\n")  # 0: everything
    everything = gather(root).text
    assert everything.coverage.complete and everything.rows == 3000


def test_inspect_of_a_decisions_folder_shows_the_texts(tmp_path, capsys):
    root = make_default_run(tmp_path / "run")
    rows = sample_rows(root / "dedup", "exact_duplicate", 5)
    rep_text = _rows(120)["text"][1].as_py()
    assert sorted(rows["id"].to_pylist()) == ["dup/0", "dup/1", "dup/2"]
    assert rows["text"].to_pylist() == [rep_text] * 3 and rows["lang"].to_pylist() == ["en"] * 3
    assert "_sig" not in rows.column_names  # the digest columns are not read
    assert cli_main(["inspect", str(root / "leakage"), "--reason", "leaked", "-n", "1"]) == 0
    assert "Document 0 of leak says" in capsys.readouterr().out
    assert cli_main(["inspect", str(root / "split"), "--reason", "val", "-n", "1"]) == 0  # the partition, not status
    out = capsys.readouterr().out
    assert "split=val" in out and "Document 8 of doc says" in out

    members, sims = cluster_members(root / "dedup", "largest")
    assert members["id"].to_pylist()[0] == "doc/0001" and len(members) == 4
    assert members["text"].to_pylist() == [rep_text] * 4 and sims == [1.0] * 4

    assert sample_rows(root / "clean", "too_short", 1)["text"][0].as_py().startswith("Document 0 of short")
    (root / "_SUCCESS.clean").unlink()
    with pytest.raises(ValueError, match="no step before it .* wrote rows with their text"):
        sample_rows(root / "dedup", "kept", 1)


def test_a_step_registered_with_a_check_is_in_the_checklist(tmp_path):
    root = make_default_run(tmp_path / "run")
    probe = Step(name="probe", section="probe", kind=ROW, doc="a step from outside", ops=lambda cfg: [],
                 check=lambda data: Check("probe checked", PASS, f"{data.rows.rows} final rows"), after="pack")
    registry.register(probe)
    try:
        assert _checks(root)["probe checked"] == (PASS, "120 final rows")
        registry.register(dataclasses.replace(probe, enabled=lambda cfg: False))
        assert "probe checked" not in _checks(root)  # off in this run's config and never finished
        _mark(root, "probe", T0 + 30, "drops", 3)
        assert _checks(root)["probe checked"][0] == PASS  # finished: checked whatever the config says now
    finally:
        registry.unregister("probe")
