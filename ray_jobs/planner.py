"""The planner: the enabled steps (steps/registry.py) as a few physical passes, in Spark's sense.

Logical plan = the steps in registry order. Physical plan:

* a **text pass** runs consecutive row steps fused into one batch function (one Ray Data map over the rows, in
  an actor pool when a step holds a model), then computes the digests the global steps after it need (MinHash
  signatures), and writes once: the last step's rows (partitioned by status or split) plus every earlier
  step's dropped rows, spilled by the batch function into that step's folder;
* a **compact phase** runs consecutive global steps (dedup, split, leakage) over compact rows read back from the
  text pass's kept rows: the id, the digest and the key columns, never the text. Each writes its decisions (one
  row per input id: status or split, what it added) to its folder; the last kept decisions are the artifact;
* the next text pass reads the text again, keeps the rows the artifact keeps (a side table sent to every worker,
  not a join) with the columns it added, and runs the next row steps (tokenize, pack).

With the defaults the text is read twice (clean + signatures; then the decisions applied + tokenize + pack) and
written once (RUN/clean): `describe()` prints the passes. A global step that needs the text itself (labels) gets
full rows through its `build`, in a text pass of its own. A single step asked for by name on any input runs as
its verb always did: a row step as a one-step text pass, a global step through `build` (reading its input twice).

Re-runs: every step's marker carries a fingerprint chained from its config and everything before it (the input
files first: size, mtime and content hash); a pass whose steps all match is skipped, `--force` redoes everything.
A pass after a step that kept no row runs nothing: its steps get empty folders and their markers (`Runner.empty`).
One command at a time writes a run directory (`RunDir.lock`).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from ray_jobs import runtime, schema
from ray_jobs.config import InputConfig, RunConfig, to_dict, to_toml
from ray_jobs.errors import UserError
from ray_jobs.exports import export, export_megatron, export_packed_webdataset, export_token_bin
from ray_jobs.io.readers import discover
from ray_jobs.report.html import close_run
from ray_jobs.rundir import (
    DECISIONS,
    DROPS,
    PARQUET_ARGS,
    ROWS,
    RunDir,
    atomic_dir,
    file_fingerprint,
    fingerprint,
    parquet_rows,
    write_atomic,
)
from ray_jobs.runtime import Dataset
from ray_jobs.steps import registry
from ray_jobs.steps.base import Stage
from ray_jobs.steps.registry import GLOBAL, ROW, Step

log = logging.getLogger("ray_jobs")


def read_input(input_cfg: InputConfig, units: list | None = None) -> Dataset:
    return runtime.read_corpus(units or discover(input_cfg), input_cfg)


def _input_fingerprint(units: list) -> list:
    """Which files, with their size, mtime and content hash (rundir.file_fingerprint): a changed input, a
    same-size edit included, invalidates the first pass."""
    return [(u.relpath, file_fingerprint(u.path)) for u in units]


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class Pass:
    """One unit of execution. kind "text": fused row steps over full rows; "compact": global steps over compact
    rows; "full": one global step's `build` over full rows."""

    kind: str
    steps: list[Step]
    digests: list = field(default_factory=list)  # text pass: digests for the global steps after it

    def describe(self) -> str:
        names = " -> ".join(s.name for s in self.steps)
        extra = "".join(f" + {d.name} digest" for d in self.digests)
        what = {"text": "text pass (fused row steps)", "compact": "compact rows (global steps)",
                "full": "full rows (global step on the text)"}[self.kind]
        return f"{what}: {names}{extra}"


def plan(steps: list[Step]) -> list[Pass]:
    """Group the steps into passes (see the module doc)."""
    passes: list[Pass] = []
    i = 0
    while i < len(steps):
        s = steps[i]
        if s.kind == ROW:
            j = i
            while j < len(steps) and steps[j].kind == ROW:
                j += 1
            digests = []
            for g in steps[j:]:
                if g.kind == ROW or g.decide is None:
                    break
                if g.digest is not None and g.digest.name not in [d.name for d in digests]:
                    digests.append(g.digest)
            passes.append(Pass("text", steps[i:j], digests))
            i = j
        elif s.decide is not None and passes and passes[-1].kind == "text" and passes[-1].steps[-1].carries_text:
            j = i
            while j < len(steps) and steps[j].kind == GLOBAL and steps[j].decide is not None:
                j += 1
            passes.append(Pass("compact", steps[i:j]))
            i = j
        else:  # first on raw input, after a step without text, or one that trains on the text (labels)
            passes.append(Pass("full", [s]))
            i += 1
    return passes


