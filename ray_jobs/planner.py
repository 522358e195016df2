"""The recipes: one short function per stage, and `run` chaining them. Each reads its input as a Ray Dataset,
applies stages through the engine, and writes its stage folder atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import ray.data

from ray_jobs import runtime, schema
from ray_jobs.config import InputConfig, RunConfig, to_dict, to_toml
from ray_jobs.io.formats import FileUnit
from ray_jobs.io.readers import discover
from ray_jobs.exports import export, export_packed_webdataset, export_token_bin
from ray_jobs.steps.dedup import barrier as dedup_recipe
from ray_jobs.steps.labels import barrier as labels_recipe
from ray_jobs.steps.dedup.barrier import leakage as leakage_recipe
from ray_jobs.report.html import write_report
from ray_jobs.rundir import STAGES, RunDir, fingerprint, write_atomic, write_manifest, write_stats
from ray_jobs.steps.split.ops import (
    AssignSplitStage, SplitKeyStage, SplitPlan, bin_counts, boundary_bins, boundary_filter,
    plan_from_boundaries, sum_bin_counts,
)
from ray_jobs.steps.clean.ops import CleanStage
from ray_jobs.steps.pack.ops import pack_split_rows
from ray_jobs.steps.tokenize.ops import TokenizeStage

log = logging.getLogger("ray_jobs")

def read_input(input_cfg: InputConfig, units: list[FileUnit] | None = None) -> ray.data.Dataset:
    return runtime.read_corpus(units or discover(input_cfg), input_cfg)


def _input_fingerprint(units: list[FileUnit]) -> list:
    """Which files, with their sizes: a changed input invalidates the stage."""
    return [(u.relpath, Path(u.path).stat().st_size if Path(u.path).is_file() else u.path) for u in units]


def _run_stage(run: RunDir, stage: str, stage_cfg: tuple, input_cfg: InputConfig, force: bool,
               build: Callable[[ray.data.Dataset], tuple[ray.data.Dataset, dict]], partition_col: str,
               raw: bool = False) -> bool:
    """`build` turns the input into the stage's rows and its side tables (`_name` -> dataset or text). `raw`:
    the input is an earlier stage's Parquet read as it is (token rows have no text for the readers to check)."""
    units = discover(input_cfg)  # once: the fingerprint and the read see the same file list
    fp = fingerprint(stage, [to_dict(c) for c in stage_cfg], to_dict(input_cfg), _input_fingerprint(units))
    if run.is_done(stage, fp, force):
        log.info("stage %s already done in %s: skipped (use --force to redo)", stage, run.stage_dir(stage))
        return False
    run.invalidate_after(stage)
    ds, extras = build(runtime.read_parquet(input_cfg.paths[0]) if raw else read_input(input_cfg, units))
    runtime.write_partitioned(ds, run.stage_dir(stage), partition_col, extras)
    run.mark_done(stage, fp)
    return True


def clean(cfg: RunConfig, run: RunDir, input_cfg: InputConfig, force: bool) -> bool:
    def build(ds: ray.data.Dataset) -> tuple[ray.data.Dataset, dict]:
        return runtime.apply(ds, CleanStage(cfg.clean), batch_size=cfg.ray.batch_size,
                            actors=cfg.clean.actors, actor_cpus=cfg.clean.actor_cpus), {}

    return _run_stage(run, "clean", (cfg.clean,), input_cfg, force, build, schema.STATUS)


def dedup(cfg: RunConfig, run: RunDir, input_cfg: InputConfig, force: bool) -> bool:
    return _run_stage(run, "dedup", (cfg.dedup,), input_cfg, force,
                      lambda ds: dedup_recipe.build(ds, cfg.dedup, cfg.ray.batch_size), schema.STATUS)


def _split_plan(cfg: RunConfig, keyed: ray.data.Dataset) -> SplitPlan:
    """Stratified: the two streaming passes of split.py (per-bin counts, then the boundary bins' rows)."""
    if not cfg.split.stratify_by:
        return SplitPlan({})
    counts = sum_bin_counts(runtime.iter_tables(runtime.map_tables(keyed, bin_counts, batch_size=cfg.ray.batch_size)))
    bounds = boundary_bins(counts, cfg.split)
    rows = list(runtime.iter_tables(runtime.map_tables(keyed, boundary_filter(bounds), batch_size=cfg.ray.batch_size)))
    boundary = pa.concat_tables(rows) if rows else None
    return plan_from_boundaries(bounds, cfg.split, boundary, counts) if boundary is not None else SplitPlan({})


def split(cfg: RunConfig, run: RunDir, input_cfg: InputConfig, force: bool) -> bool:
    def build(ds: ray.data.Dataset) -> tuple[ray.data.Dataset, dict]:
        keyed = runtime.apply(ds, SplitKeyStage(cfg.split), batch_size=cfg.ray.batch_size)
        if cfg.split.stratify_by:
            keyed = keyed.materialize()  # read once for the two counting passes and the assignment
        plan = _split_plan(cfg, keyed)
        return runtime.apply(keyed, AssignSplitStage(cfg.split, plan), batch_size=cfg.ray.batch_size), {}

    return _run_stage(run, "split", (cfg.split,), input_cfg, force, build, schema.SPLIT)


