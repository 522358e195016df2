"""The quality_model step: a fastText classifier's score of each kept row, and an optional cut
(steps/quality_model/ops.py); placed after clean, so only rows the rules kept are scored."""

from __future__ import annotations

from ray_jobs import schema
from ray_jobs.steps.quality_model.ops import LOW_QUALITY_SCORE, QualityModelStage
from ray_jobs.steps.registry import ROW, Step

STEP = Step(
    name="quality_model", section="quality_model", kind=ROW,
    doc="score rows with a fastText quality classifier (DCLM / FineWeb-Edu style); drop those under min_score",
    adds=("quality_score",), drops=(LOW_QUALITY_SCORE, schema.QUARANTINED),
    enabled=lambda cfg: cfg.quality_model.enabled, ops=lambda cfg: [QualityModelStage(cfg.quality_model)],
)
