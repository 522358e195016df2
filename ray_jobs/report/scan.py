"""What the checklist and report.html need from a run directory, read from its files alone ("stats are data").

Parquet is scanned in batches of BATCH_ROWS rows over only the columns needed, and only aggregates are kept
(counts, fixed-bin length histograms, a 64-row sample), so memory does not grow with the corpus.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ray_jobs import schema
from ray_jobs.rundir import INGEST, MANIFEST, RunDir
from ray_jobs.rundir.manifest import config_fingerprint, file_entries, final_dirs, final_stage, ingest_kept_dirs
from ray_jobs.rundir.stats import partition_counts, run_stats
from ray_jobs.steps.split.ops import split_hashes
from ray_jobs.steps.clean.normalize import NormalizeConfig, normalize_text

# 4096 documents of ~5 kB are ~20 MB of text in memory at a time.
BATCH_ROWS = 4096
# Length histograms: 8 log-spaced bins per decade from 1 to 10^7 (characters or tokens). A 0-length text falls in
# the first bin (the checklist counts empty texts on its own), anything longer than 10^7 in the last.
LENGTH_EDGES = 10 ** np.arange(0, 7.001, 0.125)
SPOT_CHECK_ROWS = 64
# The spot check's own seed: split assigns rows by xxh3_64(id, split.seed), so the smallest hashes under that
# seed would all be train rows (h / 2^64 < 0.9).
SPOT_CHECK_SEED = 0x5EED_C4EC
SPOT_CHECK_CHARS = 2000  # of each sampled text kept for the page
TOP_ISSUES = 25
LANG = "lang"  # the language column of the clean stage (stages/clean.py)
LABEL = "label"  # the label column when the config names none
NO_SPLIT, NULL_LABEL = "all", "(null)"
# The labels stage's side tables (jobs/labels.py): the ranked suspects (id, label, predicted_label, p_given,
# quality, rank, text) and the summary of what it decided with.
ISSUES_DIR = Path("labels") / "_issues"
ISSUE_COLUMNS = ("id", "label", "predicted_label", "p_given", "quality", "rank", "text")
LABELS_SUMMARY = Path("labels") / "_summary.json"


@dataclass
class Histogram:
    """Lengths in LENGTH_EDGES bins, with the exact count, sum and maximum."""
    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(LENGTH_EDGES) - 1, np.int64))
    n: int = 0
    total: int = 0
    max: int = 0

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        bins = np.clip(np.searchsorted(LENGTH_EDGES, values, side="right") - 1, 0, len(self.counts) - 1)
        self.counts += np.bincount(bins, minlength=len(self.counts))
        self.n += len(values)
        self.total += int(values.sum())
        self.max = max(self.max, int(values.max()))

    def quantile(self, q: float) -> float:
        """An upper bound of the q-quantile: its bin's upper edge (at most +33 %), or the maximum if smaller."""
        if not self.n:
            return 0.0
        return min(float(LENGTH_EDGES[1:][np.searchsorted(np.cumsum(self.counts), q * self.n)]), self.max)


@dataclass
class Lengths:
    """A length histogram over all rows and one per label."""
    overall: Histogram = field(default_factory=Histogram)
    by_label: dict[str, Histogram] = field(default_factory=dict)

    def add(self, values: np.ndarray, labels: pa.Array | None) -> None:
        """`labels`: one string per value (no nulls), or None for the overall histogram only."""
        self.overall.add(values)
        if labels is None:
            return
        enc = pc.dictionary_encode(labels)
        codes = enc.indices.to_numpy(zero_copy_only=False)
        for code, name in enumerate(enc.dictionary.to_pylist()):
            self.by_label.setdefault(name, Histogram()).add(values[codes == code])


@dataclass
class RowScan:
    """Aggregates over the final rows: the last finished text stage's kept rows, or the ingested kept rows."""
    paths: list[Path]
    label_column: str | None
    columns: set[str] = field(default_factory=set)
    rows: int = 0
    null_text: int = 0
    empty_text: int = 0  # empty or whitespace only
    null_label: int = 0  # null or empty
    changed_by_normalize: int = 0
    changed_ids: list[str] = field(default_factory=list)  # the first few, to look at with `ray-jobs inspect`
    label_split: Counter = field(default_factory=Counter)  # (split, label) -> rows
    chars: Lengths = field(default_factory=Lengths)
    sample: list[tuple[int, str, dict]] = field(default_factory=list)  # (hash, id, row), smallest hashes


@dataclass
class TokenScan:
    """Tokens per document of the tokenize stage (`num_tokens`), and how many documents it cut (`truncated`)."""
    rows: int = 0
    truncated: int = 0
    tokens: Lengths = field(default_factory=Lengths)


