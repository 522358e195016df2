"""The tokenize step: HF tokenizers in actors; causal-LM labels, chat rows through the chat template
(steps/tokenize/ops.py)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.steps.registry import ROW, Step
from ray_jobs.steps.tokenize.ops import INPUT_IDS, LABELS, LOSS_TOKENS, NUM_TOKENS, TRUNCATED, TokenizeStage


def ensure_split(table: pa.Table) -> pa.Table:
    """A tokenize run on unsplit input files its rows under split=all."""
    if schema.SPLIT in table.column_names:
        return table
    return table.append_column(schema.SPLIT, pa.array(["all"] * len(table), pa.string()))


def status_from_error(table: pa.Table) -> pa.Table:
    """A row the tokenizer could not encode (a chat row its template refuses) keeps its `_error` and leaves as
    quarantined: never packed, never lost."""
    err = table[schema.ERROR] if schema.ERROR in table.column_names else pa.nulls(len(table), pa.string())
    return schema.set_status(table, pc.if_else(pc.is_valid(err), schema.QUARANTINED, schema.KEPT))


def _stats(run, out: dict) -> dict:
    """Documents and tokens from the token rows; when tokenize ran fused into pack (its rows not kept), from the
    packed rows' provenance: a document is a piece at offset 0, its tokens are its doc_lens."""
    from ray_jobs.rundir.stats import column_sum
    from ray_jobs.steps.pack.ops import DOC_LENS, DOC_OFFSETS

    if out.get("rows_out_counted") is False and run.marker("pack").exists():
        docs, tokens = packed_documents(run.stage_dir("pack"), DOC_OFFSETS, DOC_LENS)
        out["rows_out"], out["tokens"] = docs, tokens
        del out["rows_out_counted"]
    else:
        out["tokens"] = column_sum(run.stage_dir("tokenize"), NUM_TOKENS)
    return out


def packed_documents(pack_dir, offsets_col: str, lens_col: str) -> tuple[int, int]:
    import pyarrow.parquet as pq

    docs = tokens = 0
    for f in sorted(pack_dir.glob(f"{schema.SPLIT}=*/**/*.parquet")):
        t = pq.read_table(f, columns=[offsets_col, lens_col])
        first = pc.equal(pc.list_flatten(t[offsets_col]), 0)
        docs += int(pc.sum(first).as_py() or 0)
        tokens += int(pc.sum(pc.filter(pc.list_flatten(t[lens_col]), first)).as_py() or 0)
    return docs, tokens


STEP = Step(
    name="tokenize", section="tokenize", kind=ROW, partition=schema.SPLIT, carries_text=False,
    doc="HF tokenizers in actors: input_ids, causal-LM labels (chat rows: assistant turns only)",
    adds=(INPUT_IDS, LABELS, NUM_TOKENS, LOSS_TOKENS, TRUNCATED), drops=(schema.QUARANTINED,),
    ops=lambda cfg: [ensure_split, TokenizeStage(cfg.tokenize), status_from_error], stats=_stats,
)
