"""The runtime's operations in one process, on Arrow tables: what a compact phase runs on when its data is small.

A compact phase (planner.py) runs dedup, split and leakage over id + digest columns: 268,626 documents are ~150 MB
at 1.1 GB of text. Through Ray Data those steps were 18 executions and 114 s, fixed costs (task start-up,
shuffle set-up, object-store hops) for data that one process handles in ~10 s. So below `ray.local_compact_mb`
the planner runs the same step code in one Ray task (`runtime.run_local`) where every `runtime.*` call lands here:
the barrier modules do not know which they got, and the decisions are the same (tests compare both).

`Local` is the stand-in for a Ray Dataset: a list of tables, eager (each call computes at once; nothing here is
large enough to stream). It has the few Dataset methods the steps call (`select_columns`, `drop_columns`,
`columns`).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ray_jobs.rundir import PARQUET_ARGS

ACTIVE = False  # set by runtime.run_local for the duration of its task: reads return Local


class Local:
    """A dataset held as Arrow tables in this process."""

    def __init__(self, tables: list[pa.Table]) -> None:
        self.tables = [t for t in tables if t.num_columns]

    def table(self) -> pa.Table:
        tables = self.tables  # once: a LocalFiles reads its files for it
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]

    def select_columns(self, cols: list[str]) -> Local:
        return Local([t.select(cols) for t in self.tables])

    def drop_columns(self, cols: list[str]) -> Local:
        return Local([t.drop_columns([c for c in cols if c in t.column_names]) for t in self.tables])

    def columns(self) -> list[str]:
        return self.tables[0].column_names if self.tables else []

    def count(self) -> int:
        return sum(len(t) for t in self.tables)

    def size_bytes(self) -> int:
        return sum(t.nbytes for t in self.tables)

    def iter_tables(self) -> Iterator[pa.Table]:
        yield from self.tables


class LocalFiles(Local):
    """Parquet read one file at a time when iterated: a map over it (batch_size None) holds one file's columns and
    what the map keeps, not the whole input. Exact verification reads the text of every kept row to keep the
    candidates' (21 % of it): read whole, 4.4 GB of text was in one process at once. What needs every table at
    once (`tables`, `table()`) reads them all."""

    def __init__(self, data: pads.Dataset, columns: list[str] | None) -> None:
        self.data, self.columns_read = data, columns

    @property
    def tables(self) -> list[pa.Table]:  # type: ignore[override]
        return [t for t in self.iter_tables() if t.num_columns]

    def iter_tables(self) -> Iterator[pa.Table]:
        for fragment in self.data.get_fragments():
            # the dataset's schema: hive partition values become columns, as in a whole-dataset read
            yield fragment.to_table(schema=self.data.schema, columns=self.columns_read, use_threads=False)

    def select_columns(self, cols: list[str]) -> Local:
        return LocalFiles(self.data, cols)

    def columns(self) -> list[str]:
        return self.columns_read or self.data.schema.names

    def count(self) -> int:
        return self.data.count_rows()


def batches(ds: Local, batch_size: int | None) -> Iterator[pa.Table]:
    """The tables as they are (batch_size None: a block at a time, as Ray does) or re-cut to batch_size rows."""
    if batch_size is None:
        yield from (t for t in ds.iter_tables() if len(t))
        return
    whole = ds.table()
    for i in range(0, len(whole), batch_size):
        yield whole.slice(i, batch_size)


def map_tables(ds: Local, fn: Callable[[pa.Table], pa.Table], batch_size: int | None) -> Local:
    return Local([fn(t) for t in batches(ds, batch_size)])


def map_groups(ds: Local, key: str, fn: Callable[[pa.Table], pa.Table]) -> Local:
    """fn once per distinct `key` value, with all its rows (sorted by key, cut at the runs)."""
    whole = ds.table()
    if not len(whole):
        return Local([])
    whole = whole.take(pc.sort_indices(whole, [(key, "ascending")]))
    ends = pc.run_end_encode(whole[key].combine_chunks()).run_ends.to_pylist()
    return Local([fn(whole.slice(start, end - start)) for start, end in zip([0, *ends[:-1]], ends)])


def join(left: Local, right: Local, how: str, on: str) -> Local:
    """Ray's `inner` / `left_outer` join on one column: the left columns, then the right's other columns. Joined on
    the key and row numbers only, then taken, so list columns (signatures) ride along (Arrow's hash join does not
    carry list payloads)."""
    lt, rt = left.table(), right.table()
    both = (set(lt.column_names) & set(rt.column_names)) - {on}
    if both:
        raise ValueError(f"join on {on!r}: both sides have {sorted(both)}; select the columns first")
    if not len(lt) or (how == "inner" and not len(rt)):
        return Local([])
    li = pa.table({on: lt[on], "__l": pa.array(range(len(lt)), pa.int64())})
    ri = pa.table({on: rt[on], "__r": pa.array(range(len(rt)), pa.int64())})
    pairs = li.join(ri, on, join_type={"inner": "inner", "left_outer": "left outer"}[how], use_threads=False)
    out = lt.take(pairs["__l"])
    take = pairs["__r"]  # null where a left row found nothing: take gives a null there
    for col in rt.column_names:
        if col != on:
            taken = rt[col].take(take) if len(rt) else pa.nulls(len(out), rt.schema.field(col).type)
            out = out.append_column(col, taken)
    return Local([out])


def rebatch(ds: Local, rows_per_block: int) -> Local:
    return Local(list(batches(ds, rows_per_block)))


def read_parquet(path: str | Path, columns: list[str] | None) -> Local:
    """As runtime.read_parquet: hive folders become columns, `_`/`.` folders and other files are skipped."""
    p = Path(path)
    files = [str(f) for f in sorted(p.rglob("*.parquet"))
             if not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts)] if p.is_dir() else [str(p)]
    if not files:
        return Local([])
    # hive values as strings, as Ray reads them (pyarrow would make "0" an int)
    keys = sorted({part.split("=", 1)[0] for f in files for part in Path(f).relative_to(p).parts[:-1]
                   if "=" in part}) if p.is_dir() else []
    hive = pads.partitioning(pa.schema([(k, pa.string()) for k in keys]), flavor="hive")
    data = pads.dataset(files, format="parquet", partitioning=hive, partition_base_dir=str(p) if p.is_dir() else None)
    return LocalFiles(data, columns)


def read_groups(groups: list, read_group: Callable) -> Local:
    return Local(list(itertools.chain.from_iterable(read_group(g) for g in groups)))


def write_parquet(ds: Local, out: Path, partition_col: str | None = None) -> None:
    """Parquet under `out`, in hive folders `col=value/` when `partition_col` is given (the column leaves the
    files, as with Ray's writer)."""
    out.mkdir(parents=True, exist_ok=True)
    whole = ds.table()
    if not len(whole):
        return
    name = f"part-{uuid.uuid4().hex[:12]}"
    if partition_col is None:
        pq.write_table(whole, out / f"{name}.parquet", **PARQUET_ARGS)
        return
    for value in pc.unique(whole[partition_col]).to_pylist():
        part = whole.filter(pc.equal(whole[partition_col], value)).drop_columns([partition_col])
        (out / f"{partition_col}={value}").mkdir(exist_ok=True)
        pq.write_table(part, out / f"{partition_col}={value}" / f"{name}.parquet", **PARQUET_ARGS)