def leakage(cfg: RunConfig, run: RunDir, input_cfg: InputConfig, force: bool) -> bool:
    return _run_stage(run, "leakage", (cfg.leakage, cfg.dedup.near), input_cfg, force,
                      lambda ds: leakage_recipe(ds, cfg, read_input), schema.STATUS)


def labels(cfg: RunConfig, run: RunDir, input_cfg: InputConfig, force: bool) -> bool:
    return _run_stage(run, "labels", (cfg.labels,), input_cfg, force, lambda ds: labels_recipe.build(ds, cfg),
                      schema.STATUS)


def tokenize(cfg: RunConfig, run: RunDir, input_cfg: InputConfig, force: bool) -> bool:
    def build(ds: ray.data.Dataset) -> tuple[ray.data.Dataset, dict]:
        # batch_size=None (whole blocks) lets Ray 2.60 fuse this into the read task; with a batch size it
        # stays a separate operator (cheap, 0.04 CPU-s on 60 MB, but one more hop through the object store)
        ds = runtime.map_tables(ds, _ensure_split, batch_size=None)
        return runtime.apply(ds, TokenizeStage(cfg.tokenize), batch_size=cfg.ray.batch_size,
                            actors=cfg.tokenize.actors, actor_cpus=cfg.tokenize.actor_cpus), {}

    return _run_stage(run, "tokenize", (cfg.tokenize,), input_cfg, force, build, schema.SPLIT)


def pack(cfg: RunConfig, run: RunDir, input_cfg: InputConfig, force: bool) -> bool:
    def build(ds: ray.data.Dataset) -> tuple[ray.data.Dataset, dict]:
        fn = pack_split_rows(cfg.pack.seq_len, cfg.pack.pad_id, cfg.pack.overflow)
        return runtime.map_tables(ds, fn, batch_size=cfg.pack.docs_per_batch), {}

    done = _run_stage(run, "pack", (cfg.pack,), input_cfg, force, build, schema.SPLIT, raw=True)
    if "bin" in cfg.pack.exports:
        export_token_bin(run.stage_dir("tokenize"), run.root / "export" / "tokens", force or done)
    if "webdataset" in cfg.pack.exports:
        export_packed_webdataset(run.stage_dir("pack"), run.root / "export" / "tokens-webdataset", force or done)
    return done


def _ensure_split(table: pa.Table) -> pa.Table:
    """A tokenize run on unsplit input files its rows under split=all."""
    if schema.SPLIT in table.column_names:
        return table
    return table.append_column(schema.SPLIT, pa.array(["all"] * len(table), pa.string()))


def _export(cfg: RunConfig, run: RunDir, force: bool) -> None:
    """Copy the split stage's rows to RUN/export/<format>/<split>/ when output.export asks for it."""
    fmt = cfg.output.export
    if fmt == "none" or not run.marker("split").exists():
        return
    name = f"export-{fmt}"
    fp = fingerprint(name, run.marker("split").read_text())
    if run.is_done(name, fp, force):
        return
    export(run.stage_dir("split"), run.root / "export" / fmt, fmt, cfg.ray.batch_size)
    run.mark_done(name, fp)


STAGE_FUNCS = {"clean": clean, "dedup": dedup, "split": split, "leakage": leakage, "labels": labels,
               "tokenize": tokenize, "pack": pack}


def stage_input(run: RunDir, prev: str) -> InputConfig:
    """The kept rows of stage `prev` in this run directory."""
    return InputConfig(paths=(str(run.kept_path(prev)),), format="parquet")


def run_pipeline(cfg: RunConfig, stages: tuple[str, ...] = STAGES, force: bool = False,
                 input_cfg: InputConfig | None = None) -> dict:
    """Run `stages` in order into cfg.output.dir; the first reads `input_cfg` (default cfg.input)."""
    run = RunDir(cfg.output.dir)
    run.root.mkdir(parents=True, exist_ok=True)
    write_atomic(run.root / "config.toml", to_toml(cfg))
    # A stage the config leaves off is skipped in a whole run; asked for by name (`ray-jobs labels`), it runs.
    optional = (("leakage", cfg.leakage.enabled), ("labels", cfg.labels.enabled), ("pack", cfg.pack.enabled))
    for off in [name for name, on in optional if not on and len(stages) > 1]:
        stages = tuple(s for s in stages if s != off)
        run.marker(off).unlink(missing_ok=True)  # stats must not chain through an earlier run's output
    with runtime.ray_session(cfg.ray):
        for i, stage in enumerate(stages):
            src = (input_cfg or cfg.input) if i == 0 else stage_input(run, stages[i - 1])
            STAGE_FUNCS[stage](cfg, run, src, force)
        _export(cfg, run, force)
    stats = write_stats(run)
    write_manifest(run)
    write_report(run.root)  # also when the invariant is broken: the page shows where
    if not stats["invariant_ok"]:
        raise AssertionError(f"stats invariant broken (rows_in != rows_out + dropped + quarantined): {stats}")
    return stats
