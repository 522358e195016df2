"""The clean step: normalise, identify the language of every row, apply the quality rules (steps/clean/ops.py)."""

from __future__ import annotations

from ray_jobs import schema
from ray_jobs.steps.clean.ops import C4_LINES_REMOVED, LANG_NOT_ALLOWED, PII_REDACTED, CleanStage
from ray_jobs.steps.clean.quality import REASONS
from ray_jobs.steps.registry import ROW, Step


def _check(data):
    from ray_jobs.report.checks import quality_filters

    return quality_filters(data.config, data.stats_now["stages"].get("clean"), data.final_stage is not None)


def _stats(run, out: dict) -> dict:
    """Lines C4's filters removed and PII replaced, summed over the rows of the clean folder. Only where the folder
    holds every row (with the defaults it does); a clean fused into a later step keeps only its drops there, and a
    sum over those would pass for the whole."""
    from ray_jobs.rundir.stats import column_sum

    if out.get("rows_out_counted") is not False:
        for column in (C4_LINES_REMOVED, PII_REDACTED):
            out[column] = column_sum(run.stage_dir("clean"), column)
    return out


STEP = Step(
    name="clean", section="clean", kind=ROW,
    doc="normalise, identify the language of every row, apply the quality rules",
    adds=("lang", "lang_score", C4_LINES_REMOVED, PII_REDACTED),
    drops=("empty", LANG_NOT_ALLOWED, *REASONS, schema.QUARANTINED),
    ops=lambda cfg: [CleanStage(cfg.clean)], check=_check, stats=_stats,
)
