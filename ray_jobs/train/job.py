"""The `train` recipe: token rows (a pack or tokenize stage, or the pipeline run first) -> Ray Train workers."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pyarrow.parquet as pq

from ray_jobs import runtime, schema
from ray_jobs.config import RunConfig, to_dict
from ray_jobs.planner import run_pipeline
from ray_jobs.rundir import RunDir
from ray_jobs.steps.pack.ops import INPUT_IDS
from ray_jobs.steps.tokenize.tokenizer import load_tokenizer
from ray_jobs.train.data import is_packed, sort_by_length
from ray_jobs.runtime import train as runtime_train
from ray_jobs.train.loop import train_loop

log = logging.getLogger("ray_jobs")
TRAIN_DIR = "train"


def latest_checkpoint(train_dir: Path) -> str | None:
    found = sorted(p for p in train_dir.glob("checkpoint_*") if (p / "state.pt").is_file())
    return str(found[-1]) if found else None


def token_data(cfg: RunConfig) -> Path:
    """The split's token rows: train.data, or this output's pack (else tokenize) stage after running the
    pipeline up to it."""
    if cfg.train.data:
        root = Path(cfg.train.data)
    else:
        last = "pack" if cfg.pack.enabled else "tokenize"
        run_pipeline(cfg)
        root = RunDir(cfg.output.dir).stage_dir(last)
    part = root / f"{schema.SPLIT}={cfg.train.split}"
    if part.is_dir():
        return part
    if root.is_dir() and any(root.glob(f"{schema.SPLIT}=*")):
        have = sorted(p.name for p in root.glob(f"{schema.SPLIT}=*"))
        raise ValueError(f"{root} has no {schema.SPLIT}={cfg.train.split} folder (found {have}); set train.split")
    if not root.exists():
        raise ValueError(f"train.data {root} does not exist; give a pack or tokenize stage folder of a run")
    return root


def train(cfg: RunConfig) -> dict:
    out = Path(cfg.output.dir)
    with runtime.ray_session(dataclasses.replace(cfg.ray, include_dashboard=True)):
        data = token_data(cfg)
        files = sorted(data.rglob("*.parquet"))
        if not files:
            raise ValueError(f"{data} holds no Parquet token rows")
        file_schema = pq.read_schema(files[0])
        if INPUT_IDS not in file_schema.names:
            raise ValueError(f"{data} has no {INPUT_IDS!r} column (found {file_schema.names}); give the output of "
                             f"the pack or tokenize stage")
        packed = is_packed(file_schema)
        ds = runtime.read_parquet(data)
        if packed:
            seq_len = file_schema.field(INPUT_IDS).type.list_size
        else:
            seq_len = cfg.pack.seq_len  # rows are cut to it in the collate
            if cfg.train.bucket_batches:
                ds = runtime.map_tables(ds, sort_by_length,
                                       batch_size=cfg.train.micro_batch_size * cfg.train.bucket_batches)
        tok = load_tokenizer(cfg.tokenize.tokenizer)
        train_dir = out / TRAIN_DIR
        resume = latest_checkpoint(train_dir)
        loop_config = {"train": to_dict(cfg.train), "seq_len": seq_len, "packed": packed,
                       "vocab_size": tok.get_vocab_size(), "pad_id": cfg.pack.pad_id,
                       "metrics_path": str((train_dir / "metrics.jsonl").resolve()), "resume_from": resume}
        log.info("training on %s (%s rows of %s tokens)%s", data, "packed" if packed else "padded", seq_len,
                 f", resuming from {resume}" if resume else "")
        runtime_train.fit(train_loop, loop_config, {cfg.train.split: ds}, num_workers=cfg.train.num_workers,
                   use_gpu=cfg.train.use_gpu, cpus_per_worker=cfg.train.cpus_per_worker, storage=out,
                   name=TRAIN_DIR, keep_checkpoints=cfg.train.keep_checkpoints)
    return {"data": str(data), "metrics": str(train_dir / "metrics.jsonl"), "checkpoint": latest_checkpoint(train_dir)}
