"""report.html, the dataset checklist and manifest.json.

Checks on small hand-made run directories (pure pyarrow, no Ray), each shown to fail on the defect it is for;
the page of the real sample run (the session's `sample_run`); and that page in a real headless Chromium.
"""

from __future__ import annotations

import json
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.report.checks import FAIL, PASS, SKIP, WARN, run_checks
from ray_jobs.report.html import write_report
from ray_jobs.report.scan import LENGTH_EDGES, SPOT_CHECK_ROWS, Histogram, gather, label_column
from ray_jobs.rundir import RunDir
from ray_jobs.rundir.manifest import write_manifest
from ray_jobs.rundir.stats import write_stats
from ray_jobs.steps.clean.quality import REASONS

LABELS = ("ham", "spam", "book")
T0 = 1_700_000_000.0
CONFIG = f"""
[clean]
allowed_langs = ["en"]

[clean.normalize]
unicode_form = "NFC"
collapse_whitespace = true

[clean.quality]
enabled = {json.dumps(list(REASONS))}

[dedup]
method = "near"

[dedup.near]
threshold = 0.85

[split]
train = 0.8
val = 0.1
test = 0.1
seed = 0
stratify_by = "label"
group_by = "id"

[labels]
enabled = false
label_column = "label"
"""
PLOTS_OF_THE_SAMPLE = ("drops", "labels", "chars", "tokens", "languages", "clusters")


def _rows(n: int, prefix: str = "doc") -> pa.Table:
    """n labelled rows; row i goes to train (i % 10 < 8), val (8) or test (9), so every split holds each label
    in the same share."""
    return pa.table({
        "id": [f"{prefix}/{i:04d}" for i in range(n)],
        "text": [f"Document {i} of {prefix} says " + " ".join(f"word{j}" for j in range(3 + i % 40)) for i in range(n)],
        "label": [LABELS[i % 3] for i in range(n)],
        "lang": ["en"] * n,
        "split": ["train" if i % 10 < 8 else "val" if i % 10 == 8 else "test" for i in range(n)],
    })


def _write(folder: Path, table: pa.Table, files: int = 1, row_group_rows: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(table) // files)
    for k in range(files):
        pq.write_table(table.slice(k * step, step), folder / f"part-{k}.parquet", row_group_size=row_group_rows)


def _mark(root: Path, stage: str, finished: float, output: str = "rows", pass_no: int = 0) -> None:
    (root / f"_SUCCESS.{stage}").write_text(json.dumps({"fingerprint": stage, "finished": finished,
                                                         "output": output, "pass": pass_no}))


def _write_split(root: Path, rows: pa.Table) -> None:
    for split in ("train", "val", "test"):
        part = rows.filter(pa.compute.equal(rows["split"], split)).drop_columns(["split"])
        _write(root / "split" / f"split={split}", part)


def make_run(root: Path, final: pa.Table | None = None, *, dedup_at: float = T0 + 10, split_at: float = T0 + 20,
             config: str = CONFIG) -> Path:
    """clean (kept + too_short) -> dedup (kept + 3 exact duplicates, near-dup cluster sizes) -> split, as a run
    writes them, with stats.json and manifest.json."""
    final = _rows(120) if final is None else final
    dups = _rows(3, prefix="dup").drop_columns(["split"])
    kept = final.drop_columns(["split"])
    root.mkdir(parents=True)
    (root / "config.toml").write_text(config)
    _write(root / "clean" / "status=kept", pa.concat_tables([kept, dups]))
    _write(root / "clean" / "status=too_short", _rows(2, prefix="short").drop_columns(["split"]))
    _write(root / "dedup" / "status=kept", kept)
    _write(root / "dedup" / "status=exact_duplicate", dups)
    _write(root / "dedup" / "_cluster_sizes", pa.table({"cluster_id": ["doc/0001", "doc/0002"], "size": [2, 3]}))
    _write_split(root, final)
    for stage, t in (("clean", T0), ("dedup", dedup_at), ("split", split_at)):
        _mark(root, stage, t)
    run = RunDir(root)
    write_stats(run)
    write_manifest(run)
    return root


def _checks(root: Path) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in run_checks(root)}


