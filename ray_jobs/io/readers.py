"""Input discovery and the streaming Ray Data source that turns any supported input into canonical rows."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from ray_jobs.config import InputConfig
from ray_jobs.errors import UserError
from ray_jobs.io.formats import (
    FileUnit,
    canonical_row,
    canonical_table,
    detect_format,
    is_hf_folder,
    parse_file,
    record_problem,
)

BYTES_PER_TASK = 64 * 1024 * 1024  # group small files so 10k shards are not 10k tasks...
# How many groups a read asks file_groups for: Ray Data's own default block count for a read
# (DataContext.read_op_min_num_blocks), so a few large files are one group each and 10k shards are ~200 groups.
READ_GROUPS = 200


def _size(u: FileUnit) -> int:
    return os.path.getsize(u.path) if os.path.isfile(u.path) else BYTES_PER_TASK  # an HF dataset: its own task


def discover(cfg: InputConfig) -> list[FileUnit]:
    """Expand files, folders and globs into readable files, sorted so task order is stable across runs."""
    units: list[FileUnit] = []
    seen: dict[str, str] = {}  # relpath (the id prefix) -> file
    for spec in cfg.paths:
        if cfg.format == "hf" or (cfg.format == "auto" and is_hf_folder(Path(spec))):
            units.append(FileUnit(spec, Path(spec).name or spec, "hf"))  # local folder, data files or hub id
            continue
        matches = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise UserError(f"input path {spec!r} does not exist; give a file, folder or glob "
                             f"(formats: .parquet .jsonl[.gz|.zst] .csv .txt .tar .warc[.gz] .wet[.gz])")
        for m in matches:
            root = Path(m)
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            base = root.parent if root.is_file() else root
            for f in files:
                if any(part.startswith((".", "_")) for part in f.relative_to(base).parts):
                    continue  # hidden files, _SUCCESS markers, .tmp folders
                fmt = detect_format(f) if cfg.format == "auto" else cfg.format
                if fmt is None:
                    continue
                rel = f"{base.name}/{f.relative_to(base).as_posix()}"
                if rel in seen:
                    if seen[rel] == str(f):
                        continue  # the same file named twice (a folder and a glob inside it): read it once
                    raise UserError(f"inputs {seen[rel]} and {f} would get the same ids ({rel}:<offset>): ids are "
                                     f"<input folder name>/<path below it>; give their common parent folder instead")
                seen[rel] = str(f)
                units.append(FileUnit(str(f), rel, fmt))
    if not units:
        raise UserError(f"no readable files under {list(cfg.paths)} for format {cfg.format!r}; "
                         f"expected .parquet/.jsonl/.csv/.txt/.tar/.warc[.gz] files or set input.format")
    return units


def file_groups(units: list[FileUnit], parallelism: int) -> list[list[FileUnit]]:
    """The files cut into read-task groups of up to BYTES_PER_TASK bytes, but never fewer groups than the
    `parallelism` the executor asks for when there are enough files: 8 files of 8 MB in one task would leave every
    core but one idle while reading."""
    groups: list[list[FileUnit]] = []
    size = 0
    budget = min(BYTES_PER_TASK, max(1, sum(_size(u) for u in units) // max(1, parallelism)))
    for u in units:
        s = _size(u)
        if not groups or size + s > budget:
            groups.append([])
            size = 0
        groups[-1].append(u)
        size += s
    return groups


def read_group(group: list[FileUnit], cfg: InputConfig) -> Iterator[pa.Table]:
    """Canonical tables of a group of files, file by file (what one read task yields)."""
    for unit in group:
        yield from parse_file(unit, cfg)


def group_bytes(group: list[FileUnit]) -> int:
    return sum(_size(u) for u in group)


def hf_tables(spec: str, cfg: InputConfig) -> Iterator[pa.Table]:
    """An HF `datasets` input (save_to_disk folder, local data files or folder, or a hub id) as canonical tables,
    as a read task gives them: ids `<name>:<split>:<row>`, a missing split or a corrupt Arrow file quarantined."""
    return parse_file(FileUnit(spec, Path(spec).name or spec, "hf"), cfg)


def from_records(records: Iterable[Any], cfg: InputConfig, prefix: str = "mem", start: int = 0) -> pa.Table:
    """Python lists of strings or dicts (and DataFrame rows) -> one canonical table (ids `<prefix>:<index>`)."""
    if hasattr(records, "columns") and hasattr(records, "to_dict"):
        records = records.to_dict("records")  # a pandas DataFrame: iterating it would yield its column names
    rows = []
    for i, rec in enumerate(records, start=start):
        if hasattr(rec, "to_dict") and not isinstance(rec, dict):
            rec = rec.to_dict()  # a pandas Series, e.g. from DataFrame.iterrows()
        if isinstance(rec, str) or rec is None:
            rec = {cfg.text_column: rec}
        elif not isinstance(rec, dict):
            raise TypeError(f"record {i}: expected a str or a dict with {cfg.text_column!r}, "
                            f"found {type(rec).__name__}")
        if (problem := record_problem(rec, cfg)) is not None:
            raise TypeError(f"record {i}: {problem}")
        rows.append(canonical_row(rec, cfg, prefix, i))
    return canonical_table(rows)
