"""What each training memory/speed switch does, measured: one model, one process per setting, the loop's own step.

    python benchmarks/train_bench.py --tokenize-dir shards/out/run/tokenize        # CPU: padding + a small model
    python benchmarks/train_bench.py --gpu --hidden 768 --layers 12 --heads 12 --seq-len 2048 --micro 8   # ~125 M

Padding (no model): the train split's document lengths (a tokenize stage folder) batched `--micro` at a time, as
the padded share of the token slots: padding every row to --seq-len, dynamic padding to the longest row of each
batch in arrival order, dynamic padding after sorting by length within windows of 16 batches (train.bucket_batches),
and packing (tokenize/pack.py, best-fit decreasing, documents split at --seq-len).

Compute: a transformers Llama from `ray_jobs.train.model.build_model` with random init, trained on random token
rows of --seq-len with `ray_jobs.train.step.optimizer_step` (the loop's own step: autocast, accumulation,
clipping, optimizer, schedule), `--steps` steps after 2 warm-up steps, in a fresh child process per setting so
peak memory is its own: CUDA max_memory_allocated on GPU, the child's peak RSS on CPU. Settings: the baseline
(fp32, SDPA), bf16 autocast, gradient checkpointing, gradient accumulation (--micro / 4 rows x 4 micro-batches:
the same tokens per step), eager attention instead of SDPA, and on CUDA the 8-bit optimizer (PagedAdamW8bit).
tokens/s counts every slot (no padding in these rows); MFU on GPU = FLOPs per token (model.flops_per_token) x
tokens/s / the GPU's bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {
    "baseline (fp32, sdpa)": {},
    "bf16 autocast": {"precision": "bf16"},
    "gradient checkpointing": {"gradient_checkpointing": True},
    "grad accumulation x4 (micro / 4)": {"grad_accum": 4},
    "eager attention": {"attention": "eager"},
    "bf16 + 8-bit optimizer": {"precision": "bf16", "optimizer": "adamw8bit"},
    "bf16 + checkpointing + 8-bit": {"precision": "bf16", "gradient_checkpointing": True, "optimizer": "adamw8bit"},
}
GPU_ONLY = {"bf16 + 8-bit optimizer", "bf16 + checkpointing + 8-bit"}


def padding_figures(tokenize_dir: Path, micro: int, seq_len: int) -> dict:
    import numpy as np
    import pyarrow.dataset as pads

    from ray_jobs.steps.pack.ops import best_fit_decreasing, pieces

    t = pads.dataset(str(tokenize_dir / "split=train"), format="parquet").to_table(columns=["num_tokens"])
    lengths = np.minimum(t["num_tokens"].to_numpy(), seq_len)
    lengths = lengths[lengths > 0]
    n = len(lengths) // micro * micro
    real = int(lengths[:n].sum())

    def padded(ls):
        return int(sum(b.max() * micro for b in ls[:n].reshape(-1, micro)))

    window = micro * 16
    bucketed = np.concatenate([np.sort(lengths[i:i + window]) for i in range(0, n, window)])[:n]
    full = np.asarray(t["num_tokens"].to_numpy())
    _, _, size, _ = pieces(full[full > 0], seq_len, "split")
    _, _, rows = best_fit_decreasing(size, seq_len)
    return {"documents": int(n), "micro_batch": micro, "seq_len": seq_len, "padding_share": {
        "pad every row to seq_len": 1 - real / (n * seq_len),
        "dynamic padding (longest in batch)": 1 - real / padded(lengths),
        "dynamic padding + length bucketing (16 batches)": 1 - real / padded(bucketed),
        "packing (best-fit decreasing)": 1 - int(size.sum()) / (rows * seq_len)}}


def child(args: argparse.Namespace, overrides: dict) -> dict:
    import torch

    from ray_jobs.train.config import ModelConfig, TrainConfig
    from ray_jobs.train.model import (
        attention_impl,
        build_model,
        build_optimizer,
        flops_per_token,
        lr_lambda,
        peak_flops,
    )
    from ray_jobs.train.step import optimizer_step

    cuda = args.gpu
    device = torch.device("cuda" if cuda else "cpu")
    micro = args.micro // overrides.get("grad_accum", 1)
    cfg = TrainConfig(model=ModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads),
                      micro_batch_size=micro, max_steps=args.steps + 2, warmup_steps=1,
                      **{"precision": "fp32", "attention": "sdpa", "optimizer": "adamw", **overrides})
    torch.manual_seed(0)
    model = build_model(cfg.model, args.vocab, args.seq_len, attention_impl(cfg, cuda)).to(device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = build_optimizer(cfg, model, cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    bf16 = cfg.precision == "bf16"

    def batches():
        while True:
            ids = torch.randint(0, args.vocab, (micro, args.seq_len), device=device)
            yield {"input_ids": ids, "labels": ids, "real_tokens": torch.tensor(micro * args.seq_len)}

    it = batches()
    for _ in range(2):
        optimizer_step(model, opt, sched, it, cfg, bf16, device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [optimizer_step(model, opt, sched, it, cfg, bf16, device)[0] for _ in range(args.steps)]
    dt = time.perf_counter() - t0
    tokens = args.steps * args.micro * args.seq_len
    out = {"tokens_per_s": tokens / dt, "loss": losses[-1],
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if cuda:
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        peak = peak_flops(cfg)
        if peak:
            out["mfu"] = flops_per_token(model, args.seq_len) * tokens / dt / peak
    else:
        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenize-dir", type=Path, help="a run's tokenize folder, for the padding figures")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--micro", type=int, default=8, help="rows per optimizer step")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--only", help="comma-separated setting names")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args, json.loads(args.child))))
        return
    report: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                             if k not in ("child", "json")}}
    if args.tokenize_dir:
        report["padding"] = padding_figures(args.tokenize_dir, args.micro, args.seq_len)
        print(json.dumps(report["padding"], indent=2))
    names = [n for n in SETTINGS if args.gpu or n not in GPU_ONLY]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    report["compute"] = {}
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json") and a != str(args.json)]
    for name in names:
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--child", json.dumps(SETTINGS[name])],
                              capture_output=True, text=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
        report["compute"][name] = res
        print(name, res, flush=True)
    base = report["compute"].get("baseline (fp32, sdpa)", {})
    print("\n| setting | tokens/s | vs baseline | peak memory GB | MFU |\n|---|---:|---:|---:|---:|")
    for name, r in report["compute"].items():
        if "error" in r:
            print(f"| {name} | failed: {r['error'][:80]} | | | |")
            continue
        mem = r.get("peak_mem_gb", r.get("peak_rss_gb"))
        ratio = r["tokens_per_s"] / base["tokens_per_s"] if base.get("tokens_per_s") else float("nan")
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {ratio:.2f}x | {mem:.2f} | {mfu} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
