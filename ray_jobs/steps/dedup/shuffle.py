"""The shuffles of dedup's global part, sized by partition: one partition is all rows in one call."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from ray_jobs import runtime
from ray_jobs.runtime import Dataset


def grouped(ds: Dataset, key: str, fn: Callable[[pa.Table], pa.Table], num_partitions: int) -> Dataset:
    """`fn` over every group of rows with equal `key` (a hash shuffle), or over all rows at once when there is one
    partition: the functions here take any set of whole groups, and on 100 MB each one-partition hash shuffle cost
    8-14 s of Ray Data set-up (its aggregator actors) where gathering one block of ~10 MB costs ~1 s."""
    if num_partitions == 1:
        return runtime.map_tables(runtime.one_block(ds), fn, batch_size=None)
    return runtime.map_groups(ds, key, fn, num_partitions=num_partitions)