def test_every_check_passes_on_a_sound_run(tmp_path):
    checks = _checks(make_run(tmp_path / "run"))
    assert {name: status for name, (status, _) in checks.items()} == {
        "no null or empty text / label": PASS, "whitespace and Unicode normalised": PASS,
        "quality filters applied": PASS, "exact and near dedup done": PASS, "split after dedup": PASS,
        "label distribution checked": PASS, "output length distribution checked": PASS,
        "random spot-check sample": PASS, "stats.json recomputed from the files": PASS,
        "versioned with a manifest": PASS}
    assert "120 rows in split" in checks["no null or empty text / label"][1]
    assert "3 exact and 0 near duplicates dropped of 123 rows" in checks["exact and near dedup done"][1]
    assert "split finished 10.0 s after dedup" in checks["split after dedup"][1]


def test_null_empty_and_blank_texts_and_labels_fail(tmp_path):
    rows = _rows(120)
    text = rows["text"].to_pylist()
    text[5], text[6], text[7] = None, "", " \n\t"
    label = rows["label"].to_pylist()
    label[9] = None
    rows = rows.set_column(1, "text", pa.array(text)).set_column(2, "label", pa.array(label))
    status, detail = _checks(make_run(tmp_path / "run", rows))["no null or empty text / label"]
    assert status == FAIL
    assert "1 null and 2 empty or whitespace-only texts of 120 rows" in detail and "'label': 1 null" in detail


def test_texts_the_normaliser_would_change_fail(tmp_path):
    rows = _rows(120)
    text = rows["text"].to_pylist()
    text[3] = "two  spaces"  # whitespace run
    text[4] = "cafe\u0301 au lait"  # decomposed é: NFC composes it
    text[5] = "zero\u200bwidth"  # invisible character
    rows = rows.set_column(1, "text", pa.array(text))
    status, detail = _checks(make_run(tmp_path / "run", rows))["whitespace and Unicode normalised"]
    assert status == FAIL
    assert detail.startswith("3 of 120 texts change") and "doc/0003, doc/0004, doc/0005" in detail


def test_split_before_dedup_fails_and_a_missing_split_warns(tmp_path):
    status, detail = _checks(make_run(tmp_path / "early", dedup_at=T0 + 20, split_at=T0 + 10))["split after dedup"]
    assert status == FAIL and "before dedup" in detail
    root = make_run(tmp_path / "no_split")
    (root / "_SUCCESS.split").unlink()
    assert _checks(root)["split after dedup"][0] == WARN


def test_quality_and_dedup_checks_follow_the_config(tmp_path):
    config = CONFIG.replace(json.dumps(list(REASONS)), json.dumps(list(REASONS[:-2]))).replace(
        'method = "near"', 'method = "exact"')
    checks = _checks(make_run(tmp_path / "run", config=config))
    status, detail = checks["quality filters applied"]
    assert status == WARN and f"{len(REASONS) - 2} of {len(REASONS)} rules on" in detail
    assert detail.endswith("off: duplicate_ngrams, no_stop_words")  # the rules on by default that were turned off
    assert checks["exact and near dedup done"][0] == WARN
    root = make_run(tmp_path / "unclean")
    (root / "_SUCCESS.clean").unlink()
    assert _checks(root)["quality filters applied"][0] == FAIL


def test_rare_class_and_split_drift_warn(tmp_path):
    rows = _rows(300)
    label = rows["label"].to_pylist()
    label[8] = "rare"  # 1 of 300 rows: 0.33 %
    split = rows["split"].to_pylist()
    for i in range(0, 300, 30):  # 10 more 'ham' rows into test: its ham share rises from 33 % to ~47 %
        split[i] = "test"
    rows = rows.set_column(2, "label", pa.array(label)).set_column(4, "split", pa.array(split))
    status, detail = _checks(make_run(tmp_path / "run", rows))["label distribution checked"]
    assert status == WARN
    assert "'rare' is 0.33% of the rows" in detail and "test has 'ham' at" in detail


