"""The eval sets read once, on the driver, with the corpus readers (io/readers.py), into the n-gram index
(steps/decontam/ops.py) that every worker then maps from the object store."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.config import InputConfig
from ray_jobs.errors import UserError
from ray_jobs.io.readers import discover, read_group
from ray_jobs.steps.decontam.config import DecontamConfig
from ray_jobs.steps.decontam.ops import EvalIndex, build_index

log = logging.getLogger("ray_jobs")


def load_index(cfg: DecontamConfig, input_cfg: InputConfig) -> EvalIndex:
    """Every item of cfg.eval_paths (files, folders, globs in any readable format) indexed. An unreadable item
    would be an item nobody looks for: it is an error naming the file, the record and the fix, not a skip."""
    if not cfg.eval_paths:
        raise UserError("decontam needs eval sets and decontam.eval_paths is empty; give them, e.g. --set "
                        "'decontam.eval_paths=[\"evals/\"]' (JSONL or Parquet files, folders or globs)")
    read_cfg = dataclasses.replace(input_cfg, paths=tuple(cfg.eval_paths), format="auto",
                                   text_column=cfg.text_column, id_column=cfg.id_column)
    try:
        units = discover(read_cfg)
    except UserError as e:
        raise UserError(f"decontam.eval_paths: {e}") from None
    texts, ids, owner = [], [], []
    for k, unit in enumerate(units):
        for t in read_group([unit], read_cfg):
            bad = pc.is_valid(t[schema.ERROR])
            if pc.any(bad).as_py():
                first = t.filter(bad)[schema.ERROR][0].as_py()  # says the file and the offset
                raise UserError(
                    f"decontam.eval_paths: {pc.sum(bad).as_py()} unreadable item(s) in one file, the first: {first}; "
                    f"an eval item that is not read is not looked for: fix the file, or name its text field in "
                    f"decontam.text_column (now {cfg.text_column!r}) and its id in decontam.id_column (now "
                    f"{cfg.id_column!r})")
            texts.append(t[schema.TEXT])
            ids.append(t[schema.ID])
            owner.append(np.full(len(t), k, dtype=np.int32))
    if not texts:
        raise UserError(f"decontam.eval_paths {list(cfg.eval_paths)} hold no items; give eval files with a "
                        f"{cfg.text_column!r} field")
    index = build_index(pa.chunked_array(texts, pa.string()).combine_chunks(),
                        pa.chunked_array(ids, pa.string()).combine_chunks(), np.concatenate(owner),
                        [u.relpath for u in units], cfg.ngram, cfg.min_words)
    log.info("decontam: %d eval items from %d files, %d distinct n-grams of %d words (shorter items whole, at "
             "lengths %s), %.1f MB per worker; %d items under min_words = %d not indexed", len(index.item_ids),
             len(units), len(index.hashes), cfg.ngram, index.lengths[1:].tolist(), index.nbytes / 2**20,
             index.skipped, cfg.min_words)
    return index
