"""The tokenize stage: batched `encode_batch` in actors, causal-LM labels, truncation, Arrow list columns out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ray_jobs import schema
from ray_jobs.config import TokenizeConfig
from ray_jobs.stages.base import Stage
from ray_jobs.tokenize.tokenizer import load_tokenizer, resolve_eos

INPUT_IDS = "input_ids"
LABELS = "labels"
NUM_TOKENS = "num_tokens"
TRUNCATED = "truncated"


def list_column(lengths: np.ndarray, values: np.ndarray) -> pa.ListArray:
    """Flat int32 values + per-row lengths -> list<int32> without Python lists of ints."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))


class TokenizeStage(Stage):
    """text -> input_ids, labels (= input_ids: HF causal-LM models shift them by one inside the loss),
    num_tokens, truncated. The EOS token closes every document so the model learns where documents end."""

    stateful = True

    def __init__(self, cfg: TokenizeConfig) -> None:
        self.cfg = cfg
        self._tok = None
        self._eos: int | None = None

    def setup(self) -> None:
        self._tok = load_tokenizer(self.cfg.tokenizer)
        self._eos = resolve_eos(self._tok, self.cfg.eos_token) if self.cfg.add_eos else None

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._tok is None:
            self.setup()
        texts = [t or "" for t in table[schema.TEXT].to_pylist()]
        encs = self._tok.encode_batch_fast(texts, add_special_tokens=False)
        budget = self.cfg.max_length - (self._eos is not None)
        ids = [np.asarray(e.ids[:budget], dtype=np.int32) for e in encs]
        full = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        if self._eos is not None:
            ids = [np.append(a, np.int32(self._eos)) for a in ids]
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int32, count=len(ids))
        values = np.concatenate(ids) if ids else np.zeros(0, np.int32)
        col = list_column(lengths, values)
        if not self.cfg.keep_text:
            table = table.drop_columns([schema.TEXT])
        return (table.append_column(INPUT_IDS, col)
                .append_column(LABELS, col)
                .append_column(NUM_TOKENS, pa.array(lengths))
                .append_column(TRUNCATED, pa.array(full > budget)))