def test_manifest_catches_a_changed_a_lost_and_an_unlisted_file(tmp_path):
    root = make_run(tmp_path / "run")
    manifest = json.loads((root / "manifest.json").read_text())
    splits = ("train", "val", "test")
    assert {f["path"] for f in manifest["files"]} == {f"split/split={s}/part-0.parquet" for s in splits}
    assert sum(f["rows"] for f in manifest["files"]) == 120 and manifest["final_stage"] == "split"
    assert manifest["config_fingerprint"] and manifest["stages"]["split"]["finished"] == T0 + 20

    train = root / "split" / "split=train" / "part-0.parquet"
    table = pq.read_table(train)
    pq.write_table(table.set_column(1, "text", pa.array([t.upper() for t in table["text"].to_pylist()])), train)
    status, detail = _checks(root)["versioned with a manifest"]
    assert status == FAIL and "changed split/split=train/part-0.parquet" in detail and "sha256" in detail

    (root / "split" / "split=val" / "part-0.parquet").unlink()
    shutil.copy(train, root / "split" / "split=test" / "part-1.parquet")
    status, detail = _checks(root)["versioned with a manifest"]
    assert "missing split/split=val/part-0.parquet" in detail and "not listed split/split=test/part-1.parquet" in detail
    (root / "manifest.json").unlink()
    assert _checks(root)["versioned with a manifest"][0] == FAIL


def test_stats_json_that_no_longer_matches_the_files_fails(tmp_path):
    root = make_run(tmp_path / "run")
    _write(root / "dedup" / "status=near_duplicate", _rows(4, prefix="late").drop_columns(["split"]))
    status, detail = _checks(root)["stats.json recomputed from the files"]
    assert status == FAIL and "dedup" in detail


def test_spot_check_sample_does_not_depend_on_file_layout(tmp_path):
    one, three = make_run(tmp_path / "one", _rows(500)), make_run(tmp_path / "three", _rows(500))
    for split in ("train", "val", "test"):  # the same rows in three files instead of one
        folder = three / "split" / f"split={split}"
        table = pq.read_table(folder / "part-0.parquet")
        (folder / "part-0.parquet").unlink()
        _write(folder, table, files=3)
    sample_one = [row["id"] for row in gather(one).rows.sample]
    assert len(sample_one) == SPOT_CHECK_ROWS == len(set(sample_one))
    assert sample_one == [row["id"] for row in gather(three).rows.sample]


def test_length_histogram_bins_and_quantile():
    h = Histogram()
    h.add(pa.array([0, 1, 10, 100, 1000, 10**8]).to_numpy())
    assert h.n == 6 and h.max == 10**8 and h.counts[0] == 2 and h.counts[-1] == 1  # 0 and 10^8 clipped in
    assert h.quantile(0.5) == LENGTH_EDGES[9]  # the 3rd value (10) lies in [10, 13.3)


def test_label_column_comes_from_the_config_or_the_rows():
    labels_on = {"labels": {"enabled": True, "label_column": "topic"}, "split": {"stratify_by": ""}}
    assert label_column(labels_on, {"id", "text"}) == "topic"  # relied on: the checklist fails on its absence
    default = {"labels": {"enabled": False, "label_column": "label"}, "split": {"stratify_by": ""}}
    assert label_column(default, {"id", "text"}) is None  # every config names one: pretraining text has none
    assert label_column(default, {"id", "text", "label"}) == "label"
    assert label_column({"split": {"stratify_by": "category"}}, {"label"}) == "label"
    assert label_column({"split": {"stratify_by": "category"}}, {"id"}) == "category"


