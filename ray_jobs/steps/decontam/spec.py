"""The decontam step: rows sharing a word n-gram with an eval item (steps/decontam/ops.py), dropped or flagged.

A row step registered after labels, so in a plan it runs inside the text pass that already reads the kept text
for tokenize and pack (no pass of its own); it complements leakage, which finds whole near-duplicate documents.
"""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_jobs import schema
from ray_jobs.rundir import ROWS
from ray_jobs.steps.decontam.ops import CONTAMINATED, ITEM, NGRAMS, SET, DecontamStage
from ray_jobs.steps.registry import ROW, Step


def _ops(cfg) -> list:
    from ray_jobs.steps.decontam.index import load_index

    return [DecontamStage(cfg.decontam, load_index(cfg.decontam, cfg.input))]


def rows_by_set(run) -> dict[str, int] | None:
    """Rows per eval file from the first folder whose rows carry `decontam_set`: the dropped rows (action =
    "drop"), else all of decontam's rows (written when it is its pass's last step or in output.keep), else
    tokenize's (token rows keep the column). A folder holding only a step's drops would undercount: skipped. None:
    the flagged rows are on disk nowhere (they went on into packed rows)."""
    rows = [run.stage_dir(s) for s in ("decontam", "tokenize") if (run.marker_info(s) or {}).get("output") == ROWS]
    for folder in (run.stage_dir("decontam") / f"{schema.STATUS}={CONTAMINATED}", *rows):
        files = [f for f in sorted(folder.rglob("*.parquet"))
                 if not any(p.startswith(("_", ".")) for p in f.relative_to(folder).parts)]
        if not files or SET not in pq.read_schema(files[0]).names:
            continue
        counts: dict[str, int] = {}
        for f in files:
            for row in pc.value_counts(pq.read_table(f, columns=[SET])[SET].drop_null()).to_pylist():
                counts[row["values"]] = counts.get(row["values"], 0) + row["counts"]
        return dict(sorted(counts.items()))
    return None


def _stats(run, out: dict) -> dict:
    found = rows_by_set(run)
    if found is not None:
        out["contaminated_by_set"] = found
    return out


def _check(data):
    from ray_jobs.report.checks import decontaminated

    return decontaminated(data.config, data.stats_now["stages"].get("decontam"), data.final_stage is not None)


STEP = Step(
    name="decontam", section="decontam", kind=ROW,
    doc="rows sharing a word n-gram (13) with an eval item: dropped (or flagged), the item named",
    adds=(ITEM, SET, NGRAMS), drops=(CONTAMINATED,), enabled=lambda cfg: bool(cfg.decontam.eval_paths),
    ops=_ops, stats=_stats, check=_check, after="labels",
)
