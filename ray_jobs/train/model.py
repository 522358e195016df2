"""The model, its attention kernel, its optimizer and LR schedule, and its FLOPs per token (for MFU)."""

from __future__ import annotations

import importlib.util
import logging
import math

import torch

from ray_jobs.errors import UserError
from ray_jobs.train.config import ModelConfig, TrainConfig

log = logging.getLogger("ray_jobs")

# bf16 dense peak TFLOP/s by GPU name (vendor datasheets, no sparsity): what MFU divides by.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def attention_impl(cfg: TrainConfig, cuda: bool) -> str:
    """flash_attention_2 when asked or (auto) when flash_attn imports on CUDA; else PyTorch SDPA, which runs its
    own flash kernel on Ampere and newer for bf16/fp16 without an arbitrary mask."""
    if cfg.attention != "auto":
        return cfg.attention
    return "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"


def build_model(cfg: ModelConfig, vocab_size: int, seq_len: int, attn: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if cfg.pretrained:
        return AutoModelForCausalLM.from_pretrained(cfg.pretrained, attn_implementation=attn)
    vocab = cfg.vocab_size or vocab_size
    if cfg.arch == "llama":
        inter = cfg.intermediate_size or 64 * math.ceil(8 * cfg.hidden_size / 3 / 64)
        mc = LlamaConfig(vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=inter,
                         num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                         num_key_value_heads=cfg.num_kv_heads or cfg.num_heads, max_position_embeddings=seq_len,
                         tie_word_embeddings=cfg.tie_embeddings)
    else:
        mc = GPT2Config(vocab_size=vocab, n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
                        n_inner=cfg.intermediate_size or None, n_positions=seq_len,
                        tie_word_embeddings=cfg.tie_embeddings)
    return AutoModelForCausalLM.from_config(mc, attn_implementation=attn)


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6 x the parameters that multiply per token (forward + backward matmuls) + the
    attention scores, 12 x layers x hidden x seq_len (PaLM's appendix B accounting). The input embedding is a
    lookup and does not count; a tied output head shares its weight but is a matmul and does (at 125 M
    parameters with SmolLM2's vocabulary it is ~30 % of the FLOPs: leaving it out understated MFU)."""
    c = model.config
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb
    params = sum(p.numel() for p in model.parameters()) - (0 if tied else emb.numel())
    layers = getattr(c, "num_hidden_layers", None) or c.n_layer
    hidden = getattr(c, "hidden_size", None) or c.n_embd
    return 6.0 * params + 12.0 * layers * hidden * seq_len


def peak_flops(cfg: TrainConfig) -> float | None:
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k in name), None)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, cuda: bool) -> torch.optim.Optimizer:
    """AdamW with decay on matrices only; bitsandbytes PagedAdamW8bit (8-bit states, paged to host memory under
    pressure: ~75 % less optimizer memory) on CUDA when asked or (auto) when importable."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    want_8bit = cfg.optimizer == "adamw8bit" or (cfg.optimizer == "auto" and cuda)
    if want_8bit:
        reason = ("no CUDA device (bitsandbytes' 8-bit optimizers are CUDA kernels)" if not cuda else
                  "bitsandbytes is not installed (pip install bitsandbytes)"
                  if not importlib.util.find_spec("bitsandbytes") else "")
        if not reason:
            import bitsandbytes as bnb

            return bnb.optim.PagedAdamW8bit(groups, lr=cfg.lr, betas=(0.9, 0.95))
        if cfg.optimizer == "adamw8bit":
            raise UserError(f"train.optimizer = 'adamw8bit' needs CUDA and bitsandbytes: {reason}; use 'adamw'")
        log.info("optimizer: plain AdamW, not PagedAdamW8bit: %s", reason)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=cuda)


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then cosine or linear decay to min_lr_ratio (or constant), as a LambdaLR factor."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1 - t
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    return factor
