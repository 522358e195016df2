"""Packing tokenized documents into fixed `seq_len` rows that keep document boundaries.

Within a batch, documents are placed by best-fit decreasing (the longest first, each into the fullest row it still
fits): on real length mixes it leaves a few percent of padding where first-come packing leaves 10-20 %. A document
longer than `seq_len` is cut into `seq_len` pieces (`overflow = "split"`, no token lost) or cut to its first
`seq_len` tokens (`"crop"`, the rest counted as cropped).

Each packed row carries
* `input_ids`: the documents back to back, then `pad_id`;
* `labels`: the documents' labels, IGNORE on padding and on each document's first token (the model must not learn
  to predict a document from the end of the previous one);
* `position_ids`: 0, 1, ... restarting at every document, so rotary/learned positions and flash attention's
  variable-length kernels (cu_seqlens = 0 + cumsum(seq_lens)) see each document alone;
* `seq_lens`: the lengths of the documents in the row, padding excluded, and `cu_seqlens` = 0 then their running
  sum: what `flash_attn_varlen_func` takes for the row (for a batch of rows, offset each by its row start).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ray_jobs.steps.tokenize.chat import IGNORE

INPUT_IDS, LABELS, POSITION_IDS, SEQ_LENS, CU_SEQLENS = "input_ids", "labels", "position_ids", "seq_lens", "cu_seqlens"
# Provenance of each piece in a row, aligned with seq_lens: the document's id, where the piece starts in it (0 = its
# first piece) and the document's full token count. They make the row traceable to its documents, and let the
# stats count documents (pieces at offset 0) and tokens in (their doc_lens) from the packed rows alone.
DOC_IDS, DOC_OFFSETS, DOC_LENS = "doc_ids", "doc_offsets", "doc_lens"


@dataclass(frozen=True)
class PackStats:
    rows: int
    documents: int
    tokens: int  # real tokens placed
    padding: int
    cropped: int

    def as_dict(self) -> dict:
        slots = self.tokens + self.padding
        return {"packed_rows": self.rows, "packed_documents": self.documents, "packed_tokens": self.tokens,
                "padding_tokens": self.padding, "cropped_tokens": self.cropped,
                "packing_efficiency": self.tokens / slots if slots else 0.0}


def pieces(lengths: np.ndarray, seq_len: int, overflow: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(document index, start, length) of every piece to place, and the tokens cropped."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if overflow == "crop":
        keep = np.minimum(lengths, seq_len)
        nz = keep > 0
        return np.flatnonzero(nz), np.zeros(nz.sum(), np.int64), keep[nz], int((lengths - keep).sum())
    n_pieces = np.maximum(-(-lengths // seq_len), 0)
    doc = np.repeat(np.arange(len(lengths)), n_pieces)
    first = np.cumsum(n_pieces) - n_pieces
    k = np.arange(len(doc)) - np.repeat(first, n_pieces)  # piece number within its document
    start = k * seq_len
    return doc, start, np.minimum(lengths[doc] - start, seq_len), 0


def best_fit_decreasing(sizes: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(row of each item, offset of each item in its row, rows). Items in decreasing size; each goes into the row
    with the least room that still holds it, a new row when none does."""
    order = np.argsort(-sizes, kind="stable")
    room: list[tuple[int, int]] = []  # (free slots, row), sorted
    row = np.empty(len(sizes), np.int64)
    offset = np.empty(len(sizes), np.int64)
    rows = 0
    for i in order:
        s = int(sizes[i])
        j = bisect.bisect_left(room, (s, -1))
        if j < len(room):
            free, r = room.pop(j)
        else:
            free, r = capacity, rows
            rows += 1
        row[i], offset[i] = r, capacity - free
        if free - s > 0:
            bisect.insort(room, (free - s, r))
    return row, offset, rows


