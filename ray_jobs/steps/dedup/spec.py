"""The dedup step: exact and MinHash-LSH near duplicates in one graph, connected components, one row kept per
cluster (steps/dedup/barrier.py)."""

from __future__ import annotations

from ray_jobs.steps.dedup import barrier
from ray_jobs.steps.dedup.exact import DUPLICATE_OF, EXACT_DUPLICATE
from ray_jobs.steps.dedup.lines import LINES_REMOVED, TOO_SHORT, LineRemover
from ray_jobs.steps.registry import GLOBAL, ROW, Digest, Step

# dedup and leakage share it: one set of signatures per document, computed in the text pass before them
MINHASH = Digest("minhash", barrier.MinHashDigest, barrier.digest_columns)


def _stats(run, out: dict) -> dict:
    from ray_jobs.rundir.stats import cluster_histogram

    sizes = run.stage_dir("dedup") / barrier.CLUSTER_SIZES
    if sizes.is_dir():
        out["cluster_sizes"] = cluster_histogram(sizes, out["rows_out"] + out["dropped"].get(barrier.NEAR_DUPLICATE, 0))
    return out


def _check(data):
    from ray_jobs.report.checks import deduplicated

    return deduplicated(data.config, data.stats_now["stages"].get("dedup"), data.final_stage is not None)


STEP = Step(
    name="dedup", section="dedup", kind=GLOBAL,
    doc="exact and near duplicates (MinHash-LSH candidates, exact Jaccard), connected components, one row kept "
        "per cluster",
    adds=(DUPLICATE_OF, barrier.CLUSTER_ID),
    drops=(EXACT_DUPLICATE, barrier.NEAR_DUPLICATE, barrier.DUPLICATE_ID, TOO_SHORT),
    digest=MINHASH, decide=barrier.decide, reads_text=True, build=barrier.build, stats=_stats, check=_check,
)

# [dedup.lines] in a plan: dedup's compact phase lists each document's boilerplate units (`_drop_lines`); this row
# step, in the text pass after it (before tokenize), takes them out of the text. `ray-jobs dedup` alone does both.
LINES_STEP = Step(
    name="dedup_lines", section="dedup", kind=ROW,
    doc="boilerplate lines (in >= dedup.lines.min_docs documents) removed from all but the lowest-id document",
    adds=(LINES_REMOVED,), drops=(TOO_SHORT,), enabled=lambda cfg: cfg.dedup.lines.enabled,
    ops=lambda cfg: [LineRemover(cfg.dedup.lines)],
)
