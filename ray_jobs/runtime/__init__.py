"""The one module that talks to Ray.

Ray's Data API moves between minor versions (`concurrency=` was deprecated in 2.51 in favour of `compute=`,
`**ray_remote_args` goes in 2.64), so every `map_batches`, `map_groups`, read and write call lives here and the
rest of the package deals in `Stage` objects and Arrow tables.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import ray
import ray.data
from ray.data.context import ShuffleStrategy

from ray_jobs.config import InputConfig, RayConfig
from ray_jobs.errors import UserError
from ray_jobs.rundir import PARQUET_ARGS, atomic_dir
from ray_jobs.runtime import local
from ray_jobs.runtime.local import Local
from ray_jobs.steps.base import Stage

Dataset = ray.data.Dataset  # for annotations elsewhere: only this package imports Ray


@contextlib.contextmanager
def ray_session(cfg: RayConfig) -> Iterator[None]:
    """Join the cluster named by `cfg.address` / RAY_ADDRESS, or start a local Ray; shut down what we started."""
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # address="local": a new Ray of our own. Without it ray.init() joins whatever `ray start` last ran on
            # this machine (/tmp/ray/ray_current_cluster), even a cluster that is gone.
            ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(), include_dashboard=cfg.include_dashboard,
                     dashboard_host="127.0.0.1", object_store_memory=cfg.object_store_mb * 2**20 or None)
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.target_max_block_size = cfg.target_max_block_size_mb * 1024 * 1024
    ctx.enable_progress_bars = cfg.progress_bars
    if cfg.shuffle_strategy != "default":
        ctx.shuffle_strategy = ShuffleStrategy(cfg.shuffle_strategy)
    # A UDF's own exception, not Ray Data's UserCodeException around it: that wrapper crosses the process boundary
    # without its __cause__, so a UserError raised in a task (the fix for the user, exit 2) became a bare
    # "UDF failed to process a data block" (exit 1). The task's traceback is still printed with it.
    ctx.raise_original_map_exception = True
    # preserve_order stays off (Ray's default): nothing downstream depends on row order (stage folders are
    # partitioned by status, stats are counts, dedup/split decide by id and hash), and ordered output makes
    # the executor hold finished blocks behind slow ones.
    try:
        yield
    finally:
        if started:
            ray.shutdown()


class _StageActor:
    """Actor wrapper: builds the stage's heavy state once, then serves batches."""

    def __init__(self, stage: Stage) -> None:
        stage.setup()
        self._stage = stage

    def __call__(self, table: pa.Table) -> pa.Table:
        return self._stage(table)


_STAGES: dict[str, Stage] = {}  # per worker process: token -> a stateful stage after its setup()


def apply(ds: ray.data.Dataset, stage: Stage, *, batch_size: int | None, actors: int = 1,
          actor_cpus: float = 1.0, stateful_in: str = "actors") -> ray.data.Dataset:
    """Run a stage over a dataset: tasks for stateless stages; a stateful one (a model) in an actor pool, or with
    `stateful_in = "tasks"` in plain tasks that set it up once per worker process (Ray reuses the processes) and
    reuse it for every later batch there. Tasks fuse with the read before and the write after (one task reads a
    file group, maps it, writes it: no object-store hop, no actor/read/write CPU split), which is how the
    pipeline's passes run (ray.stateful_in)."""
    if isinstance(ds, Local):
        if stage.stateful:
            stage.setup()
        return local.map_tables(ds, stage, batch_size)
    if not stage.stateful:
        return ds.map_batches(_in_slices(stage, batch_size), batch_format="pyarrow", batch_size=None,
                              zero_copy_batch=True)
    if stateful_in == "tasks":
        token = uuid.uuid4().hex

        def per_process(table: pa.Table) -> pa.Table:
            if token not in _STAGES:
                _STAGES.clear()  # one pass at a time: an earlier pass's model is garbage now
                stage.setup()
                _STAGES[token] = stage
            return _STAGES[token](table)

        return ds.map_batches(_in_slices(per_process, batch_size), batch_format="pyarrow", batch_size=None,
                              zero_copy_batch=True)
    _check_actor_cpus(actors, actor_cpus)
    return ds.map_batches(
        _StageActor,
        fn_constructor_args=(stage,),
        batch_format="pyarrow",
        batch_size=batch_size,
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus,
    )


