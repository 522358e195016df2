"""What the checklist and report.html need from a run directory, read from its files alone ("stats are data").

The final rows are the kept rows of the last step that wrote text (`rundir.manifest.final_stage`: RUN/clean with
the default plan) restricted to the ids of the last kept decisions after it (`final_decisions`: RUN/leakage),
whose `split` they take when they lack one. The cost is bounded whatever the corpus (the report took 50 s on a
1.1 GB run when every text went through the normaliser, 90 % of it):

* counts, drops, tokens and packing come from stats.json and its recount (Parquet footers, a few numeric columns);
* exact, columnar: the id, split and label columns of every final row (the label distribution, the null labels)
  and the spot check (the 64 smallest xxh3_64(id, seed) of every id, then those 64 texts only), tokens per
  document (RUN/tokenize's `num_tokens` when it holds rows, else the packed rows' `doc_lens`);
* bounded: one scan of the text (null and empty texts, the normaliser, characters per document) over row groups
  taken in a seeded order up to `output.report_scan_mb` MB of text; the page and each check it feeds say when that
  was a sample.

Row groups are read in batches of BATCH_ROWS rows over only the columns needed, and only aggregates are kept, so
memory grows with the number of final rows (their id, split and label) and not with their text.
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
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import xxhash

from ray_jobs import schema
from ray_jobs.config import OutputConfig, RunConfig, load_config
from ray_jobs.errors import UserError
from ray_jobs.rundir import DROPS, INGEST, MANIFEST, ROWS, RunDir
from ray_jobs.rundir.manifest import (
    config_fingerprint,
    file_entries,
    final_decisions,
    final_dirs,
    final_stage,
    ingest_kept_dirs,
)
from ray_jobs.rundir.stats import partition_counts, run_stats
from ray_jobs.steps.clean.normalize import NormalizeConfig, normalize_text
from ray_jobs.steps.split.ops import split_hashes

# 4096 documents of ~5 kB are ~20 MB of text in memory at a time.
BATCH_ROWS = 4096
MB = 1_000_000  # output.report_scan_mb and the page's figures: decimal megabytes
# Length histograms: 8 log-spaced bins per decade from 1 to 10^7 (characters or tokens). A 0-length text falls in
# the first bin (the checklist counts empty texts on its own), anything longer than 10^7 in the last.
LENGTH_EDGES = 10 ** np.arange(0, 7.001, 0.125)
SPOT_CHECK_ROWS = 64
# The spot check's own seed: split assigns rows by xxh3_64(id, split.seed), so the smallest hashes under that
# seed would all be train rows (h / 2^64 < 0.9).
SPOT_CHECK_SEED = 0x5EED_C4EC
# The text scan's order of row groups: xxh3_64 of each group's smallest id (its footer statistics) under this
# seed, so the sample is the same on every report of the same files and does not follow their names or order.
SCAN_SEED = 0x5CA1_AB1E
SPOT_CHECK_CHARS = 2000  # of each sampled text kept for the page
TOP_ISSUES = 25
LANG = "lang"  # the language column of the clean step
LABEL = "label"  # the label column when the config names none
NO_SPLIT, NULL_LABEL = "all", "(null)"
ROW_GROUP = "row_group"  # of the final rows' table: where each row's text is (FinalRows.groups)
# The labels step's side tables (steps/labels/barrier.py): the ranked suspects (id, label, predicted_label,
# p_given, quality, rank, text) and the summary of what it decided with.
ISSUES_DIR = Path("labels") / "_issues"
ISSUE_COLUMNS = ("id", "label", "predicted_label", "p_given", "quality", "rank", "text")
LABELS_SUMMARY = Path("labels") / "_summary.json"
# The packed rows' provenance (steps/pack/ops.py): a document is the piece at offset 0, its tokens its doc_lens.
DOC_IDS, DOC_OFFSETS, DOC_LENS = "doc_ids", "doc_offsets", "doc_lens"


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


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group of the text rows, as a dataset fragment (with its partition, e.g. split=train): the
    unit the reads here take or leave."""
    fragment: pads.ParquetFileFragment
    schema: pa.Schema  # its folder's columns, partition columns included (a file that lacks one reads nulls)
    text_bytes: int  # its text column, uncompressed (footer)
    key: int  # its place in the text scan's order: xxh3_64(its smallest id, SCAN_SEED)

    def read(self, wanted: list[str | None], flt: pc.Expression | None = None) -> pa.Table:
        return self.fragment.to_table(schema=self.schema, columns=self._columns(wanted), filter=flt,
                                      use_threads=False)

    def batches(self, wanted: list[str | None]) -> Iterator[pa.RecordBatch]:
        return self.fragment.to_batches(schema=self.schema, columns=self._columns(wanted), batch_size=BATCH_ROWS,
                                        use_threads=False)

    def _columns(self, wanted: list[str | None]) -> list[str]:
        return [c for c in dict.fromkeys(wanted) if c and c in self.schema.names]


