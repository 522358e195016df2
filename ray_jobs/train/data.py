"""Token rows -> training tensors: packed rows as they are, unpacked rows length-bucketed and padded per batch.

Pure functions over Arrow batches (tested on CPU); the Ray Train loop streams them through `iter_torch_batches`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ray_jobs.schema import ATTENTION_MASK, ID, SPLIT
from ray_jobs.steps.pack.ops import DOC_IDS, DOC_OFFSETS, INPUT_IDS, LABELS, POSITION_IDS, SEQ_LENS
from ray_jobs.steps.tokenize.chat import IGNORE

REAL_TOKENS = "real_tokens"  # tokens that are not padding: popped before the forward pass
ROW_KEY = "row_key"  # int64 key of each token row (row_keys): which rows a checkpoint has trained on


def is_packed(schema: pa.Schema) -> bool:
    return SEQ_LENS in schema.names and pa.types.is_fixed_size_list(schema.field(INPUT_IDS).type)


def row_keys(table: pa.Table) -> np.ndarray:
    """A stable int64 key per token row, from what the row is rather than where it lies (a streamed pass has no
    file order, and a finished folder's file names and row order follow Ray's block finishing order):

    * packed rows: xxh3-64 of their pieces, (doc_id, doc_offset) in row order. Packing cuts every document into
      pieces placed in exactly one row, so no two rows of a pack share a key (up to 64-bit collisions:
      ~2.7e-8 for a million rows), and the rows trained from the stream carry the keys of the rows written;
    * unpacked rows (a tokenize folder): xxh3-64 of the document id;
    * rows with neither (any Parquet of token rows): xxh3-64 of the input ids; identical rows share a key.
    """
    import xxhash  # here: the GPU check runs the collate on machines without it

    names = table.column_names
    if DOC_IDS in names and DOC_OFFSETS in names:
        texts = ["\x1f".join(f"{d}\x1e{o}" for d, o in zip(ids, offs)).encode()
                 for ids, offs in zip(table[DOC_IDS].to_pylist(), table[DOC_OFFSETS].to_pylist())]
    elif ID in names:
        texts = [str(v).encode() for v in table[ID].to_pylist()]
    else:
        texts = [np.asarray(v, np.int32).tobytes() for v in table[INPUT_IDS].to_pylist()]
    digests = [xxhash.xxh3_64_intdigest(t) for t in texts]
    return np.array(digests, dtype=np.uint64).view(np.int64)


def seen(keys: np.ndarray, consumed_sorted: np.ndarray) -> np.ndarray:
    """Which of `keys` are in `consumed_sorted` (sorted int64): a binary search, no set built per batch."""
    if not len(consumed_sorted) or not len(keys):
        return np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(consumed_sorted, keys), len(consumed_sorted) - 1)
    return consumed_sorted[at] == keys


def train_rows(split: str | None, consumed: np.ndarray | None, packed: bool):
    """The map from token rows (a streamed pass with its `split` column, or a finished folder) to what the
    workers read: `split`'s rows only (None: all), each with its ROW_KEY, less the rows a checkpoint already
    trained on (`consumed`), and only the columns the collate reads (the doc_* provenance lists stay behind)."""
    done = np.sort(np.asarray(consumed if consumed is not None else [], np.int64))
    keep = [INPUT_IDS, LABELS] + ([POSITION_IDS, SEQ_LENS] if packed else [ATTENTION_MASK])

    def fn(table: pa.Table) -> pa.Table:
        if split is not None and SPLIT in table.column_names:
            col = table[SPLIT]
            if pa.types.is_dictionary(col.type):  # a hive partition column may come dictionary-encoded
                col = col.cast(pa.string())
            table = table.filter(pc.equal(col, split))
        keys = row_keys(table)
        out = table.select([c for c in keep if c in table.column_names]).append_column(ROW_KEY, pa.array(keys))
        return out.filter(pa.array(~seen(keys, done))) if len(done) else out

    return fn


def sort_by_length(table: pa.Table) -> pa.Table:
    """Rows sorted by token count within the batch: applied over windows of `bucket_batches` micro-batches, it
    makes each micro-batch hold similar lengths, so dynamic padding pads little."""
    return table.take(pc.sort_indices(pc.list_value_length(table[INPUT_IDS])))


def _matrix(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), -1)


def collate_packed(table: pa.Table, document_attention: bool) -> dict[str, torch.Tensor]:
    """Packed rows (fixed length): input ids, labels, and the per-document position ids that make attention stay
    within documents (flash varlen / block-diagonal mask); without them the whole row is one causal sequence."""
    out = {"input_ids": torch.from_numpy(_matrix(table[INPUT_IDS]).astype(np.int64)),
           "labels": torch.from_numpy(_matrix(table[LABELS]).astype(np.int64)),
           REAL_TOKENS: torch.tensor(int(pc.sum(pc.list_flatten(table[SEQ_LENS])).as_py() or 0))}
    if document_attention:
        out["position_ids"] = torch.from_numpy(_matrix(table[POSITION_IDS]).astype(np.int64))
    return out | _keys(table)


def _keys(table: pa.Table) -> dict[str, torch.Tensor]:
    """The rows' ROW_KEY (when train_rows added it), popped by the loop before the forward pass."""
    if ROW_KEY not in table.column_names:
        return {}
    return {ROW_KEY: torch.from_numpy(table[ROW_KEY].to_numpy().astype(np.int64))}


def collate_padded(table: pa.Table, pad_id: int = 0, max_len: int = 0) -> dict[str, torch.Tensor]:
    """Variable-length rows padded to the longest in the batch (dynamic padding), each cut to max_len first (0 =
    uncut): pad id in input_ids, IGNORE in labels, 0 in attention_mask. Rows padded already (tokenize.padding =
    "max_length": an attention_mask column, right padding) count only their tokens, so they batch the same."""
    ids = table[INPUT_IDS].combine_chunks()
    labels = table[LABELS].combine_chunks()
    full = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    real = (_matrix(table[ATTENTION_MASK]).sum(axis=1).astype(np.int64) if ATTENTION_MASK in table.column_names
            else full)
    lengths = np.minimum(real, max_len) if max_len else real
    width = int(lengths.max()) if len(lengths) else 0
    mask = np.arange(width)[None, :] < lengths[:, None]
    keep = (np.arange(int(full.sum())) - np.repeat(np.cumsum(full) - full, full)) < np.repeat(lengths, full)
    out_ids = np.full((len(lengths), width), pad_id, np.int64)
    out_labels = np.full((len(lengths), width), IGNORE, np.int64)
    out_ids[mask] = ids.flatten().to_numpy(zero_copy_only=False)[keep]
    out_labels[mask] = labels.flatten().to_numpy(zero_copy_only=False)[keep]
    return {"input_ids": torch.from_numpy(out_ids), "labels": torch.from_numpy(out_labels),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)), REAL_TOKENS: torch.tensor(int(lengths.sum()))
            } | _keys(table)