def describe(cfg: RunConfig, names: tuple[str, ...] | None = None) -> str:
    return "\n".join(f"pass {k}: {p.describe()}" for k, p in enumerate(plan(_steps(cfg, names)), 1))


def _steps(cfg: RunConfig, names: tuple[str, ...] | None) -> list[Step]:
    if names:
        return [registry.get(n) for n in names]
    return [s for s in registry.steps() if s.enabled(cfg)]


# ------------------------------------------------------------------------------------------------ fused rows


class FusedRows(Stage):
    """The row steps of a text pass as one batch function. Between steps, rows a step did not keep leave the
    batch and are written to that step's folder under `spill_dir` (file names from the rows' ids, so a retried
    task rewrites the same file); the last step's rows go on to the pass's writer. Then the digests."""

    def __init__(self, steps: list[tuple[str, list]], digests: list, spill_dir: str, final_partition: str) -> None:
        self.steps = steps
        self.digests = digests
        self.spill_dir = spill_dir
        self.final_partition = final_partition
        ops = [op for _, step_ops in steps for op in step_ops] + digests
        self.stateful = any(getattr(op, "stateful", False) for op in ops)

    def setup(self) -> None:
        for _, ops in self.steps:
            for op in ops:
                if isinstance(op, Stage):
                    op.setup()

    def __call__(self, table: pa.Table) -> pa.Table:
        last = len(self.steps) - 1
        for k, (name, ops) in enumerate(self.steps):
            for op in ops:
                table = op(table)
            if schema.STATUS in table.column_names and (k < last or self.final_partition != schema.STATUS):
                kept = pc.equal(table[schema.STATUS], schema.KEPT)
                spill(Path(self.spill_dir) / name, table.filter(pc.invert(kept)))
                table = table.filter(kept)
                if k == last:
                    table = table.drop_columns([schema.STATUS])
        for digest in self.digests:
            table = digest(table)
        return table


def spill(step_dir: Path, rows: pa.Table, col: str = schema.STATUS) -> None:
    """Rows -> step_dir/<col>=<value>/part-<hash of their ids>.parquet, written atomically: a retried task
    rewrites the same file instead of adding one."""
    if not len(rows):
        return
    for value in pc.unique(rows[col]).to_pylist():
        part = rows.filter(pc.equal(rows[col], value)).drop_columns([col])
        # packed rows have no id of their own: the ids of the documents they hold name them
        names = part[schema.ID] if schema.ID in part.column_names else pc.list_flatten(part["doc_ids"])
        digest = xxhash.xxh3_64_hexdigest("\n".join(map(str, names.to_pylist())).encode())
        out = step_dir / f"{col}={value}"
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".part-{digest}.{uuid.uuid4().hex[:6]}.tmp"
        pq.write_table(part, tmp, **PARQUET_ARGS)
        os.replace(tmp, out / f"part-{digest}.parquet")