@dataclass
class RunData:
    """Everything the checklist and the page show, read from one run directory."""
    run: RunDir
    config: dict[str, Any]  # RUN/config.toml as parsed TOML ({} when there is none: an ingest-only run)
    config_fingerprint: str | None
    markers: dict[str, dict[str, Any]]  # every _SUCCESS.<name>: fingerprint and finish time
    stats: dict[str, Any] | None  # RUN/stats.json as written
    stats_now: dict[str, Any]  # the same, recomputed from the files now
    final_stage: str | None
    label_column: str | None
    rows: RowScan | None
    tokens: TokenScan | None
    langs: Counter | None  # (lang, status) -> rows over every row of the clean stage
    ingest: dict[str, dict[str, int]]  # modality -> status -> rows
    issues_top: list[dict[str, Any]] | None  # the TOP_ISSUES most suspect labels, by rank
    issues_per_label: Counter | None  # given label -> suspects
    labels_summary: dict[str, Any] | None
    manifest: dict[str, Any] | None  # RUN/manifest.json as written
    manifest_now: list[dict[str, Any]]  # the final files as they are now (path, rows, bytes, sha256)


def gather(run_dir: str | Path) -> RunData:
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise ValueError(f"run directory {run.root} does not exist; give the output folder of a `ray-jobs run` "
                         "or `ray-jobs ingest`")
    config = _read_toml(run.root / "config.toml")
    stage = final_stage(run)
    paths = [run.kept_path(stage)] if stage else ingest_kept_dirs(run)
    label_col = label_column(config, _column_names(paths))
    issues = _issues_dir(run)
    return RunData(
        run=run, config=config, config_fingerprint=config_fingerprint(run),
        markers={p.name.removeprefix("_SUCCESS."): json.loads(p.read_text())
                 for p in sorted(run.root.glob("_SUCCESS.*"))},
        stats=_read_json(run.root / "stats.json"), stats_now=run_stats(run), final_stage=stage,
        label_column=label_col,
        rows=scan_rows(paths, label_col, normalize_config(config)) if paths else None,
        tokens=scan_tokens(run.stage_dir("tokenize"), label_col) if run.marker("tokenize").exists() else None,
        langs=value_counts(run.stage_dir("clean"), [LANG, schema.STATUS]) if run.marker("clean").exists() else None,
        ingest={d.name: partition_counts(d) for d in sorted((run.root / INGEST).iterdir()) if d.is_dir()}
        if (run.root / INGEST).is_dir() else {},
        issues_top=top_rows(issues, "rank", TOP_ISSUES) if issues else None,
        issues_per_label=value_counts(issues, [LABEL]) if issues else None,
        labels_summary=_read_json(run.root / LABELS_SUMMARY) if issues else None,
        manifest=_read_json(run.root / MANIFEST), manifest_now=file_entries(run, final_dirs(run)),
    )


def _issues_dir(run: RunDir) -> Path | None:
    """RUN/labels/_issues when the labels stage finished (never a stale stage's suspects), checked for the columns
    the page shows; a stage that flagged nothing may have written no file."""
    path = run.root / ISSUES_DIR
    if not run.marker("labels").exists() or not path.is_dir():
        return None
    ds = _dataset(path)
    missing = [c for c in ISSUE_COLUMNS if c not in ds.schema.names]
    if ds.files and missing:
        raise ValueError(f"{path} lacks columns {missing}: expected {list(ISSUE_COLUMNS)}, found {ds.schema.names}; "
                         "it was written by another version of the labels stage: redo it with `ray-jobs labels "
                         "--force`")
    return path


def label_column(config: dict[str, Any], names: set[str]) -> str | None:
    """The first of `labels.label_column`, `split.stratify_by` and `label` that the final rows have. A column the
    run relies on (labels enabled, or a stratified split) counts even when the rows lack it: the checklist then
    fails on it. Every config has labels.label_column ("label" by default), so being named is not enough."""
    labels, split = config.get("labels", {}), config.get("split", {})
    candidates = (labels.get("label_column"), split.get("stratify_by"), LABEL)
    found = next((c for c in candidates if c and c in names), None)
    relied_on = [c for c, on in ((labels.get("label_column"), labels.get("enabled")), (split.get("stratify_by"), True))
                 if c and on]
    return found or next(iter(relied_on), None)


def normalize_config(config: dict[str, Any]) -> NormalizeConfig:
    """The run's own clean.normalize settings (the defaults when the run has no config)."""
    return NormalizeConfig(**config.get("clean", {}).get("normalize", {}))


def scan_rows(paths: list[Path], label_col: str | None, norm: NormalizeConfig) -> RowScan:
    scan = RowScan(paths, label_col)
    for path in paths:
        for batch in _batches(path, [schema.ID, schema.TEXT, label_col, schema.SPLIT, LANG]):
            _scan_batch(scan, batch, norm)
    scan.sample.sort(key=lambda s: s[:2])
    return scan


