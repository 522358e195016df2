"""The training step without Ray: the model as every worker starts it, and one optimizer step over the
micro-batches of an iterator. train/loop.py runs them inside Ray Train's workers; benchmarks/gpu_check.py and
benchmarks/train_bench.py run the same code in a plain process (no Ray installed there)."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from ray_jobs.train.config import ModelConfig, TrainConfig
from ray_jobs.train.data import REAL_TOKENS, ROW_KEY
from ray_jobs.train.model import build_model


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of one worker from one step on (dropout masks, any sampling): distinct per rank, and per step so a
    resumed run does not replay the masks of steps 1, 2, ..."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def init_model(cfg: ModelConfig, seed: int, vocab_size: int, seq_len: int, attn: str, rank: int,
               step: int = 0, gradient_checkpointing: bool = False) -> torch.nn.Module:
    """The model with the same initial weights on every worker (seeded with `seed`; DDP also broadcasts rank 0's),
    then the worker's own seed (rank_seed) for everything after: seeding once per rank before the build gave
    every worker different weights, and re-seeding after it with `seed` made the rank seed never apply.
    Gradient checkpointing: each decoder layer's activations are recomputed in the backward pass instead of kept
    (non-reentrant checkpointing, which works with DDP and frozen inputs)."""
    torch.manual_seed(seed)
    model = build_model(cfg, vocab_size, seq_len, attn)
    if gradient_checkpointing:
        no_reentrant = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=no_reentrant)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=no_reentrant)
    torch.manual_seed(rank_seed(seed, rank, step))
    return model


def optimizer_step(model, opt, sched, batches, cfg: TrainConfig, bf16: bool,
                   device: torch.device) -> tuple[float, float, float, np.ndarray] | None:
    """One optimizer step over grad_accum micro-batches from the iterator `batches`: (mean loss, real tokens,
    seconds spent waiting for data, the row keys of its micro-batches), or None when the iterator ends first
    (gradients dropped). Under DDP the gradients are all-reduced once per step, on the last micro-batch: the
    others run inside `no_sync()` and only accumulate locally (grad_accum - 1 all-reduces of every gradient
    saved per step)."""
    wait = loss_sum = tokens = 0.0
    keys = []
    for i in range(cfg.grad_accum):
        tw = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            opt.zero_grad(set_to_none=True)
            return None
        wait += time.perf_counter() - tw
        tokens += float(batch.pop(REAL_TOKENS))
        if ROW_KEY in batch:
            keys.append(batch.pop(ROW_KEY).cpu().numpy())
        last = i == cfg.grad_accum - 1
        with model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext():
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
    return loss_sum / cfg.grad_accum, tokens, wait, np.concatenate(keys) if keys else np.zeros(0, np.int64)
