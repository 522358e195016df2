"""The corpus readers (io/readers.py) as a Ray Data source: one read task per group of files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from ray_jobs.config import InputConfig
from ray_jobs.io.formats import FileUnit
from ray_jobs.io.readers import group_bytes, read_group


class CorpusDatasource(Datasource):
    """A Ray Data source over groups of files of mixed formats (io/readers.file_groups); each read task streams one
    group. The groups are cut before the read, not at Ray's `parallelism`: see runtime.read_corpus."""

    def __init__(self, groups: list[list[FileUnit]], cfg: InputConfig) -> None:
        self._groups = groups
        self._cfg = cfg

    def estimate_inmemory_data_size(self) -> int | None:
        # None: Ray would otherwise split every group's output into size / target_max_block_size blocks at plan
        # time (a split factor, which stops the read fusing with the map after it). The blocks are cut to
        # target_max_block_size as they stream out anyway.
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        cfg = self._cfg

        def make(group: list[FileUnit]) -> ReadTask:
            def read() -> Iterator[pa.Table]:
                yield from read_group(group, cfg)

            meta = BlockMetadata(num_rows=None, size_bytes=group_bytes(group), exec_stats=None,
                                 input_files=tuple(u.path for u in group))
            return ReadTask(read, meta)

        return [make(g) for g in self._groups]
