"""stats.json: every number recomputed from the run directory's files (Parquet footers and a few columns), never
from counters sent back by workers.

Per step: rows_in, rows_out, dropped (reason -> rows), quarantined, and `rows_in == rows_out + dropped +
quarantined`. rows_in is the previous step's rows_out (the first step's is the readers' own count of the records
they saw, `_records`). rows_out is counted
from the files: the step's kept rows (or its split folders, or its decisions); for a step that ran fused in the
middle of a pass and wrote only what it dropped, the next step's rows_in is what it passed on, so the chain closes
at the pass's last step, whose rows are counted (`rows_out_counted` says which). A step's `stats` hook adds its
own figures (cluster sizes, leakage pairs, tokens, packing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_jobs import schema
from ray_jobs.rundir import DROPS, INGEST, RunDir, write_atomic


def partition_counts(stage_dir: Path) -> dict[str, int]:
    """Rows per `col=value` sub-folder ({value: rows}), from Parquet footers only (no data read)."""
    return {v: n for col in folder_counts(stage_dir).values() for v, n in col.items()}


def folder_counts(stage_dir: Path) -> dict[str, dict[str, int]]:
    """Rows per `col=value` sub-folder ({col: {value: rows}}), from Parquet footers only (no data read)."""
    counts: dict[str, dict[str, int]] = {}
    if not stage_dir.is_dir():
        return counts
    for sub in sorted(stage_dir.iterdir()):
        if not sub.is_dir() or "=" not in sub.name:
            continue
        col, value = sub.name.split("=", 1)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(sub.rglob("*.parquet")))
        counts.setdefault(col, {})[value] = rows
    return counts


def column_sum(path: Path, column: str) -> int:
    """The column's sum over the folder's files; a file without the column (written before it existed) adds 0."""
    return sum(int(pc.sum(pq.read_table(f, columns=[column])[column]).as_py() or 0)
               for f in sorted(path.rglob("*.parquet")) if not _hidden(f, path) and column in pq.read_schema(f).names)


def _hidden(f: Path, root: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in f.relative_to(root).parts)


def cluster_histogram(sizes_dir: Path, near_rows_in: int) -> dict[str, int]:
    """Near-dedup clusters by size, in power-of-two bins ("1", "2", "3-4", "5-8", ...), from `_cluster_sizes`
    (one row per cluster of two or more); every document near dedup saw and no cluster holds is a "1"."""
    sizes = np.concatenate([pq.read_table(f, columns=["size"])["size"].to_numpy()
                            for f in sorted(sizes_dir.rglob("*.parquet"))] or [np.empty(0, np.int64)])
    hist = {"1": max(near_rows_in - int(sizes.sum()), 0)}
    if len(sizes):
        bins = np.ceil(np.log2(sizes)).astype(int)  # 2 -> 1, 3-4 -> 2, 5-8 -> 3
        for b, n in zip(*np.unique(bins, return_counts=True)):
            lo, hi = 2 ** (b - 1) + 1, 2 ** b
            hist[str(hi) if lo == hi else f"{lo}-{hi}"] = int(n)
    return hist


def pair_counts(pairs_dir: Path) -> dict[str, int]:
    """Leakage pairs per split pair ("train~val": n), from `_pairs`."""
    counts: dict[str, int] = {}
    for f in sorted(pairs_dir.rglob("*.parquet")):
        t = pq.read_table(f, columns=["split", "other_split"])
        for a, b in zip(t["split"].to_pylist(), t["other_split"].to_pylist()):
            key = "~".join(sorted((a, b)))
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def step_stats(run: RunDir, step: str, rows_in: int | None) -> dict[str, Any]:
    """One step's numbers from its folder; `rows_in` None: the first step (its rows_in is what its pass wrote)."""
    counts = folder_counts(run.stage_dir(step))
    status = counts.get(schema.STATUS, {})
    splits = counts.get(schema.SPLIT, {})
    quarantined = status.get(schema.QUARANTINED, 0)
    dropped = {k: v for k, v in status.items() if k not in (schema.KEPT, schema.QUARANTINED)}
    info = run.marker_info(step) or {}
    counted = info.get("output") != DROPS
    if rows_in is None:
        rows_in = _first_rows_in(run, info.get("pass", 0), counted)
    rows_out = status.get(schema.KEPT, 0) + sum(splits.values())
    if not counted:
        rows_out = (rows_in or 0) - sum(dropped.values()) - quarantined
    total = rows_out + sum(dropped.values()) + quarantined
    out: dict[str, Any] = {"rows_in": total if rows_in is None else rows_in, "rows_out": rows_out,
                           "dropped": dict(sorted(dropped.items())), "quarantined": quarantined}
    if splits:
        out["splits"] = splits
    if not counted:
        out["rows_out_counted"] = False  # passed on within its pass; the pass's last step is counted
    return out


