"""The split's exactness and determinism, with the two counting passes run in memory on real labels."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from ray_jobs.config import SplitConfig
from ray_jobs.steps.split.ops import (
    AssignSplitStage,
    SplitKeyStage,
    SplitPlan,
    bin_counts,
    boundary_bins,
    boundary_filter,
    plan_from_boundaries,
    sum_bin_counts,
    target_counts,
)


def _assign(table: pa.Table, cfg: SplitConfig, batches: int = 1) -> pa.Table:
    """The same two passes the Ray recipe runs, over `batches` slices (any block layout must agree)."""
    keyed = SplitKeyStage(cfg)(table)
    edges = [i * len(keyed) // batches for i in range(batches + 1)]
    parts = [keyed.slice(a, b - a) for a, b in zip(edges, edges[1:]) if b > a]
    plan = SplitPlan({})
    if cfg.stratify_by:
        counts = sum_bin_counts(bin_counts(p) for p in parts)
        bounds = boundary_bins(counts, cfg)
        rows = pa.concat_tables([boundary_filter(bounds)(p) for p in parts])
        plan = plan_from_boundaries(bounds, cfg, rows, counts)
    return pa.concat_tables([AssignSplitStage(cfg, plan)(p) for p in parts])


def _corpus(n: int = 5003) -> pa.Table:
    rng = np.random.default_rng(0)
    labels = rng.choice(["ham", "spam", "book", "foreign"], size=n, p=[0.5, 0.3, 0.15, 0.05])
    return pa.table({"id": [f"doc-{i}" for i in range(n)], "text": ["x"] * n, "label": labels})


def test_stratified_split_has_exact_per_class_counts():
    cfg = SplitConfig(stratify_by="label", seed=3)
    t = _corpus()
    out = _assign(t, cfg, batches=5)
    per = Counter(zip(out["label"].to_pylist(), out["split"].to_pylist()))
    for label, n in Counter(t["label"].to_pylist()).items():
        k_train, k_val = target_counts(n, cfg)
        assert per[(label, "train")] == k_train
        assert per[(label, "val")] == k_val
        assert per[(label, "test")] == n - k_train - k_val


@pytest.mark.parametrize("stratify", ["", "label"])
def test_split_does_not_depend_on_batching_or_row_order(stratify):
    cfg = SplitConfig(stratify_by=stratify)
    t = _corpus(2000)
    a = dict(zip(*_assign(t, cfg, batches=1).select(["id", "split"]).to_pydict().values()))
    shuffled = t.take(pa.array(np.random.default_rng(1).permutation(len(t))))
    b = dict(zip(*_assign(shuffled, cfg, batches=7).select(["id", "split"]).to_pydict().values()))
    assert a == b


def test_seed_changes_the_assignment_and_groups_stay_together():
    t = _corpus(2000).append_column("cluster", pa.array([f"c{i // 4}" for i in range(2000)]))
    a = _assign(t, SplitConfig(seed=0, group_by="cluster"))
    b = _assign(t, SplitConfig(seed=1, group_by="cluster"))
    assert a["split"].to_pylist() != b["split"].to_pylist()
    by_cluster: dict[str, set] = {}
    for c, s in zip(a["cluster"].to_pylist(), a["split"].to_pylist()):
        by_cluster.setdefault(c, set()).add(s)
    assert all(len(s) == 1 for s in by_cluster.values())
    frac = Counter(a["split"].to_pylist())
    assert 0.85 < frac["train"] / 2000 < 0.95


def test_unknown_stratify_column_names_the_columns():
    with pytest.raises(ValueError, match="stratify_by = 'lbl' is not a column.*label"):
        SplitKeyStage(SplitConfig(stratify_by="lbl"))(_corpus(10))


def test_tiny_classes_get_exact_rounded_counts():
    t = pa.table({"id": [f"{i}" for i in range(7)], "label": ["a"] * 3 + ["b"] * 4})
    out = _assign(t, SplitConfig(stratify_by="label", train=0.5, val=0.25, test=0.25))
    per = Counter(zip(out["label"].to_pylist(), out["split"].to_pylist()))
    assert (per[("a", "train")], per[("a", "val")], per[("a", "test")]) == (2, 1, 0)  # round(1.5)=2, round(.75)=1
    assert (per[("b", "train")], per[("b", "val")], per[("b", "test")]) == (2, 1, 1)