def pack(ids: pa.ListArray, labels: pa.ListArray, seq_len: int, pad_id: int,
         overflow: str = "split", doc_ids: pa.Array | None = None) -> tuple[pa.Table, PackStats]:
    """Documents (list<int32> input ids and labels) -> packed rows of exactly seq_len tokens; with `doc_ids`,
    the rows also say which document each piece is from (DOC_IDS, DOC_OFFSETS, DOC_LENS)."""
    lengths = np.diff(ids.offsets.to_numpy()).astype(np.int64)
    base = ids.offsets.to_numpy()[:-1].astype(np.int64) - ids.offsets[0].as_py()
    flat_ids = ids.flatten().to_numpy(zero_copy_only=False)
    flat_labels = labels.flatten().to_numpy(zero_copy_only=False)
    doc, start, size, cropped = pieces(lengths, seq_len, overflow)
    row, offset, rows = best_fit_decreasing(size, seq_len)

    total = int(size.sum())
    src = np.repeat(base[doc] + start - np.cumsum(size) + size, size) + np.arange(total)  # token -> flat index
    dst = np.repeat(row * seq_len + offset - np.cumsum(size) + size, size) + np.arange(total)
    pos = np.arange(total) - np.repeat(np.cumsum(size) - size, size)  # position within its piece

    out_ids = np.full(rows * seq_len, pad_id, np.int32)
    out_labels = np.full(rows * seq_len, IGNORE, np.int32)
    out_pos = np.tile(np.arange(seq_len, dtype=np.int32), rows)  # padding keeps counting: harmless, masked
    out_ids[dst] = flat_ids[src]
    out_labels[dst] = np.where(pos == 0, IGNORE, flat_labels[src])
    out_pos[dst] = pos

    # pieces of each row in offset order -> seq_lens list column
    by_row = np.lexsort((offset, row))
    per_row = np.bincount(row, minlength=rows)
    sizes = size[by_row].astype(np.int32)
    row_start = np.concatenate([[0], np.cumsum(per_row)])
    seq_lens = pa.ListArray.from_arrays(pa.array(row_start.astype(np.int32)), pa.array(sizes))
    total_before = np.concatenate([[0], np.cumsum(sizes)])
    running = total_before[1:] - np.repeat(total_before[row_start[:-1]], per_row)  # running sum within the row
    cu = np.insert(running, row_start[:-1], 0)  # and a leading 0 per row
    cu_seqlens = pa.ListArray.from_arrays(pa.array((row_start + np.arange(rows + 1)).astype(np.int32)),
                                          pa.array(cu.astype(np.int32)))
    table = pa.table({
        INPUT_IDS: pa.FixedSizeListArray.from_arrays(pa.array(out_ids), seq_len),
        LABELS: pa.FixedSizeListArray.from_arrays(pa.array(out_labels), seq_len),
        POSITION_IDS: pa.FixedSizeListArray.from_arrays(pa.array(out_pos), seq_len),
        SEQ_LENS: seq_lens,
        CU_SEQLENS: cu_seqlens,
    })
    if doc_ids is not None:
        offsets = pa.array(row_start.astype(np.int32))
        piece_doc = pa.array(doc[by_row])
        def listed(values: pa.Array) -> pa.ListArray:
            return pa.ListArray.from_arrays(offsets, values)

        table = (table.append_column(DOC_IDS, listed(doc_ids.take(piece_doc)))
                 .append_column(DOC_OFFSETS, listed(pa.array(start[by_row].astype(np.int32))))
                 .append_column(DOC_LENS, listed(pa.array(lengths[doc[by_row]].astype(np.int32)))))
    return table, PackStats(rows=rows, documents=len(np.unique(doc)), tokens=total,
                            padding=rows * seq_len - total, cropped=cropped)


def pack_split_rows(seq_len: int, pad_id: int, overflow: str):
    """Tokenized rows (split, input_ids, labels, num_tokens) -> packed rows per split: the stage's map function.
    Rows without tokens (chat rows that failed, with their `_error`) are left out; their count stays in the
    tokenize stage."""

    def fn(table: pa.Table) -> pa.Table:
        import pyarrow.compute as pc

        table = table.filter(pc.greater(table["num_tokens"], 0))
        outs = []
        for split in pc.unique(table["split"]).to_pylist():
            part = table.filter(pc.equal(table["split"], split))
            packed, _ = pack(part[INPUT_IDS].combine_chunks(), part[LABELS].combine_chunks(), seq_len, pad_id,
                             overflow, part["id"].combine_chunks() if "id" in part.column_names else None)
            outs.append(packed.append_column("split", pa.array([split] * packed.num_rows, pa.string())))
        if not outs:
            empty = pa.array([], pa.list_(pa.int32(), seq_len))
            ragged = pa.array([], pa.list_(pa.int32()))
            cols = {INPUT_IDS: empty, LABELS: empty, POSITION_IDS: empty, SEQ_LENS: ragged, CU_SEQLENS: ragged}
            if "id" in table.column_names:
                cols |= {DOC_IDS: pa.array([], pa.list_(pa.string())), DOC_OFFSETS: ragged, DOC_LENS: ragged}
            return pa.table(cols | {"split": pa.array([], pa.string())})
        return pa.concat_tables(outs)

    return fn
