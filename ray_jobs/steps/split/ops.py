"""Deterministic train/val/test splits without a global shuffle.

Every row gets `h = xxh3_64(group key, seed)`; the group key is the row id by default, or a cluster id so that
near-duplicates never straddle train and test. The split depends only on (key, seed), never on block layout or
worker count.

* Plain split: `h / 2^64` against the cumulative fractions. Proportions are exact in expectation
  (binomial error: 1M rows at 5 % -> +-0.02 points).
* Stratified split (`stratify_by = "label"`): exact per-class counts, `round(n_c * f)`. Within each class the rows
  are ranked by (h, key); the first k_train go to train, the next k_val to val. Finding the rank thresholds
  needs no sort: pass 1 counts rows per (class, top-12-bit bin of h) — at most classes x 4096 numbers; pass 2
  fetches only the rows in the two boundary bins of each class (about n_c / 4096 rows each) and picks the exact
  threshold among them. Both passes stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.steps.base import Stage
from ray_jobs.steps.split.config import SplitConfig

HASH = "_split_hash"
BIN = "_split_bin"
LABEL = "_split_label"
KEY = "_split_key"
BIN_BITS = 12  # 4096 bins: the count table stays tiny, a boundary bin holds 1/4096 of a class
NULL_LABEL = "<null>"


def split_hashes(keys: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    h = xxhash.xxh3_64_intdigest
    raw = pc.cast(pc.fill_null(keys, ""), pa.binary()).to_pylist()  # bytes: xxhash 4 refuses str
    return np.fromiter((h(b, seed=seed) for b in raw), dtype=np.uint64, count=len(raw))


def _validate_columns(table: pa.Table, cfg: SplitConfig) -> None:
    for col, what in ((cfg.group_by, "split.group_by"), (cfg.stratify_by, "split.stratify_by")):
        if col and col not in table.column_names:
            raise UserError(f"{what} = {col!r} is not a column of the input (columns: {table.column_names})")


class SplitKeyStage(Stage):
    """Adds the split hash, its bin, the string label and the string group key."""

    def __init__(self, cfg: SplitConfig) -> None:
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> pa.Table:
        _validate_columns(table, self.cfg)
        keys = pc.cast(table[self.cfg.group_by], pa.string())
        hashes = split_hashes(keys, self.cfg.seed)
        if self.cfg.stratify_by:
            labels = pc.fill_null(pc.cast(table[self.cfg.stratify_by], pa.string()), NULL_LABEL)
        else:
            labels = pa.array([NULL_LABEL] * len(table), pa.string())
        return (table.append_column(HASH, pa.array(hashes))
                .append_column(BIN, pa.array((hashes >> np.uint64(64 - BIN_BITS)).astype(np.int32)))
                .append_column(LABEL, labels)
                .append_column(KEY, keys))


@dataclass(frozen=True)
class Threshold:
    """Rows ranked below (hash, key) go to the earlier split; None = every row of the class does."""

    hash: int | None
    key: str = ""


@dataclass(frozen=True)
class SplitPlan:
    # label -> (train/val boundary, val/test boundary); empty for a plain split
    thresholds: dict[str, tuple[Threshold, Threshold]]


def target_counts(n: int, cfg: SplitConfig) -> tuple[int, int]:
    """Exact per-class (k_train, k_val); test gets the rest. Rounding to nearest keeps every split within 1 row."""
    k_train = int(round(n * cfg.train))
    k_val = min(n - k_train, int(round(n * cfg.val)))
    return k_train, k_val


def boundary_bins(counts: dict[str, np.ndarray], cfg: SplitConfig) -> dict[str, list[tuple[int, int]]]:
    """For each label and boundary rank k: (bin holding the k-th row, rows in earlier bins); bin -1 = no boundary."""
    out: dict[str, list[tuple[int, int]]] = {}
    for label, hist in counts.items():
        n = int(hist.sum())
        k_train, k_val = target_counts(n, cfg)
        cum = np.cumsum(hist)
        out[label] = []
        for k in (k_train, k_train + k_val):
            if k >= n:
                out[label].append((-1, n))
            else:
                b = int(np.searchsorted(cum, k, side="right"))  # first bin whose cumulative count exceeds k
                out[label].append((b, int(cum[b - 1]) if b else 0))
    return out


def plan_from_boundaries(bounds: dict[str, list[tuple[int, int]]], cfg: SplitConfig,
                         boundary_rows: pa.Table, counts: dict[str, np.ndarray]) -> SplitPlan:
    """Pick the exact (hash, key) threshold of each boundary from the rows of the boundary bins."""
    thresholds: dict[str, tuple[Threshold, Threshold]] = {}
    for label, pairs in bounds.items():
        n = int(counts[label].sum())
        k_train, k_val = target_counts(n, cfg)
        rows = boundary_rows.filter(pc.equal(boundary_rows[LABEL], label))
        picked = []
        for (b, before), k in zip(pairs, (k_train, k_train + k_val)):
            if b < 0:
                picked.append(Threshold(None))
                continue
            in_bin = rows.filter(pc.equal(rows[BIN], b))
            in_bin = in_bin.take(pc.sort_indices(in_bin, sort_keys=[(HASH, "ascending"), (KEY, "ascending")]))
            assert k - before < in_bin.num_rows, "boundary bin must hold the k-th row"
            picked.append(Threshold(int(in_bin[HASH][k - before].as_py()), in_bin[KEY][k - before].as_py()))
        thresholds[label] = (picked[0], picked[1])
    return SplitPlan(thresholds)


def _below(hashes: np.ndarray, keys: np.ndarray, t: Threshold) -> np.ndarray:
    if t.hash is None:
        return np.ones(len(hashes), dtype=bool)
    th = np.uint64(t.hash)
    return (hashes < th) | ((hashes == th) & (keys < t.key))


class AssignSplitStage(Stage):
    """Adds `split` (train/val/test) and drops the helper columns."""

    def __init__(self, cfg: SplitConfig, plan: SplitPlan) -> None:
        self.cfg = cfg
        self.plan = plan

    def __call__(self, table: pa.Table) -> pa.Table:
        hashes = table[HASH].to_numpy()
        out = np.full(len(hashes), "test", dtype=object)
        if self.plan.thresholds:
            keys = np.asarray(table[KEY].to_pylist(), dtype=object)
            labels = np.asarray(table[LABEL].to_pylist(), dtype=object)
            for label, (t1, t2) in self.plan.thresholds.items():
                m = labels == label
                below1 = _below(hashes[m], keys[m], t1)
                below2 = _below(hashes[m], keys[m], t2)
                out[m] = np.where(below1, "train", np.where(below2, "val", "test"))
        else:
            u = hashes.astype(np.float64) / 2.0**64
            out = np.where(u < self.cfg.train, "train", np.where(u < self.cfg.train + self.cfg.val, "val", "test"))
        table = table.drop_columns([HASH, BIN, LABEL, KEY])
        if schema.SPLIT in table.column_names:
            table = table.drop_columns([schema.SPLIT])
        return table.append_column(schema.SPLIT, pa.array(out.astype(object), pa.string()))


def bin_counts(table: pa.Table) -> pa.Table:
    """Per-batch (label, bin) -> count; the driver adds the partial counts up."""
    counts = table.group_by([LABEL, BIN], use_threads=False).aggregate([([], "count_all")])
    return counts.rename_columns([LABEL, BIN, "n"])


def sum_bin_counts(partials: Iterable[pa.Table]) -> dict[str, np.ndarray]:
    """Add up per-batch `bin_counts` tables: label -> rows in each of the 2^BIN_BITS bins."""
    counts: dict[str, np.ndarray] = {}
    for t in partials:
        for label, b, n in zip(t[LABEL].to_pylist(), t[BIN].to_pylist(), t["n"].to_pylist()):
            counts.setdefault(label, np.zeros(1 << BIN_BITS, dtype=np.int64))[b] += n
    return counts


def boundary_filter(bounds: dict[str, list[tuple[int, int]]]):
    """A batch function keeping only rows that fall in a boundary bin of their class (and only the key columns)."""
    wanted = {(label, b) for label, pairs in bounds.items() for b, _ in pairs if b >= 0}

    def keep(table: pa.Table) -> pa.Table:
        labels = table[LABEL].to_pylist()
        bins = table[BIN].to_pylist()
        mask = pa.array([(lab, b) in wanted for lab, b in zip(labels, bins)])
        return table.select([LABEL, BIN, HASH, KEY]).filter(mask)

    return keep
