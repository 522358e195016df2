"""The `train` recipe: token rows -> Ray Train workers.

* `train.data` empty: the pipeline runs and its last pass (tokenize -> pack) feeds the workers
  as it makes the rows (`run_pipeline(consume=...)`): the rows of `train.split` go through Ray Data's streaming
  split into the workers while the pass writes every row (all splits) to RUN/pack. After `max_steps` the workers
  read the rest of their shard without training, so the pass ends complete and marked; a stopped stream would
  leave RUN/pack unwritten.
* `train.data` set, or RUN/pack already finished: the finished folder.
* a checkpoint: the rows it trained on are left out before the split between the workers (loop.py, "Data
  position"), from the stream as from a finished folder. Exact on a finished folder (the normal case: the stream
  ran to its end); a pass that did not finish (a killed run) is run again, and where it batches the documents
  otherwise it packs rows whose keys the checkpoint does not hold: their documents are trained on again.

One fit reads its dataset once; when the data ends before `max_steps`, the next fit is the next epoch (the whole
split again), resuming from the checkpoint the loop wrote where the data ended. A run at max_steps already only
completes the pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ray_jobs import runtime, schema
from ray_jobs.config import RunConfig, to_dict
from ray_jobs.errors import UserError
from ray_jobs.planner import plan, run_pipeline
from ray_jobs.rundir import RunDir
from ray_jobs.runtime import train as runtime_train
from ray_jobs.steps import registry
from ray_jobs.steps.pack.ops import INPUT_IDS
from ray_jobs.steps.tokenize.tokenizer import load_tokenizer
from ray_jobs.train.data import is_packed, sort_by_length, train_rows
from ray_jobs.train.loop import Position, read_position, train_loop

log = logging.getLogger("ray_jobs")
TRAIN_DIR = "train"
READ_CPUS = 1.0  # Ray Data reserves 1 CPU per read task: without one free, the stream never starts (no error)


def latest_checkpoint(train_dir: Path) -> str | None:
    found = sorted(p for p in train_dir.glob("checkpoint_*") if (p / "state.pt").is_file())
    return str(found[-1]) if found else None


def position(train_dir: Path) -> Position | None:
    latest = latest_checkpoint(train_dir)
    return read_position(latest) if latest else None


def last_step(cfg: RunConfig) -> str:
    return "pack" if cfg.pack.enabled else "tokenize"


def cpu_budget(cfg: RunConfig, streamed: bool) -> dict[str, float]:
    """What must hold CPUs at the same time: the Ray Train workers, one read task and, when the workers read the
    last pass as it runs, that pass's actor pool (sized as the planner sizes it: the largest `actors` and
    `actor_cpus` of its steps). Keys name the config keys that set each share."""
    t = cfg.train
    need = {"train.num_workers x train.cpus_per_worker": t.num_workers * t.cpus_per_worker,
            "a read task (1 CPU)": READ_CPUS}
    if streamed:
        last = plan([s for s in registry.steps() if s.enabled(cfg)])[-1]
        pools = [(s.name, registry.section(cfg, s)) for s in last.steps]
        pools = [(n, c) for n, c in pools if hasattr(c, "actors")]
        if last.kind == "text" and pools:
            actors, cpus = max(c.actors for _, c in pools), max(c.actor_cpus for _, c in pools)
            keys = " / ".join(f"{n}.actors x {n}.actor_cpus" for n, _ in pools)
            need[f"the last pass's actor pool ({keys})"] = actors * cpus
    return need


def check_cpus(cfg: RunConfig, cluster_cpus: float, streamed: bool) -> None:
    """Refuse what Ray would run as a silent hang: more CPUs reserved at once than the cluster has."""
    need = cpu_budget(cfg, streamed)
    if sum(need.values()) > cluster_cpus + 1e-9:
        parts = " + ".join(f"{v:g} ({k})" for k, v in need.items())
        raise UserError(
            f"train needs {sum(need.values()):g} CPUs at once: {parts}; the Ray cluster has {cluster_cpus:g} "
            f"(expected <= {cluster_cpus:g}). Ray would wait for the rest forever: lower train.cpus_per_worker or "
            f"train.num_workers" + (", tokenize.actors or tokenize.actor_cpus" if streamed else "") +
            ", or give Ray more CPUs (ray.num_cpus)")


def token_folder(cfg: RunConfig) -> Path:
    """The split's finished token rows: train.data, or this output's pack (else tokenize) stage."""
    root = Path(cfg.train.data) if cfg.train.data else RunDir(cfg.output.dir).stage_dir(last_step(cfg))
    part = root / f"{schema.SPLIT}={cfg.train.split}"
    if part.is_dir():
        return part
    if root.is_dir() and any(root.glob(f"{schema.SPLIT}=*")):
        have = sorted(p.name for p in root.glob(f"{schema.SPLIT}=*"))
        raise UserError(f"{root} has no {schema.SPLIT}={cfg.train.split} folder (found {have}); set train.split")
    if not root.exists():
        raise UserError(f"train.data {root} does not exist; give a pack or tokenize stage folder of a run")
    return root


def _prepare(ds, cfg: RunConfig, packed: bool, split: str | None, consumed: np.ndarray | None):
    """The rows the workers read (train/data.train_rows), length-bucketed when unpacked. Before the split
    between the workers: see loop.py on why consumed rows are removed here and not skipped in the loop."""
    ds = runtime.map_tables(ds, train_rows(split, consumed, packed), batch_size=None)
    if not packed and cfg.train.bucket_batches:
        ds = runtime.map_tables(ds, sort_by_length, batch_size=cfg.train.micro_batch_size * cfg.train.bucket_batches)
    return ds


def _fit(cfg: RunConfig, loop_config: dict, ds) -> None:
    out = Path(cfg.output.dir)
    runtime_train.fit(train_loop, loop_config, {cfg.train.split: ds}, num_workers=cfg.train.num_workers,
                      use_gpu=cfg.train.use_gpu, cpus_per_worker=cfg.train.cpus_per_worker, storage=out,
                      name=TRAIN_DIR, keep_checkpoints=cfg.train.keep_checkpoints)


def _next(pos: Position | None) -> Position:
    """Where the next fit starts: the checkpoint's epoch less the rows it trained on, or the next epoch when the
    data ended at it."""
    pos = pos or Position(0, 0, np.zeros(0, np.int64), False)
    return Position(pos.step, pos.epoch + 1, np.zeros(0, np.int64), False) if pos.epoch_done else pos


def _fit_epoch(cfg: RunConfig, base: dict, ds, pos: Position, packed: bool, seq_len: int, split: str | None,
               drain: bool, train_dir: Path) -> Position:
    """One fit from `pos` over `ds` (what is left of its epoch); the position after it. A fit returns before
    max_steps only where its data ended, so that position says epoch_done."""
    full = not len(pos.consumed)
    if not full:
        log.info("epoch %d from step %d: the %d rows its checkpoint trained on are left out", pos.epoch, pos.step,
                 len(pos.consumed))
    _fit(cfg, base | {"seq_len": seq_len, "packed": packed, "epoch": pos.epoch, "full_epoch": full, "drain": drain,
                      "resume_from": latest_checkpoint(train_dir)},
         _prepare(ds, cfg, packed, split, None if full else pos.consumed))
    after = position(train_dir)
    if after is None or after.step == pos.step:  # (a whole epoch without a step raises in the loop)
        log.info("the rest of epoch %d is less than one step per worker: the next epoch starts", pos.epoch)
    return dataclasses.replace(after or pos, epoch=pos.epoch, epoch_done=True)


def _folder_schema(data: Path, cfg: RunConfig) -> tuple[bool, int]:
    """(packed, seq_len) of a finished folder of token rows."""
    files = sorted(data.rglob("*.parquet"))
    if not files:
        raise UserError(f"{data} holds no Parquet token rows; give the output of the pack or tokenize stage")
    file_schema = pq.read_schema(files[0])
    if INPUT_IDS not in file_schema.names:
        raise UserError(f"{data} has no {INPUT_IDS!r} column (found {file_schema.names}); give the output of "
                        f"the pack or tokenize stage")
    packed = is_packed(file_schema)
    return packed, file_schema.field(INPUT_IDS).type.list_size if packed else cfg.pack.seq_len  # unpacked: cut


def train(cfg: RunConfig) -> dict:
    out = Path(cfg.output.dir)
    train_dir = out / TRAIN_DIR
    streamed = False
    with runtime.ray_session(dataclasses.replace(cfg.ray, include_dashboard=True)):
        check_cpus(cfg, runtime_train.cluster_cpus(), streamed=not cfg.train.data)
        tok = load_tokenizer(cfg.tokenize.tokenizer)
        base = {"train": to_dict(cfg.train), "vocab_size": tok.get_vocab_size(), "pad_id": cfg.pack.pad_id,
                "metrics_path": str((train_dir / "metrics.jsonl").resolve())}
        pos = _next(position(train_dir))
        if pos.step:
            log.info("resuming from %s at step %d, epoch %d", latest_checkpoint(train_dir), pos.step, pos.epoch)
        if pos.step >= cfg.train.max_steps:
            log.info("train.max_steps = %d reached (step %d): nothing to train; raise it to go on",
                     cfg.train.max_steps, pos.step)
        if not cfg.train.data and pos.step >= cfg.train.max_steps:
            run_pipeline(cfg)  # nothing to train: the pipeline alone
        elif not cfg.train.data:
            run = RunDir(cfg.output.dir)
            steps = plan([s for s in registry.steps() if s.enabled(cfg)])[-1].steps

            def consume(ds) -> bool:
                nonlocal pos, streamed
                # The planner drops the last step's marker before it runs a pass of 2+ steps (invalidate_after its
                # first step), so a marker then means the finished folder, whose rows need not all be read.
                finished = len(steps) > 1 and run.marker(last_step(cfg)).exists()
                streamed = not finished
                log.info("training on the %s rows %s", cfg.train.split,
                         "of the finished folder" if finished else "as the last pass makes them")
                pos = _fit_epoch(cfg, base, ds, pos, cfg.pack.enabled, cfg.pack.seq_len, cfg.train.split,
                                 streamed, train_dir)
                return True

            run_pipeline(cfg, consume=consume)
        data = token_folder(cfg)
        if pos.step < cfg.train.max_steps:
            packed, seq_len = _folder_schema(data, cfg)
        while pos.step < cfg.train.max_steps:  # the rest of the epoch, then whole epochs
            log.info("training on %s (%s rows of %s tokens)", data, "packed" if packed else "padded", seq_len)
            pos = _fit_epoch(cfg, base, runtime.read_parquet(data), _next(pos), packed, seq_len, None, False,
                             train_dir)
    return {"data": str(data), "streamed": streamed, "metrics": str(train_dir / "metrics.jsonl"),
            "checkpoint": latest_checkpoint(train_dir)}