def _in_slices(fn: Callable[[pa.Table], pa.Table], batch_size: int | None) -> Callable:
    """`fn` over a whole block, `batch_size` rows at a time, each result yielded as it is made (Ray Data takes a
    generator and re-blocks what it yields). Ray's own `batch_size=` would cut the same batches, but in Ray 2.60 a
    map with a batch size does not fuse with the read before it (operator_fusion: a read may change the row count,
    and a batch size sets min_rows_per_bundled_input): each block then went read task -> object store -> map task,
    with the two kinds of task splitting the CPUs. With `batch_size=None` one task reads a file group, maps it and
    writes it. Batches never span two blocks here (Ray's could): nothing the steps decide depends on that (pack
    packs per batch; the tests compare outputs across block and batch sizes)."""
    if batch_size is None:
        return fn

    def sliced(table: pa.Table) -> Iterator[pa.Table]:
        for start in range(0, len(table), batch_size):
            yield fn(table.slice(start, batch_size))

    return sliced


def _check_actor_cpus(actors: int, actor_cpus: float) -> None:
    """An actor pool must leave a whole CPU on some node for the read tasks (Ray reserves 1 per read task), or the
    job hangs with no error: 2 actors x 0.9 and 3 actors x 0.5 on 2 CPUs were both seen to sit at 0 % CPU for
    minutes, and so did 2 actors x 0.5 on two 1-CPU worker nodes (Ray Data spreads actors, one per node, leaving
    0.5 CPU on each)."""
    nodes = sorted((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), reverse=True)
    if not spread_leaves_a_cpu(nodes, actors, actor_cpus):
        raise UserError(
            f"an actor pool of {actors} x {actor_cpus} CPU leaves no node with the 1 CPU a read task needs on this "
            f"Ray cluster (CPUs per node: {nodes}); lower <stage>.actors or <stage>.actor_cpus, or give the nodes "
            "more CPUs (>= 1 + actor_cpus each)"
        )


def spread_leaves_a_cpu(node_cpus: list[float], actors: int, actor_cpus: float) -> bool:
    """Place the actors as spreading does (each on the node with the most CPUs left); is 1 CPU left somewhere?"""
    free = list(node_cpus)
    for _ in range(actors):
        if not free:
            return False
        free[free.index(max(free))] -= actor_cpus
    return bool(free) and min(free) >= 0 and max(free) >= 1


def map_groups(ds: ray.data.Dataset, key: str, fn: Callable[[pa.Table], pa.Table],
               num_partitions: int) -> ray.data.Dataset:
    """Shuffle rows so every row with the same `key` meets in one call of `fn` (hash shuffle, distributed)."""
    if isinstance(ds, Local):
        return local.map_groups(ds, key, fn)
    return ds.groupby(key, num_partitions=num_partitions).map_groups(fn, batch_format="pyarrow")


def map_tables(ds: ray.data.Dataset, fn: Callable[[pa.Table], pa.Table], *,
               batch_size: int | None) -> ray.data.Dataset:
    """A plain stateless function over batches (for glue that is not a configured stage)."""
    if isinstance(ds, Local):
        return local.map_tables(ds, fn, batch_size)
    return ds.map_batches(fn, batch_format="pyarrow", batch_size=batch_size, zero_copy_batch=True)


def join(left: ray.data.Dataset, right: ray.data.Dataset, how: str, on: str,
         num_partitions: int) -> ray.data.Dataset:
    """Hash join of two datasets on one column (Ray's distributed join: both sides shuffled by key)."""
    if isinstance(left, Local):
        return local.join(left, right, how, on)
    return left.join(right, join_type=how, num_partitions=num_partitions, on=(on,))


_SIDE_TABLES: dict[str, Callable[[pa.Table], pa.Table]] = {}  # per worker process: token -> built function


def map_with_side_table(ds: ray.data.Dataset, side: ray.data.Dataset,
                        make_fn: Callable[[pa.Table], Callable[[pa.Table], pa.Table]]) -> ray.data.Dataset:
    """Map `ds` with a function built from a small dataset, instead of a join that would shuffle `ds`.

    The side dataset's blocks stay in the object store (never pulled through the driver); each worker process
    fetches them once, calls `make_fn(side_table)` once (e.g. to build a hash index) and reuses the result for
    every block it maps. Memory: one copy of the side table per worker process, so callers cap its size."""
    if isinstance(ds, Local):
        return local.map_tables(ds, make_fn(side.table()), None)
    refs = side.to_arrow_refs()
    token = uuid.uuid4().hex

    def fn(table: pa.Table) -> pa.Table:
        if token not in _SIDE_TABLES:
            _SIDE_TABLES.clear()  # one side table at a time per worker: an earlier stage's is garbage now
            tables = ray.get(refs)
            _SIDE_TABLES[token] = make_fn(pa.concat_tables(tables) if tables else pa.table({}))
        return _SIDE_TABLES[token](table)

    return ds.map_batches(fn, batch_format="pyarrow", batch_size=None, zero_copy_batch=True)


