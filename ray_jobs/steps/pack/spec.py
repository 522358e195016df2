"""The pack step: token rows into fixed seq_len rows by best-fit decreasing, document boundaries kept
(steps/pack/ops.py)."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.steps.pack.ops import (
    CU_SEQLENS,
    DOC_IDS,
    DOC_LENS,
    DOC_OFFSETS,
    INPUT_IDS,
    LABELS,
    POSITION_IDS,
    SEQ_LENS,
    pack_split_rows,
)
from ray_jobs.steps.registry import ROW, Step


def _stats(run, out: dict) -> dict:
    """Its rows are training sequences, not documents: the invariant is on tokens (every token of the documents
    it took in is packed, or counted as cropped with overflow = "crop"), and its figures are padding and
    efficiency."""
    from ray_jobs.rundir.stats import column_sum
    from ray_jobs.steps.tokenize.spec import packed_documents

    stage_dir = run.stage_dir("pack")
    files = sorted(stage_dir.glob(f"{schema.SPLIT}=*/**/*.parquet"))
    seq_len = next((pq.read_schema(f).field(INPUT_IDS).type.list_size for f in files), 0)
    packed = sum(int(pc.sum(pc.list_flatten(pq.read_table(f, columns=[SEQ_LENS])[SEQ_LENS])).as_py() or 0)
                 for f in files)
    if files and DOC_LENS in pq.read_schema(files[0]).names:
        docs, tokens_in = packed_documents(stage_dir, DOC_OFFSETS, DOC_LENS)
    else:  # token rows made by an older pack: the tokenize folder has the counts
        docs, tokens_in = out["rows_in"], column_sum(run.stage_dir("tokenize"), "num_tokens")
    slots = out["rows_out"] * seq_len
    exact = run.marker_info("pack") and _overflow(run) == "split"
    out.update({
        "packing": {"seq_len": seq_len, "tokens_in": tokens_in, "packed_tokens": packed,
                    "padding_tokens": slots - packed, "cropped_tokens": tokens_in - packed,
                    "efficiency": packed / slots if slots else 0.0, "documents": docs},
        "invariant_ok": docs == out["rows_in"] and (tokens_in == packed if exact else 0 <= tokens_in - packed),
    })
    return out


def _overflow(run) -> str:
    import tomllib

    cfg = run.root / "config.toml"
    return tomllib.loads(cfg.read_text()).get("pack", {}).get("overflow", "split") if cfg.is_file() else "split"


def _ops(cfg):
    if cfg.tokenize.padding != "none":
        raise UserError(f"tokenize.padding = {cfg.tokenize.padding!r} pads every document to max_length, and "
                        "packing would pack the padding; expected pack.enabled = false with it (or padding = "
                        "'none' to pack)")
    return [pack_split_rows(cfg.pack.seq_len, cfg.pack.pad_id, cfg.pack.overflow)]


STEP = Step(
    name="pack", section="pack", kind=ROW, partition=schema.SPLIT, carries_text=False, needs_text=False,
    doc="token rows into fixed seq_len rows (best-fit decreasing), per-document positions and cu_seqlens",
    adds=(INPUT_IDS, LABELS, POSITION_IDS, SEQ_LENS, CU_SEQLENS, DOC_IDS, DOC_OFFSETS, DOC_LENS),
    enabled=lambda cfg: cfg.pack.enabled, ops=_ops, stats=_stats,
)