def _scan_batch(scan: RowScan, batch: pa.RecordBatch, norm: NormalizeConfig) -> None:
    n = batch.num_rows
    names = set(batch.schema.names)
    scan.columns |= names
    scan.rows += n
    text = batch.column(schema.TEXT) if schema.TEXT in names else pa.nulls(n, pa.string())
    scan.null_text += text.null_count
    scan.empty_text += _count(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0))
    changed = pc.fill_null(pc.not_equal(normalize_text(text, norm), text), False)
    scan.changed_by_normalize += _count(changed)
    if len(scan.changed_ids) < 5:
        scan.changed_ids += pc.filter(batch.column(schema.ID), changed).slice(0, 5 - len(scan.changed_ids)).to_pylist()

    labels = None
    if scan.label_column:
        raw = batch.column(scan.label_column) if scan.label_column in names else pa.nulls(n, pa.string())
        labels = pc.cast(raw, pa.string())
        scan.null_label += labels.null_count + _count(pc.equal(pc.utf8_trim_whitespace(labels), ""))
        labels = pc.fill_null(labels, NULL_LABEL)
    split = batch.column(schema.SPLIT) if schema.SPLIT in names else pa.array([NO_SPLIT] * n, pa.string())
    keys = {"split": split, "label": labels if labels is not None else pa.nulls(n, pa.string())}
    _count_groups(scan.label_split, pa.table(keys), ["split", "label"])
    scan.chars.add(pc.utf8_length(pc.fill_null(text, "")).to_numpy(zero_copy_only=False), labels)
    _sample(scan, batch)


def _sample(scan: RowScan, batch: pa.RecordBatch) -> None:
    """Keep the SPOT_CHECK_ROWS rows with the smallest xxh3_64(id, SPOT_CHECK_SEED): a sample that does not
    depend on the order or layout of the files, and never holds more than 2 x 64 rows."""
    hashes = split_hashes(batch.column(schema.ID), SPOT_CHECK_SEED)
    k = min(SPOT_CHECK_ROWS, len(hashes))
    if not k:
        return
    idx = np.argpartition(hashes, k - 1)[:k] if len(hashes) > k else np.arange(k)
    for i, row in zip(idx, batch.take(pa.array(idx)).to_pylist()):
        text = row.get(schema.TEXT) or ""
        row[schema.TEXT], row["chars"] = text[:SPOT_CHECK_CHARS], len(text)
        scan.sample.append((int(hashes[i]), row[schema.ID], row))
    scan.sample = sorted(scan.sample, key=lambda s: s[:2])[:SPOT_CHECK_ROWS]


def scan_tokens(stage_dir: Path, label_col: str | None) -> TokenScan:
    scan = TokenScan()
    for batch in _batches(stage_dir, ["num_tokens", "truncated", label_col]):
        names = batch.schema.names
        labels = None
        if label_col and label_col in names:
            labels = pc.fill_null(pc.cast(batch.column(label_col), pa.string()), NULL_LABEL)
        scan.rows += batch.num_rows
        scan.truncated += _count(batch.column("truncated")) if "truncated" in names else 0
        scan.tokens.add(batch.column("num_tokens").to_numpy(zero_copy_only=False), labels)
    return scan


def value_counts(path: Path, columns: list[str]) -> Counter | None:
    """Rows per value of `columns` (tuples), streamed; None when the rows lack one of the columns."""
    ds = _dataset(path)
    if not set(columns) <= set(ds.schema.names):
        return None
    counts: Counter = Counter()
    for batch in _batches(path, columns):
        _count_groups(counts, pa.Table.from_batches([batch]), columns)
    return counts


def top_rows(path: Path, rank_column: str, n: int) -> list[dict[str, Any]]:
    """The `n` rows with the lowest `rank_column`, streamed (never more than 2n rows held)."""
    best: pa.Table | None = None
    for batch in _batches(path, _dataset(path).schema.names):
        table = pa.Table.from_batches([batch])
        best = table if best is None else pa.concat_tables([best, table])
        best = best.sort_by(rank_column).slice(0, n)
    return best.to_pylist() if best is not None else []


def _count_groups(counts: Counter, table: pa.Table, columns: list[str]) -> None:
    for row in table.group_by(columns).aggregate([([], "count_all")]).to_pylist():
        counts[tuple(row[c] for c in columns)] += row["count_all"]


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(mask).as_py() or 0)


def _dataset(path: Path) -> pads.Dataset:
    return pads.dataset(str(path), format="parquet", partitioning="hive", exclude_invalid_files=True)


def _batches(path: Path, wanted: list[str | None]) -> Iterator[pa.RecordBatch]:
    ds = _dataset(path)
    columns = [c for c in dict.fromkeys(wanted) if c and c in ds.schema.names]
    # One file at a time: the dataset-wide scanner read ahead of this (slower) consumer whatever its readahead
    # settings, so memory grew with the corpus (Arrow's pool peaked at 43-143 MB on 150-300 MB of text); file by
    # file it stays at 5 MB. Partition columns (split=...) still come from the fragment's path.
    for fragment in ds.get_fragments():
        yield from fragment.to_batches(schema=ds.schema, columns=columns, batch_size=BATCH_ROWS, use_threads=False)


def _column_names(paths: list[Path]) -> set[str]:
    return {name for p in paths for name in _dataset(p).schema.names}


def _read_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