def materialize(ds: ray.data.Dataset, ordered: bool = False) -> ray.data.Dataset:
    """Compute once, keep the blocks (spilled to disk when larger than the object store) for several readers.
    `ordered`: blocks in input order rather than finishing order, for consumers whose result depends on the order
    they see blocks in (SGD in tasks_over_blocks); it holds finished blocks behind slow ones, so only then."""
    if isinstance(ds, Local):
        return ds
    if ordered:  # a Dataset runs with the DataContext copied when it was created, not the current one
        ds.context.execution_options.preserve_order = True
    return ds.materialize()


class _Blocks:
    """A materialized dataset's blocks as a sequence, fetched from the object store one at a time when indexed:
    a task holds one block, however large the dataset."""

    def __init__(self, refs: list) -> None:
        self._refs = refs

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, i: int) -> pa.Table:
        return ray.get(self._refs[i])


def _call_with_blocks(fn: Callable, refs: list, *args: object) -> object:
    return fn(_Blocks(refs), *args)


def tasks_over_blocks(fn: Callable, ds: ray.data.Dataset, args_list: list[tuple], *, num_cpus: float) -> list:
    """One Ray task per `args` in `args_list`, each calling `fn(blocks, *args)` where `blocks` is a sequence over
    the materialized `ds`'s blocks (each task streams all of them; a list of refs travels, not the data); the
    tasks run side by side as CPUs allow. Returns their results in `args_list` order."""
    if isinstance(ds, Local):
        return [fn(ds.tables, *args) for args in args_list]
    refs = ds.to_arrow_refs()
    remote = ray.remote(num_cpus=num_cpus)(_call_with_blocks)
    return ray.get([remote.remote(fn, refs, *args) for args in args_list])


def count(ds: ray.data.Dataset) -> int:
    """Row count; free on a materialized dataset (block metadata)."""
    if isinstance(ds, Local):
        return ds.count()
    return ds.count()


