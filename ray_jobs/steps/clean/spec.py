"""The clean step: normalise, identify the language of every row, apply the quality rules (steps/clean/ops.py)."""

from __future__ import annotations

from ray_jobs import schema
from ray_jobs.steps.clean.ops import LANG_NOT_ALLOWED, CleanStage
from ray_jobs.steps.clean.quality import REASONS
from ray_jobs.steps.registry import ROW, Step


def _check(data):
    from ray_jobs.report.checks import quality_filters

    return quality_filters(data.config, data.stats_now["stages"].get("clean"), data.final_stage is not None)


STEP = Step(
    name="clean", section="clean", kind=ROW,
    doc="normalise, identify the language of every row, apply the quality rules",
    adds=("lang", "lang_score"), drops=("empty", LANG_NOT_ALLOWED, *REASONS, schema.QUARANTINED),
    ops=lambda cfg: [CleanStage(cfg.clean)], check=_check,
)
