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
    RUN/.lock                    held (flock) by the one command writing the run; says its pid, host, start, command

A stage folder appears only complete (written to a temporary folder, then renamed). A re-run skips a stage
whose marker carries the same fingerprint; a changed config or input, or `--force`, redoes it. A status-partitioned
step always has its `status=kept/` folder, empty when it kept no row.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import xxhash

from ray_jobs import schema
from ray_jobs.errors import UserError

INGEST = "ingest"  # RUN/ingest/<modality>/status=*/, written by `ray-jobs ingest`
# Every Parquet file a run writes. zstd level 3 instead of pyarrow's 1: the clean text 12 % and the packed token
# rows 3 % smaller (200 MB benchmark corpus) for ~0.01 CPU s per MB written, which kept the run's bytes under 3x
# its input Parquet.
PARQUET_ARGS = {"compression": "zstd", "compression_level": 3}
MANIFEST = "manifest.json"
# What a step's folder holds (its marker's "output"): "rows" = its output rows, all columns; "decisions" = one
# compact row per input row (id, status or split, what the step added), written by a global step inside a plan
# (the text stays in the text pass's folder); "drops" = only the rows it dropped, its kept rows went on fused in
# the same pass.
ROWS, DECISIONS, DROPS = "rows", "decisions", "drops"
LOCK = ".lock"
_HELD: dict[Path, int] = {}  # run directories this process holds the lock of -> nesting depth
# Input files are fingerprinted by size and mtime (one stat) plus xxh3 of their content: all of it up to
# FULL_HASH_BYTES, else the first and last HEAD_TAIL_BYTES. So an edit that keeps the size and the mtime (cp -p,
# rsync -t, a filesystem with 1-2 s mtimes) is still seen in a file under 1 MiB or in a larger file's head or tail;
# one in the middle of a larger file is not (hashing it all costs ~1 s per GB read: --force is cheaper). Cost: at
# most 128 KiB read per file, 50 MB for 400 files (~0.1 s from the page cache).
FULL_HASH_BYTES = 1 << 20
HEAD_TAIL_BYTES = 64 << 10


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_fingerprint(path: str | Path) -> list:
    """[size, mtime_ns, content hash] of a file (see FULL_HASH_BYTES); of a folder (an HF dataset) each file's,
    with its relative path; a path that is neither (a hub id) is itself."""
    p = Path(path)
    if p.is_dir():
        return [[f.relative_to(p).as_posix(), *file_fingerprint(f)] for f in sorted(p.rglob("*")) if f.is_file()]
    if not p.is_file():
        return [str(path)]
    st = p.stat()
    h = xxhash.xxh3_64()
    with p.open("rb") as f:
        if st.st_size <= FULL_HASH_BYTES:
            h.update(f.read())
        else:
            h.update(f.read(HEAD_TAIL_BYTES))
            f.seek(-HEAD_TAIL_BYTES, os.SEEK_END)
            h.update(f.read())
    return [st.st_size, st.st_mtime_ns, h.hexdigest()]


def parquet_rows(path: Path) -> int:
    """Rows of the Parquet files under `path` (footers only), `_` side tables and `.` temporary folders left out;
    0 for a missing folder."""
    import pyarrow.parquet as pq

    if path.is_file():
        return pq.ParquetFile(path).metadata.num_rows
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(path.rglob("*.parquet"))
               if not any(part.startswith(("_", ".")) for part in f.relative_to(path).parts))


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

    def mark_done(self, stage: str, fp: str, output: str = ROWS, pass_no: int = 0) -> None:
        """The marker, after the folder; a step that kept no row gets an empty status=kept/ (Ray writes no folder
        for a partition without rows), so what reads its kept rows finds none instead of failing."""
        from ray_jobs.steps.registry import names

        if stage in names() and output != DROPS and self.stage_dir(stage).is_dir():
            self.kept_path(stage).mkdir(exist_ok=True)
        write_atomic(self.marker(stage), json.dumps({"fingerprint": fp, "finished": time.time(), "output": output,
                                                     "pass": pass_no}) + "\n")

    def marker_info(self, stage: str) -> dict | None:
        m = self.marker(stage)
        return json.loads(m.read_text()) if m.exists() else None

    def done_steps(self) -> list[str]:
        """Steps with a marker, in registry order (the order the plan ran them)."""
        from ray_jobs.steps.registry import names

        return [s for s in names() if self.marker(s).exists()]

    def invalidate_after(self, stage: str) -> None:
        """A redone step makes the later steps stale: drop their markers so they are redone too."""
        from ray_jobs.steps.registry import names

        order = names()
        for later in order[order.index(stage) + 1:]:
            self.marker(later).unlink(missing_ok=True)

    def kept_path(self, stage: str) -> Path:
        """The kept rows of a status-partitioned step; a split-partitioned step's folder holds only kept rows."""
        from ray_jobs.steps.registry import get

        if get(stage).partition == schema.STATUS:
            return self.stage_dir(stage) / f"{schema.STATUS}={schema.KEPT}"
        return self.stage_dir(stage)

    @contextlib.contextmanager
    def lock(self, command: str | None = None) -> Iterator[None]:
        """One writer at a time. An exclusive flock on RUN/.lock, which the kernel releases when the holder's
        descriptor closes, however the process ends (kill -9 included): a dead run never leaves the directory
        stuck, and no stale-lock guess by pid is needed (pids are reused, and the holder may be on another host).
        On a shared filesystem Linux maps flock to NFS byte-range locks (since 2.6.12), so two nodes exclude each
        other too. The holder writes its pid, host, start and command into the file for the refusal's message.
        Re-entrant in one process (the CLI holds it around run_pipeline, which takes it too); Python's
        descriptors are not inherited by the processes it starts (PEP 446), so a local Ray started under the lock
        does not keep it after the run dies."""
        key = self.root.resolve()
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(self._busy(os.pread(fd, 4096, 0))) from None
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                      "command": command or shlex.join(sys.argv)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
            _HELD[key] = 1
            try:
                yield
            finally:
                del _HELD[key]
        finally:
            os.close(fd)  # releases the flock

    def _busy(self, raw: bytes) -> str:
        try:
            h = json.loads(raw)
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h["started"]))
            who = f"pid {h['pid']} on {h['host']}, started {started}: `{h['command']}`"
        except (ValueError, KeyError, TypeError):
            who = "a process that has not yet written its details"
        return (f"run directory {self.root} is in use by {who}; two commands writing one run directory would mix "
                f"their outputs. Wait for it to end (or stop it), or write to another --output")
