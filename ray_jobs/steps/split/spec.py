"""The split step: train/val/test by a hash of (group key, seed); exact per-class counts when stratified."""

from __future__ import annotations

from ray_jobs import schema
from ray_jobs.steps.registry import GLOBAL, Step
from ray_jobs.steps.split import barrier


def _check(data):
    from ray_jobs.report.checks import split_after_dedup

    return split_after_dedup(data.config, data.markers, data.stats_now["stages"].get("leakage"),
                             data.final_stage is not None)


# GLOBAL for the stratified plan's counts; a plain split is row-local, and both run over the compact rows
# (id and the key columns), so the text is not read for it.
STEP = Step(
    name="split", section="split", kind=GLOBAL, partition=schema.SPLIT, adds=(schema.SPLIT,),
    doc="train/val/test by a hash of (group key, seed); stratified: exact per-class counts",
    decide=barrier.build, build=barrier.build, key_columns=barrier.key_columns, check=_check,
)