def add_labels_stage(root: Path, suspects: int = 40) -> None:
    """What `ray-jobs labels` adds after split: status=kept|label_issue, `_issues` (ranked), `_summary.json`."""
    rows = pa.concat_tables([pq.read_table(root / "split" / f"split={s}").append_column(
        "split", pa.array([s] * len(pq.read_table(root / "split" / f"split={s}")))) for s in ("train", "val", "test")])
    issue = [i % 3 == 0 and i < 3 * suspects for i in range(len(rows))]
    _write(root / "labels" / "status=kept", rows.filter(pa.array([not x for x in issue])))
    flagged = rows.filter(pa.array(issue))
    _write(root / "labels" / "status=label_issue", flagged)
    n = len(flagged)
    ranks = [(i * 7) % n + 1 for i in range(n)]  # a permutation of 1..n, not in file order
    _write(root / "labels" / "_issues", pa.table({
        "id": flagged["id"], "label": flagged["label"], "predicted_label": pa.array(["spam"] * n),
        "p_given": pa.array([r / (2 * n) for r in ranks], pa.float32()),
        "quality": pa.array([r / (2 * n) for r in ranks], pa.float32()), "rank": pa.array(ranks, pa.int64()),
        "text": flagged["text"]}), files=2)
    (root / "labels" / "_summary.json").write_text(json.dumps(
        {"label_column": "label", "issues": n, "filter_by": "prune_by_noise_rate", "oof_accuracy": 0.91,
         "thresholds": {"ham": 0.61, "spam": 0.58, "book": 0.66}}))
    _mark(root, "labels", T0 + 30)
    write_stats(RunDir(root))
    write_manifest(RunDir(root))


def add_ingest(root: Path) -> None:
    """What `ray-jobs ingest` writes: RUN/ingest/<modality>/status=*/ with asset columns."""
    def rows(prefix: str, n: int) -> pa.Table:
        return pa.table({"id": [f"{prefix}{i}" for i in range(n)], "text": [f"a photo of thing {i}" for i in range(n)],
                         "image": pa.array([b"\x89PNG" * 10] * n)})
    _write(root / "ingest" / "image" / "status=kept", rows("img", 5))
    _write(root / "ingest" / "image" / "status=quarantined", rows("bad", 2))
    _write(root / "ingest" / "pdf" / "status=kept", rows("page", 3))
    _write(root / "ingest" / "pdf" / "status=empty_page", rows("blank", 1))


def test_label_issues_and_ingest_sections(tmp_path):
    root = make_run(tmp_path / "run")
    add_labels_stage(root)
    add_ingest(root)
    write_manifest(RunDir(root))
    page = write_report(root).read_text()
    assert 'id="plot-issues"' in page and 'id="plot-ingest"' in page
    issues = page[page.index('<section id="label-issues">'):page.index('<section id="ingest">')]
    ranks = [int(cell.split("<")[0]) for cell in issues.split('<tr><td class="num">')[1:]]
    assert ranks == list(range(1, 26))  # the 25 most suspect, in rank order, from two files
    assert "oof_accuracy" in issues and "prune_by_noise_rate" in issues
    checks = _checks(root)
    assert checks["versioned with a manifest"][0] == PASS  # the ingested kept rows are final files too
    assert "in labels/status=kept" in checks["no null or empty text / label"][1]  # labels ran last


def test_a_labels_stage_that_flagged_nothing_and_one_of_another_layout(tmp_path):
    root = make_run(tmp_path / "run")
    add_labels_stage(root)
    for f in (root / "labels" / "_issues").glob("*.parquet"):
        f.unlink()
    assert "The labels stage flagged no row." in write_report(root).read_text()
    _write(root / "labels" / "_issues", pa.table({"id": ["doc/0001"], "score": [0.1]}))
    with pytest.raises(ValueError, match=r"lacks columns \['label', 'predicted_label', 'p_given', 'quality', 'rank'"):
        gather(root)


def test_an_ingest_only_run_skips_the_text_pipeline_checks(tmp_path):
    root = tmp_path / "ingest_run"
    add_ingest(root)
    write_manifest(RunDir(root))
    page = write_report(root).read_text()
    assert 'id="plot-ingest"' in page and 'id="absent-stages"' in page and 'id="absent-labels"' in page
    checks = _checks(root)
    for name in ("quality filters applied", "exact and near dedup done", "split after dedup"):
        assert checks[name][0] == SKIP
    assert checks["no null or empty text / label"][0] == PASS and "8 rows in ingest/image" in \
        checks["no null or empty text / label"][1]
    assert checks["versioned with a manifest"][0] == PASS


