"""The url_filter step: rows whose URL is on a domain or URL-substring block list leave as `url_blocked`
(steps/url_filter/ops.py); placed before clean, so a blocked row costs no language ID."""

from __future__ import annotations

from ray_jobs import schema
from ray_jobs.steps.registry import ROW, Step
from ray_jobs.steps.url_filter.ops import URL_BLOCKED, UrlFilterStage

STEP = Step(
    name="url_filter", section="url_filter", kind=ROW,
    doc="drop rows whose URL is on a domain or URL-substring block list (UT1 folders, files, inline)",
    adds=("url_block_list",), drops=(URL_BLOCKED, schema.QUARANTINED),
    enabled=lambda cfg: cfg.url_filter.enabled, ops=lambda cfg: [UrlFilterStage(cfg.url_filter)],
)
