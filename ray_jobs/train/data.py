"""Token rows -> training tensors: packed rows as they are, unpacked rows length-bucketed and padded per batch.

Pure functions over Arrow batches (tested on CPU); the Ray Train loop streams them through `iter_torch_batches`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ray_jobs.steps.tokenize.chat import IGNORE
from ray_jobs.steps.pack.ops import INPUT_IDS, LABELS, POSITION_IDS, SEQ_LENS


REAL_TOKENS = "real_tokens"  # tokens that are not padding: popped before the forward pass


def is_packed(schema: pa.Schema) -> bool:
    return SEQ_LENS in schema.names and pa.types.is_fixed_size_list(schema.field(INPUT_IDS).type)


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
    return out


def collate_padded(table: pa.Table, pad_id: int = 0, max_len: int = 0) -> dict[str, torch.Tensor]:
    """Variable-length rows padded to the longest in the batch (dynamic padding), each cut to max_len first (0 =
    uncut): pad id in input_ids, IGNORE in labels, 0 in attention_mask."""
    ids = table[INPUT_IDS].combine_chunks()
    labels = table[LABELS].combine_chunks()
    full = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = np.minimum(full, max_len) if max_len else full
    width = int(lengths.max()) if len(lengths) else 0
    mask = np.arange(width)[None, :] < lengths[:, None]
    keep = (np.arange(int(full.sum())) - np.repeat(np.cumsum(full) - full, full)) < np.repeat(lengths, full)
    out_ids = np.full((len(lengths), width), pad_id, np.int64)
    out_labels = np.full((len(lengths), width), IGNORE, np.int64)
    out_ids[mask] = ids.flatten().to_numpy(zero_copy_only=False)[keep]
    out_labels[mask] = labels.flatten().to_numpy(zero_copy_only=False)[keep]
    return {"input_ids": torch.from_numpy(out_ids), "labels": torch.from_numpy(out_labels),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)), REAL_TOKENS: torch.tensor(int(lengths.sum()))}

