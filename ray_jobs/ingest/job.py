"""The ingest recipe: a manifest (JSONL, or COCO captions JSON) -> rows per modality, assets decoded and checked.

    RUN/ingest/<modality>/status=kept|quarantined|empty_page/

Each modality runs its own stage over blocks of `ingest.rows_per_task` manifest rows (PDF OCR and audio in actor
pools). Every row gets a `text` (caption, transcription, instruction + response, or the page's text) and a
`status`, so the output reads back like any text input: `ray-jobs run --input RUN/ingest/image/status=kept`
cleans, deduplicates and splits it, its asset columns travelling with it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import runtime, schema
from ray_jobs.config import RunConfig, to_dict
from ray_jobs.errors import UserError
from ray_jobs.ingest.audio import AudioStage
from ray_jobs.ingest.images import CONTENT_HASH, ImageStage
from ray_jobs.ingest.manifest import FILE, MODALITIES, MODALITY, coco_manifest, read_manifest, row_text
from ray_jobs.ingest.pdf import PdfStage
from ray_jobs.ingest.shards import asset_rows, webdataset_samples
from ray_jobs.report.html import close_run
from ray_jobs.rundir import INGEST, RunDir, atomic_dir, file_fingerprint, fingerprint, write_atomic
from ray_jobs.rundir.stats import partition_counts
from ray_jobs.steps.dedup.exact import BUCKET, DUPLICATE_OF, EXACT_DUPLICATE, HASH, keep_lowest_id


def manifest_table(path: str, cfg: RunConfig) -> pa.Table:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"manifest {p} does not exist; give a JSONL manifest or a COCO captions JSON")
    if p.suffix == ".json":
        images = cfg.ingest.coco_images or str(p.parent.parent / p.stem.replace("captions_", ""))
        return coco_manifest(p, images, cfg.ingest.allowed_roots)
    return read_manifest(p, cfg.ingest.allowed_roots)


def _finish(table: pa.Table) -> pa.Table:
    """text for every row (the asset's own text where a stage made one) and status from `_error`."""
    rows = table.to_pylist()
    if schema.TEXT not in table.column_names:
        table = table.append_column(schema.TEXT, pa.array([row_text(r) for r in rows], pa.string()))
    status = pc.if_else(pc.is_valid(table[schema.ERROR]), schema.QUARANTINED,
                        table[schema.STATUS] if schema.STATUS in table.column_names else schema.KEPT)
    return schema.set_status(table, status)


log = logging.getLogger("ray_jobs")
COUNTS = "_counts.json"


def ingest(cfg: RunConfig, manifest: str, force: bool = False) -> dict[str, dict[str, int]]:
    """Write RUN/ingest/<modality>/status=*/ for every modality the manifest has, then the marker
    `_SUCCESS.ingest`, stats.json, manifest.json and report.html, as every step does; returns rows per status.

    A re-run with the same manifest (path and content: rundir.file_fingerprint) and the same [ingest] settings and
    tokenizer skips; `force` redoes. The asset files themselves are not fingerprinted (a COCO manifest names 118k
    images: hashing them would read the corpus): replaced assets under an unchanged manifest need `force`."""
    fp = fingerprint(INGEST, str(Path(manifest).resolve()), file_fingerprint(manifest), to_dict(cfg.ingest),
                     cfg.tokenize.tokenizer)
    _as_a_step(RunDir(cfg.output.dir), INGEST, fp, force, lambda: _ingest(cfg, manifest))
    return json.loads((Path(cfg.output.dir) / INGEST / COUNTS).read_text())


def _as_a_step(run: RunDir, name: str, fp: str, force: bool, work) -> None:
    """A command outside the planner under the run-directory contract: the lock, `work()` unless `_SUCCESS.<name>`
    has `fp` (or `force`), the marker, then stats.json, manifest.json and report.html as every run ends with."""
    with run.lock():
        if run.is_done(name, fp, force):
            log.info("%s already done in %s: skipped (use --force to redo)", name, run.root)
        else:
            run.marker(name).unlink(missing_ok=True)  # a redo that dies leaves no marker over half its folders
            work()
            run.mark_done(name, fp)
        close_run(run)


def _ingest(cfg: RunConfig, manifest: str) -> dict[str, dict[str, int]]:
    table = manifest_table(manifest, cfg)
    out = Path(cfg.output.dir) / INGEST
    stages = {"image": ImageStage(cfg.ingest.image), "pdf": PdfStage(cfg.ingest.pdf),
              "audio": AudioStage(cfg.ingest.audio, cfg.tokenize.tokenizer)}
    pools = {"image": (1, 1.0), "pdf": (cfg.ingest.pdf.actors, cfg.ingest.pdf.actor_cpus), "audio": (1, 1.0)}
    counts: dict[str, dict[str, int]] = {}
    with runtime.ray_session(cfg.ray):
        for modality in MODALITIES:
            # manifest lines that could not be parsed have no modality: filed once, with the images' quarantine
            mask = pc.equal(table[MODALITY], modality)
            if modality == MODALITIES[0]:
                mask = pc.or_kleene(mask, pc.is_null(table[MODALITY]))
            part = table.filter(pc.fill_null(mask, False))
            if not len(part):
                continue
            actors, cpus = pools[modality]
            ds = runtime.apply(runtime.from_table(part, cfg.ingest.rows_per_task), stages[modality], batch_size=None,
                              actors=actors, actor_cpus=cpus)
            ds = runtime.map_tables(ds, _finish, batch_size=None)
            if modality == "image":  # the same bytes in another file: exact_duplicate of the lowest id's file
                ds = runtime.map_groups(runtime.map_tables(ds, _hash_bucket(1 + len(part) // 50_000), batch_size=None),
                                       BUCKET, duplicate_files, num_partitions=1 + len(part) // 50_000)
            runtime.write_partitioned(ds, out / modality, schema.STATUS, {})
            counts[modality] = partition_counts(out / modality)
    for modality in MODALITIES:  # a modality the manifest no longer has: its rows are not this run's
        if modality not in counts:
            shutil.rmtree(out / modality, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / COUNTS, json.dumps(counts, indent=2) + "\n")
    return counts


def _hash_bucket(buckets: int):
    """The image content hash as the exact-dedup hash and bucket (its first 64 bits)."""
    def fn(table: pa.Table) -> pa.Table:
        h = np.array([int(x[:16], 16) if x else 0 for x in table[CONTENT_HASH].to_pylist()], dtype=np.uint64)
        return table.append_column(HASH, pa.array(h)).append_column(
            BUCKET, pa.array((h % np.uint64(buckets)).astype(np.int32)))

    return fn


def duplicate_files(table: pa.Table) -> pa.Table:
    """One bucket of image rows: rows of the lowest id's file stay kept (several captions of one image are
    several pairs, not duplicates: COCO has five per image); a row whose file is another with the same bytes is
    `exact_duplicate` of that lowest id. Helper columns dropped; quarantined rows untouched."""
    out = keep_lowest_id(table)  # status and duplicate_of by content hash, as exact text dedup does
    rows = out.to_pylist()
    first_file = {r[schema.ID]: r[FILE] for r in rows if r[schema.STATUS] == schema.KEPT}
    for r in rows:
        if r[schema.STATUS] == EXACT_DUPLICATE and first_file.get(r[DUPLICATE_OF]) == r[FILE]:
            r[schema.STATUS], r[DUPLICATE_OF] = schema.KEPT, None
    return pa.Table.from_pylist(rows, schema=out.schema)


def pack_assets(cfg: RunConfig, src: str, fmt: str, force: bool = False) -> Path:
    """Ingested rows (any `RUN/ingest/<modality>/...` folder) -> OUTPUT/assets/<fmt>/: WebDataset tar shards or
    Parquet with the asset bytes in a binary column (multimodal/shards.py), written by Ray tasks, renamed
    into place when complete; then `_SUCCESS.assets-<fmt>` (fingerprint of the source files and the shard size),
    stats.json, manifest.json and report.html. A re-run with the same source skips; `force` redoes."""
    if fmt not in ("webdataset", "parquet"):
        raise UserError(f"pack --format must be tokens, webdataset or parquet; got {fmt!r}")
    name = f"assets-{fmt}"
    target = Path(cfg.output.dir) / "assets" / fmt

    def work() -> None:
        with runtime.ray_session(cfg.ray), atomic_dir(target) as tmp:
            rows = runtime.map_tables(runtime.read_parquet(src), asset_rows, batch_size=cfg.ingest.rows_per_task)
            if fmt == "parquet":
                rows.write_parquet(str(tmp), compression="zstd")
            else:
                runtime.map_tables(rows, webdataset_samples, batch_size=None).write_webdataset(str(tmp), encoder=None)

    fp = fingerprint(name, str(Path(src).resolve()), file_fingerprint(src), cfg.ingest.rows_per_task)
    _as_a_step(RunDir(cfg.output.dir), name, fp, force, work)
    return target
