"""Boilerplate-line dedup (`[dedup.lines]`): a line (or paragraph) that occurs in at least `min_docs` documents is
kept in the document with the lowest id and removed from the others, as C4's and datatrove's line dedup do.

    text pass   each kept document's distinct unit hashes (`_lines`, xxh3-64 of the stripped line)   digest
    compact     (hash, id) rows --shuffle on hash--> hashes in >= min_docs documents: every holder
                but the lowest id gets (id, hash) --shuffle on id--> `_drop_lines` per changed id      decide
    text pass   `dedup_lines` (a row step before tokenize): the listed units leave the text; the row keeps
                its id and records `lines_removed`; a row left under `min_chars` is dropped           ops

Only documents dedup kept take part: a line whose lowest-id holder is a removed duplicate would otherwise leave
every kept document. Empty units are never counted (blank lines are layout, not boilerplate).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ray_jobs import runtime, schema
from ray_jobs.errors import UserError
from ray_jobs.runtime import Dataset
from ray_jobs.steps.base import Stage
from ray_jobs.steps.dedup.config import LinesConfig
from ray_jobs.steps.dedup.exact import text_hashes
from ray_jobs.steps.dedup.shuffle import grouped

LINES = "_lines"  # digest: a document's distinct unit hashes
DROP_LINES = "_drop_lines"  # decision: the unit hashes to remove from a document (uint64 array bytes)
LINES_REMOVED = "lines_removed"
TOO_SHORT = "too_short_after_line_dedup"
_PART, _HASH = "_part", "_unit"
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")


def units(text: str, unit: str) -> list[str]:
    return text.split("\n") if unit == "line" else _PARAGRAPH.split(text)


def _unit_hash(u: str) -> int:
    return xxhash.xxh3_64_intdigest(u.strip().encode())


def line_hashes(text: pa.Array | pa.ChunkedArray, unit: str) -> pa.Array:
    """list<uint64>: each document's distinct non-empty unit hashes (null text: an empty list)."""
    out = [sorted({_unit_hash(u) for u in units(t, unit) if u.strip()}) if t else []
           for t in text.to_pylist()]
    return pa.array(out, pa.list_(pa.uint64()))


def removals(docs: Dataset, cfg: LinesConfig, num_partitions: int) -> Dataset:
    """Kept documents (id, `_lines`) -> (id, `_drop_lines`) for every document that loses a unit."""
    exploded = runtime.map_tables(docs, _exploded(num_partitions), batch_size=None)
    lost = grouped(exploded, _PART, _lost(cfg.min_docs, num_partitions), num_partitions)
    return grouped(lost, _PART, _per_document, num_partitions)


def _exploded(num_partitions: int):
    def fn(table: pa.Table) -> pa.Table:
        lines = table[LINES].combine_chunks()
        flat = lines.flatten().to_numpy()
        ids = table[schema.ID].combine_chunks().take(pc.list_parent_indices(lines))
        return pa.table({_HASH: pa.array(flat, pa.uint64()), schema.ID: ids,
                         _PART: pa.array((flat % np.uint64(num_partitions)).astype(np.int32))})

    return fn


def _lost(min_docs: int, num_partitions: int):
    """One shuffle group of (hash, id) -> (hash, id) of every holder of a unit in >= min_docs documents but the
    lowest id, routed by id for the next shuffle."""

    def fn(table: pa.Table) -> pa.Table:
        table = table.take(pc.sort_indices(table, [(_HASH, "ascending"), (schema.ID, "ascending")]))
        h = table[_HASH].to_numpy()
        start = np.ones(len(h), dtype=bool)
        start[1:] = h[1:] != h[:-1]
        first = np.flatnonzero(start)
        count = np.diff(np.append(first, len(h)))
        lose = (np.repeat(count, count) >= min_docs) & ~start
        out = table.filter(pa.array(lose)).select([_HASH, schema.ID])
        part = (text_hashes(out[schema.ID], lowercase=False) % np.uint64(num_partitions)).astype(np.int32)
        return out.append_column(_PART, pa.array(part))

    return fn


def _per_document(table: pa.Table) -> pa.Table:
    """(id, hash) rows -> one row per id, its hashes as the bytes of a uint64 array: a binary column rides
    through a hash join, a list column does not (Arrow's join refuses list payloads)."""
    per = table.group_by(schema.ID, use_threads=False).aggregate([(_HASH, "list")])
    packed = [np.asarray(h, dtype=np.uint64).tobytes() for h in per[f"{_HASH}_list"].to_pylist()]
    return pa.table({schema.ID: per[schema.ID], DROP_LINES: pa.array(packed, pa.binary())})


class LineRemover(Stage):
    """Rows with `_drop_lines` (null: nothing to remove) -> the listed units removed from the text, `lines_removed`,
    and status `too_short_after_line_dedup` when under `min_chars` characters are left."""

    def __init__(self, cfg: LinesConfig) -> None:
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> pa.Table:
        if DROP_LINES not in table.column_names:
            raise UserError("dedup_lines removes the lines that dedup listed (`_drop_lines`), and these rows have "
                            "none: run it in a plan (`ray-jobs run` with dedup.lines.enabled = true), or alone as "
                            "`ray-jobs dedup --set dedup.lines.enabled=true`")
        drop = [np.frombuffer(b, np.uint64).tolist() if b else None for b in table[DROP_LINES].to_pylist()]
        texts = table[schema.TEXT].to_pylist()
        removed = np.zeros(len(table), dtype=np.int64)
        sep = "\n" if self.cfg.unit == "line" else "\n\n"
        for i, hashes in enumerate(drop):
            if hashes and texts[i]:
                gone = set(hashes)
                parts = units(texts[i], self.cfg.unit)
                kept = [u for u in parts if not (u.strip() and _unit_hash(u) in gone)]
                removed[i] = len(parts) - len(kept)
                texts[i] = sep.join(kept)
        table = table.drop_columns([DROP_LINES])
        text = pa.array(texts, pa.string())
        table = table.set_column(table.schema.get_field_index(schema.TEXT), schema.TEXT, text)
        status = table[schema.STATUS] if schema.STATUS in table.column_names else pa.array(
            [schema.KEPT] * len(table), pa.string())
        short = pc.and_(pc.greater(pa.array(removed), 0),
                        pc.less(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(text, ""))), self.cfg.min_chars))
        table = schema.set_status(table, pc.if_else(pc.and_(short, pc.equal(status, schema.KEPT)), TOO_SHORT, status))
        return table.append_column(LINES_REMOVED, pa.array(removed))