def _merge_spilled(spill_dir: Path, run: RunDir, names: list[str]) -> None:
    """Spilled folders into the run: RUN/<step>/status=<s>/ (replacing what an earlier run left there)."""
    for name in names:
        src = spill_dir / name
        dst = run.stage_dir(name)
        if not src.is_dir():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        for sub in src.iterdir():
            if (dst / sub.name).exists():
                shutil.rmtree(dst / sub.name)
            os.replace(sub, dst / sub.name)
    shutil.rmtree(spill_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ decisions


def applied(side: pa.Table):
    """The artifact of a compact phase applied row by row: keep the rows whose id it lists, with the columns it
    added (their split, cluster id, ...). Built once per worker (pandas hash index over the ids)."""
    import pandas as pd

    index = pd.Index(side[schema.ID].to_pandas()) if len(side) else pd.Index([], dtype=object)
    added = [c for c in side.column_names if c not in (schema.ID, schema.STATUS)]

    def fn(table: pa.Table) -> pa.Table:
        pos = index.get_indexer(table[schema.ID].to_pandas())
        keep = pos >= 0
        table = table.filter(pa.array(keep))
        take = pa.array(pos[keep])
        for col in added:
            if col in table.column_names:
                table = table.drop_columns([col])
            table = table.append_column(col, side[col].take(take))
        return table

    return fn


# ------------------------------------------------------------------------------------------------ running


@dataclass
class Source:
    """Where the next pass reads: the raw input, or a folder of kept text rows (+ the artifact to apply)."""

    input_cfg: InputConfig | None = None
    text_dir: Path | None = None
    artifact_dir: Path | None = None  # kept decisions of the last compact phase
    fp: str = ""  # the fingerprint chain so far

    def read(self, digest_cols: tuple[str, ...] = (), tokens: bool = False) -> Dataset:
        """`tokens`: the input is token rows (pack alone), read as the Parquet it is: there is no text for the
        corpus readers to check."""
        if self.input_cfg is not None:
            return runtime.read_parquet(self.input_cfg.paths[0]) if tokens else read_input(self.input_cfg)
        files = sorted(self.text_dir.rglob("*.parquet"))
        names = pq.read_schema(files[0]).names if files else None
        cols = [c for c in names if c not in digest_cols] if names else None
        ds = runtime.read_parquet(self.text_dir, columns=cols)
        if self.artifact_dir is not None:
            ds = runtime.map_with_side_table(ds, runtime.read_parquet(self.artifact_dir), applied)
        return ds


class Runner:
    def __init__(self, cfg: RunConfig, run: RunDir, force: bool, consume=None) -> None:
        self.cfg, self.run, self.force = cfg, run, force
        self.pass_no = 0
        self.last_pass = False
        self.consume = consume  # (rows of the last pass) -> True when it read them to the end
        self.all_digest_cols: tuple[str, ...] = tuple(dict.fromkeys(
            c for s in registry.steps() if s.digest is not None for c in s.digest.columns(cfg)))

    def fp(self, step: Step, prev: str) -> str:
        return fingerprint(step.name, to_dict(registry.section(self.cfg, step)), prev)

    def skip(self, steps: list[Step], prev: str) -> tuple[bool, list[str]]:
        fps, chain = [], prev
        for s in steps:
            chain = self.fp(s, chain)
            fps.append(chain)
        done = all(self.run.is_done(s.name, f, self.force) for s, f in zip(steps, fps))
        if done:
            log.info("%s already done in %s: skipped (use --force to redo)", ", ".join(s.name for s in steps),
                     self.run.root)
        else:
            self.run.invalidate_after(steps[0].name)
        return done, fps

    def keep(self, step: Step) -> bool:
        """output.keep, plus what an export reads: output.export the split rows, pack.exports "bin" and
        "megatron" the documents' token rows."""
        keep = set(self.cfg.output.keep) | ({"split"} if self.cfg.output.export != "none" else set())
        keep |= {"tokenize"} if {"bin", "megatron"} & set(self.cfg.pack.exports) else set()
        return step.name in keep

    # -- text pass
    def text_pass(self, p: Pass, src: Source) -> Source:
        done, fps = self.skip(p.steps, src.fp)
        last = p.steps[-1]
        out_dir = self.run.stage_dir(last.name)
        if done and self.consume is not None and self.last_pass:
            self.consume(runtime.read_parquet(out_dir))  # a finished folder: read as it is
        if not done:
            if not self._run_text(p, src):
                return Source(fp=fps[-1])  # streamed to a consumer that stopped early: not finished
            for s, f in zip(p.steps, fps):
                self.run.mark_done(s.name, f, ROWS if s is last or self.keep(s) else DROPS, self.pass_no)
        return Source(text_dir=self.run.kept_path(last.name) if last.carries_text else None, fp=fps[-1])

    def _run_text(self, p: Pass, src: Source) -> bool:
        """Run the pass; True when its folders are complete."""
        cfg = self.cfg
        spill_dir = self.run.root / f".pass{self.pass_no}.spill-{uuid.uuid4().hex[:8]}"
        last = p.steps[-1]
        stream = self.consume is not None and self.last_pass
        # streamed: the last step's rows are written as they pass (like output.keep) and go on to the consumer
        steps = [(s.name, s.ops(cfg) + ([_Keep(str(spill_dir / s.name), s.partition)]
                                        if (s is not last and self.keep(s)) or (s is last and stream) else []))
                 for s in p.steps]
        digests = [d.op(cfg) for d in p.digests]
        fused = FusedRows(steps, digests, str(spill_dir), last.partition)
        # the pass's actor pool: the largest any of its steps asks for (clean, tokenize: 2 x 0.5 CPU)
        pools = [c for c in (registry.section(cfg, s) for s in p.steps) if hasattr(c, "actors")]
        actors = max((c.actors for c in pools), default=1)
        actor_cpus = max((c.actor_cpus for c in pools), default=0.5)
        batch = max([cfg.ray.batch_size] + [cfg.pack.docs_per_batch for s in p.steps if s.name == "pack"])
        ds = runtime.apply(src.read(self.all_digest_cols, tokens=not p.steps[0].needs_text), fused,
                           batch_size=batch, actors=actors, actor_cpus=actor_cpus, stateful_in=cfg.ray.stateful_in)
        for s in p.steps:  # a step redone here: its folder is rewritten whole
            if s is not last and self.run.stage_dir(s.name).exists():
                shutil.rmtree(self.run.stage_dir(s.name))
        if stream:
            complete = False
            try:
                complete = bool(self.consume(ds))
            finally:
                if not complete:  # stopped early or raised: what was spilled is not a whole pass
                    shutil.rmtree(spill_dir, ignore_errors=True)
            if not complete:
                log.info("the consumer stopped before the end of the rows: %s is not written", last.name)
                return False
            if self.run.stage_dir(last.name).exists():
                shutil.rmtree(self.run.stage_dir(last.name))
        else:
            runtime.write_partitioned(ds, self.run.stage_dir(last.name), last.partition, {})
        _merge_spilled(spill_dir, self.run, [s.name for s in p.steps])
        return True

    # -- compact phase
    def compact(self, p: Pass, src: Source, digests: tuple[str, ...]) -> Source:
        done, fps = self.skip(p.steps, src.fp)
        last_dir = self.run.stage_dir(p.steps[-1].name)
        if not done:
            files = sorted(src.text_dir.rglob("*.parquet"))
            have = set(pq.read_schema(files[0]).names) if files else set()
            keys = {c for s in p.steps for c in s.key_columns(self.cfg)}
            cols = [schema.ID] + [c for c in digests if c in have] + sorted(keys & have - {schema.ID})
            args = (self.cfg, p.steps, src.text_dir, cols, [self.run.stage_dir(s.name) for s in p.steps],
                    self.all_digest_cols)
            mb = column_bytes(files, cols) / 2**20
            if mb <= self.cfg.ray.local_compact_mb:
                log.info("compact phase: %.0f MB of %s, in one process (ray.local_compact_mb = %d)", mb,
                         ", ".join(cols), self.cfg.ray.local_compact_mb)
                runtime.run_local(decide_steps, *args)
            else:
                decide_steps(*args)
            for s, f in zip(p.steps, fps):
                if self.keep(s):
                    self._full_rows(s, src)
                self.run.mark_done(s.name, f, ROWS if self.keep(s) else DECISIONS, self.pass_no)
        artifact = self.run.kept_path(p.steps[-1].name) if p.steps[-1].partition == schema.STATUS else last_dir
        return Source(text_dir=src.text_dir, artifact_dir=artifact, fp=fps[-1])

    def _full_rows(self, step: Step, src: Source) -> None:
        """output.keep: the step's kept rows with their text (the id-level kept decisions replaced)."""
        kept = self.run.kept_path(step.name) if step.partition == schema.STATUS else self.run.stage_dir(step.name)
        tmp = self.run.root / f".{step.name}.rows-{uuid.uuid4().hex[:8]}"
        ds = runtime.map_with_side_table(runtime.read_parquet(src.text_dir, columns=None), runtime.read_parquet(kept),
                                         applied)
        ds = runtime.map_tables(ds, _without(self.all_digest_cols), batch_size=None)
        if step.partition == schema.STATUS:
            runtime.write_partitioned(ds, tmp, schema.STATUS, {})
            shutil.rmtree(kept)
            written = tmp / f"{schema.STATUS}={schema.KEPT}"
            os.replace(written, kept) if written.is_dir() else kept.mkdir()
        else:
            ds = runtime.map_tables(ds, _without((schema.STATUS,)), batch_size=None)
            runtime.write_partitioned(ds, tmp, step.partition, {})
            for sub in self.run.stage_dir(step.name).glob(f"{step.partition}=*"):
                shutil.rmtree(sub)
            for sub in tmp.glob(f"{step.partition}=*"):
                os.replace(sub, self.run.stage_dir(step.name) / sub.name)
        shutil.rmtree(tmp, ignore_errors=True)

    # -- a pass over no rows
    def nothing_to_read(self, src: Source) -> bool:
        """The step before kept no row (Parquet footers): the next pass has nothing to read."""
        return src.input_cfg is None and any(d is not None and not parquet_rows(d)
                                             for d in (src.text_dir, src.artifact_dir))

    def empty(self, p: Pass, src: Source) -> Source:
        """Each step of a pass over no rows gets an empty folder and its marker, without Ray: the stats chain, the
        report and a re-run see it finished with 0 rows, as a run on rows would leave it."""
        done, fps = self.skip(p.steps, src.fp)
        if not done:
            for s, f in zip(p.steps, fps):
                with atomic_dir(self.run.stage_dir(s.name)):
                    pass
                self.run.mark_done(s.name, f, ROWS, self.pass_no)
        last = p.steps[-1]
        return Source(text_dir=self.run.kept_path(last.name) if last.carries_text else None, fp=fps[-1])

    # -- a global step on full rows
    def full(self, p: Pass, src: Source) -> Source:
        s = p.steps[0]
        done, fps = self.skip(p.steps, src.fp)
        if not done:
            ds = src.read(self.all_digest_cols)
            if src.input_cfg is None and src.text_dir is None:
                raise UserError(f"the {s.name} step needs rows with text, but the step before it leaves none")
            rows, extras = s.build(self.cfg, ds, read_input)
            runtime.write_partitioned(rows, self.run.stage_dir(s.name), s.partition, extras)
            self.run.mark_done(s.name, fps[0], ROWS, self.pass_no)
        return Source(text_dir=self.run.kept_path(s.name) if s.carries_text else None, fp=fps[0])


class _Keep(Stage):
    """output.keep for a step fused inside a pass: its kept rows are also written as they leave it."""

    def __init__(self, step_dir: str, partition: str) -> None:
        self.step_dir, self.partition = step_dir, partition

    def __call__(self, table: pa.Table) -> pa.Table:
        kept = table.filter(pc.equal(table[schema.STATUS], schema.KEPT)) if schema.STATUS in table.column_names \
            else table
        if self.partition != schema.STATUS and schema.STATUS in kept.column_names:
            kept = kept.drop_columns([schema.STATUS])
        spill(Path(self.step_dir), kept, self.partition)
        return table


def column_bytes(files: list[Path], cols: list[str]) -> int:
    """Uncompressed bytes of `cols` in these Parquet files, from their footers (nothing else is read)."""
    total = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            total += sum(group.column(c).total_uncompressed_size for c in range(group.num_columns)
                         if group.column(c).path_in_schema.split(".")[0] in cols)
    return total


def decide_steps(cfg: RunConfig, steps: list[Step], text_dir: Path, cols: list[str], out_dirs: list[Path],
                 strip: tuple[str, ...]) -> None:
    """A compact phase's global steps over the compact rows of `text_dir`, one after the other, each deciding on
    the rows the one before kept and writing its decision rows to its folder. The same code runs through Ray Data
    or, inside runtime.run_local, in one process (runtime/local.py)."""
    rows = runtime.read_parquet(text_dir, columns=cols)
    for s, out_dir in zip(steps, out_dirs):
        text = {"text": lambda columns: runtime.read_parquet(text_dir, columns=columns)} if s.reads_text else {}
        decided, extras = s.decide(cfg, rows, read_input, **text)
        decided = runtime.materialize(decided)
        runtime.write_partitioned(runtime.map_tables(decided, _without(strip), batch_size=None), out_dir,
                                  s.partition, extras)
        rows = runtime.map_tables(decided, _kept_only, batch_size=None) if s.partition == schema.STATUS else decided


def _without(cols: tuple[str, ...]):
    def fn(table: pa.Table) -> pa.Table:
        return table.drop_columns([c for c in cols if c in table.column_names])

    return fn


def _kept_only(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table[schema.STATUS], schema.KEPT))


