"""RUN/manifest.json: the run's final files with rows, bytes and sha256, and what made them."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ray_jobs import __version__, schema
from ray_jobs.rundir import DECISIONS, INGEST, MANIFEST, ROWS, RunDir, fingerprint, write_atomic


def final_stage(run: RunDir) -> str | None:
    """The last finished step whose folder holds rows with their text: its kept rows (split: every split) hold
    the run's dataset (with `final_ids` saying which of them a later step's decisions kept)."""
    from ray_jobs.steps.registry import get

    done = [s for s in run.done_steps() if get(s).carries_text and (run.marker_info(s) or {}).get("output") == ROWS]
    return done[-1] if done else None


def final_decisions(run: RunDir) -> Path | None:
    """The kept decisions of the last global step that ran after the final text step (its ids are the dataset),
    or None when the final text step's rows are the dataset as they are."""
    from ray_jobs.steps.registry import get

    text = final_stage(run)
    done = run.done_steps()
    after = done[done.index(text) + 1:] if text in done else []
    decided = [s for s in after if get(s).carries_text and (run.marker_info(s) or {}).get("output") == DECISIONS]
    return run.kept_path(decided[-1]) if decided else None


def final_dirs(run: RunDir) -> list[Path]:
    """The run's deliverables: the final text rows, the token rows a trainer reads (pack, else tokenize) and the
    kept rows of every ingested modality."""
    dirs = []
    stage = final_stage(run)
    if stage:
        dirs.append(run.kept_path(stage))
    tokens = next((s for s in ("pack", "tokenize") if (run.marker_info(s) or {}).get("output") == ROWS), None)
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
        "stages": {s: run.marker_info(s) for s in [INGEST, *run.done_steps()] if run.marker(s).exists()},
        "rows": sum(f["rows"] for f in files),
        "bytes": sum(f["bytes"] for f in files),
        "files": files,
    }
    write_atomic(run.root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