@dataclass
class FinalRows:
    """Every final row's id, split, label and row group (no text): the text rows' row groups restricted to the
    ids of `decisions` (None: every text row is final). `label` is null where the row has none, and absent
    without a label column; `split` is NO_SPLIT where neither the rows nor the decisions have one; `row_group`
    indexes `groups`."""
    paths: list[Path]
    decisions: Path | None
    label_column: str | None
    columns: set[str]  # of the text rows and the decisions
    groups: list[RowGroup]
    table: pa.Table

    def __post_init__(self) -> None:
        # a hash index over the ids, built once (the planner applies decisions the same way); an id that repeats
        # (a file copied after the run: the manifest check says so) maps to its first row
        ids = pd.Index(self.table[schema.ID].to_pandas())
        first = ~ids.duplicated()
        self._index, self._rows = ids[first], np.flatnonzero(first)

    def positions(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Each id's row in `table`, -1 where it is not a final row."""
        found = self._index.get_indexer(ids.to_pandas())
        return np.where(found >= 0, self._rows[found], -1)

    def where(self, root: Path) -> str:
        """The folders (relative to the run) and the decisions whose ids select the rows, for the page."""
        where = ", ".join(p.relative_to(root).as_posix() for p in self.paths)
        return where + (f" with an id in {self.decisions.relative_to(root).as_posix()}" if self.decisions else "")

    def labels(self, pos: np.ndarray) -> pa.Array | None:
        """The labels (NULL_LABEL for none) of the rows at `pos` (-1: not a final row, NULL_LABEL too)."""
        if LABEL not in self.table.column_names:
            return None
        taken = self.table[LABEL].take(pa.array(pos, mask=pos < 0))
        return pc.fill_null(taken, NULL_LABEL).combine_chunks()


@dataclass
class RowScan:
    """Exact figures over every final row, from its id, split and label columns."""
    final: FinalRows
    rows: int = 0
    null_label: int = 0  # null or empty
    label_split: Counter = field(default_factory=Counter)  # (split, label) -> rows
    sample: list[dict[str, Any]] = field(default_factory=list)  # the spot check, by (hash, id)

    @property
    def label_column(self) -> str | None:
        return self.final.label_column

    @property
    def columns(self) -> set[str]:
        return self.final.columns


@dataclass(frozen=True)
class Coverage:
    """How much of the final text folders' text the scan read (uncompressed bytes of the text column)."""
    scanned_bytes: int
    total_bytes: int
    groups: int
    total_groups: int
    cap_mb: int

    @property
    def complete(self) -> bool:
        return self.groups == self.total_groups

    def describe(self) -> str:
        if self.complete:
            return f"all {_mb(self.total_bytes)} of text scanned"
        share = self.scanned_bytes / self.total_bytes if self.total_bytes else 1.0
        return (f"a sample: scanned {_mb(self.scanned_bytes)} of {_mb(self.total_bytes)} of text ({share:.0%}, "
                f"{self.groups:,} of {self.total_groups:,} row groups in a seeded order; output.report_scan_mb = "
                f"{self.cap_mb})")


@dataclass
class TextScan:
    """Figures that need the text, over the final rows of the scanned row groups (all of them, or a sample)."""
    coverage: Coverage
    rows: int = 0
    null_text: int = 0
    empty_text: int = 0  # empty or whitespace only
    changed_by_normalize: int = 0
    changed_ids: list[str] = field(default_factory=list)  # the first few, to look at with `ray-jobs inspect`
    chars: Lengths = field(default_factory=Lengths)

    def where(self) -> str:
        """'' when every final row was scanned, else what part of them: for a check's detail."""
        return "" if self.coverage.complete else f" ({self.coverage.describe()})"


@dataclass
class TokenScan:
    """Tokens per document, and how many documents tokenize cut (`truncated`; None: not recorded)."""
    source: str  # where the counts come from, for the page
    rows: int = 0
    truncated: int | None = 0
    tokens: Lengths = field(default_factory=Lengths)


@dataclass
class RunData:
    """Everything the checklist and the page show, read from one run directory."""
    run: RunDir
    config: dict[str, Any]  # RUN/config.toml as parsed TOML ({} when there is none: an ingest-only run)
    run_config: RunConfig  # the same, resolved (the defaults when there is none): which steps the run enables
    config_fingerprint: str | None
    markers: dict[str, dict[str, Any]]  # every _SUCCESS.<name>: fingerprint and finish time
    stats: dict[str, Any] | None  # RUN/stats.json as written
    stats_now: dict[str, Any]  # the same, recomputed from the files now
    final_stage: str | None
    label_column: str | None
    rows: RowScan | None
    text: TextScan | None
    tokens: TokenScan | None
    langs: Counter | None  # (lang, status) -> rows over every row of the clean step (lang_counts)
    ingest: dict[str, dict[str, int]]  # modality -> status -> rows
    issues_top: list[dict[str, Any]] | None  # the TOP_ISSUES most suspect labels, by rank
    issues_per_label: Counter | None  # given label -> suspects
    labels_summary: dict[str, Any] | None
    manifest: dict[str, Any] | None  # RUN/manifest.json as written
    manifest_now: list[dict[str, Any]]  # the final files as they are now (path, rows, bytes, sha256)


def gather(run_dir: str | Path) -> RunData:
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise UserError(f"run directory {run.root} does not exist; give the output folder of a `ray-jobs run` "
                         "or `ray-jobs ingest`")
    config = _read_toml(run.root / "config.toml")
    stage = final_stage(run)
    paths = [run.kept_path(stage)] if stage else ingest_kept_dirs(run)
    decisions = final_decisions(run) if stage else None
    columns = _column_names(paths + ([decisions] if decisions else []))
    label_col = label_column(config, columns)
    final = read_final(paths, decisions, label_col, columns) if paths else None
    issues = _issues_dir(run)
    return RunData(
        run=run, config=config, config_fingerprint=config_fingerprint(run),
        run_config=load_config(run.root / "config.toml" if config else None),
        markers={p.name.removeprefix("_SUCCESS."): json.loads(p.read_text())
                 for p in sorted(run.root.glob("_SUCCESS.*"))},
        stats=_read_json(run.root / "stats.json"), stats_now=run_stats(run), final_stage=stage,
        label_column=label_col,
        rows=scan_rows(final) if final else None,
        text=scan_text(final, normalize_config(config), scan_cap_mb(config)) if final else None,
        tokens=scan_tokens(run, config, final),
        langs=lang_counts(run),
        ingest={d.name: partition_counts(d) for d in sorted((run.root / INGEST).iterdir()) if d.is_dir()}
        if (run.root / INGEST).is_dir() else {},
        issues_top=top_rows(issues, "rank", TOP_ISSUES) if issues else None,
        issues_per_label=value_counts(issues, [LABEL]) if issues else None,
        labels_summary=_read_json(run.root / LABELS_SUMMARY) if issues else None,
        manifest=_read_json(run.root / MANIFEST), manifest_now=file_entries(run, final_dirs(run)),
    )


def lang_counts(run: RunDir) -> Counter | None:
    """(lang, status) -> rows over every row the clean step saw. Fused with row steps after it (quality_model),
    clean's folder holds only its drops (marker output "drops") and the rows it passed on are in the next steps'
    folders of the same pass, still carrying `lang`: they are counted there, under the status they ended with."""
    info = run.marker_info("clean")
    if info is None:
        return None
    counts: Counter | None = None
    after = run.done_steps()
    for name in after[after.index("clean"):]:
        step = run.marker_info(name) or {}
        if step.get("pass") != info.get("pass"):
            continue
        found = value_counts(run.stage_dir(name), [LANG, schema.STATUS])
        if found is not None:
            counts = (counts or Counter()) + found
        if step.get("output") != DROPS:
            break  # this folder holds every row that reached it
    return counts


def _issues_dir(run: RunDir) -> Path | None:
    """RUN/labels/_issues when the labels step finished (never a stale step's suspects), checked for the columns
    the page shows; a step that flagged nothing may have written no file."""
    path = run.root / ISSUES_DIR
    if not run.marker("labels").exists() or not path.is_dir():
        return None
    ds = _dataset(path)
    missing = [c for c in ISSUE_COLUMNS if c not in ds.schema.names]
    if ds.files and missing:
        raise UserError(f"{path} lacks columns {missing}: expected {list(ISSUE_COLUMNS)}, found {ds.schema.names}; "
                         "it was written by another version of the labels step: redo it with `ray-jobs labels "
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


def scan_cap_mb(config: dict[str, Any]) -> int:
    """output.report_scan_mb of the run (the default when its config predates it); 0 = scan everything."""
    return config.get("output", {}).get("report_scan_mb", OutputConfig.report_scan_mb)


# ------------------------------------------------------------------------------ exact: id, split and label


def read_final(paths: list[Path], decisions: Path | None, label_col: str | None, columns: set[str]) -> FinalRows:
    """The id, split and label columns of every final row (see FinalRows); `columns`: what the folders hold."""
    groups = row_groups(paths)
    wanted = [schema.ID, schema.SPLIT, label_col]
    tables = [g.read(wanted) for g in groups]
    tables = [t.append_column(ROW_GROUP, pa.array(np.full(len(t), k, np.int32))) for k, t in enumerate(tables)]
    empty = pa.table({schema.ID: pa.array([], pa.string()), ROW_GROUP: pa.array([], pa.int32())})
    # ingested modalities differ in columns: a column one lacks is null there
    rows = pa.concat_tables(tables or [empty], promote_options="default")
    dec = _read_columns(decisions, [schema.ID, schema.SPLIT]) if decisions else None
    return FinalRows(paths, decisions, label_col, columns, groups, final_table(rows, dec, label_col))


def final_table(rows: pa.Table, decisions: pa.Table | None, label_col: str | None) -> pa.Table:
    """id, split, label, row_group (see FinalRows) of `rows` whose id `decisions` lists, with the decisions'
    columns the rows lack. Arrow's hash join: the output order is not the input's, which no figure depends on."""
    if decisions is not None:
        extra = [c for c in decisions.column_names if c not in rows.column_names]
        rows = rows.join(decisions.select([schema.ID, *extra]), keys=schema.ID, join_type="inner", use_threads=False)
    n = len(rows)
    split = rows[schema.SPLIT] if schema.SPLIT in rows.column_names else pa.nulls(n, pa.string())
    out = {schema.ID: rows[schema.ID], schema.SPLIT: pc.fill_null(pc.cast(split, pa.string()), NO_SPLIT),
           ROW_GROUP: rows[ROW_GROUP]}
    if label_col:
        raw = rows[label_col] if label_col in rows.column_names else pa.nulls(n, pa.string())
        out[LABEL] = pc.cast(raw, pa.string())
    return pa.table(out)


def scan_rows(final: FinalRows) -> RowScan:
    t = final.table
    scan = RowScan(final, rows=len(t))
    if LABEL in t.column_names:
        scan.null_label = t[LABEL].null_count + _count(pc.equal(pc.utf8_trim_whitespace(t[LABEL]), ""))
        t = t.set_column(t.schema.get_field_index(LABEL), LABEL, pc.fill_null(t[LABEL], NULL_LABEL))
    else:
        t = t.append_column(LABEL, pa.nulls(len(t), pa.string()))
    _count_groups(scan.label_split, t, [schema.SPLIT, LABEL])
    scan.sample = spot_check_rows(final)
    return scan


def spot_check_rows(final: FinalRows) -> list[dict[str, Any]]:
    """The SPOT_CHECK_ROWS final rows with the smallest xxh3_64(id, SPOT_CHECK_SEED), in that order: a sample of
    every final row that does not depend on the files' order or layout. Texts are read only from the row groups
    that hold a chosen row (at most 64 of them, where a filter over every file decoded all the text: 0.5 s per
    100 MB)."""
    ids = final.table[schema.ID]
    hashes = split_hashes(ids, SPOT_CHECK_SEED)
    k = min(SPOT_CHECK_ROWS, len(hashes))
    if not k:
        return []
    idx = np.argpartition(hashes, k - 1)[:k] if len(hashes) > k else np.arange(k)
    chosen = final.table.take(pa.array(idx)).append_column("_h", pa.array(hashes[idx]))
    chosen = chosen.sort_by([("_h", "ascending"), (schema.ID, "ascending")]).drop_columns(["_h"])
    ids = chosen[schema.ID].to_pylist()
    texts: dict[str, dict[str, Any]] = {}
    for g in sorted(set(chosen[ROW_GROUP].to_pylist())):
        for row in final.groups[g].read([schema.ID, schema.TEXT, LANG], pc.field(schema.ID).isin(ids)).to_pylist():
            texts[row[schema.ID]] = row
    out = []
    for row in chosen.to_pylist():
        text = texts.get(row[schema.ID], {}).get(schema.TEXT) or ""
        lang = {LANG: texts.get(row[schema.ID], {}).get(LANG)} if LANG in final.columns else {}
        label = {final.label_column: row[LABEL]} if final.label_column else {}
        out.append({schema.ID: row[schema.ID], schema.SPLIT: row[schema.SPLIT], **label, **lang,
                    schema.TEXT: text[:SPOT_CHECK_CHARS], "chars": len(text)})
    return out


# ------------------------------------------------------------------------------ bounded: the text


def row_groups(paths: list[Path]) -> list[RowGroup]:
    """Every row group of the text rows in file order, from the footers: its text bytes and its scan key."""
    groups = []
    for path in paths:
        ds = _dataset(path)
        for fragment in ds.get_fragments():
            meta = fragment.metadata
            names = [meta.schema.column(j).path for j in range(meta.num_columns)]
            for group in fragment.split_by_row_group():
                i = group.row_groups[0].id
                rg = meta.row_group(i)
                text = rg.column(names.index(schema.TEXT)).total_uncompressed_size if schema.TEXT in names else 0
                stats = rg.column(names.index(schema.ID)).statistics if schema.ID in names else None
                # a writer without statistics: the file's place instead (still seeded, no longer layout-free)
                first = stats.min if stats is not None and stats.has_min_max else \
                    f"{Path(fragment.path).relative_to(path)}#{i}"
                key = xxhash.xxh3_64_intdigest(str(first).encode(), seed=SCAN_SEED)
                groups.append(RowGroup(group, ds.schema, text, key))
    return groups


def choose_groups(groups: list[RowGroup], cap_bytes: int) -> list[int]:
    """Which row groups (their indices) the text scan reads: in seeded order while their text fits in `cap_bytes`
    (the first always: a sample of no row says nothing); all of them when cap_bytes is 0."""
    ordered = sorted(range(len(groups)), key=lambda k: groups[k].key)
    if not cap_bytes:
        return ordered
    taken, total = [], 0
    for k in ordered:
        if taken and total + groups[k].text_bytes > cap_bytes:
            break
        taken.append(k)
        total += groups[k].text_bytes
    return taken


def scan_text(final: FinalRows, norm: NormalizeConfig, cap_mb: int) -> TextScan:
    groups = final.groups
    chosen = sorted(choose_groups(groups, cap_mb * MB))  # read in file order
    scan = TextScan(Coverage(sum(groups[k].text_bytes for k in chosen), sum(g.text_bytes for g in groups),
                             len(chosen), len(groups), cap_mb))
    for k in chosen:
        for batch in groups[k].batches([schema.ID, schema.TEXT]):
            _scan_text_batch(scan, batch, final, norm)
    return scan


def _scan_text_batch(scan: TextScan, batch: pa.RecordBatch, final: FinalRows, norm: NormalizeConfig) -> None:
    pos = final.positions(batch.column(schema.ID))
    keep = pa.array(pos >= 0)
    ids = pc.filter(batch.column(schema.ID), keep)
    text = pc.filter(batch.column(schema.TEXT), keep) if schema.TEXT in batch.schema.names else \
        pa.nulls(len(ids), pa.string())
    scan.rows += len(ids)
    scan.null_text += text.null_count
    scan.empty_text += _count(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0))
    changed = pc.fill_null(pc.not_equal(normalize_text(text, norm), text), False)
    scan.changed_by_normalize += _count(changed)
    if len(scan.changed_ids) < 5:
        scan.changed_ids += pc.filter(ids, changed).slice(0, 5 - len(scan.changed_ids)).to_pylist()
    scan.chars.add(pc.utf8_length(pc.fill_null(text, "")).to_numpy(zero_copy_only=False),
                   final.labels(pos[pos >= 0]))


# ------------------------------------------------------------------------------ tokens


def scan_tokens(run: RunDir, config: dict[str, Any], final: FinalRows | None) -> TokenScan | None:
    """Tokens per document: RUN/tokenize's rows when the run kept them (`num_tokens`, `truncated`), else the
    packed rows (`doc_lens` of each document's first piece; `truncated` is not recorded there, except that
    tokenize.max_length = 0 cuts nothing); None when neither holds token rows."""
    if (run.marker_info("tokenize") or {}).get("output") == ROWS:
        return _token_rows(run.stage_dir("tokenize"), final.label_column if final else None)
    pack = run.stage_dir("pack")
    if (run.marker_info("pack") or {}).get("output") == ROWS and DOC_LENS in _dataset(pack).schema.names:
        cut = 0 if config.get("tokenize", {}).get("max_length", 0) == 0 else None
        return _packed_documents(pack, final, cut)
    return None


def _token_rows(stage_dir: Path, label_col: str | None) -> TokenScan:
    scan = TokenScan("tokenize step, `num_tokens`")
    for batch in _batches(stage_dir, ["num_tokens", "truncated", label_col]):
        names = batch.schema.names
        labels = None
        if label_col and label_col in names:
            labels = pc.fill_null(pc.cast(batch.column(label_col), pa.string()), NULL_LABEL)
        scan.rows += batch.num_rows
        scan.truncated += _count(batch.column("truncated")) if "truncated" in names else 0
        scan.tokens.add(batch.column("num_tokens").to_numpy(zero_copy_only=False), labels)
    return scan


def _packed_documents(pack_dir: Path, final: FinalRows | None, truncated: int | None) -> TokenScan:
    """One document per piece at doc_offsets == 0, its tokens its doc_lens; labels through its id."""
    scan = TokenScan("packed rows, `doc_lens` of each document's first piece", truncated=truncated)
    for batch in _batches(pack_dir, [DOC_IDS, DOC_OFFSETS, DOC_LENS]):
        first = pc.equal(pc.list_flatten(batch.column(DOC_OFFSETS)), 0)
        lens = pc.filter(pc.list_flatten(batch.column(DOC_LENS)), first).to_numpy(zero_copy_only=False)
        labels = None
        if final is not None and final.label_column:
            labels = final.labels(final.positions(pc.filter(pc.list_flatten(batch.column(DOC_IDS)), first)))
        scan.rows += len(lens)
        scan.tokens.add(lens, labels)
    return scan


# ------------------------------------------------------------------------------ helpers


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
    for row in table.group_by(columns, use_threads=False).aggregate([([], "count_all")]).to_pylist():
        counts[tuple(row[c] for c in columns)] += row["count_all"]


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(mask).as_py() or 0)


def _mb(n: int) -> str:
    return f"{n / MB:,.1f} MB"


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


def _read_columns(path: Path, wanted: list[str | None]) -> pa.Table:
    """Only `wanted` columns (those the rows have) of every row under `path`, partition columns included."""
    ds = _dataset(path)
    columns = [c for c in dict.fromkeys(wanted) if c and c in ds.schema.names]
    return pa.Table.from_batches(list(_batches(path, columns)), schema=pa.schema([ds.schema.field(c) for c in columns]))


def _column_names(paths: list[Path]) -> set[str]:
    return {name for p in paths for name in _dataset(p).schema.names}


def _read_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