def run_pipeline(cfg: RunConfig, stages: tuple[str, ...] | None = None, force: bool = False,
                 input_cfg: InputConfig | None = None, consume=None) -> dict:
    """Run the enabled steps (or `stages`, by name) into cfg.output.dir; the first reads `input_cfg` (default
    cfg.input). `consume(ds)`: the last pass's rows are handed to it as they are made (Ray Train's streaming
    split) while they are also written; it returns True when it read them to the end (the folder is then
    complete and marked). Inside the Ray session, so the consumer can use it."""
    for name in cfg.output.keep:
        registry.get(name)  # a typo names the valid steps
    run = RunDir(cfg.output.dir)
    with run.lock():
        return _run_pipeline(cfg, run, stages, force, input_cfg, consume)


def _run_pipeline(cfg: RunConfig, run: RunDir, stages: tuple[str, ...] | None, force: bool,
                  input_cfg: InputConfig | None, consume) -> dict:
    write_atomic(run.root / "config.toml", to_toml(cfg))
    steps = _steps(cfg, stages)
    if stages is None or len(stages) > 1:  # a step the config leaves off: stats must not chain through it
        for s in registry.steps():
            if s not in steps:
                run.marker(s.name).unlink(missing_ok=True)
    input_cfg = input_cfg or cfg.input
    passes = plan(steps)
    log.info("plan:\n%s", "\n".join(f"  pass {k}: {p.describe()}" for k, p in enumerate(passes, 1)))
    with runtime.ray_session(cfg.ray):
        units = discover(input_cfg)
        src = Source(input_cfg=input_cfg, fp=fingerprint(to_dict(input_cfg), _input_fingerprint(units)))
        runner = Runner(cfg, run, force, consume)
        digests: tuple[str, ...] = ()
        for k, p in enumerate(passes, 1):
            runner.pass_no, runner.last_pass = k, k == len(passes)
            if runner.nothing_to_read(src):
                src = runner.empty(p, src)
            elif p.kind == "text":
                src = runner.text_pass(p, src)
                digests = tuple(c for d in p.digests for c in d.columns(cfg))
            elif p.kind == "compact":
                src = runner.compact(p, src, digests)
            else:
                src = runner.full(p, src)
        _exports(cfg, run, force)
        # On a worker: the report holds the final rows' id, split and label (~0.4 GB at peak per million rows), and
        # in the driver that was its whole growth with the corpus (601 MB peak at 1.1 GB, 870 MB at 4.4 GB).
        stats = runtime.on_worker(_close, run, registry.steps())
    if not stats["invariant_ok"]:
        raise AssertionError(f"stats invariant broken (rows_in != rows_out + dropped + quarantined): {stats}")
    return stats