class _WellFormed(HTMLParser):
    """Every non-void element closed in order; collects ids, tags and attribute values."""
    VOID = frozenset({"meta", "br", "img", "hr", "input", "link", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.tags: set[str] = set()
        self.values: list[str] = []

    def handle_starttag(self, tag, attrs):
        self._attrs(tag, attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self._attrs(tag, attrs)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def _attrs(self, tag, attrs):
        self.tags.add(tag)
        self.ids += [v for k, v in attrs if k == "id"]
        self.values += [v for k, v in attrs if k in ("src", "href", "xlink:href")]


def test_the_page_is_well_formed_self_contained_and_deterministic(tmp_path):
    root = make_run(tmp_path / "run")
    add_labels_stage(root)
    page = write_report(root).read_text()
    assert page.startswith("<!DOCTYPE html>")
    parser = _WellFormed()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert len(parser.ids) == len(set(parser.ids)), "ids repeat across the inline SVGs"
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    assert all(v.startswith("#") for v in parser.values), "only in-page references: nothing is fetched"
    assert "@import" not in page and "url(http" not in page
    again = write_report(root).read_text()
    strip = [line for line in page.splitlines() if "report written" not in line]
    assert strip == [line for line in again.splitlines() if "report written" not in line]


# --------------------------------------------------------------------------------- the real sample run


@pytest.mark.slow
def test_report_of_the_sample_run(sample_run):
    page = (sample_run / "report.html").read_text()
    for key in PLOTS_OF_THE_SAMPLE:
        assert f'<figure id="plot-{key}">' in page, key
    assert 'id="absent-label-issues"' in page and 'id="absent-ingest"' in page and 'id="packing"' in page
    assert {c.name: c.detail for c in run_checks(sample_run) if c.status != PASS} == {}
    start = time.perf_counter()
    write_report(sample_run)
    # about 1 s here (4 MB sample, 2 cores); the bound only catches a report that stopped streaming
    assert time.perf_counter() - start < 15


def _chrome():
    binary, driver = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not (binary.exists() and driver.exists()):
        pytest.skip(f"needs {binary} and {driver} (`./dev.sh test` apt-installs Debian's chromium and "
                    "chromium-driver; where that fails, e.g. Ubuntu's snap-only chromium, install them by hand)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(driver)), options=options)


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(sample_run, tmp_path):
    from selenium.webdriver.common.by import By

    extra = make_run(tmp_path / "run")
    add_labels_stage(extra)
    add_ingest(extra)
    write_manifest(RunDir(extra))
    pages = {write_report(sample_run): PLOTS_OF_THE_SAMPLE, write_report(extra): ("issues", "ingest", "drops")}
    driver = _chrome()
    try:
        for page, plots in pages.items():
            driver.get(page.as_uri())
            assert driver.title == f"ray-jobs report: {page.parent.name}"
            rows = driver.find_elements(By.CSS_SELECTOR, "#checklist tr.check")
            assert len(rows) == 10
            assert {r.find_element(By.CSS_SELECTOR, ".badge").text for r in rows} <= {PASS, FAIL, WARN, SKIP}
            for key in plots:
                svg = driver.find_element(By.CSS_SELECTOR, f"#plot-{key} svg")
                assert svg.size["width"] > 300 and svg.size["height"] > 100, (key, svg.size)
                drawn = driver.execute_script(
                    "const s = arguments[0], b = s.getBBox();"
                    "return [s.querySelectorAll('path[d]').length, b.width, b.height];", svg)
                assert drawn[0] > 20 and drawn[1] > 100 and drawn[2] > 50, (key, drawn)
            sample = driver.find_elements(By.CSS_SELECTOR, "#spot-check details tbody tr")
            assert len(sample) == SPOT_CHECK_ROWS
            severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert severe == [], severe
    finally:
        driver.quit()
