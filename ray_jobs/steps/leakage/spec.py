"""The leakage step: train rows with a near duplicate in val, test or an eval set (steps/leakage/barrier.py)."""

from __future__ import annotations

from ray_jobs import schema
from ray_jobs.steps.dedup.spec import MINHASH
from ray_jobs.steps.leakage import barrier
from ray_jobs.steps.leakage.ops import LEAKED
from ray_jobs.steps.registry import GLOBAL, Step


def _stats(run, out: dict) -> dict:
    from ray_jobs.rundir.stats import pair_counts

    pairs = run.stage_dir("leakage") / "_pairs"
    if pairs.is_dir():
        out["leakage_pairs"] = pair_counts(pairs)
    return out


STEP = Step(
    name="leakage", section="leakage", kind=GLOBAL,
    doc="near-duplicate pairs across train/val/test and against eval sets; leaked train rows dropped",
    drops=(LEAKED,), enabled=lambda cfg: cfg.leakage.enabled, digest=MINHASH, decide=barrier.decide,
    reads_text=True, build=barrier.build, key_columns=lambda cfg: (schema.SPLIT,), stats=_stats,
)
