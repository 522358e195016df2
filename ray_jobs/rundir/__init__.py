"""The run directory contract and the stats computed from it.

    RUN/config.toml              resolved config of the last run
    RUN/<stage>/status=<s>/      clean, dedup, leakage, labels: `kept`, one folder per drop reason, `quarantined`
    RUN/<stage>/split=<s>/       split, tokenize, pack: `train`, `val`, `test` (pack: fixed-length training rows)
    RUN/<stage>/_<table>/        a stage's side tables: dedup `_clusters`, `_cluster_sizes`, `_index`;
                                 leakage `_pairs`; labels `_issues` (ranked), `_summary.json`
                                 (Parquet readers skip `_` folders)
    RUN/_SUCCESS.<stage>         JSON: the stage's fingerprint (config + input) and when it finished
    RUN/stats.json               recomputed from the Parquet footers above, never from worker counters
    RUN/ingest/<modality>/status=<s>/   `ray-jobs ingest`: image, pdf and audio rows
    RUN/manifest.json            the final files (path, rows, bytes, sha256), the config fingerprint, the stage
                                 markers and the ray_jobs version: what a consumer checks before training
    RUN/report.html              report/html.py: checklist, stats and plots, all from the files above

A stage folder appears only complete (written to a temporary folder, then renamed). A re-run skips a stage
whose marker carries the same fingerprint; a changed config or input, or `--force`, redoes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_jobs import __version__, schema

STAGES = ("clean", "dedup", "split", "leakage", "labels", "tokenize", "pack")
# The stages whose rows still carry the text, in STAGES order (tokenize keeps it only when asked to).
TEXT_STAGES = ("clean", "dedup", "split", "leakage", "labels")
INGEST = "ingest"  # RUN/ingest/<modality>/status=*/, written by `ray-jobs ingest`
MANIFEST = "manifest.json"
PARTITION = {"clean": schema.STATUS, "dedup": schema.STATUS, "split": schema.SPLIT, "leakage": schema.STATUS,
             "labels": schema.STATUS, "tokenize": schema.SPLIT, "pack": schema.SPLIT}


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to write into; when the block ends, it replaces `out_dir` whole. A crash
    leaves the old folder (or none), never a half-written one that a re-run would take for output."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):  # what a killed run left half-written
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    yield tmp
    tmp.mkdir(parents=True, exist_ok=True)  # a writer that wrote nothing still leaves its (empty) folder
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")  # not the locale's: report.html quotes texts in any script
    os.replace(tmp, path)


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def marker(self, stage: str) -> Path:
        return self.root / f"_SUCCESS.{stage}"

    def is_done(self, stage: str, fp: str, force: bool) -> bool:
        """True when the stage finished with the same fingerprint; a changed config or input redoes it."""
        m = self.marker(stage)
        return not force and m.exists() and json.loads(m.read_text())["fingerprint"] == fp

    def mark_done(self, stage: str, fp: str) -> None:
        write_atomic(self.marker(stage), json.dumps({"fingerprint": fp, "finished": time.time()}) + "\n")

    def invalidate_after(self, stage: str) -> None:
        """A redone stage makes the later stages stale: drop their markers so they are redone too."""
        for later in STAGES[STAGES.index(stage) + 1:]:
            self.marker(later).unlink(missing_ok=True)

    def kept_path(self, stage: str) -> Path:
        sub = f"{schema.STATUS}={schema.KEPT}" if PARTITION[stage] == schema.STATUS else ""
        return self.stage_dir(stage) / sub if sub else self.stage_dir(stage)


def partition_counts(stage_dir: Path) -> dict[str, int]:
    """Rows per `col=value` sub-folder, from Parquet footers only (no data read)."""
    counts: dict[str, int] = {}
    if not stage_dir.is_dir():
        return counts
    for sub in sorted(stage_dir.iterdir()):
        if not sub.is_dir() or "=" not in sub.name:
            continue
        value = sub.name.split("=", 1)[1]
        counts[value] = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(sub.rglob("*.parquet")))
    return counts


def column_sum(path: Path, column: str) -> int:
    return sum(int(pc.sum(pq.read_table(f, columns=[column])[column]).as_py() or 0)
               for f in sorted(path.rglob("*.parquet")))


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


def stage_stats(run: RunDir, stage: str, rows_in: int | None) -> dict[str, Any]:
    """rows_in, rows_out, dropped (reason -> rows), quarantined for one stage, from its files.

    `rows_in` is the previous stage's rows_out; for the first stage of a run (raw input) it is None and the
    stage's own total is used, since every record the reader saw is written as kept, dropped or quarantined.
    """
    counts = partition_counts(run.stage_dir(stage))
    if PARTITION[stage] == schema.STATUS:
        rows_out = counts.get(schema.KEPT, 0)
        quarantined = counts.get(schema.QUARANTINED, 0)
        dropped = {k: v for k, v in counts.items() if k not in (schema.KEPT, schema.QUARANTINED)}
        extra: dict[str, Any] = {}
    else:
        rows_out, quarantined, dropped = sum(counts.values()), 0, {}
        extra = {"splits": counts}
    total = rows_out + sum(dropped.values()) + quarantined
    out = {
        "rows_in": total if rows_in is None else rows_in,
        "rows_out": rows_out,
        "dropped": dict(sorted(dropped.items())),
        "quarantined": quarantined,
        **extra,
    }
    if stage == "tokenize":
        out["tokens"] = column_sum(run.stage_dir(stage), "num_tokens")
    sizes_dir = run.stage_dir(stage) / "_cluster_sizes"
    if sizes_dir.is_dir():
        out["cluster_sizes"] = cluster_histogram(sizes_dir, rows_out + dropped.get("near_duplicate", 0))
    pairs_dir = run.stage_dir(stage) / "_pairs"
    if pairs_dir.is_dir():
        out["leakage_pairs"] = pair_counts(pairs_dir)
    out["invariant_ok"] = out["rows_in"] == total
    return out


def pack_stats(run: RunDir, tokens_in: int, docs_in: int) -> dict[str, Any]:
    """The pack stage's rows are training sequences, not documents: its invariant is on tokens (every token the
    tokenize stage made is packed or counted as cropped), and its figures are padding and efficiency."""
    stage_dir = run.stage_dir("pack")
    counts = partition_counts(stage_dir)
    rows = sum(counts.values())
    files = sorted(stage_dir.rglob("*.parquet"))
    seq_len = next((pq.read_schema(f).field("input_ids").type.list_size for f in files), 0)
    packed = sum(int(pc.sum(pc.list_flatten(pq.read_table(f, columns=["seq_lens"])["seq_lens"])).as_py() or 0)
                 for f in files)
    slots = rows * seq_len
    return {"rows_in": docs_in, "rows_out": rows, "dropped": {}, "quarantined": 0, "splits": counts,
            "packing": {"seq_len": seq_len, "tokens_in": tokens_in, "packed_tokens": packed,
                        "padding_tokens": slots - packed, "cropped_tokens": tokens_in - packed,
                        "efficiency": packed / slots if slots else 0.0},
            "invariant_ok": 0 <= tokens_in - packed}


def run_stats(run: RunDir, first_input_raw: bool = True) -> dict[str, Any]:
    """Stats of every finished stage, chained: a stage's rows_in is the previous stage's rows_out."""
    stages: dict[str, Any] = {}
    prev_out: int | None = None
    for stage in STAGES:
        if not run.marker(stage).exists():
            continue
        if stage == "pack":
            tok = stages.get("tokenize") or stage_stats(run, "tokenize", None)
            stages[stage] = pack_stats(run, tok["tokens"], tok["rows_out"])
            continue
        s = stage_stats(run, stage, prev_out if (prev_out is not None or not first_input_raw) else None)
        stages[stage] = s
        prev_out = s["rows_out"]
    return {"run_dir": str(run.root), "stages": stages,
            "invariant_ok": all(s["invariant_ok"] for s in stages.values())}


def write_stats(run: RunDir) -> dict[str, Any]:
    stats = run_stats(run)
    write_atomic(run.root / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats


def final_stage(run: RunDir) -> str | None:
    """The last finished stage whose rows carry text: its kept rows (split: every split) are the run's dataset."""
    done = [s for s in TEXT_STAGES if run.marker(s).exists()]
    return done[-1] if done else None