def _close(run: RunDir, steps: list[Step]) -> dict:
    """`close_run` under the driver's registry `steps` (their stats and check hooks)."""
    with registry.using(steps):
        return close_run(run)


def _exports(cfg: RunConfig, run: RunDir, force: bool) -> None:
    """Copies in other formats: the split step's rows (output.export) and the token rows (pack.exports)."""
    fmt = cfg.output.export
    if fmt != "none" and run.marker("split").exists():
        name = f"export-{fmt}"
        fp = fingerprint(name, run.marker("split").read_text())
        if not run.is_done(name, fp, force):
            export(run.stage_dir("split"), run.root / "export" / fmt, fmt, cfg.ray.batch_size)
            run.mark_done(name, fp)
    if not run.marker("pack").exists():
        return
    for name, write, src, out in (("bin", export_token_bin, "tokenize", "tokens"),
                                  ("megatron", export_megatron, "tokenize", "megatron"),
                                  ("webdataset", export_packed_webdataset, "pack", "tokens-webdataset")):
        marker = f"export-{out}"
        fp = fingerprint(marker, run.marker("pack").read_text())
        if name in cfg.pack.exports and not run.is_done(marker, fp, force):
            write(run.stage_dir(src), run.root / "export" / out, True)
            run.mark_done(marker, fp)
