"""The ingest recipe: a manifest (JSONL, or COCO captions JSON) -> rows per modality, assets decoded and checked.

    RUN/ingest/<modality>/status=kept|quarantined|empty_page/

Each modality runs its own stage over blocks of `ingest.rows_per_task` manifest rows (PDF OCR and audio in actor
pools). Every row gets a `text` (caption, transcription, instruction + response, or the page's text) and a
`status`, so the output reads back like any text input: `ray-jobs run --input RUN/ingest/image/status=kept`
cleans, deduplicates and splits it, its asset columns travelling with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import engine, schema
from ray_jobs.config import RunConfig
from ray_jobs.multimodal.audio import AudioStage
from ray_jobs.multimodal.images import ImageStage
from ray_jobs.multimodal.manifest import MODALITIES, MODALITY, coco_manifest, read_manifest, row_text
from ray_jobs.multimodal.pdf import PdfStage
from ray_jobs.rundir import partition_counts, write_atomic

INGEST = "ingest"


def manifest_table(path: str, cfg: RunConfig) -> pa.Table:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"manifest {p} does not exist; give a JSONL manifest or a COCO captions JSON")
    if p.suffix == ".json":
        images = cfg.ingest.coco_images or str(p.parent.parent / p.stem.replace("captions_", ""))
        return coco_manifest(p, images)
    return read_manifest(p)


def _finish(table: pa.Table) -> pa.Table:
    """text for every row (the asset's own text where a stage made one) and status from `_error`."""
    rows = table.to_pylist()
    if schema.TEXT not in table.column_names:
        table = table.append_column(schema.TEXT, pa.array([row_text(r) for r in rows], pa.string()))
    status = pc.if_else(pc.is_valid(table[schema.ERROR]), schema.QUARANTINED,
                        table[schema.STATUS] if schema.STATUS in table.column_names else schema.KEPT)
    return schema.set_status(table, status)


def ingest(cfg: RunConfig, manifest: str) -> dict[str, dict[str, int]]:
    """Write RUN/ingest/<modality>/status=*/ for every modality the manifest has; returns rows per status."""
    table = manifest_table(manifest, cfg)
    out = Path(cfg.output.dir) / INGEST
    stages = {"image": ImageStage(cfg.ingest.image), "pdf": PdfStage(cfg.ingest.pdf),
              "audio": AudioStage(cfg.ingest.audio, cfg.tokenize.tokenizer)}
    pools = {"image": (1, 1.0), "pdf": (cfg.ingest.pdf.actors, cfg.ingest.pdf.actor_cpus), "audio": (1, 1.0)}
    counts: dict[str, dict[str, int]] = {}
    with engine.ray_session(cfg.ray):
        for modality in MODALITIES:
            # manifest lines that could not be parsed have no modality: filed once, with the images' quarantine
            mask = pc.equal(table[MODALITY], modality)
            if modality == MODALITIES[0]:
                mask = pc.or_kleene(mask, pc.is_null(table[MODALITY]))
            part = table.filter(pc.fill_null(mask, False))
            if not len(part):
                continue
            actors, cpus = pools[modality]
            ds = engine.apply(engine.from_table(part, cfg.ingest.rows_per_task), stages[modality], batch_size=None,
                              actors=actors, actor_cpus=cpus)
            engine.write_partitioned(engine.map_tables(ds, _finish, batch_size=None), out / modality,
                                     schema.STATUS, {})
            counts[modality] = partition_counts(out / modality)
    write_atomic(out / "_counts.json", json.dumps(counts, indent=2) + "\n")
    return counts
