"""The loop every Ray Train worker runs: stream the token shard once, step, log, checkpoint, resume.

Per optimizer step: `grad_accum` micro-batches (bf16 autocast on CUDA), gradient clipping, AdamW or
PagedAdamW8bit, the LR schedule. Rank 0 appends one JSON line per step to `<output>/train/metrics.jsonl`: loss
(averaged over workers), lr, tokens/s (all workers; real tokens, padding excluded), MFU on GPU, the data stall
(the share of the step spent waiting for the next batch) and the epoch. Checkpoints go through `ray.train.report`
every `checkpoint_every` steps, at the last, and where the data ends before it.

One call reads its shard once (one epoch, or what is left of one): the driver (train/job.py) starts the next
epoch as a new fit. A streamed shard (the pipeline's last pass as it is made) is read to its end even after
`max_steps` (`drain`): the pass writes its folder from the same rows, so every row must go through.

Data position: each checkpoint holds, besides the weights, the keys (train/data.row_keys) of every row the
epoch's optimizer steps have trained on so far, gathered from all workers (CONSUMED, POSITION). The driver
removes those rows from the dataset before Ray Data splits it between the workers, so a resumed run continues
the epoch with the rows it has not trained on, and continues its step count. (Filtering before the split, not
skipping in this loop: skipped rows would leave the workers unequal numbers of batches, and DDP's all-reduce
would hang on the worker that still has one; the split's `equal=True` keeps them equal only over the rows it
hands out.)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray.train
import torch
import torch.distributed as dist

from ray_jobs.config import TrainConfig, _build
from ray_jobs.errors import UserError
from ray_jobs.runtime.train import Collate
from ray_jobs.train.model import (
    attention_impl,
    build_optimizer,
    flops_per_token,
    lr_lambda,
    peak_flops,
)
from ray_jobs.train.step import init_model, optimizer_step

log = logging.getLogger("ray_jobs")
STATE = "state.pt"
POSITION = "position.json"  # {"step", "epoch", "rows", "epoch_done"}: read by the driver without torch
CONSUMED = "consumed.npy"  # int64 keys of the rows the epoch has trained on, up to this checkpoint


@dataclass(frozen=True)
class Position:
    step: int
    epoch: int
    consumed: np.ndarray  # row keys trained on in `epoch`
    epoch_done: bool  # the data ended at this checkpoint: the next run starts epoch + 1


def write_position(d: str | Path, pos: Position) -> None:
    np.save(Path(d) / CONSUMED, np.asarray(pos.consumed, np.int64))
    (Path(d) / POSITION).write_text(json.dumps({"step": pos.step, "epoch": pos.epoch, "rows": int(len(pos.consumed)),
                                                "epoch_done": pos.epoch_done}) + "\n")


def read_position(d: str | Path) -> Position:
    """A checkpoint folder's data position; a checkpoint from before positions were kept: its step, epoch 0,
    no rows consumed (that run restarted its data from the beginning)."""
    d = Path(d)
    if not (d / POSITION).is_file():
        state = torch.load(d / STATE, map_location="cpu", weights_only=True)
        return Position(int(state["step"]), 0, np.zeros(0, np.int64), False)
    meta = json.loads((d / POSITION).read_text())
    consumed = np.load(d / CONSUMED, allow_pickle=False)  # row keys (uint64): nothing to unpickle
    return Position(int(meta["step"]), int(meta["epoch"]), consumed, bool(meta["epoch_done"]))


def _mean(x: float, world: int) -> float:
    if world == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world


def _sum(x: float, world: int) -> float:
    return _mean(x, world) * world


def _gather(keys: np.ndarray, world: int) -> list[np.ndarray]:
    if world == 1:
        return [keys]
    out: list = [None] * world
    dist.all_gather_object(out, keys)
    return out


def train_loop(config: dict) -> None:
    """config: train (TrainConfig as a dict), seq_len, packed, vocab_size, pad_id, metrics_path, resume_from
    (a checkpoint folder or None), epoch (what the shard is), full_epoch (the shard is the whole split: no step
    at all is an error), drain (a streamed shard: read it to its end after max_steps)."""
    cfg: TrainConfig = _build(TrainConfig, config["train"], "train")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    cuda = device.type == "cuda"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    attn = attention_impl(cfg, cuda)
    seq_len, epoch = config["seq_len"], config.get("epoch", 0)

    # the checkpoint the driver filtered the rows against (its position), else Ray Train's own latest
    ckpt = ray.train.Checkpoint(config["resume_from"]) if config.get("resume_from") else ray.train.get_checkpoint()
    pos = None
    if ckpt is not None:
        with ckpt.as_directory() as d:
            pos = read_position(d)
    step = pos.step if pos else 0
    # rank 0: the keys the epoch trained on before this run (another epoch's do not count)
    consumed = [pos.consumed] if pos and pos.epoch == epoch and rank == 0 else []

    model = init_model(cfg.model, cfg.seed, config["vocab_size"], seq_len, attn, rank, step,
                       cfg.gradient_checkpointing)
    fpt = flops_per_token(model, seq_len)
    model = ray.train.torch.prepare_model(model)  # to the device, DDP when world > 1
    raw = model.module if hasattr(model, "module") else model
    opt = build_optimizer(cfg, raw, cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    if ckpt is not None:
        with ckpt.as_directory() as d:
            # weights_only: tensors and plain containers only; a tampered checkpoint cannot run code
            state = torch.load(Path(d) / STATE, map_location=device, weights_only=True)
        raw.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if rank == 0:
            log.info("resumed from %s at step %d, epoch %d (%d of its rows already trained on)", ckpt.path, step,
                     epoch, sum(len(c) for c in consumed))
    peak = peak_flops(cfg)
    metrics_path = Path(config["metrics_path"])
    shard = ray.train.get_dataset_shard(cfg.split)
    collate = Collate(config["packed"], cfg.packed_attention == "document", config["pad_id"], seq_len)
    if rank == 0:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("model %s: %.2f M parameters, attention %s, %s, optimizer %s", raw.config.model_type,
                 sum(p.numel() for p in raw.parameters()) / 1e6, attn, "bf16 autocast" if bf16 else "fp32",
                 type(opt).__name__)

    model.train()
    batches = iter(shard.iter_torch_batches(batch_size=cfg.micro_batch_size, collate_fn=collate, device=device,
                                            drop_last=True))
    start = reported = step
    pending: list[np.ndarray] = []  # this worker's row keys since the last checkpoint
    row: dict = {}
    t0 = time.perf_counter()
    # optimizer_step gives None when the data ends (inside an accumulation window: that partial step is dropped)
    while step < cfg.max_steps and (done := optimizer_step(model, opt, sched, batches, cfg, bf16, device)):
        loss, tokens, wait, keys = done
        pending.append(keys)
        step += 1
        dt = time.perf_counter() - t0
        all_tokens = _sum(tokens, world)
        slots = cfg.grad_accum * cfg.micro_batch_size * seq_len * world
        row = {"step": step, "loss": _mean(loss, world), "lr": sched.get_last_lr()[0],
               "tokens": all_tokens, "tokens_per_s": all_tokens / dt, "step_s": dt,
               "data_stall": _mean(wait / dt, world), "epoch": epoch}
        if peak:
            row["mfu"] = fpt * slots / dt / (peak * world)
        if cuda:
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        if rank == 0:
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            consumed = _report(row, Position(step, epoch, np.zeros(0, np.int64), False), raw, opt, sched, rank,
                               world, consumed, pending)
            pending, reported = [], step
        t0 = time.perf_counter()
    if step < cfg.max_steps:  # the shard ended: this epoch is over
        if step == start and config.get("full_epoch", True):
            raise UserError(f"the {cfg.split!r} data has fewer than micro_batch_size x grad_accum = "
                            f"{cfg.micro_batch_size * cfg.grad_accum} rows per worker ({world} workers); lower "
                            f"train.micro_batch_size or train.grad_accum, or give more data")
        if step > reported:  # where the next epoch starts from
            _report(row, Position(step, epoch, np.zeros(0, np.int64), True), raw, opt, sched, rank, world,
                    consumed, pending)
        if rank == 0:
            log.info("epoch %d ended at step %d (%d steps in this run)", epoch, step, step - start)
    elif config.get("drain"):
        # the rest of the streamed rows, untrained: the pass writes its folder from them, so all must go through
        left = sum(1 for _ in batches)
        if rank == 0:
            log.info("max_steps reached: read the %d micro-batches left in this worker's shard without training", left)


def _report(row: dict, pos: Position, model, opt, sched, rank: int, world: int, consumed: list[np.ndarray],
            pending: list[np.ndarray]) -> list[np.ndarray]:
    """All workers report; rank 0 attaches the checkpoint (the DDP weights are the same on every worker) with the
    keys every worker trained on since the last one added to `consumed` (returned)."""
    mine = np.concatenate(pending) if pending else np.zeros(0, np.int64)
    gathered = _gather(mine, world)  # every rank takes part in the collective
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            consumed = consumed + gathered
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "step": pos.step}, os.path.join(d, STATE))
            write_position(d, Position(pos.step, pos.epoch, np.concatenate(consumed), pos.epoch_done))
            consumed = [np.concatenate(consumed)]
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report(row, checkpoint=ckpt, checkpoint_dir_name=f"checkpoint_{pos.step:08d}")
    return consumed