def final_dirs(run: RunDir) -> list[Path]:
    """The run's deliverables: the final text rows, the token rows a trainer reads (pack, else tokenize) and the
    kept rows of every ingested modality."""
    dirs = []
    stage = final_stage(run)
    if stage:
        dirs.append(run.kept_path(stage))
    tokens = next((s for s in ("pack", "tokenize") if run.marker(s).exists()), None)
    if tokens:
        dirs.append(run.stage_dir(tokens))
    return dirs + ingest_kept_dirs(run)


def ingest_kept_dirs(run: RunDir) -> list[Path]:
    """RUN/ingest/<modality>/status=kept of every modality `ray-jobs ingest` wrote."""
    return [d for d in sorted((run.root / INGEST).glob(f"*/{schema.STATUS}={schema.KEPT}")) if d.is_dir()]


def file_entries(run: RunDir, dirs: list[Path]) -> list[dict[str, Any]]:
    """Path (relative to the run), rows (Parquet footer), bytes and sha256 of every data file under `dirs`;
    `_` side tables and `.` temporary folders are not data."""
    entries = []
    for d in dirs:
        for f in sorted(d.rglob("*.parquet")):
            rel = f.relative_to(run.root)
            if any(part.startswith(("_", ".")) for part in rel.parts):
                continue
            entries.append({"path": rel.as_posix(), "rows": pq.ParquetFile(f).metadata.num_rows,
                            "bytes": f.stat().st_size, "sha256": _sha256(f)})
    return entries


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def config_fingerprint(run: RunDir) -> str | None:
    """Fingerprint of RUN/config.toml as written (None when the run has none, e.g. an ingest-only run)."""
    cfg = run.root / "config.toml"
    return fingerprint(cfg.read_text(encoding="utf-8")) if cfg.is_file() else None


def write_manifest(run: RunDir) -> dict[str, Any]:
    """RUN/manifest.json: every final file with its rows, bytes and sha256, plus what made them (config
    fingerprint, stage markers with their finish times, ray_jobs version). A consumer (or the report) re-hashes
    the files against it; a file changed, added or lost since the run shows."""
    files = file_entries(run, final_dirs(run))
    manifest = {
        "ray_jobs_version": __version__,
        "created": time.time(),
        "config_fingerprint": config_fingerprint(run),
        "final_stage": final_stage(run),
        "stages": {s: json.loads(run.marker(s).read_text()) for s in STAGES if run.marker(s).exists()},
        "rows": sum(f["rows"] for f in files),
        "bytes": sum(f["bytes"] for f in files),
        "files": files,
    }
    write_atomic(run.root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
