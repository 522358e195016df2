"""Split's global part, needed only when stratified: per-class counts, then the boundary bins' rows, give the
plan (a few numbers per class) that assigns every row by its hash (ops.py has the math)."""

from __future__ import annotations

import pyarrow as pa

from ray_jobs import runtime
from ray_jobs.config import RunConfig
from ray_jobs.runtime import Dataset
from ray_jobs.steps.split.ops import (
    AssignSplitStage,
    SplitKeyStage,
    SplitPlan,
    bin_counts,
    boundary_bins,
    boundary_filter,
    plan_from_boundaries,
    sum_bin_counts,
)


def build(cfg: RunConfig, ds: Dataset, read_input=None) -> tuple[Dataset, dict]:
    """Rows (full, or the compact rows of a plan: id and the key columns) -> the same rows with `split`."""
    keyed = runtime.apply(ds, SplitKeyStage(cfg.split), batch_size=cfg.ray.batch_size)
    if cfg.split.stratify_by:
        keyed = runtime.materialize(keyed)  # read once for the two counting passes and the assignment
    plan = _plan(cfg, keyed)
    return runtime.apply(keyed, AssignSplitStage(cfg.split, plan), batch_size=cfg.ray.batch_size), {}


def _plan(cfg: RunConfig, keyed: Dataset) -> SplitPlan:
    """Stratified: the two streaming passes of ops.py (per-bin counts, then the boundary bins' rows)."""
    if not cfg.split.stratify_by:
        return SplitPlan({})
    bs = cfg.ray.batch_size
    counts = sum_bin_counts(runtime.iter_tables(runtime.map_tables(keyed, bin_counts, batch_size=bs)))
    bounds = boundary_bins(counts, cfg.split)
    rows = list(runtime.iter_tables(runtime.map_tables(keyed, boundary_filter(bounds), batch_size=bs)))
    boundary = pa.concat_tables(rows) if rows else None
    return plan_from_boundaries(bounds, cfg.split, boundary, counts) if boundary is not None else SplitPlan({})


def key_columns(cfg: RunConfig) -> tuple[str, ...]:
    return tuple(c for c in (cfg.split.group_by, cfg.split.stratify_by) if c)
