"""The corpus readers (io/readers.py) as a Ray Data source: one read task per group of files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from ray_jobs.config import InputConfig
from ray_jobs.io.formats import FileUnit
from ray_jobs.io.readers import file_groups, group_bytes, read_group


class CorpusDatasource(Datasource):
    """A Ray Data source over a list of files of mixed formats; each read task streams a group of files."""

    def __init__(self, units: list[FileUnit], cfg: InputConfig) -> None:
        self._units = units
        self._cfg = cfg

    def estimate_inmemory_data_size(self) -> int | None:
        return group_bytes(self._units)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        cfg = self._cfg

        def make(group: list[FileUnit]) -> ReadTask:
            def read() -> Iterator[pa.Table]:
                yield from read_group(group, cfg)

            meta = BlockMetadata(num_rows=None, size_bytes=group_bytes(group), exec_stats=None,
                                 input_files=tuple(u.path for u in group))
            return ReadTask(read, meta)

        return [make(g) for g in file_groups(self._units, parallelism)]