def partitions(ds: ray.data.Dataset, partition_mb: int, max_partitions: int) -> int:
    """Shuffle partitions for a materialized dataset: one per `partition_mb` of data, at most `max_partitions`.
    Each partition is one reduce task's input, so this is what bounds worker memory; on small data it also
    keeps Ray's per-partition fixed cost (~0.2 s each) from dominating."""
    if isinstance(ds, Local):
        return 1  # one process: partitions only add per-group calls
    return max(1, min(max_partitions, -(-ds.size_bytes() // (partition_mb * 1024 * 1024))))


def union(first: ray.data.Dataset, *others: ray.data.Dataset) -> ray.data.Dataset:
    if isinstance(first, Local):
        return Local(first.tables + [t for o in others for t in o.tables])
    return first.union(*others) if others else first


def rebatch(ds: ray.data.Dataset, rows_per_block: int) -> ray.data.Dataset:
    """Streaming re-blocking to at most `rows_per_block` rows (small blocks combined): fewer, larger blocks for
    narrow tables, whose per-block task overhead (~0.1 s here) would otherwise dominate."""
    if isinstance(ds, Local):
        return local.rebatch(ds, rows_per_block)
    return ds.repartition(target_num_rows_per_block=rows_per_block)


def one_block(ds: ray.data.Dataset) -> ray.data.Dataset:
    """Everything in one block, so one task sees all rows (only for data known to be small)."""
    if isinstance(ds, Local):
        return Local([ds.table()])
    return ds.repartition(1)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> ray.data.Dataset:
    """A Parquet file or folder (hive `col=value` folders become columns; `_`/`.` folders and non-Parquet files,
    such as an index's `_meta.json`, are skipped); `columns`: only these are read (Parquet is columnar: the
    text of a folder is not read when it is not asked for). A folder with no rows is an empty dataset."""
    if local.ACTIVE:
        return local.read_parquet(path, columns)
    p = Path(path)
    if p.is_dir() and not any(f for f in p.rglob("*.parquet")
                              if not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts)):
        return ray.data.from_items([])
    ds = ray.data.read_parquet(str(path), file_extensions=["parquet"])
    return ds.select_columns(columns) if columns else ds  # projected into the read: other columns are not read


def from_table(table: pa.Table, rows_per_block: int) -> ray.data.Dataset:
    """A small driver-side table (a manifest: paths and captions, not the assets) as blocks of rows_per_block."""
    if local.ACTIVE:
        return Local([table])
    return ray.data.from_arrow([table.slice(i, rows_per_block) for i in range(0, max(len(table), 1), rows_per_block)])


def read_corpus(units: list, input_cfg: InputConfig) -> ray.data.Dataset:
    """The canonical rows of `units` (io/readers.discover) through the project's own datasource."""
    if local.ACTIVE:
        from ray_jobs.io.readers import read_group

        return local.read_groups([units], lambda group: read_group(group, input_cfg))
    from ray_jobs.io.readers import READ_GROUPS, file_groups
    from ray_jobs.runtime.datasource import CorpusDatasource

    # One block count asked for = the groups we cut: Ray then adds no split factor to the read (it splits each
    # task's output into k blocks when a read has fewer tasks than it wants, or larger blocks than
    # target_max_block_size), and a read with a split factor does not fuse with the map after it (operator_fusion
    # in Ray 2.60): pass 1 ran as ReadCorpus tasks -> object store -> map tasks instead of one task per group.
    groups = file_groups(units, READ_GROUPS)
    return ray.data.read_datasource(CorpusDatasource(groups, input_cfg), override_num_blocks=len(groups))


def iter_tables(ds: ray.data.Dataset, batch_size: int = 65536) -> Iterator[pa.Table]:
    """Stream a dataset to the driver in Arrow batches (never `ds.sum()`: it reserves a CPU and serialises tasks)."""
    if isinstance(ds, Local):
        yield from local.batches(ds, batch_size)
        return
    yield from ds.iter_batches(batch_size=batch_size, batch_format="pyarrow")


def write_partitioned(ds: ray.data.Dataset, out_dir: Path, partition_col: str,
                      extras: dict[str, ray.data.Dataset | str]) -> None:
    """Write Parquet partitioned by `partition_col` (hive folders `col=value/`), atomically, plus each of
    `extras` into its own sub-folder (named with a leading `_`, which Parquet readers skip): a dataset as
    Parquet, a str as that text file.

    Everything goes to a temporary sibling folder first and is renamed into place when complete, so a crashed
    run never leaves a half-written stage folder that a re-run would mistake for output.
    """
    with atomic_dir(out_dir) as tmp:
        if isinstance(ds, Local):
            local.write_parquet(ds, tmp, partition_col)
        else:
            ds.write_parquet(str(tmp), partition_cols=[partition_col], **PARQUET_ARGS)
        tmp.mkdir(parents=True, exist_ok=True)  # an empty dataset writes nothing; the stage folder still exists
        for name, extra in extras.items():
            assert name.startswith("_"), name
            if isinstance(extra, str):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_text(extra)
            elif isinstance(extra, Local):
                local.write_parquet(extra, tmp / name)
            else:
                extra.write_parquet(str(tmp / name), **PARQUET_ARGS)
                (tmp / name).mkdir(exist_ok=True)


def in_process(fn: Callable, *args: object) -> object:
    """`fn(*args)` with every runtime call inside it run here, on Arrow tables (runtime/local.py)."""
    local.ACTIVE = True
    try:
        return fn(*args)
    finally:
        local.ACTIVE = False  # Ray reuses the worker process for other tasks


def on_worker(fn: Callable, *args: object, num_cpus: float = 1) -> object:
    """`fn(*args)` in one Ray task: on a worker, not the driver, so what it holds is not the driver's memory (the
    driver is often a small machine, and a process that has grown keeps its pages)."""
    return ray.get(ray.remote(num_cpus=num_cpus)(fn).remote(*args))


def run_local(fn: Callable, *args: object, num_cpus: float = 1) -> object:
    """`fn(*args)` in one Ray task (on_worker), with every runtime call inside it run in-process on Arrow tables
    (runtime/local.py) instead of through Ray Data."""
    return on_worker(in_process, fn, *args, num_cpus=num_cpus)
