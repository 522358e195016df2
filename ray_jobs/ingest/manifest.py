"""Multimodal manifests -> canonical rows: one row per asset (a PDF row is exploded into pages later).

A manifest is JSONL, one object per asset: `id`, `modality` (image | pdf | audio), `file` (relative to the
manifest), optionally `page` (PDF: only that 1-based page), and the text that goes with the asset: `caption`,
`transcription`, or `instruction` + `response`. COCO captions JSON (`annotations/captions_*.json` + the image
folder) gives one image row per caption. A line that is not such an object becomes a quarantine row naming the
line and what was wrong (a field of the wrong type is named, never coerced); the rest is read. An id on two or
more lines names no one row: every such line is quarantined.

An asset must resolve, symlinks followed, under the manifest's folder (the COCO image folder) or one of
`ingest.allowed_roots`: a manifest is data, often from elsewhere, and `../../home/...` or `/etc/...` in it must
not make the job read (and copy into its output) files the user never meant to hand over. Other paths are
quarantined with the root to allow in the reason.
"""

from __future__ import annotations

import codecs
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


def _found(value) -> str:
    return f"{type(value).__name__} {value!r}"


def _check(rec) -> str | None:
    """Why a parsed line is not an asset record, or None."""
    if not isinstance(rec, dict):
        return f"expected a JSON object per line, found {type(rec).__name__}"
    missing = [k for k in (schema.ID, MODALITY, FILE) if rec.get(k) in (None, "")]
    if missing:
        return f"missing {', '.join(missing)} (every line needs id, modality and file)"
    if type(rec[schema.ID]) not in (str, int):  # not bool, float, list...: an id is a name
        return f"id must be a string or an integer; found {_found(rec[schema.ID])}"
    if not isinstance(rec[MODALITY], str) or rec[MODALITY] not in MODALITIES:
        return f"modality must be one of {', '.join(MODALITIES)}; found {rec[MODALITY]!r}"
    if not isinstance(rec[FILE], str):
        return f"file must be a path (a string); found {_found(rec[FILE])}"
    if "\0" in rec[FILE]:
        return f"file must be a path (a string); found a NUL character in {rec[FILE]!r}"
    if rec.get(PAGE) is not None and (type(rec[PAGE]) is not int or rec[PAGE] < 1):
        return f"page must be a 1-based integer; found {rec[PAGE]!r}"
    bad = [f"{k} must be a string; found {_found(rec[k])}" for k in TEXT_FIELDS
           if rec.get(k) is not None and not isinstance(rec[k], str)]
    return "; ".join(bad) or None


def _resolve(name: str, root: Path, allowed: tuple[Path, ...]) -> tuple[str, str | None]:
    """(the asset's path, symlinks resolved; None, or why it may not be read)."""
    try:
        path = (root / name).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError in Python 3.11), a name too long
        return str(root / name), f"file {name!r} cannot be resolved: {e}; fix the path or the links on it"
    if any(path.is_relative_to(r) for r in (root, *allowed)):
        return str(path), None
    roots = ", ".join(map(str, allowed)) or "none"
    return str(path), (f"file {name!r} resolves to {path}, outside the manifest's folder {root} and "
                       f"ingest.allowed_roots ({roots}); move it under the manifest's folder or add {path.parent} "
                       f"to ingest.allowed_roots")


class _Rows:
    """Rows of one manifest (or COCO file): records that check out, quarantine rows for the others."""

    def __init__(self, root: Path, allowed_roots: tuple[str, ...], source: str, unit: str) -> None:
        self.root, self.source, self.unit = root.resolve(), source, unit
        self.allowed = tuple(Path(r).resolve() for r in allowed_roots)
        self.rows: list[dict] = []

    def add(self, rec, offset: int, error: str | None = None) -> None:
        error = error or _check(rec)
        row = {c: None for c in COLUMNS}
        row.update({schema.SOURCE: self.source, schema.OFFSET: offset})
        if error is None:
            row.update({k: rec.get(k) for k in (MODALITY, PAGE, *TEXT_FIELDS)})
            row[schema.ID] = str(rec[schema.ID])
            row[FILE], error = _resolve(rec[FILE], self.root, self.allowed)
        else:
            row[schema.ID] = f"{self.source}:{offset}"
        row[schema.ERROR] = error and f"{self.source} @ {offset}: {error}"
        self.rows.append(row)

    def table(self) -> pa.Table:
        """The rows, every row of an id that is on two or more lines quarantined (which one is meant is not
        knowable); such rows are named by their line, as unreadable lines are."""
        where: dict[str, list[dict]] = {}
        for row in self.rows:
            if row[MODALITY] is not None:
                where.setdefault(row[schema.ID], []).append(row)
        for rid, rows in where.items():
            if len(rows) > 1:
                at = ", ".join(str(r[schema.OFFSET]) for r in rows)
                for r in rows:
                    r[schema.ERROR] = (f"{self.source}: id {rid!r} is on {self.unit}s {at}: every {self.unit} needs "
                                       f"its own id (it names the row); give each {self.unit} a unique id")
                    r[schema.ID] = f"{self.source}:{r[schema.OFFSET]}"
        return pa.Table.from_pylist(self.rows, schema=pa.schema(COLUMNS))


def read_manifest(path: str | Path, allowed_roots: tuple[str, ...] = ()) -> pa.Table:
    """A JSONL manifest -> one row per non-blank line (quarantine rows carry `_error`); assets must resolve under
    the manifest's folder or `allowed_roots` (ingest.allowed_roots)."""
    path = Path(path)
    rows = _Rows(path.parent, allowed_roots, path.name, "line")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # a UTF-8 BOM (Windows editors) is not part of line 1
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                rows.add(None, lineno, f"malformed JSON ({e})")
                continue
            rows.add(rec, lineno)
    return rows.table()


def coco_manifest(captions_json: str | Path, image_dir: str | Path, allowed_roots: tuple[str, ...] = ()) -> pa.Table:
    """COCO captions: one image row per caption, id `coco:<image id>:<caption id>`; image files must resolve under
    `image_dir` or `allowed_roots`."""
    captions_json = Path(captions_json)
    data = json.loads(captions_json.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list):
        raise ValueError(f"{captions_json} is not COCO captions JSON: expected an object with lists `images` and "
                         f"`annotations`; give annotations/captions_*.json, or a JSONL manifest")
    files = {im.get("id"): im.get("file_name") for im in data["images"] if isinstance(im, dict)}
    rows = _Rows(Path(image_dir), allowed_roots, captions_json.name, "annotation")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or type(ann.get("id")) not in (str, int) or ann.get("image_id") is None:
            rows.add(None, i, f"expected an annotation object with id, image_id and caption; found "
                              f"{_found(ann)}")
            continue
        name = files.get(ann["image_id"])
        rec = {schema.ID: f"coco:{ann['image_id']}:{ann['id']}", MODALITY: "image", FILE: name,
               "caption": ann.get("caption")}
        rows.add(rec, i, None if name else f"caption {ann['id']} names image {ann['image_id']}, which is not in "
                                           f"`images` (or has no file_name)")
    return rows.table()


def require_file(path: str) -> None:
    """Raise ValueError when an asset is missing (decoders say things like "System error." instead)."""
    if not Path(path).is_file():
        raise ValueError("file not found (manifest paths are relative to the manifest's folder)")


def row_text(row: dict) -> str:
    """The text a row carries into cleaning, dedup and split: caption, transcription, or instruction + response."""
    if row.get("instruction") or row.get("response"):
        return "\n\n".join(t for t in (row.get("instruction"), row.get("response")) if t)
    return row.get("caption") or row.get("transcription") or ""
