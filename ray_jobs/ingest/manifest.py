"""Multimodal manifests -> canonical rows: one row per asset (a PDF row is exploded into pages later).

A manifest is JSONL, one object per asset: `id`, `modality` (image | pdf | audio), `file` (relative to the
manifest), optionally `page` (PDF: only that 1-based page), and the text that goes with the asset: `caption`,
`transcription`, or `instruction` + `response`. COCO captions JSON (`annotations/captions_*.json` + the image
folder) gives one image row per caption. A line that is not such an object becomes a quarantine row naming the
line and what was wrong; the rest is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from ray_jobs import schema

MODALITIES = ("image", "pdf", "audio")
MODALITY, FILE, PAGE = "modality", "file", "page"
TEXT_FIELDS = ("caption", "transcription", "instruction", "response")
COLUMNS = {schema.ID: pa.string(), MODALITY: pa.string(), FILE: pa.string(), PAGE: pa.int32(),
           **{f: pa.string() for f in TEXT_FIELDS}, schema.SOURCE: pa.string(), schema.OFFSET: pa.int64(),
           schema.ERROR: pa.string()}


def _row(rec: dict, root: Path, source: str, offset: int, error: str | None = None) -> dict:
    row = {c: None for c in COLUMNS}
    row.update({schema.SOURCE: source, schema.OFFSET: offset, schema.ERROR: error})
    if error is None:
        row.update({k: rec.get(k) for k in (schema.ID, MODALITY, PAGE, *TEXT_FIELDS)})
        row[schema.ID] = str(rec[schema.ID])
        row[FILE] = str((root / rec[FILE]).resolve())
    else:
        row[schema.ID] = f"{source}:{offset}"
    return row


def _check(rec) -> str | None:
    if not isinstance(rec, dict):
        return f"expected a JSON object per line, found {type(rec).__name__}"
    missing = [k for k in (schema.ID, MODALITY, FILE) if not rec.get(k)]
    if missing:
        return f"missing {', '.join(missing)} (every line needs id, modality and file)"
    if rec[MODALITY] not in MODALITIES:
        return f"modality must be one of {', '.join(MODALITIES)}; found {rec[MODALITY]!r}"
    if rec.get(PAGE) is not None and (not isinstance(rec[PAGE], int) or rec[PAGE] < 1):
        return f"page must be a 1-based integer; found {rec[PAGE]!r}"
    bad = [k for k in TEXT_FIELDS if rec.get(k) is not None and not isinstance(rec[k], str)]
    return f"{', '.join(bad)} must be strings" if bad else None


def read_manifest(path: str | Path) -> pa.Table:
    """A JSONL manifest -> one row per line (quarantine rows carry `_error`)."""
    path = Path(path)
    rows = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                rows.append(_row({}, path.parent, path.name, lineno, f"{path.name} @ {lineno}: malformed JSON ({e})"))
                continue
            err = _check(rec)
            rows.append(_row(rec, path.parent, path.name, lineno, f"{path.name} @ {lineno}: {err}" if err else None))
    return pa.Table.from_pylist(rows, schema=pa.schema(COLUMNS))


def coco_manifest(captions_json: str | Path, image_dir: str | Path) -> pa.Table:
    """COCO captions: one image row per caption, id `coco:<image id>:<caption id>`."""
    data = json.loads(Path(captions_json).read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    root = Path(image_dir)
    rows = []
    for i, ann in enumerate(data["annotations"]):
        name = files.get(ann["image_id"])
        rec = {schema.ID: f"coco:{ann['image_id']}:{ann['id']}", MODALITY: "image", FILE: name or "",
               "caption": ann.get("caption")}
        err = None if name else f"caption {ann['id']} names image {ann['image_id']}, which is not in `images`"
        rows.append(_row(rec, root, Path(captions_json).name, i, err))
    return pa.Table.from_pylist(rows, schema=pa.schema(COLUMNS))


def require_file(path: str) -> None:
    """Raise ValueError when an asset is missing (decoders say things like "System error." instead)."""
    if not Path(path).is_file():
        raise ValueError("file not found (manifest paths are relative to the manifest's folder)")


def row_text(row: dict) -> str:
    """The text a row carries into cleaning, dedup and split: caption, transcription, or instruction + response."""
    if row.get("instruction") or row.get("response"):
        return "\n\n".join(t for t in (row.get("instruction"), row.get("response")) if t)
    return row.get("caption") or row.get("transcription") or ""
