"""The loop every Ray Train worker runs: stream the token shard, step, log, checkpoint, resume.

Per optimizer step: `grad_accum` micro-batches (bf16 autocast on CUDA), gradient clipping, AdamW or
PagedAdamW8bit, the LR schedule. Rank 0 appends one JSON line per step to `<output>/train/metrics.jsonl`: loss
(averaged over workers), lr, tokens/s (all workers; real tokens, padding excluded), MFU on GPU, and the data stall:
the share of the step spent waiting for the next batch. Checkpoints (model, optimizer, schedule, step) go through
`ray.train.report` every `checkpoint_every` steps and at the last; a run restarted on the same output folder resumes
from the latest one and continues its step count. The data stream restarts from its beginning on resume.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist

from ray_jobs.config import TrainConfig, _build
from ray_jobs.runtime.train import Collate
from ray_jobs.train.data import REAL_TOKENS
from ray_jobs.train.model import (
    attention_impl, build_model, build_optimizer, flops_per_token, lr_lambda, peak_flops,
)

log = logging.getLogger("ray_jobs")
STATE = "state.pt"


def _mean(x: float, world: int) -> float:
    if world == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world


def _sum(x: float, world: int) -> float:
    return _mean(x, world) * world


def train_loop(config: dict) -> None:
    cfg: TrainConfig = _build(TrainConfig, config["train"], "train")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()
    cuda = device.type == "cuda"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    attn = attention_impl(cfg, cuda)
    seq_len = config["seq_len"]

    torch.manual_seed(cfg.seed)  # the same initial weights on every worker (DDP also broadcasts them)
    model = build_model(cfg.model, config["vocab_size"], seq_len, attn)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    fpt = flops_per_token(model, seq_len)
    model = ray.train.torch.prepare_model(model)  # to the device, DDP when world > 1
    raw = model.module if hasattr(model, "module") else model
    opt = build_optimizer(cfg, raw, cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    step = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is None and config.get("resume_from"):
        ckpt = ray.train.Checkpoint(config["resume_from"])
    if ckpt is not None:
        with ckpt.as_directory() as d:
            # weights_only: tensors and plain containers only; a tampered checkpoint cannot run code
            state = torch.load(Path(d) / STATE, map_location=device, weights_only=True)
        raw.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]
        if rank == 0:
            log.info("resumed from %s at step %d", ckpt.path, step)
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
    while step < cfg.max_steps:
        batches = iter(shard.iter_torch_batches(batch_size=cfg.micro_batch_size, collate_fn=collate,
                                                device=device, drop_last=True))
        epoch_start, t0 = step, time.perf_counter()
        # optimizer_step gives None when the data ends (inside an accumulation window: that partial step is dropped)
        while step < cfg.max_steps and (done := optimizer_step(model, opt, sched, batches, cfg, bf16, device)):
            loss, tokens, wait = done
            step += 1
            dt = time.perf_counter() - t0
            all_tokens = _sum(tokens, world)
            slots = cfg.grad_accum * cfg.micro_batch_size * seq_len * world
            row = {"step": step, "loss": _mean(loss, world), "lr": sched.get_last_lr()[0],
                   "tokens": all_tokens, "tokens_per_s": all_tokens / dt, "step_s": dt,
                   "data_stall": _mean(wait / dt, world)}
            if peak:
                row["mfu"] = fpt * slots / dt / (peak * world)
            if cuda:
                row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
            if rank == 0:
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                _report(row, step, raw, opt, sched, rank)
            t0 = time.perf_counter()
        if step == epoch_start:
            raise ValueError(f"the {cfg.split!r} data has fewer than micro_batch_size x grad_accum = "
                             f"{cfg.micro_batch_size * cfg.grad_accum} rows per worker; lower train.micro_batch_size")


def optimizer_step(model, opt, sched, batches, cfg: TrainConfig, bf16: bool,
                   device: torch.device) -> tuple[float, float, float] | None:
    """One optimizer step over grad_accum micro-batches from the iterator `batches`: (mean loss, real tokens,
    seconds spent waiting for data), or None when the iterator ends first (gradients dropped)."""
    wait = loss_sum = tokens = 0.0
    for _ in range(cfg.grad_accum):
        tw = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            opt.zero_grad(set_to_none=True)
            return None
        wait += time.perf_counter() - tw
        tokens += float(batch.pop(REAL_TOKENS))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch, use_cache=False)
        (out.loss / cfg.grad_accum).backward()
        loss_sum += float(out.loss.detach())
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return loss_sum / cfg.grad_accum, tokens, wait


def _report(row: dict, step: int, model, opt, sched, rank: int) -> None:
    """All workers report; rank 0 attaches the checkpoint (the DDP weights are the same on every worker)."""
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "step": step}, os.path.join(d, STATE))
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report(row, checkpoint=ckpt, checkpoint_dir_name=f"checkpoint_{step:08d}")