def _first_rows_in(run: RunDir, pass_no: int, counted: bool) -> int | None:
    """rows_in of the first step: the records the readers saw (`_records` on each input file's last row), summed
    over what its pass wrote from that step on, so a row lost between the reader and the folders breaks the
    invariant. Rows without the count (token rows read as they are, a folder written before it existed): every row
    the pass wrote (`counted` False) or None, the step's own total, which cannot fail."""
    total, found = 0, False
    for name in run.done_steps():
        info = run.marker_info(name) or {}
        if info.get("pass") != pass_no:
            continue
        folder = run.stage_dir(name)
        for f in sorted(folder.rglob("*.parquet")):
            if not _hidden(f, folder) and schema.RECORDS in pq.read_schema(f).names:
                found = True
                total += int(pc.sum(pq.read_table(f, columns=[schema.RECORDS])[schema.RECORDS]).as_py() or 0)
        if info.get("output") != DROPS:
            break  # its folder holds every row that reached it; the steps after it see those rows again
    if found:
        return total
    return None if counted else _pass_total(run, pass_no)


def _pass_total(run: RunDir, pass_no: int) -> int:
    """Every row the pass wrote: the drops of all its steps and the rows of its last one."""
    total = 0
    for name in run.done_steps():
        if (run.marker_info(name) or {}).get("pass") == pass_no:
            total += sum(partition_counts(run.stage_dir(name)).values())
    return total


def run_stats(run: RunDir) -> dict[str, Any]:
    """Stats of every finished step, chained in plan order: a step's rows_in is the previous step's rows_out. A
    step that passed its rows on within a pass has rows_out = rows_in - its drops; the chain is checked where it
    reaches a step whose output is counted from its files."""
    from ray_jobs.steps.registry import get

    stages: dict[str, Any] = {INGEST: ingest_stats(run)} if run.marker(INGEST).exists() else {}
    prev_out: int | None = None
    for name in run.done_steps():
        s = step_stats(run, name, prev_out)
        hook = get(name).stats
        if hook is not None:
            s = hook(run, s)
        s.setdefault("invariant_ok", s["rows_in"] == s["rows_out"] + sum(s["dropped"].values()) + s["quarantined"])
        stages[name] = s
        prev_out = s["rows_out"]
    return {"run_dir": str(run.root), "stages": stages,
            "invariant_ok": all(s["invariant_ok"] for s in stages.values())}


def ingest_stats(run: RunDir) -> dict[str, Any]:
    """`ray-jobs ingest` as one step: the rows of every modality by status (footers), and per modality. Its
    rows_in is its own total: a manifest line may become several rows (a PDF's pages), so the manifest's line
    count is not it; so its invariant holds by construction."""
    modalities = {d.name: partition_counts(d) for d in sorted((run.root / INGEST).iterdir())
                  if d.is_dir() and not d.name.startswith(("_", "."))}
    status: dict[str, int] = {}
    for counts in modalities.values():
        for k, n in counts.items():
            status[k] = status.get(k, 0) + n
    kept, quarantined = status.pop(schema.KEPT, 0), status.pop(schema.QUARANTINED, 0)
    return {"rows_in": kept + sum(status.values()) + quarantined, "rows_out": kept,
            "dropped": dict(sorted(status.items())), "quarantined": quarantined, "modalities": modalities,
            "invariant_ok": True}


def write_stats(run: RunDir) -> dict[str, Any]:
    stats = run_stats(run)
    write_atomic(run.root / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats
